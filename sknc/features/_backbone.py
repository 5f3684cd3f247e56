"""Backbone core shared by :mod:`sknc.features` and :mod:`sknc.finetune`.

Everything here works on plain ``torch.nn.Module`` objects (timm models or any
module a user built) and knows nothing about scikit-learn.

Contents
--------
create_backbone(model, *, pretrained=False, weights=None, model_kwargs=None, seed=None)
    Build a module from a timm name, a module instance (deep-copied) or a
    factory; optionally load timm hub weights (failing fast when offline) and/or
    a local weight file. Returns the module in eval mode on CPU.
load_weights(module, weights, *, allow_head_mismatch=True)
    Load a ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file (or a state
    dict) strictly, unwrapping common checkpoint containers and prefixes.
read_state_dict(weights)
    Read and unwrap a weight file into a flat ``{name: tensor}`` dict.
classifier_name(module)
    Dotted path of the final classifier layer (or None).
strip_classifier(module)
    Replace the classifier by identity in place; returns the feature width.
list_layers(module)
    The named blocks users can pick, in forward order.
resolve_layer(module, layer)
    Block index (into ``list_layers``) or module path -> dotted module path.
pool_features(t, num_prefix_tokens=0, pool="auto", *, has_class_token=None, fmt="NCHW")
    Reduce one layer output to a ``(N, C)`` matrix.
token_info(module)
    ``(num_prefix_tokens, has_class_token, fmt)`` for pooling the outputs of
    ``module``'s blocks.
LayerTap
    ``nn.Module`` wrapper whose forward returns the pooled outputs of several
    layers (and/or the penultimate features) from one forward pass, via forward
    hooks; stops the forward early when only intermediate blocks are needed.
weights_fingerprint(module)
    Content hash of a module's state dict (names, dtypes, shapes, values).
zero_scale_layers(module), warn_identity_blocks(module, model, *, what)
    Layers with all-zero scales (timm's ``zero_init_last``) and the warning
    for random-init backbones used frozen.
PENULTIMATE
    The layer name ``"penultimate"``: the pre-logits features (model output
    after :func:`strip_classifier`).

timm is imported inside the functions that need it; torch at import (the
``LayerTap`` module is defined at module level).
"""

import copy
import difflib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

__all__ = [
    "PENULTIMATE",
    "LayerTap",
    "classifier_name",
    "create_backbone",
    "list_layers",
    "load_weights",
    "pool_features",
    "read_state_dict",
    "resolve_layer",
    "strip_classifier",
    "token_info",
    "warn_identity_blocks",
    "weights_fingerprint",
    "zero_scale_layers",
]

PENULTIMATE = "penultimate"

_POOLS = ("auto", "avg", "token", "max", "flatten")
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
_KNOWN_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.")
_MAX_LISTED = 6


# --------------------------------------------------------------------------
# model creation
# --------------------------------------------------------------------------
def _is_timm_model(module):
    return type(module).__module__.startswith("timm.") or hasattr(module, "pretrained_cfg")


def _check_timm_name(name):
    import timm

    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        return
    if timm.is_model(name):
        return
    base = name.split(".", 1)[0]
    candidates = timm.list_models()
    close = difflib.get_close_matches(base, candidates, n=_MAX_LISTED, cutoff=0.6)
    if not close:
        close = [m for m in candidates if base.lower() in m][:_MAX_LISTED]
    hint = f" Close matches: {close}." if close else ""
    raise ValueError(
        f"Unknown timm model name {name!r}.{hint} See timm.list_models() for all "
        "names, or pass a torch.nn.Module."
    )


_PROBE_CACHE = {}


def _hub_address():
    """(host, port) to probe for hub access: the HTTPS proxy if set, else the endpoint."""
    from urllib.parse import urlparse

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            parsed = urlparse(os.environ[var])
            if parsed.hostname:
                return parsed.hostname, parsed.port or 80
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    return parsed.hostname or "huggingface.co", parsed.port or (
        443 if parsed.scheme != "http" else 80
    )


def _hub_reachable(timeout=None):
    """Whether a TCP connection to the Hugging Face hub (or proxy) opens in ``timeout`` s.

    DNS resolution has no timeout of its own, so the probe runs in a daemon
    thread. Results are cached for 60 seconds. ``SKNC_HUB_TIMEOUT`` sets the
    timeout (default 5 seconds).
    """
    if timeout is None:
        timeout = float(os.environ.get("SKNC_HUB_TIMEOUT", "5"))
    address = _hub_address()
    cached = _PROBE_CACHE.get(address)
    if cached is not None and time.monotonic() - cached[1] < 60:
        return cached[0]
    result = []

    def probe():
        try:
            with socket.create_connection(address, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    ok = bool(result and result[0])
    _PROBE_CACHE[address] = (ok, time.monotonic())
    return ok


def _offline_env():
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextmanager
def _hub_guard(name):
    """Fail fast with a helpful error when pretrained weights cannot be fetched.

    With ``HF_HUB_OFFLINE`` set, or when a short connectivity probe fails, the
    Hugging Face hub is put in offline mode for the duration of the call so
    that cached weights still load, and missing ones raise at once instead of
    retrying for about a minute.
    """
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:  # pragma: no cover - timm depends on huggingface_hub
        hf_constants = None
    reason = None
    if _offline_env() or bool(getattr(hf_constants, "HF_HUB_OFFLINE", False)):
        reason = "HF_HUB_OFFLINE is set"
    elif not _hub_reachable():
        reason = "the Hugging Face hub at {}:{} is not reachable".format(*_hub_address())
    patched = False
    old = None
    if reason is not None and hf_constants is not None:
        # huggingface_hub reads HF_HUB_OFFLINE once, at import: set it for this call
        # (also when the variable was set after the import) so that nothing retries.
        old = hf_constants.HF_HUB_OFFLINE
        hf_constants.HF_HUB_OFFLINE = True
        patched = True
    try:
        yield
    except OSError as exc:  # LocalEntryNotFoundError, URLError, ConnectionError, ...
        from huggingface_hub.constants import HF_HUB_CACHE

        why = reason or "the download failed"
        raise RuntimeError(
            f"Could not load pretrained weights for timm model {name!r}: {why}, and "
            f"the weights are not in the local cache ({HF_HUB_CACHE}). Either fetch them "
            "once on a machine with internet access "
            f'(python -c "import timm; timm.create_model({name!r}, pretrained=True)") '
            "and copy the cache to this machine (HF_HOME), or save the weights to a "
            "file and load it with pretrained=False, "
            "weights='path/to/weights.safetensors' (or .pth). "
            f"Original error: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if patched:
            hf_constants.HF_HUB_OFFLINE = old


def create_backbone(model, *, pretrained=False, weights=None, model_kwargs=None, seed=None):
    """Build a backbone module, in eval mode on CPU.

    Parameters
    ----------
    model : str, torch.nn.Module, nn.Module subclass or callable
        A timm model name (``timm.create_model(name, pretrained=pretrained,
        **model_kwargs)``), a module instance (deep-copied; the user's object
        is never mutated), or a module class / zero-argument factory returning
        a module (called with ``**model_kwargs``).
    pretrained : bool, default=False
        Load timm's hub weights (timm names only). Offline, this fails within
        seconds with a message explaining how to use a local weight file.
    weights : str, path-like, mapping or None, default=None
        A local weight file (``.safetensors``; ``.pth``/``.pt``/``.bin``
        loaded with ``torch.load(weights_only=True)``) or a state dict, loaded
        after the model is built; see :func:`load_weights`.
    model_kwargs : dict or None, default=None
        Keyword arguments for ``timm.create_model`` or the factory.
    seed : int or None, default=None
        If given, the torch random state used to initialise the weights is
        seeded with it (without touching the global random state), so that
        random-init models are reproducible.

    Returns
    -------
    torch.nn.Module
        The backbone, in eval mode, on CPU.

    Examples
    --------
    >>> from sknc.features import create_backbone, list_layers
    >>> model = create_backbone("resnet18", model_kwargs={"num_classes": 10}, seed=0)
    >>> model.fc.out_features, model.training
    (10, False)
    """
    from torch import nn

    model_kwargs = dict(model_kwargs or {})
    if pretrained and not isinstance(model, str):
        raise ValueError(
            "pretrained=True only applies to timm model names; load weights into "
            "your own module yourself or pass weights='path/to/file'."
        )

    def build():
        if isinstance(model, str):
            import timm

            _check_timm_name(model)
            if pretrained:
                with _hub_guard(model):
                    return timm.create_model(model, pretrained=True, **model_kwargs)
            return timm.create_model(model, pretrained=False, **model_kwargs)
        if isinstance(model, nn.Module):
            if model_kwargs:
                raise ValueError(
                    "model_kwargs only apply when model is a timm name or a factory; "
                    f"got a {type(model).__name__} instance."
                )
            return copy.deepcopy(model)
        if callable(model):
            built = model(**model_kwargs)
            if not isinstance(built, nn.Module):
                raise TypeError(
                    f"model factory {model!r} returned {type(built).__name__}, "
                    "expected a torch.nn.Module."
                )
            return built
        raise TypeError(
            "model must be a timm model name, a torch.nn.Module, or a callable "
            f"returning one; got {type(model).__name__}."
        )

    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            module = build()
    else:
        module = build()
    if weights is not None:
        load_weights(module, weights)
    return module.to("cpu").eval()


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------
def _unwrap_container(obj):

    seen = 0
    while isinstance(obj, Mapping) and seen < 5:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
        seen += 1
    return obj


def read_state_dict(weights):
    """Read a weight file (or mapping) into a flat ``{name: tensor}`` dict.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(map_location="cpu", weights_only=True)``. Common containers
    (``{"state_dict": ...}``, ``{"model": ...}``, ...) are unwrapped.

    Raises
    ------
    ValueError
        If the file is missing, cannot be loaded safely, or holds no tensors.
    """

    if isinstance(weights, Mapping):
        obj, label = weights, "the given state dict"
    else:
        path = os.fspath(weights)
        label = f"weights file {path!r}"
        if os.path.isdir(path):
            files = sorted(
                f
                for f in os.listdir(path)
                if f.endswith((".safetensors", ".pth", ".pt", ".bin", ".ckpt"))
            )
            inside = f" Weight files in it: {_few(files)}." if files else ""
            raise ValueError(
                f"{label} is a directory, not a weight file; pass the path of the "
                f".safetensors / .pth / .pt / .bin file itself.{inside}"
            )
        if not os.path.isfile(path):
            raise ValueError(f"{label} does not exist.")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            try:
                obj = load_file(path, device="cpu")
            except Exception as exc:
                raise ValueError(f"Could not read {label} as safetensors: {exc}") from exc
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ValueError(
                    f"Could not load {label} with torch.load(weights_only=True): "
                    f"{type(exc).__name__}: {str(exc)[:300]}. Save plain state dicts "
                    "(torch.save(model.state_dict(), path)) or use safetensors."
                ) from exc
    obj = _unwrap_container(obj)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{label} does not contain a state dict (got {type(obj).__name__}).")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{label} contains no tensors.")
    return tensors


def _strip_prefixes(state, own_keys):
    """Strip wrapper prefixes ('module.', '_orig_mod.', ...) when that matches better."""
    own_keys = set(own_keys)
    best = state
    best_hits = len(own_keys.intersection(state))
    improved = True
    while improved:
        improved = False
        for prefix in _KNOWN_PREFIXES:
            if not any(k.startswith(prefix) for k in best):
                continue
            cand = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in best.items()}
            hits = len(own_keys.intersection(cand))
            if hits > best_hits:
                best, best_hits, improved = cand, hits, True
    return best


def _few(items):
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return shown + more


def load_weights(module, weights, *, allow_head_mismatch=True):
    """Load weights into ``module`` in place, strictly.

    Parameters
    ----------
    module : torch.nn.Module
        The target module.
    weights : str, path-like or mapping
        A weight file or a state dict; see :func:`read_state_dict`. Prefixes
        added by wrappers (``module.``, ``_orig_mod.``, ``model.``, ...) are
        stripped when that makes the keys match.
    allow_head_mismatch : bool, default=True
        Let classifier-head parameters (see :func:`classifier_name`) be
        missing, unexpected or of another shape; those are skipped and the
        module keeps its own head. Features discard the head, so this is what
        loading a 1000-class checkpoint into a 10-class model needs.

    Known foreign layouts of the same architecture are converted to timm's
    names when the keys do not fit as they are: torchvision's MobileNetV2
    into timm's ``mobilenetv2_100``, ``efficientnet_lite_pytorch``'s
    EfficientNet-Lite into ``tf_efficientnet_lite{0,1,2}`` (see
    :func:`detect_layout`); such weights given to another model raise an
    error naming the models they fit.

    Returns
    -------
    list of str
        The skipped classifier-head keys.

    Examples
    --------
    >>> from sknc.features import create_backbone, load_weights
    >>> source = create_backbone("resnet18", seed=1)
    >>> target = create_backbone("resnet18", model_kwargs={"num_classes": 10}, seed=2)
    >>> load_weights(target, source.state_dict())  # the 1000-class head is skipped
    ['fc.bias', 'fc.weight']
    >>> bool((target.conv1.weight == source.conv1.weight).all())
    True

    Raises
    ------
    ValueError
        On any other missing or unexpected key or shape mismatch (listing a
        few of them).
    """
    state = read_state_dict(weights)
    own = module.state_dict()
    state = _strip_prefixes(state, own)
    label = "the given state dict" if isinstance(weights, Mapping) else repr(os.fspath(weights))
    state = _convert_foreign_layout(state, module, own, label)
    head = classifier_name(module) if allow_head_mismatch else None

    def is_head(key):
        return head is not None and (key == head or key.startswith(head + "."))

    skipped = []
    missing, unexpected, mismatched = [], [], []
    for key, value in own.items():
        if key not in state:
            if is_head(key):
                skipped.append(key)
            elif not key.endswith("num_batches_tracked"):
                missing.append(key)
        elif tuple(state[key].shape) != tuple(value.shape):
            if is_head(key):
                skipped.append(key)
            else:
                mismatched.append(
                    f"{key}: file {tuple(state[key].shape)} vs model {tuple(value.shape)}"
                )
    for key in state:
        if key not in own:
            if is_head(key):
                skipped.append(key)
            else:
                unexpected.append(key)
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"shape mismatches: {_few(mismatched)}")
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        raise ValueError(
            f"Weights {label} do not fit {type(module).__name__}: " + "; ".join(parts) + "."
        )
    keep = {k: v for k, v in state.items() if k in own and k not in skipped}
    module.load_state_dict(keep, strict=False)
    return sorted(set(skipped))


def _convert_foreign_layout(state, module, own, label):
    """Rename a known foreign layout (torchvision MobileNetV2, EfficientNet-Lite) to timm's.

    Only when the keys do not already fit ``module`` (fewer than half of its
    parameters found). A known layout that cannot fit ``module`` raises an
    error naming the timm models it fits and the converter.
    """
    from ._convert import WEIGHT_LAYOUTS, detect_layout

    if len(set(own).intersection(state)) * 2 >= len(own):
        return state
    layout = detect_layout(state)
    if layout is None:
        return state
    what, fits, convert = WEIGHT_LAYOUTS[layout]
    timm_like = (
        _is_timm_model(module) and hasattr(module, "blocks") and hasattr(module, "conv_stem")
    )
    if not timm_like:
        raise ValueError(
            f"Weights {label} are in {what} layout, which does not fit "
            f"{type(module).__name__}. They load into timm's {' / '.join(map(repr, fits))} "
            f"(converted automatically, e.g. BackboneFeatures({fits[0]!r}, weights=...)), "
            f"or rename them yourself with sknc.features.{convert.__name__}(state_dict, model)."
        )
    try:
        return convert(state, module)
    except ValueError as exc:
        raise ValueError(
            f"Weights {label} are in {what} layout, which does not fit this "
            f"{type(module).__name__} ({exc}); they fit timm's "
            f"{' / '.join(map(repr, fits))}."
        ) from exc


def weights_fingerprint(module):
    """Content hash (hex) of ``module.state_dict()``: names, dtypes, shapes and values."""

    h = hashlib.blake2b(digest_size=20)
    for key, value in module.state_dict().items():
        t = value.detach()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        flat = t.to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def zero_scale_layers(module):
    """Paths of the layers of ``module`` that output zero: all-zero scales.

    Normalisation layers whose weight (scale) is all zeros, and convolutions
    whose weight or ``gain`` (timm's scaled weight-standardised convolutions)
    is all zeros. Random initialisation never gives such a layer except on
    purpose: timm's ``zero_init_last=True`` (the default of its ResNets,
    RegNets, CSP and NF nets, ...) zeroes the last BatchNorm (or gain) of
    every residual block so that its residual branch starts switched off.
    """
    from torch import nn

    norms = (
        nn.modules.batchnorm._BatchNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.GroupNorm,
        nn.LayerNorm,
    )

    def zero(t):
        return isinstance(t, torch.Tensor) and t.numel() > 0 and not bool(t.any())

    found = []
    with torch.no_grad():
        for name, mod in module.named_modules():
            if isinstance(mod, norms):
                scales = [getattr(mod, "weight", None)]
            elif isinstance(mod, nn.modules.conv._ConvNd):
                scales = [mod.weight, getattr(mod, "gain", None)]
            else:
                continue
            if any(zero(t) for t in scales):
                found.append(name)
    return found


def warn_identity_blocks(module, model, *, what):
    """Warn when a random-init ``module`` has zero-scale layers (residual branches off).

    ``model`` is what the user passed (a timm name gets the ``zero_init_last``
    hint); ``what`` names the frozen use, e.g. ``"features"``. Call it only
    for backbones built with random weights (no ``pretrained``, no
    ``weights``, not a module instance the user may have trained).
    """
    from ..utils._warnings import warn_external

    zero = zero_scale_layers(module)
    if not zero:
        return
    fix = "build it without zero scales"
    if isinstance(model, str):
        fix += " (model_kwargs={'zero_init_last': False} for timm's ResNets, RegNets, ...)"
    warn_external(
        f"The backbone has random weights (pretrained=False, weights=None) and "
        f"{len(zero)} layer(s) with all-zero scales ({_few(zero)}), as timm's "
        "zero_init_last=True leaves them: those residual branches output zero until trained, "
        f"so the frozen {what} barely use their blocks. For pretrained {what} pass "
        f"pretrained=True or weights=...; for a random baseline, {fix}.",
        UserWarning,
    )


# --------------------------------------------------------------------------
# classifier and layers
# --------------------------------------------------------------------------
def classifier_name(module):
    """Dotted path of the final classifier layer of ``module``, or None.

    timm models: the module returned by ``get_classifier()`` (its first
    element for models with several heads), found among ``named_modules``.
    Other modules: the last ``nn.Linear`` in module registration order, which
    is the forward order for the usual ``Sequential``-style nets.
    """
    from torch import nn

    if hasattr(module, "get_classifier"):
        try:
            clf = module.get_classifier()
        except Exception:
            clf = None
        if isinstance(clf, (tuple, list)):
            clf = clf[0] if clf else None
        if isinstance(clf, nn.Module):
            for name, sub in module.named_modules():
                if sub is clf and name:
                    return name
    last = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear) and name:
            last = name
    return last


def _set_submodule(module, path, new):
    parent_path, _, child = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    setattr(parent, child, new)


def strip_classifier(module):
    """Replace the classifier by identity, in place; return the feature width.

    timm models: ``module.reset_classifier(0)``, after which ``module(x)``
    equals ``forward_head(forward_features(x), pre_logits=True)``; the width
    is ``head_hidden_size`` (which differs from ``num_features`` for models
    with a pre-logits MLP) or ``num_features``. Other modules: the last
    ``nn.Linear`` (see :func:`classifier_name`) is swapped for
    ``nn.Identity`` and its ``in_features`` returned.

    Raises
    ------
    ValueError
        If no classifier can be found.
    """
    from torch import nn

    if _is_timm_model(module) and hasattr(module, "reset_classifier"):
        module.reset_classifier(0)
        width = getattr(module, "head_hidden_size", None) or getattr(module, "num_features", None)
        if width is None:  # pragma: no cover - all timm models define num_features
            raise ValueError(f"Cannot tell the feature width of {type(module).__name__}.")
        return int(width)
    name = classifier_name(module)
    if name is None:
        raise ValueError(
            f"{type(module).__name__} has no nn.Linear classifier to strip; pass a module "
            "that returns features, or pick intermediate layers."
        )
    linear = module.get_submodule(name)
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"The classifier {name!r} of {type(module).__name__} is not nn.Linear.")
    _set_submodule(module, name, nn.Identity())
    return int(linear.in_features)


def _contains(parent, target):
    return any(m is target for m in parent.modules())


def list_layers(module):
    """The named blocks users can pick, in forward order.

    timm models: the ``module`` entries of ``feature_info`` (e.g.
    ``['act1', 'layer1', ..., 'layer4']`` for a ResNet, ``['blocks.0', ...,
    'blocks.11']`` for a ViT); these are the blocks ``forward_intermediates``
    indexes. Other modules: the top-level children in registration order,
    where a child that *contains* the classifier (e.g. ``vgg.classifier``)
    is expanded into its own children and the classifier itself is left out.
    Any other module path (``'layer3.1'``) can still be asked for by name.

    Parameters
    ----------
    module : torch.nn.Module or str
        The model (a timm name is built with random weights).

    Returns
    -------
    list of str

    Examples
    --------
    >>> from sknc.features import list_layers
    >>> list_layers("resnet18")
    ['act1', 'layer1', 'layer2', 'layer3', 'layer4']
    """
    from ._text import is_text_model, list_text_layers

    if is_text_model(module):  # Hugging Face / sentence-transformers encoders
        return list_text_layers(module)
    if isinstance(module, str):
        module = create_backbone(module)
    names = dict(module.named_modules())
    info = getattr(module, "feature_info", None)
    if _is_timm_model(module) and isinstance(info, (list, tuple)) and info:
        out = []
        for entry in info:
            path = entry.get("module") if isinstance(entry, Mapping) else None
            if path and path in names and path not in out:
                out.append(path)
        if out:
            return out
    clf_name = classifier_name(module)
    clf = names.get(clf_name) if clf_name else None
    out = []

    def walk(mod, prefix):
        for child_name, child in mod.named_children():
            path = f"{prefix}{child_name}"
            if clf is not None and child is clf:
                continue
            if clf is not None and _contains(child, clf):
                walk(child, path + ".")
            else:
                out.append(path)

    walk(module, "")
    return out


def resolve_layer(module, layer):
    """Turn a block index or a module path into a dotted module path.

    Parameters
    ----------
    module : torch.nn.Module
    layer : int or str
        An index into :func:`list_layers` (negative counts from the end; NB
        this is *not* timm's "last n blocks" meaning of an integer
        ``indices``), or a module path such as ``'layer3'``, ``'layer3.5'``
        or ``'blocks.6'``.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For an unknown name or an index out of range, listing the valid
        blocks and the closest module paths.
    """
    blocks = list_layers(module)
    if isinstance(layer, (bool, np.bool_)):
        raise ValueError(f"layer must be an int or a str, got {layer!r}.")
    if isinstance(layer, (int, np.integer)):
        idx = int(layer)
        if not -len(blocks) <= idx < len(blocks):
            raise ValueError(
                f"Layer index {idx} is out of range for {type(module).__name__}, which "
                f"has {len(blocks)} blocks: {blocks}."
            )
        return blocks[idx]
    if not isinstance(layer, str):
        raise ValueError(f"layer must be an int or a str, got {type(layer).__name__}.")
    names = [n for n, _ in module.named_modules() if n]
    if layer in names:
        return layer
    close = difflib.get_close_matches(layer, names, n=_MAX_LISTED, cutoff=0.5)
    hint = f" Closest module paths: {close}." if close else ""
    raise ValueError(
        f"Unknown layer {layer!r} for {type(module).__name__}. Valid blocks: {blocks}.{hint} "
        "Any path from module.named_modules() works too."
    )


# --------------------------------------------------------------------------
# pooling and layer taps
# --------------------------------------------------------------------------
def token_info(module):
    """How to pool the blocks of ``module``: ``(num_prefix_tokens, has_class_token, fmt)``.

    ``num_prefix_tokens`` comes from timm's attribute of that name (class,
    distillation and register tokens), else 1 for modules with a
    ``class_token``/``cls_token`` (e.g. torchvision's ViT), else 0.
    ``has_class_token`` is timm's flag when present. ``fmt`` is the layout of
    4-D block outputs: timm's ``output_fmt`` (``'NHWC'`` for Swin), else
    ``'NCHW'``.
    """
    n_prefix = getattr(module, "num_prefix_tokens", None)
    has_cls = getattr(module, "has_class_token", None)
    if n_prefix is None:
        token = getattr(module, "cls_token", None)
        if token is None:
            token = getattr(module, "class_token", None)
        n_prefix = 1 if token is not None and not isinstance(token, bool) else 0
    n_prefix = int(n_prefix)
    if has_cls is None or not isinstance(has_cls, (bool, np.bool_)):
        has_cls = n_prefix > 0
    fmt = getattr(module, "output_fmt", "NCHW")
    fmt = str(getattr(fmt, "value", fmt)).upper()
    if fmt not in ("NCHW", "NHWC"):
        fmt = "NCHW"
    return n_prefix, bool(has_cls), fmt


def pool_features(t, num_prefix_tokens=0, pool="auto", *, has_class_token=None, fmt="NCHW"):
    """Reduce one layer output to a ``(N, C)`` tensor.

    Parameters
    ----------
    t : torch.Tensor or tuple/list of tensors
        A layer output; for a tuple or list the first element is used.
    num_prefix_tokens : int, default=0
        Number of leading non-patch tokens (class, distillation, register
        tokens) in 3-D token outputs.
    pool : {"auto", "avg", "token", "max", "flatten"}, default="auto"
        - 4-D feature maps: "auto"/"avg" global average over space, "max"
          global max, "flatten" reshape to ``(N, -1)``.
        - 3-D tokens ``(N, T, C)``: "auto" takes the class token when there
          is one, otherwise the mean of the patch tokens; "token" the class
          token; "avg"/"max" the mean/max over the non-prefix tokens;
          "flatten" all tokens reshaped.
        - 2-D outputs are returned as they are (any pool but "token").
    has_class_token : bool or None, default=None
        Whether token 0 is a class token; None means ``num_prefix_tokens > 0``.
    fmt : {"NCHW", "NHWC"}, default="NCHW"
        Layout of 4-D outputs (timm's Swin blocks are NHWC).

    Returns
    -------
    torch.Tensor of shape (N, C)
    """
    if pool not in _POOLS:
        raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}.")
    while isinstance(t, (tuple, list)):
        if not t:
            raise ValueError("Cannot pool an empty tuple of layer outputs.")
        t = t[0]
    if has_class_token is None:
        has_class_token = num_prefix_tokens > 0
    if t.ndim == 2:
        if pool == "token":
            raise ValueError("pool='token' needs a 3-D token output, got a 2-D output.")
        return t
    if t.ndim == 3:
        if pool == "flatten":
            return t.reshape(t.shape[0], -1)
        if pool == "token" or (pool == "auto" and has_class_token):
            if not has_class_token:
                raise ValueError("pool='token' needs a model with a class token.")
            return t[:, 0]
        patches = t[:, num_prefix_tokens:]
        return patches.amax(dim=1) if pool == "max" else patches.mean(dim=1)
    if t.ndim >= 4:
        if pool == "token":
            raise ValueError(f"pool='token' needs a 3-D token output, got a {t.ndim}-D output.")
        if pool == "flatten":
            return t.reshape(t.shape[0], -1)
        if fmt == "NHWC" and t.ndim == 4:
            dims = (1, 2)
        else:
            dims = tuple(range(2, t.ndim))
        return t.amax(dim=dims) if pool == "max" else t.mean(dim=dims)
    raise ValueError(f"Cannot pool a {t.ndim}-D layer output of shape {tuple(t.shape)}.")


class _StopForward(Exception):
    """Raised by a hook once every requested layer has been captured."""


class LayerTap(nn.Module):
    """Pooled outputs of several layers of ``backbone`` from one forward pass.

    Forward hooks are registered on the requested module paths when the
    tap is built; ``forward(x)`` returns a list with one ``(N, C_i)``
    tensor per entry of ``layers``. The entry :data:`PENULTIMATE` stands
    for the backbone's own output (after :func:`strip_classifier` these
    are the pre-logits features), pooled with ``pool="auto"``. When
    ``stop_early`` is true and the penultimate output is not requested,
    the forward pass stops as soon as the last requested block has run.
    Gradients flow through the taps, so fine-tuners can use it in
    training. A module called several times per forward contributes its
    first call. Call :meth:`remove` to detach the hooks.

    Parameters
    ----------
    backbone : torch.nn.Module
    layers : list of str
        Resolved module paths (see :func:`resolve_layer`) and/or
        :data:`PENULTIMATE`.
    pool : str, default="auto"
        Pooling for the intermediate layers; see :func:`pool_features`.
    num_prefix_tokens, has_class_token, fmt : optional
        Pooling details; inferred with :func:`token_info` when None.
    stop_early : bool, default=True
    """

    def __init__(
        self,
        backbone,
        layers,
        *,
        pool="auto",
        num_prefix_tokens=None,
        has_class_token=None,
        fmt=None,
        stop_early=True,
    ):
        super().__init__()
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}.")
        self.backbone = backbone
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("LayerTap needs at least one layer.")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"Duplicate layers in {self.layers}.")
        n_prefix, has_cls, fmt_ = token_info(backbone)
        self.pool = pool
        self.num_prefix_tokens = n_prefix if num_prefix_tokens is None else num_prefix_tokens
        self.has_class_token = has_cls if has_class_token is None else has_class_token
        self.fmt = fmt_ if fmt is None else fmt
        self._taps = [p for p in self.layers if p != PENULTIMATE]
        self.stop_early = bool(stop_early) and PENULTIMATE not in self.layers
        self._captured = {}
        self._active = False
        self._handles = []
        modules = dict(backbone.named_modules())
        for path in self._taps:
            if path not in modules or not path:
                raise ValueError(f"{type(backbone).__name__} has no module {path!r}.")
            self._handles.append(modules[path].register_forward_hook(self._hook(path)))

    def _hook(self, path):
        def hook(_module, _inputs, output):
            # a tap only records during its own forward (other taps on the
            # same backbone, or plain calls of the backbone, are not affected)
            if not self._active or path in self._captured:
                return
            self._captured[path] = pool_features(
                output,
                self.num_prefix_tokens,
                self.pool,
                has_class_token=self.has_class_token,
                fmt=self.fmt,
            )
            if self.stop_early and len(self._captured) == len(self._taps):
                raise _StopForward

        return hook

    def forward(self, x):
        self._captured = {}
        self._active = True
        out = None
        try:
            out = self.backbone(x)
        except _StopForward:
            pass
        finally:
            self._active = False
        captured, self._captured = self._captured, {}
        result = []
        for path in self.layers:
            if path == PENULTIMATE:
                result.append(
                    pool_features(
                        out,
                        self.num_prefix_tokens,
                        "auto",
                        has_class_token=self.has_class_token,
                        fmt=self.fmt,
                    )
                )
            elif path in captured:
                result.append(captured[path])
            else:
                raise RuntimeError(
                    f"Layer {path!r} of {type(self.backbone).__name__} did not run "
                    "during the forward pass."
                )
        return result

    def remove(self):
        """Remove the forward hooks from the backbone."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

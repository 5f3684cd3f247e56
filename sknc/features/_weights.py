"""Weights: reading, unwrapping and loading weight files; the classifier head.

read_state_dict(weights)
    Read and unwrap a weight file (or mapping) into a flat ``{name: tensor}``
    dict, safely (safetensors, or ``torch.load(weights_only=True)``).
load_weights(module, weights, *, allow_head_mismatch=True)
    Load a weight file or state dict into a module strictly, stripping wrapper
    prefixes and converting known foreign layouts (:mod:`._convert`).
classifier_name(module), strip_classifier(module)
    Find the final classifier layer; replace it by identity in place and
    return the feature width.
weights_fingerprint(module)
    Content hash of a module's state dict (names, dtypes, shapes, values).
zero_scale_layers(module), warn_identity_blocks(module, model, *, what)
    Layers with all-zero scales (timm's ``zero_init_last``) and the warning
    for random-init backbones used frozen.
"""

import hashlib
import os
from collections.abc import Mapping

import torch
from torch import nn

from ._convert import WEIGHT_LAYOUTS, detect_layout

__all__ = [
    "classifier_name",
    "is_timm_model",
    "load_weights",
    "read_state_dict",
    "strip_classifier",
    "warn_identity_blocks",
    "weights_fingerprint",
    "zero_scale_layers",
]

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
_KNOWN_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.")
_MAX_LISTED = 6
# torch's public layer classes (timm's BatchNormAct2d, ScaledStdConv2d, ... subclass them)
_NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)
_CONV_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def is_timm_model(module):
    """Whether ``module`` is a timm model (defined in timm or carrying a ``pretrained_cfg``)."""
    return type(module).__module__.startswith("timm.") or hasattr(module, "pretrained_cfg")


def _few(items):
    items = list(items)
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return shown + more


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

    Parameters
    ----------
    weights : str, path-like or mapping
        A ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file, or a
        (possibly nested) state dict.

    Returns
    -------
    dict {str: torch.Tensor}

    Raises
    ------
    ValueError
        If the file is missing, cannot be loaded safely, or holds no tensors.

    Examples
    --------
    >>> import torch
    >>> from sknc.features import read_state_dict
    >>> torch.save({"epoch": 3, "state_dict": {"w": torch.ones(2)}}, "checkpoint.pth")
    >>> read_state_dict("checkpoint.pth")
    {'w': tensor([1., 1.])}
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
    if len(set(own).intersection(state)) * 2 >= len(own):
        return state
    layout = detect_layout(state)
    if layout is None:
        return state
    what, fits, convert = WEIGHT_LAYOUTS[layout]
    timm_like = is_timm_model(module) and hasattr(module, "blocks") and hasattr(module, "conv_stem")
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
    norms = _NORM_LAYERS

    def zero(t):
        return isinstance(t, torch.Tensor) and t.numel() > 0 and not bool(t.any())

    found = []
    with torch.no_grad():
        for name, mod in module.named_modules():
            if isinstance(mod, norms):
                scales = [getattr(mod, "weight", None)]
            elif isinstance(mod, _CONV_LAYERS):
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
    from ..utils._warnings import RandomWeightsWarning, warn_external

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
        RandomWeightsWarning,
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

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    str or None

    Examples
    --------
    >>> from torch import nn
    >>> from sknc.features import classifier_name, create_backbone
    >>> classifier_name(create_backbone("resnet18"))
    'fc'
    >>> classifier_name(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    '2'
    """
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

    Parameters
    ----------
    module : torch.nn.Module
        Modified in place.

    Returns
    -------
    int
        The width of the features ``module`` now returns.

    Raises
    ------
    ValueError
        If no classifier can be found.

    Examples
    --------
    >>> import torch
    >>> from sknc.features import create_backbone, strip_classifier
    >>> model = create_backbone("resnet18")
    >>> strip_classifier(model)
    512
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 512])
    """
    if is_timm_model(module) and hasattr(module, "reset_classifier"):
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

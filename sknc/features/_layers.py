"""Layers: listing and resolving a backbone's blocks, pooling their outputs, taps.

list_layers(module)
    The named blocks users can pick, in forward order.
resolve_layer(module, layer)
    Block index (into ``list_layers``) or module path -> dotted module path.
token_info(module)
    ``(num_prefix_tokens, has_class_token, fmt)`` for pooling the outputs of
    ``module``'s blocks.
pool_features(t, num_prefix_tokens=0, pool="auto", *, has_class_token=None, fmt="NCHW")
    Reduce one layer output to a ``(N, C)`` matrix.
LayerTap
    ``nn.Module`` wrapper whose forward returns the pooled outputs of several
    layers (and/or the penultimate features) from one forward pass, via
    forward hooks; stops the forward early when only intermediate blocks are
    needed.
PENULTIMATE
    The layer name ``"penultimate"``: the pre-logits features (model output
    after :func:`~sknc.features.strip_classifier`).
"""

import difflib
from collections.abc import Mapping

import numpy as np
from torch import nn

from ..utils._options import FEATURE_POOLS
from ._create import create_backbone
from ._weights import _MAX_LISTED, classifier_name, is_timm_model

__all__ = [
    "PENULTIMATE",
    "POOLS",
    "LayerTap",
    "list_layers",
    "pool_features",
    "resolve_layer",
    "token_info",
]

PENULTIMATE = "penultimate"
POOLS = FEATURE_POOLS


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
    if is_timm_model(module) and isinstance(info, (list, tuple)) and info:
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

    Examples
    --------
    >>> from sknc.features import create_backbone, resolve_layer
    >>> model = create_backbone("resnet18")
    >>> resolve_layer(model, -1), resolve_layer(model, "layer3.1")
    ('layer4', 'layer3.1')
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

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    tuple (int, bool, str)

    Examples
    --------
    >>> from sknc.features import create_backbone, token_info
    >>> token_info(create_backbone("resnet18"))
    (0, False, 'NCHW')
    >>> vit = create_backbone("vit_tiny_patch16_224", model_kwargs={"img_size": 32, "depth": 1})
    >>> token_info(vit)
    (1, True, 'NCHW')
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

    Examples
    --------
    >>> import torch
    >>> from sknc.features import pool_features
    >>> pool_features(torch.ones(2, 8, 4, 4)).shape  # feature map: mean over space
    torch.Size([2, 8])
    >>> tokens = torch.arange(12.0).reshape(1, 3, 4)  # one class token, two patches
    >>> pool_features(tokens, num_prefix_tokens=1, pool="avg")
    tensor([[6., 7., 8., 9.]])
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}.")
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

    Examples
    --------
    >>> import torch
    >>> from sknc.features import LayerTap, create_backbone, strip_classifier
    >>> model = create_backbone("resnet18")
    >>> width = strip_classifier(model)
    >>> with LayerTap(model, ["layer2", "penultimate"]) as tap, torch.no_grad():
    ...     layer2, features = tap(torch.rand(2, 3, 32, 32))
    >>> tuple(layer2.shape), tuple(features.shape)
    ((2, 128), (2, 512))
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
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}.")
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

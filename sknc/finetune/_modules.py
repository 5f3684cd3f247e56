"""Pure-torch building blocks of :mod:`sknc.finetune` (no scikit-learn, no skorch).

Contents
--------
METHODS
    The fine-tuning methods: ``"linear-probe"``, ``"layer-ft"``, ``"scl-ft"``,
    ``"full-ft"`` and the parameter-efficient baselines ``"lora"``,
    ``"bitfit"``, ``"norm"``.
FineTuneNet(model, n_classes, method="scl-ft", tuned_block=None, ...)
    The network the estimators train: a backbone built with
    :func:`sknc.features.create_backbone` whose classifier is
    stripped, an optional skip branch from the tuned block (SCL-FT), LoRA
    adapters (``"lora"``, see :mod:`sknc.finetune._peft`) and a new linear
    head. Freezing, BatchNorm/dropout handling of frozen parts and the
    prefix/suffix split used for activation caching live here.
SkipBranch(in_features, out_features, ...)
    Pooled block output -> (norm) -> projection, zero-initialised so that
    SCL-FT starts exactly at Layer FT.
LowRankLinear(in_features, out_features, rank, zero_init=True)
    ``up(down(x))`` with ``up`` zero-initialised.
BackboneSplit / split_backbone(backbone, block_path, example)
    torch.fx split of a backbone at the input of one block: ``prefix(x)``
    returns the activations that cross the cut, ``suffix(*cut)`` the
    backbone output.
default_tuned_block(backbone, blocks=None)
    The documented default block to tune.
candidate_blocks(backbone, blocks=None)
    The fine-grained blocks in forward order (what ``last_k`` counts and
    ``tuned_block="auto"`` chooses from).
layerwise_nc1(backbone, batches, y, blocks, ...)
    NC1 of the pooled output of each block on labelled data (one forward pass
    per batch with a layer tap).
select_block_by_collapse(block_nc, tolerance=0.1)
    The ``tuned_block="auto"`` rule applied to per-block NC1 values.
norm_modules(module)
    The normalisation layers whose affine parameters ``"norm"`` tunes.
resolve_tuned_block(backbone, tuned_block, blocks=None)
    Validate a block index / module path (or pick the default).
count_parameters(module)
    ``(n_params, n_trainable_params)`` counting shared parameters once.
"""

import math
import numbers
import re
from types import SimpleNamespace

import torch
from torch import nn

from ..features import (
    LayerTap,
    classifier_name,
    create_backbone,
    list_layers,
    pool_features,
    resolve_data_config,
    resolve_layer,
    strip_classifier,
    token_info,
)
from ..utils._options import (
    CACHEABLE_METHODS,
    METHODS,
    PEFT_METHODS,
    TUNED_METHODS,
    Interval,
    validate_params,
)
from ._params import AUTO_BLOCK_TOLERANCE, NET_PARAMETER_CONSTRAINTS

__all__ = [
    "METHODS",
    "BackboneSplit",
    "FineTuneNet",
    "LowRankLinear",
    "SkipBranch",
    "SplitError",
    "candidate_blocks",
    "count_parameters",
    "default_tuned_block",
    "layerwise_nc1",
    "norm_modules",
    "resolve_tuned_block",
    "resolve_tuned_blocks",
    "select_block_by_collapse",
    "split_backbone",
]


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def count_parameters(module):
    """``(n_params, n_trainable_params)`` of ``module``; shared parameters count once."""
    total = trainable = 0
    for p in module.parameters():  # parameters() de-duplicates shared tensors
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


def _stage_blocks(module, path):
    """Sub-block paths when ``module`` is a stage: a Sequential/ModuleList (or a
    module with such a ``.blocks``) whose parametrised children are themselves
    composite blocks (not single layers such as a conv or a norm)."""
    container, prefix = module, path
    if not isinstance(container, (nn.Sequential, nn.ModuleList)):
        inner = getattr(module, "blocks", None)
        if not isinstance(inner, (nn.Sequential, nn.ModuleList)):
            return None
        container, prefix = inner, f"{path}.blocks"
    children = [(name, child) for name, child in container.named_children() if _n_params(child) > 0]
    if not children or not all(any(True for _ in child.children()) for _, child in children):
        return None
    return [f"{prefix}.{name}" for name, _ in children]


def default_tuned_block(backbone, blocks=None):
    """The block SCL-FT / Layer FT tune when ``tuned_block=None``.

    Rule (documented in :class:`~sknc.finetune.FineTuningClassifier`): take
    the blocks of :func:`~sknc.features.list_layers` that have
    parameters. If at least two of them are *stages* (an ``nn.Sequential`` /
    ``nn.ModuleList`` of composite blocks, or a module with such a ``.blocks``
    attribute, as in ResNet, EfficientNet, ConvNeXt), return the last block
    of the penultimate stage (``"layer3.5"`` for a ResNet-50, ``"layer3.1"``
    for a ResNet-18). Otherwise (ViT-style flat block lists, plain modules)
    return the block at two thirds of the depth, index ``ceil(2 n / 3) - 1``
    (``"blocks.7"`` of the twelve blocks of a ViT-B).

    Parameters
    ----------
    backbone : torch.nn.Module
    blocks : list of str or None
        ``list_layers(backbone)`` computed before the classifier was
        stripped; computed here when None.

    Returns
    -------
    str
    """
    blocks = list_layers(backbone) if blocks is None else list(blocks)
    modules = dict(backbone.named_modules())
    candidates = [b for b in blocks if b in modules and _n_params(modules[b]) > 0]
    if not candidates:
        raise ValueError(
            f"{type(backbone).__name__} has no block with parameters to tune "
            f"(blocks: {blocks}); pass tuned_block= a module path."
        )
    stages = [(b, _stage_blocks(modules[b], b)) for b in candidates]
    stages = [(b, subs) for b, subs in stages if subs]
    if len(stages) >= 2:
        return stages[-2][1][-1]
    idx = max(math.ceil(2 * len(candidates) / 3) - 1, 0)
    return candidates[idx]


def resolve_tuned_block(backbone, tuned_block, blocks=None):
    """Validate ``tuned_block`` (index into ``list_layers``, module path or None).

    Raises
    ------
    ValueError
        For unknown names / out-of-range indices (listing the valid blocks)
        and for blocks without parameters.
    """
    if tuned_block is None:
        return default_tuned_block(backbone, blocks)
    path = resolve_layer(backbone, tuned_block)
    module = backbone.get_submodule(path)
    if _n_params(module) == 0:
        valid = blocks if blocks is not None else list_layers(backbone)
        raise ValueError(
            f"tuned_block={tuned_block!r} resolves to {path!r} "
            f"({type(module).__name__}), which has no parameters to tune. "
            f"Pick a block with parameters, e.g. one of {valid}."
        )
    return path


def candidate_blocks(backbone, blocks=None):
    """The fine-grained blocks of ``backbone`` in forward order.

    What ``last_k`` counts from the end and ``tuned_block="auto"`` chooses
    from. Start from :func:`~sknc.features.list_layers`; when its
    entries are all numbered children of one container (timm lists only the
    stages where the resolution drops, e.g. ``blocks.0, blocks.1, blocks.2,
    blocks.4, blocks.6`` for MobileNetV2), take every child of that
    container instead, so that no stage is skipped. Then every entry that is
    a *stage* (see :func:`default_tuned_block`) is replaced by its blocks,
    and entries without parameters are dropped: ``layer1.0`` ... ``layer4.1``
    for a ResNet-18, ``blocks.0.0`` ... ``blocks.6.0`` (17 blocks) for
    MobileNetV2, ``blocks.0`` ... ``blocks.11`` for a ViT-B.

    Parameters
    ----------
    backbone : torch.nn.Module
    blocks : list of str or None
        ``list_layers(backbone)`` computed before the classifier was
        stripped; computed here when None.

    Returns
    -------
    list of str

    Examples
    --------
    >>> import timm
    >>> from sknc.finetune._modules import candidate_blocks
    >>> candidate_blocks(timm.create_model("resnet18"))[-3:]
    ['layer3.1', 'layer4.0', 'layer4.1']
    """
    blocks = list_layers(backbone) if blocks is None else list(blocks)
    modules = dict(backbone.named_modules())
    parents = {b.rpartition(".")[0] for b in blocks}
    if len(parents) == 1 and all(b.rpartition(".")[2].isdigit() for b in blocks):
        parent = parents.pop()
        container = modules.get(parent)
        if isinstance(container, (nn.Sequential, nn.ModuleList)):
            blocks = [f"{parent}.{name}" for name, _ in container.named_children()]
    out = []
    for b in blocks:
        module = modules.get(b)
        if module is None or _n_params(module) == 0:
            continue
        subs = _stage_blocks(module, b)
        out.extend(subs if subs else [b])
    if not out:
        raise ValueError(
            f"{type(backbone).__name__} has no block with parameters (blocks: {blocks})."
        )
    return out


def resolve_tuned_blocks(backbone, tuned_block, last_k=None, blocks=None):
    """Module paths of the blocks Layer FT / SCL-FT train, as a list.

    Parameters
    ----------
    backbone : torch.nn.Module
    tuned_block : int, str, list of int/str or None
        One block (see :func:`resolve_tuned_block`), several, or None (the
        default block, or the last ``last_k`` blocks).
    last_k : int or None
        Tune the last ``last_k`` of :func:`candidate_blocks`; needs
        ``tuned_block=None``.
    blocks : list of str or None
        ``list_layers(backbone)`` before the classifier was stripped.

    Raises
    ------
    ValueError
        Unknown blocks, duplicates, nested blocks, both ``tuned_block`` and
        ``last_k``, or ``last_k`` out of range.
    """
    if isinstance(tuned_block, str) and tuned_block == "auto":
        raise ValueError(
            "tuned_block='auto' is chosen from the training data by FineTuningClassifier.fit; "
            "pass a block (index or module path) to FineTuneNet."
        )
    if last_k is not None:
        if tuned_block is not None:
            raise ValueError(
                f"Pass either tuned_block or last_k, not both (got tuned_block={tuned_block!r}, "
                f"last_k={last_k!r})."
            )
        if isinstance(last_k, bool) or not isinstance(last_k, numbers.Integral) or last_k < 1:
            raise ValueError(f"last_k must be a positive int or None, got {last_k!r}.")
        cands = candidate_blocks(backbone, blocks)
        if last_k > len(cands):
            raise ValueError(
                f"last_k={last_k} but {type(backbone).__name__} has only {len(cands)} blocks: "
                f"{cands}."
            )
        return cands[len(cands) - int(last_k) :]
    if isinstance(tuned_block, (list, tuple)):
        if not tuned_block:
            raise ValueError("tuned_block is an empty list; name at least one block.")
        paths = [resolve_tuned_block(backbone, b, blocks) for b in tuned_block]
    else:
        paths = [resolve_tuned_block(backbone, tuned_block, blocks)]
    if len(set(paths)) != len(paths):
        raise ValueError(f"tuned_block lists a block twice: {paths}.")
    for a in paths:
        for b in paths:
            if a != b and b.startswith(a + "."):
                raise ValueError(
                    f"tuned_block lists {b!r} inside {a!r}; name each block once "
                    "(the outer one tunes both)."
                )
    return paths


def select_block_by_collapse(block_nc, tolerance=AUTO_BLOCK_TOLERANCE):
    """The ``tuned_block="auto"`` rule: the first block after which NC1 stops improving.

    Li et al. (TMLR 2024) observe that the downstream features of a
    pretrained network collapse progressively with depth and that the
    blocks that no longer add collapse are where fine-tuning pays. With
    ``v_i = log10 NC1`` of the pooled output of block ``i`` (blocks in
    forward order, ``i = 0 .. L-1``) and the total drop
    ``D = v_0 - min_i v_i``, the chosen block is the first ``i >= 1`` for
    which no later block improves on block ``i - 1`` by more than
    ``tolerance * D``::

        v_{i-1} - min_{j >= i} v_j <= tolerance * D

    i.e. the first block from which on the frozen network stops collapsing
    the downstream classes; when every block keeps improving, the last
    block. One block: that block.

    Parameters
    ----------
    block_nc : dict {str: float}
        NC1 per block, in forward order (``FineTuningClassifier.block_nc_``).
    tolerance : float in [0, 1], default=0.1
        The share of the total drop ``D`` below which later improvement
        does not count (``FineTuningClassifier(auto_block_tolerance=...)``):
        smaller values choose later blocks, larger ones earlier blocks.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        When a value is not a positive finite number.

    Examples
    --------
    >>> from sknc.finetune._modules import select_block_by_collapse
    >>> select_block_by_collapse({"b1": 1.0, "b2": 0.1, "b3": 0.05, "b4": 0.049})
    'b4'
    >>> select_block_by_collapse({"b1": 1.0, "b2": 0.1, "b3": 0.099})
    'b3'
    """
    names = list(block_nc)
    if not names:
        raise ValueError("block_nc is empty.")
    validate_params(
        {"tolerance": [Interval("real", 0, 1)]},
        {"tolerance": tolerance},
        "select_block_by_collapse",
    )
    values = [float(block_nc[n]) for n in names]
    bad = [n for n, v in zip(names, values) if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(
            f"NC1 is not a positive finite number for blocks {bad}; the collapse rule "
            "cannot rank them (pass tuned_block explicitly)."
        )
    v = [math.log10(x) for x in values]
    total = v[0] - min(v)
    for i in range(1, len(v)):
        if v[i - 1] - min(v[i:]) <= tolerance * total:
            return names[i]
    return names[-1]


def layerwise_nc1(backbone, batches, y, blocks, *, pool="auto"):
    """NC1 (:func:`sknc.metrics.nc1`) of the pooled output of each block.

    Parameters
    ----------
    backbone : torch.nn.Module
        In eval mode; its parameters are not changed.
    batches : iterable of torch.Tensor
        Preprocessed input batches, in the order of ``y``.
    y : array-like of shape (n_samples,)
    blocks : list of str
        Module paths, tapped in one forward pass per batch.
    pool : str, default="auto"
        Pooling of the block outputs (:func:`pool_features`).

    Returns
    -------
    dict {str: float}
        In the order of ``blocks``; NaN where NC1 is not defined.
    """
    import warnings

    import numpy as np

    from ..metrics import nc1

    feats = [[] for _ in blocks]
    with LayerTap(backbone, list(blocks), pool=pool) as tap, torch.no_grad():
        for batch in batches:
            for store, out in zip(feats, tap(batch)):
                store.append(out.float().cpu())
    y = np.asarray(y)
    result = {}
    for b, parts in zip(blocks, feats):
        Z = torch.cat(parts).numpy().astype(np.float64)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result[b] = float(nc1(Z, y))
        except ValueError:
            result[b] = float("nan")
    return result


_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.RMSNorm,
)


def norm_modules(module):
    """``[(path, layer)]`` of the normalisation layers ``method="norm"`` tunes.

    torch's BatchNorm/LayerNorm/GroupNorm/InstanceNorm/RMSNorm (and their
    subclasses, e.g. timm's ``BatchNormAct2d``, ``LayerNorm2d``), plus any
    layer whose class name ends in ``Norm``/``Norm1d``/``Norm2d``/``Norm3d``
    and that holds parameters of its own (e.g. timm's ``RmsNorm``).
    """
    out = []
    for name, m in module.named_modules():
        direct = any(True for _ in m.parameters(recurse=False))
        if not direct:
            continue
        if isinstance(m, _NORM_TYPES) or re.search(r"Norm([123]d)?$", type(m).__name__):
            out.append((name, m))
    return out


def _zero_(linear):
    nn.init.zeros_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


# --------------------------------------------------------------------------
# skip branch
# --------------------------------------------------------------------------
class LowRankLinear(nn.Module):
    """Factorised linear map ``up(down(x))`` of rank ``rank``.

    ``down`` (no bias) keeps PyTorch's default initialisation; ``up`` is
    zero-initialised when ``zero_init`` is true, so the map starts at exactly
    zero while gradients reach ``up`` from the first step.
    """

    def __init__(self, in_features, out_features, rank, zero_init=True):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features)
        if zero_init:
            _zero_(self.up)

    def forward(self, x):
        return self.up(self.down(x))


def _resolve_rank(rank, in_features, out_features):
    """None (dense) or an int rank for the projection."""
    if rank is None:
        return None
    if rank == "auto":
        r = min(in_features, out_features) // 4
        if r < 1 or r * (in_features + out_features) >= in_features * out_features:
            return None
        return r
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise ValueError(f"projection_rank must be 'auto', None or a positive int, got {rank!r}.")
    rank = int(rank)
    if rank < 1:
        raise ValueError(f"projection_rank must be a positive int, got {rank}.")
    return rank


class SkipBranch(nn.Module):
    """Pooled tuned-block output -> (LayerNorm) -> projection.

    Parameters
    ----------
    in_features : int
        Width of the pooled block output.
    out_features : int
        Width of the penultimate features (used for ``"linear"``).
    combine : {"add", "concat"}
    projection : {"linear", "identity"}
        ``"linear"``: a linear map to ``out_features`` (dense, or low-rank
        with ``rank``). With ``combine="add"`` it is zero-initialised so that
        the network starts exactly at Layer FT; with ``"concat"`` it keeps the
        default initialisation (the head's extra columns are the zero-initialised
        part). ``"identity"``: no parameters.
    rank : int or None
        Rank of a factorised projection; None for a dense ``nn.Linear``.
    norm : bool
        Apply a ``LayerNorm`` (with affine parameters) before the projection.
    """

    def __init__(
        self,
        in_features,
        out_features,
        *,
        combine="add",
        projection="linear",
        rank=None,
        norm=False,
    ):
        super().__init__()
        self.in_features = int(in_features)
        self.combine = combine
        self.norm = nn.LayerNorm(self.in_features) if norm else nn.Identity()
        zero = combine == "add"
        if projection == "identity":
            self.proj = nn.Identity()
            self.out_features = self.in_features
        elif rank is None:
            self.proj = nn.Linear(self.in_features, out_features)
            if zero:
                _zero_(self.proj)
            self.out_features = int(out_features)
        else:
            self.proj = LowRankLinear(self.in_features, out_features, rank, zero_init=zero)
            self.out_features = int(out_features)

    def forward(self, g):
        return self.proj(self.norm(g))


# --------------------------------------------------------------------------
# prefix / suffix split (torch.fx)
# --------------------------------------------------------------------------
class SplitError(RuntimeError):
    """The backbone cannot be split cleanly at the tuned block."""


class BackboneSplit:
    """A backbone cut at the input of one block (plain object, not a Module).

    Attributes
    ----------
    prefix : torch.fx.GraphModule
        ``prefix(x) -> tuple`` of the tensors that cross the cut.
    suffix : torch.fx.GraphModule
        ``suffix(*cut) -> backbone output``. Shares its submodules and
        parameters with the backbone (hooks on the tuned block fire).
    n_cut : int
    """

    def __init__(self, prefix, suffix, n_cut):
        self.prefix = prefix
        self.suffix = suffix
        self.n_cut = n_cut


def _make_tracer(leaf_path, extra_leaves=()):
    import torch.fx as fx

    try:  # timm's registry of modules/functions that must not be traced through
        from timm.layers import get_notrace_functions, get_notrace_modules

        leaf_types = tuple(t for t in get_notrace_modules() if isinstance(t, type))
        functions = tuple(f for f in get_notrace_functions() if callable(f))
    except ImportError:  # pragma: no cover - timm is a dependency
        leaf_types, functions = (), ()

    class _SplitTracer(fx.Tracer):
        def __init__(self):
            super().__init__(autowrap_functions=functions)

        def is_leaf_module(self, m, module_qualified_name):
            if module_qualified_name == leaf_path or module_qualified_name in extra_leaves:
                return True
            if leaf_types and isinstance(m, leaf_types):
                return True
            return super().is_leaf_module(m, module_qualified_name)

    return _SplitTracer()


def split_backbone(backbone, block_path, example=None, leaves=()):
    """Split ``backbone`` at the input of ``block_path`` with torch.fx.

    The backbone is traced (in eval mode: frozen parts behave as at
    inference) with the block, and the modules in ``leaves`` (later tuned
    blocks, whose train-mode behaviour must not be frozen into the trace),
    as leaves. Nodes downstream of the block call
    form the suffix; every other node is the prefix; the non-parameter
    values the suffix reads from the prefix are the cut (usually one tensor,
    the block's input). When ``example`` is given, the split is checked on it:
    every cut value must be a tensor with the batch as first dimension and
    ``suffix(*prefix(example))`` must equal ``backbone(example)``.

    Raises
    ------
    SplitError
        When tracing fails, the block is not called exactly once, its output
        does not reach the model output, or the check fails.
    """
    tracer, graph = _trace(backbone, block_path, leaves)
    parts = _partition(list(graph.nodes), block_path)
    prefix, suffix = _split_graphs(tracer.root, parts)
    split = BackboneSplit(prefix, suffix, len(parts.cut))
    if example is not None:
        _check_split(backbone, split, example)
    return split


def _trace(backbone, block_path, leaves):
    """``(tracer, graph)`` of ``backbone`` in eval mode, the block and ``leaves`` as leaves."""
    was_training = backbone.training
    backbone.eval()
    try:
        tracer = _make_tracer(block_path, tuple(leaves))
        try:
            graph = tracer.trace(backbone)
        except Exception as exc:
            raise SplitError(
                f"torch.fx could not trace {type(backbone).__name__}: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
    finally:
        backbone.train(was_training)
    return tracer, graph


def _partition(nodes, block_path):
    """The nodes of each side of the cut at the input of ``block_path``.

    Returns a namespace with ``placeholders``, ``cut`` (values the suffix
    reads from the prefix that depend on the input: what is cached),
    ``constants`` (values the suffix reads that do not depend on the input:
    recomputed in the suffix), ``downstream`` (the block call and what
    depends on it) and ``output``.
    """
    calls = [n for n in nodes if n.op == "call_module" and n.target == block_path]
    if len(calls) != 1:
        raise SplitError(
            f"The block {block_path!r} is called {len(calls)} times in the traced graph; "
            "a clean cut needs exactly one call."
        )
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if not placeholders:
        raise SplitError("The traced graph has no input.")
    # nodes that depend on the image input (the first argument of forward)
    depends = _descendants(nodes, placeholders[0])
    downstream = _descendants(nodes, calls[0])
    output = next(n for n in nodes if n.op == "output")
    if output not in downstream:
        raise SplitError(f"The output of {block_path!r} does not reach the model output.")
    # Values the suffix reads from outside it: those that depend on the input
    # are cached (the cut); the others (parameters, buffers, extra arguments
    # with defaults such as attn_mask=None, and what is computed from them
    # alone) are recomputed in the suffix.
    cut, stack = [], []
    for n in nodes:
        if n not in downstream and any(u in downstream for u in n.users):
            (cut if n in depends else stack).append(n)
    constants = _ancestors(stack)
    return SimpleNamespace(
        placeholders=placeholders,
        cut=cut,
        constants=constants,
        downstream=downstream,
        output=output,
        nodes=nodes,
    )


def _descendants(nodes, root):
    """``root`` and every node (of the topologically sorted ``nodes``) that reads it."""
    found = set()
    for n in nodes:
        if n is root or any(a in found for a in n.all_input_nodes):
            found.add(n)
    return found


def _ancestors(start):
    """The nodes in ``start`` and every node they read, transitively."""
    found, stack = set(), list(start)
    while stack:
        n = stack.pop()
        if n not in found:
            found.add(n)
            stack.extend(n.all_input_nodes)
    return found


def _split_graphs(root, parts):
    """``(prefix, suffix)`` GraphModules from the partition of :func:`_partition`."""
    import torch.fx as fx

    # prefix graph: every input, then the ancestors of the cut values
    needed = set(parts.placeholders) | _ancestors(parts.cut)
    pg = fx.Graph()
    env = {}
    for n in parts.nodes:
        if n in needed:
            env[n] = pg.node_copy(n, lambda a: env[a])
    pg.output(tuple(env[c] for c in parts.cut))
    # suffix graph: placeholders for the cut, then constants and downstream nodes
    sg = fx.Graph()
    senv = {}
    for i, c in enumerate(parts.cut):
        senv[c] = sg.placeholder(f"cut_{i}")
    for n in parts.nodes:
        if n is parts.output:
            sg.output(fx.map_arg(n.args[0], lambda a: senv[a]))
        elif n in parts.downstream or n in parts.constants:
            senv[n] = sg.node_copy(n, lambda a: senv[a])
    prefix = fx.GraphModule(root, pg, class_name="BackbonePrefix")
    suffix = fx.GraphModule(root, sg, class_name="BackboneSuffix")
    return prefix, suffix


def _check_split(backbone, split, example):
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            ref = backbone(example)
            cut = split.prefix(example)
            for i, value in enumerate(cut):
                if (
                    not isinstance(value, torch.Tensor)
                    or value.ndim == 0
                    or value.shape[0] != example.shape[0]
                ):
                    what = (
                        f"shape {tuple(value.shape)}"
                        if isinstance(value, torch.Tensor)
                        else type(value).__name__
                    )
                    raise SplitError(
                        f"Value {i} crossing the cut is not a per-sample tensor ({what})."
                    )
            out = split.suffix(*cut)
    finally:
        backbone.train(was_training)
    ref = pool_features(ref) if isinstance(ref, (tuple, list)) else ref
    out = pool_features(out) if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        raise SplitError("The split backbone returns outputs of another shape.")
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    if not torch.allclose(out, ref, rtol=1e-4, atol=1e-5 * max(scale, 1.0)):
        raise SplitError("The split backbone does not reproduce the backbone's outputs.")


# --------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------
class FineTuneNet(nn.Module):
    """Backbone + (skip branch) + new linear head, frozen according to ``method``.

    ``forward(x)`` returns logits; ``forward(cached=...)`` runs only the part
    after the cached prefix (see :meth:`prefix_outputs`);
    :meth:`head_input` returns the features the head sees.

    Parameters
    ----------
    model : str, torch.nn.Module, nn.Module subclass or callable
        Passed to :func:`~sknc.features.create_backbone`.
    n_classes : int
        Outputs of the new head.
    method : {"linear-probe", "layer-ft", "scl-ft", "full-ft", "lora", "bitfit", "norm"}, \
default="scl-ft"
        What is trainable: the head only; the tuned block(s) and the head;
        the tuned block(s), the skip branch and the head; everything; LoRA
        adapters and the head; every bias of the backbone and the head; the
        affine parameters of every normalisation layer (:func:`norm_modules`)
        and the head.
    tuned_block : int, str, list of int/str or None, default=None
        Block(s) for Layer FT / SCL-FT (ignored otherwise); see
        :func:`resolve_tuned_blocks`, :func:`resolve_tuned_block` and
        :func:`default_tuned_block`. With several blocks the skip branch of
        SCL-FT reads the first of them in forward order.
    last_k : int or None, default=None
        Layer FT / SCL-FT: tune the last ``last_k`` blocks of
        :func:`candidate_blocks` (instead of ``tuned_block``).
    lora_rank, lora_alpha, lora_dropout, lora_targets : optional
        ``method="lora"``: rank ``r`` (default 8), scaling numerator
        ``alpha`` (None: equal to the rank, a scale of 1), dropout on the
        adapter input, and the adapted layers (``"auto"``: see
        :func:`sknc.finetune._peft.default_lora_targets`). Needs ``peft``.
    pretrained, weights, model_kwargs : optional
        Passed to ``create_backbone``.
    combine : {"add", "concat"}, default="add"
        SCL-FT: ``z = f + P(g)`` or ``z = [f, P(g)]`` (``f`` the penultimate
        features, ``g`` the pooled tuned-block output).
    projection : {"auto", "linear", "identity"}, default="auto"
        ``"auto"`` is ``"linear"`` for ``combine="add"`` and ``"identity"``
        for ``"concat"``. ``"identity"`` with ``"add"`` needs equal widths
        and does not start at Layer FT.
    projection_rank : "auto", int or None, default="auto"
        Rank of the ``"linear"`` projection: None is a dense
        ``nn.Linear(C, D)``; an int a factorisation ``up(down(g))``;
        ``"auto"`` uses rank ``min(C, D) // 4`` when that is cheaper than
        dense, else dense.
    skip_pool : {"auto", "avg", "token", "max"}, default="auto"
        Pooling of the block output (see
        :func:`~sknc.features.pool_features`): ``"auto"`` is the
        global average of feature maps and the class token of ViTs (token
        mean for models without one).
    skip_norm : bool, default=False
        LayerNorm on the pooled block output before the projection.
    input_size : tuple or None, default=None
        ``(C, H, W)`` of the probe forward pass used to measure the block's
        width; None uses the model's data config.
    seed : int or None, default=None
        Seed of the backbone's random initialisation (see
        ``create_backbone``); the head and skip branch draw from torch's
        global generator.

    The options are checked against the table
    :class:`~sknc.finetune.FineTuningClassifier` uses for the same names
    (``sknc.finetune._params.NET_PARAMETER_CONSTRAINTS``), with the same
    error messages.

    Notes
    -----
    * Frozen parameters have ``requires_grad=False``. In ``train()`` mode
      every frozen part of the backbone is put back in eval mode
      (BatchNorm uses and keeps its running statistics, dropout and
      drop-path are off), so a frozen part is a fixed function; only the
      tuned block (Layer FT / SCL-FT) or the whole backbone (full FT) trains.
    * Frozen parts before the tuned block run under ``torch.no_grad()``;
      blocks after it run with gradients (frozen, not removed), so that
      gradients reach the tuned block.

    Examples
    --------
    >>> import torch
    >>> from sknc.finetune import FineTuneNet
    >>> _ = torch.manual_seed(0)
    >>> net = FineTuneNet("resnet10t", n_classes=5, method="scl-ft", input_size=32)
    >>> net.tuned_block, net.feature_dim, net.block_width
    ('layer3.0', 512, 256)
    >>> net(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 5])
    >>> [n for n, p in net.named_parameters() if p.requires_grad][-2:]
    ['head.weight', 'head.bias']
    """

    def __init__(
        self,
        model,
        n_classes,
        method="scl-ft",
        tuned_block=None,
        *,
        pretrained=False,
        weights=None,
        model_kwargs=None,
        combine="add",
        projection="auto",
        projection_rank="auto",
        skip_pool="auto",
        skip_norm=False,
        input_size=None,
        seed=None,
        last_k=None,
        lora_rank=8,
        lora_alpha=None,
        lora_dropout=0.0,
        lora_targets="auto",
    ):
        # long: half of it is the one-per-line signature and option table of its 20
        # parameters (validated together against NET_PARAMETER_CONSTRAINTS)
        super().__init__()
        options = dict(
            method=method,
            tuned_block=tuned_block,
            pretrained=pretrained,
            weights=weights,
            model_kwargs=model_kwargs,
            combine=combine,
            projection=projection,
            projection_rank=projection_rank,
            skip_pool=skip_pool,
            skip_norm=skip_norm,
            input_size=input_size,
            last_k=last_k,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_targets=lora_targets,
        )
        # the estimator's table: FineTuningClassifier forwards these as module__*
        validate_params(NET_PARAMETER_CONSTRAINTS, options, type(self).__name__)
        n_classes = int(n_classes)
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}.")
        backbone = create_backbone(
            model, pretrained=pretrained, weights=weights, model_kwargs=model_kwargs, seed=seed
        )
        blocks = list_layers(backbone)
        self.method = method
        self.n_classes = n_classes
        self.classifier_name = classifier_name(backbone)
        tuned = (
            resolve_tuned_blocks(backbone, tuned_block, last_k, blocks)
            if method in TUNED_METHODS
            else []
        )
        self.feature_dim = strip_classifier(backbone)
        self.backbone = backbone
        self.combine = combine
        self.skip_pool = skip_pool
        self.num_prefix_tokens, self.has_class_token, self.fmt = token_info(backbone)
        self.input_size = tuple(resolve_data_config(backbone, input_size=input_size)["input_size"])
        if len(tuned) > 1:
            tuned = self._forward_order(tuned)
        self.tuned_blocks = tuple(tuned)
        # the first tuned block in forward order: the cut of prefix caching
        # and the source of SCL-FT's skip branch
        self.tuned_block = tuned[0] if tuned else None
        # The head is created first, identically for every method, so that
        # Layer FT and SCL-FT built from the same seed share it.
        head = nn.Linear(self.feature_dim, n_classes)
        self.skip = None
        self.block_width = None
        self.lora_targets = None
        self._captured = None
        self._outer_grad = None
        self._raw_capture = False
        self.__dict__["_split"] = None
        if method == "lora":
            self._inject_lora(lora_targets, lora_rank, lora_alpha, lora_dropout)
        for path in self.tuned_blocks:
            backbone.get_submodule(path).register_forward_pre_hook(self._enable_grad_hook)
        if self.tuned_block is not None and method == "scl-ft":
            head = self._build_skip(head, projection, projection_rank, skip_norm)
        self.head = head
        self._freeze()
        self.eval()

    def _inject_lora(self, targets, rank, alpha, dropout):
        from ._peft import inject_lora, resolve_lora_targets

        self.lora_targets = resolve_lora_targets(self.backbone, targets)
        rank = int(rank)
        inject_lora(
            self.backbone,
            self.lora_targets,
            rank=rank,
            alpha=rank if alpha is None else alpha,
            dropout=dropout,
        )

    def _build_skip(self, head, projection, projection_rank, skip_norm):
        """Hook the tuned block, build the skip branch; returns the (maybe widened) head."""
        block = self.backbone.get_submodule(self.tuned_block)
        block.register_forward_hook(self._capture_hook)
        self.block_width = self._probe_block_width()
        combine = self.combine
        proj = projection
        if proj == "auto":
            proj = "linear" if combine == "add" else "identity"
        if proj == "identity" and combine == "add" and self.block_width != self.feature_dim:
            raise ValueError(
                f"projection='identity' with combine='add' needs the pooled output "
                f"of {self.tuned_block!r} ({self.block_width} features) to be as wide "
                f"as the penultimate features ({self.feature_dim}); use "
                "projection='linear' or combine='concat'."
            )
        rank = (
            _resolve_rank(projection_rank, self.block_width, self.feature_dim)
            if proj == "linear"
            else None
        )
        self.skip = SkipBranch(
            self.block_width,
            self.feature_dim,
            combine=combine,
            projection=proj,
            rank=rank,
            norm=bool(skip_norm),
        )
        if combine != "concat":
            return head
        wide = nn.Linear(self.feature_dim + self.skip.out_features, head.out_features)
        with torch.no_grad():
            wide.weight.zero_()
            wide.weight[:, : self.feature_dim].copy_(head.weight)
            wide.bias.copy_(head.bias)
        return wide

    # -- structure ---------------------------------------------------------
    @property
    def head_in_features(self):
        """Width of the head's input features."""
        return self.head.in_features

    def _freeze(self):
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.trainable_backbone_parameters():
            p.requires_grad_(True)
        trainable = [self.head]
        if self.skip is not None:
            trainable.append(self.skip)
        for module in trainable:
            for p in module.parameters():
                p.requires_grad_(True)

    def trainable_backbone_parameters(self):
        """The backbone parameters ``method`` trains (a list, shared ones once).

        ``"full-ft"``: all; Layer FT / SCL-FT: those of the tuned blocks;
        ``"lora"``: the adapters (peft's ``lora_*`` parameters); ``"bitfit"``:
        every parameter named ``bias``; ``"norm"``: the parameters of
        :func:`norm_modules`; ``"linear-probe"``: none.
        """
        bb = self.backbone
        if self.method == "full-ft":
            params = list(bb.parameters())
        elif self.method in TUNED_METHODS:
            params = [p for b in self.tuned_blocks for p in bb.get_submodule(b).parameters()]
        elif self.method == "lora":
            params = [p for n, p in bb.named_parameters() if ".lora_" in f".{n}"]
        elif self.method == "bitfit":
            params = [p for n, p in bb.named_parameters() if n.rsplit(".", 1)[-1] == "bias"]
        elif self.method == "norm":
            params = [p for _, m in norm_modules(bb) for p in m.parameters(recurse=False)]
        else:
            params = []
        seen, out = set(), []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    def train(self, mode=True):
        """Set train mode, keeping every frozen part of the backbone in eval mode.

        For ``"lora"``, ``"bitfit"`` and ``"norm"`` the backbone stays in
        eval mode too (BatchNorm keeps its pretrained running statistics;
        only the named parameters train), except LoRA's own dropout.
        """
        super().train(mode)
        if mode and self.method != "full-ft":
            self.backbone.eval()
            for path in self.tuned_blocks:
                self.backbone.get_submodule(path).train(True)
            if self.method == "lora":
                from ._peft import lora_layers

                for _, layer in lora_layers(self.backbone):
                    layer.lora_dropout.train(True)
        return self

    def _forward_order(self, paths):
        """``paths`` sorted by when the blocks first run (one probe forward pass)."""
        order = []
        handles = [
            self.backbone.get_submodule(p).register_forward_pre_hook(
                lambda _m, _a, p=p: order.append(p) if p not in order else None
            )
            for p in paths
        ]
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                self.backbone(torch.zeros((2, *self.input_size)))
        finally:
            for h in handles:
                h.remove()
            self.backbone.train(was_training)
        missing = [p for p in paths if p not in order]
        if missing:
            raise ValueError(f"The tuned blocks {missing} did not run in a forward pass.")
        return order

    # -- LoRA ------------------------------------------------------------------
    def merge_lora(self):
        """Fold the LoRA updates into the base weights (same predictions, faster)."""
        from ._peft import merge_lora

        merge_lora(self.backbone)
        return self

    def unmerge_lora(self):
        """Undo :meth:`merge_lora`."""
        from ._peft import unmerge_lora

        unmerge_lora(self.backbone)
        return self

    def backbone_state_dict(self):
        """The backbone's state dict in the original model's layout (LoRA merged)."""
        if self.method == "lora":
            from ._peft import plain_state_dict

            return plain_state_dict(self.backbone)
        return self.backbone.state_dict()

    # -- hooks ---------------------------------------------------------------
    def _enable_grad_hook(self, _module, _args):
        # The prefix ran under no_grad; from the tuned block on, restore the
        # caller's grad mode (the enclosing no_grad context restores it after).
        if self._outer_grad is not None:
            torch.set_grad_enabled(self._outer_grad)

    def _pool_block(self, output):
        return pool_features(
            output,
            self.num_prefix_tokens,
            self.skip_pool,
            has_class_token=self.has_class_token,
            fmt=self.fmt,
        )

    def _capture_hook(self, _module, _args, output):
        if self._captured is None:
            self._captured = output if self._raw_capture else self._pool_block(output)

    def _probe_block_width(self):
        x = torch.zeros((2, *self.input_size))
        self._captured = None
        self._raw_capture = True  # the capture hook keeps the raw output
        try:
            with torch.no_grad():
                self.backbone(x)
            raw = self._captured
        except Exception as exc:
            raise ValueError(
                f"A probe forward pass of {type(self.backbone).__name__} on inputs of "
                f"shape {tuple(x.shape)} failed ({type(exc).__name__}: {str(exc)[:200]}); "
                "set input_size to what the model takes."
            ) from exc
        finally:
            self._captured = None
            self._raw_capture = False
        if raw is None:
            raise ValueError(
                f"The tuned block {self.tuned_block!r} did not run during the forward pass "
                f"of {type(self.backbone).__name__}."
            )
        try:
            captured = self._pool_block(raw)
        except ValueError as exc:
            raise ValueError(
                f"skip_pool={self.skip_pool!r} cannot pool the output of "
                f"{self.tuned_block!r}: {exc}"
            ) from exc
        if captured.ndim != 2:
            raise ValueError(
                f"Pooling the output of {self.tuned_block!r} gave shape "
                f"{tuple(captured.shape)}; expected (N, C)."
            )
        return int(captured.shape[1])

    # -- forward -------------------------------------------------------------
    def _pool_output(self, out):
        return pool_features(
            out, self.num_prefix_tokens, "auto", has_class_token=self.has_class_token, fmt=self.fmt
        )

    def _run_backbone(self, x):
        self._captured = None
        if self.method == "full-ft" or self.method in PEFT_METHODS:
            f = self.backbone(x)
        else:
            self._outer_grad = torch.is_grad_enabled() if self.tuned_block else None
            try:
                with torch.no_grad():
                    f = self.backbone(x)
            finally:
                self._outer_grad = None
        g, self._captured = self._captured, None
        return self._pool_output(f), g

    def _run_suffix(self, cached):
        cached = list(cached) if isinstance(cached, (list, tuple)) else [cached]
        if self.method == "linear-probe":
            return cached[0], None
        split = self.__dict__.get("_split")
        if split is None:
            raise RuntimeError("No prefix split was built; call build_split() first.")
        if len(cached) != split.n_cut:
            raise ValueError(f"Expected {split.n_cut} cached tensors, got {len(cached)}.")
        self._captured = None
        f = split.suffix(*cached)
        g, self._captured = self._captured, None
        return self._pool_output(f), g

    def _combine(self, f, g):
        if self.skip is None:
            return f
        if g is None:
            raise RuntimeError(f"The tuned block {self.tuned_block!r} did not run.")
        p = self.skip(g.to(f.dtype) if g.dtype != f.dtype else g)
        if self.combine == "add":
            return f + p
        return torch.cat([f, p.to(f.dtype)], dim=1)

    def head_input(self, x=None, cached=None):
        """Features fed to the head (``z``), from images ``x`` or a cached prefix."""
        if cached is not None:
            f, g = self._run_suffix(cached)
        elif x is not None:
            f, g = self._run_backbone(x)
        else:
            raise ValueError("Pass images x or cached prefix activations.")
        return self._combine(f, g)

    def forward(self, x=None, cached=None):
        """Logits from images ``x`` (N, C, H, W) or from ``cached`` prefix outputs."""
        return self.head(self.head_input(x, cached))

    # -- prefix caching ----------------------------------------------------------
    @property
    def split(self):
        """The :class:`BackboneSplit` in use, or None."""
        return self.__dict__.get("_split")

    def build_split(self, example):
        """Prepare prefix caching; ``example`` is a small batch of model inputs.

        Linear probe: the prefix is the whole backbone (nothing to trace).
        Layer FT / SCL-FT: :func:`split_backbone` at the tuned block.

        Raises
        ------
        ValueError
            For full FT, LoRA, BitFit and norm tuning (nothing is frozen
            before the first layer).
        SplitError
            When the backbone cannot be split cleanly.
        """
        if self.method not in CACHEABLE_METHODS:
            raise ValueError(
                f"Prefix caching does not apply to method={self.method!r}: its trainable "
                "parameters start at the first layer."
            )
        if self.method == "linear-probe":
            self.__dict__["_split"] = "backbone"
            return self.__dict__["_split"]
        split = split_backbone(
            self.backbone, self.tuned_block, example, leaves=self.tuned_blocks[1:]
        )
        self.__dict__["_split"] = split
        return split

    def prefix_outputs(self, x):
        """The cached values for a batch of images (call under ``torch.no_grad()``).

        Returns a tuple of tensors: the pooled penultimate features for a
        linear probe, the activations crossing the cut for Layer FT / SCL-FT.
        """
        split = self.__dict__.get("_split")
        if split is None:
            raise RuntimeError("No prefix split was built; call build_split() first.")
        if self.training:
            raise RuntimeError("prefix_outputs needs eval mode (call .eval() first).")
        if split == "backbone":
            return (self._pool_output(self.backbone(x)),)
        return tuple(split.prefix(x))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_split"] = None
        state["_captured"] = None
        state["_outer_grad"] = None
        state["_raw_capture"] = False
        return state

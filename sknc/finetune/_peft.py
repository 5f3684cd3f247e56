"""LoRA adapters through Hugging Face ``peft`` (the optional extra ``sknc[peft]``).

The core package imports nothing from ``peft``: every function here imports
it lazily, and :func:`import_peft` turns its absence into an ``ImportError``
that names the extra.

Contents
--------
import_peft()
    ``peft``, or an ``ImportError`` naming ``pip install 'sknc[peft]'``.
default_lora_targets(backbone)
    The layers LoRA adapts by default: the attention projections of
    transformers (``qkv``, or ``q``/``k``/``v`` projections), else every
    dense (``groups=1``) ``Conv2d`` of a CNN.
default_text_lora_targets(module, layer_names)
    The same for a Hugging Face text encoder: every ``nn.Linear`` of its
    transformer layers (``query``/``key``/``value`` and the ``dense``
    projections of BERT-like encoders).
resolve_lora_targets(backbone, targets)
    Validate ``"auto"``, a list of module paths / name suffixes, or a regex.
inject_lora(backbone, targets, rank, alpha, dropout)
    Wrap the target layers in LoRA layers (``peft.inject_adapter_in_model``);
    the base weights are untouched and ``lora_B`` starts at zero, so the
    adapted network computes exactly the original function at initialisation.
lora_layers(module)
    The ``(name, layer)`` pairs of the LoRA layers inside ``module``.
merge_lora(module) / unmerge_lora(module)
    Fold the low-rank updates into the base weights (and back).
plain_state_dict(backbone)
    The backbone's state dict with the LoRA updates merged, in the layout of
    the original model (no ``base_layer`` / ``lora_*`` keys).
"""

import copy
import re

from torch import nn

__all__ = [
    "PEFT_MISSING",
    "default_lora_targets",
    "default_text_lora_targets",
    "import_peft",
    "inject_lora",
    "lora_layers",
    "merge_lora",
    "plain_state_dict",
    "resolve_lora_targets",
    "unmerge_lora",
]

PEFT_MISSING = (
    "method='lora' needs the optional dependency 'peft' (Hugging Face PEFT), which is not "
    "installed. Install it with: pip install 'sknc[peft]'"
)

# attention projections, in order of preference (timm ViT/DeiT/Swin/EVA fuse
# q, k, v into one ``qkv`` Linear; Hugging Face models name them apart)
_ATTENTION_NAMES = (("qkv",), ("q_proj", "v_proj"), ("query", "value"), ("q", "v"))


def import_peft():
    """Import ``peft`` or raise an ``ImportError`` that names the ``sknc[peft]`` extra."""
    try:
        import peft
    except ImportError as exc:
        raise ImportError(PEFT_MISSING) from exc
    return peft


def _dense_conv(module):
    """A dense (``groups=1``) ``nn.Conv2d`` with torch's own forward.

    Subclasses with their own forward, such as timm's ``Conv2dSame`` (the
    TensorFlow "same" padding of ``tf_efficientnet*`` models), are left
    out: peft rebuilds a target's type for the low-rank factors with
    ``nn.Conv2d``'s arguments, which those do not take.
    """
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and type(module).forward is nn.Conv2d.forward
    )


def _adaptable(module):
    """Layers LoRA can wrap: ``nn.Linear`` and dense (``groups=1``) ``nn.Conv2d``."""
    return isinstance(module, nn.Linear) or _dense_conv(module)


def default_lora_targets(backbone):
    """Module paths LoRA adapts when ``lora_targets="auto"``.

    Rule: if the backbone has ``nn.Linear`` attention projections, adapt those
    (a fused ``qkv`` as in timm's ViTs; else ``q_proj``/``v_proj``, or
    ``query``/``value``, or ``q``/``v``: the query and value projections of
    the LoRA paper). Otherwise (CNNs) adapt every ``nn.Conv2d`` with
    ``groups=1`` (depthwise convolutions are left out: a low-rank update of
    a per-channel filter saves nothing; so are ``nn.Conv2d`` subclasses with
    their own forward, such as timm's ``Conv2dSame``, which peft cannot wrap). The classifier is stripped before
    this is called, so it is never a target.

    Parameters
    ----------
    backbone : torch.nn.Module

    Returns
    -------
    list of str
    """
    named = [(n, m) for n, m in backbone.named_modules() if n]
    for names in _ATTENTION_NAMES:
        hits = [n for n, m in named if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in names]
        if hits:
            return hits
    convs = [n for n, m in named if _dense_conv(m)]
    if convs:
        return convs
    linears = [n for n, m in named if isinstance(m, nn.Linear)]
    if linears:
        return linears
    raise ValueError(
        f"{type(backbone).__name__} has no nn.Linear or nn.Conv2d layer for LoRA to adapt."
    )


def default_text_lora_targets(module, layer_names):
    """Module paths LoRA adapts in a text encoder when ``lora_targets="auto"``.

    Every ``nn.Linear`` inside the transformer layers: for BERT-like
    encoders (BERT, MiniLM, RoBERTa) the attention's ``query``, ``key``,
    ``value`` and output ``dense`` projections and the feed-forward
    ``intermediate.dense`` / ``output.dense`` layers (six per layer); for
    other encoders their own attention and feed-forward projections
    (DistilBERT's ``q_lin`` ... ``lin2``, MPNet's ``attn.q`` ...). The
    embeddings and the pooler (unused by sentence embeddings) are left out.

    Parameters
    ----------
    module : torch.nn.Module
        The transformer (``transformers.PreTrainedModel``).
    layer_names : list of str
        :func:`sknc.features._text.list_text_layers` of ``module``: the
        embeddings, then one entry per transformer layer.

    Returns
    -------
    list of str
    """
    layers = tuple(f"{name}." for name in layer_names[1:])
    hits = [
        n for n, m in module.named_modules() if isinstance(m, nn.Linear) and n.startswith(layers)
    ]
    if not hits:
        raise ValueError(
            f"{type(module).__name__} has no nn.Linear layer in its transformer layers "
            f"{list(layer_names[1:3])} ... for LoRA to adapt; pass lora_targets explicitly."
        )
    return hits


def resolve_lora_targets(backbone, targets, default=None):
    """The module paths ``targets`` selects, validated.

    Parameters
    ----------
    backbone : torch.nn.Module
    targets : "auto", str or list of str
        ``"auto"`` (``default``, else :func:`default_lora_targets`); a list of module paths or
        name suffixes (``"qkv"`` matches every ``*.qkv``, as in peft); any
        other string is a regular expression matched in full against the
        module paths (peft's convention).

    default : list of str or None
        What ``"auto"`` selects (e.g. :func:`default_text_lora_targets`).

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        When nothing matches, or a match is not an ``nn.Linear`` /
        ``nn.Conv2d`` layer.
    """
    if isinstance(targets, str) and targets == "auto":
        return list(default) if default is not None else default_lora_targets(backbone)
    named = [(n, m) for n, m in backbone.named_modules() if n]
    if isinstance(targets, str):
        try:
            pattern = re.compile(targets)
        except re.error as exc:
            raise ValueError(
                f"lora_targets={targets!r} is not a valid regular expression: {exc}"
            ) from exc
        hits = [(n, m) for n, m in named if pattern.fullmatch(n)]
    else:
        wanted = list(targets)
        if not wanted or not all(isinstance(t, str) and t for t in wanted):
            raise ValueError(
                f"lora_targets must be 'auto', a regex or a non-empty list of module names, "
                f"got {targets!r}."
            )
        hits = [(n, m) for n, m in named if any(n == t or n.endswith("." + t) for t in wanted)]
        missing = [t for t in wanted if not any(n == t or n.endswith("." + t) for n, _ in hits)]
        if missing:
            raise ValueError(
                f"lora_targets {missing} match no module of {type(backbone).__name__}; "
                f"the default targets would be "
                f"{(default or default_lora_targets(backbone))[:6]} ..."
            )
    if not hits:
        raise ValueError(
            f"lora_targets={targets!r} matches no module of {type(backbone).__name__}."
        )
    bad = [f"{n} ({type(m).__name__})" for n, m in hits if not _adaptable(m)]
    if bad:
        raise ValueError(
            f"LoRA adapts nn.Linear and nn.Conv2d (groups=1, torch's own forward) layers; "
            f"lora_targets={targets!r} also selects {bad[:5]}."
        )
    return [n for n, _ in hits]


def inject_lora(backbone, targets, *, rank, alpha, dropout):
    """Wrap ``targets`` (module paths) of ``backbone`` in LoRA layers, in place.

    peft initialises ``lora_A`` randomly (from torch's global generator) and
    ``lora_B`` at zero, so the wrapped backbone computes exactly the original
    function until ``lora_B`` is trained. Returns the backbone.
    """
    peft = import_peft()
    config = peft.LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha),
        lora_dropout=float(dropout),
        target_modules=list(targets),
        bias="none",
    )
    try:
        return peft.inject_adapter_in_model(config, backbone)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise ValueError(f"peft could not add LoRA to {targets[:5]} ...: {exc}") from exc


def lora_layers(module):
    """``[(name, layer)]`` of the peft LoRA layers inside ``module`` (empty without peft)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    return [(n, m) for n, m in module.named_modules() if isinstance(m, LoraLayer)]


def merge_lora(module):
    """Fold every LoRA update into its base weight (predictions are unchanged)."""
    for _, layer in lora_layers(module):
        if not layer.merged:
            layer.merge()
    return module


def unmerge_lora(module):
    """Undo :func:`merge_lora` (subtract the updates from the base weights)."""
    for _, layer in lora_layers(module):
        if layer.merged:
            layer.unmerge()
    return module


def plain_state_dict(backbone):
    """State dict of ``backbone`` with LoRA merged, in the original model's layout.

    Without LoRA layers this is ``backbone.state_dict()``. With them, a copy
    of the backbone has its updates merged and every LoRA layer replaced by
    its base layer, so the keys are those of the model before LoRA was added
    (the file loads into ``timm.create_model`` as is).
    """
    layers = lora_layers(backbone)
    if not layers:
        return backbone.state_dict()
    plain = copy.deepcopy(backbone)
    for name, layer in lora_layers(plain):
        if not layer.merged:
            layer.merge()
        plain.set_submodule(name, layer.get_base_layer())
    return plain.state_dict()

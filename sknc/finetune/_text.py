"""Fine-tuning text encoders: the text path of :class:`~sknc.finetune.FineTuningClassifier`.

``FineTuningClassifier.fit`` hands over to :func:`fit_text` when its
``model`` is a text encoder (:func:`sknc.features._text.is_text_model`: a
Hugging Face model directory or hub id, a ``transformers`` module, or a
:class:`~sknc.features.TextFeatures` carrying the tokenizer settings).
Everything the image path offers works here with the same parameters and
the same meaning: the seven methods (linear probe, Layer FT, SCL-FT, full
FT, LoRA, BitFit, norm tuning), several tuned layers or ``last_k``, prefix
caching, checkpoints and resuming.

Contents
--------
TextFineTuneNet
    Encoder copy + optional skip branch from one transformer layer (SCL-FT)
    + linear head; freezing per method; the prefix-caching protocol of
    :class:`~sknc.finetune.FineTuneNet` (``build_split``,
    ``prefix_outputs``, ``forward(cached=...)``).
resolve_text_blocks(names, tuned_block, last_k, module)
    The tuned transformer layers, as indices into ``list_text_layers``.
TokenDataset, CachedTokenDataset, collate_tokens
    Token ids per text (and the cached hidden states before the tuned
    layer), padded per batch (no global padding).
fit_text(estimator, X, y, progress), forward_text(estimator, X, features=False)
    What ``FineTuningClassifier`` runs for text.
"""

import copy
import math
import os
import time
import warnings

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import check_random_state
from torch import nn
from torch.utils.data import Dataset

from ..features import TextFeatures
from ..features._text import (
    check_texts,
    encode_tokens,
    module_state,
    resolve_text_layer,
    restore_module,
)
from ..utils._warnings import CacheWarning, warn_external
from ._data import CachedPrefixDataset
from ._modules import (
    CACHEABLE_METHODS,
    TUNED_METHODS,
    FineTuneNet,
    SkipBranch,
    SplitError,
    _resolve_rank,
    count_parameters,
)

__all__ = [
    "CachedTokenDataset",
    "TextFineTuneNet",
    "TokenDataset",
    "collate_tokens",
    "fit_text",
    "forward_text",
    "resolve_text_blocks",
]

_ZERO = torch.tensor(0)
# image-only parameters of FineTuningClassifier and their defaults
_IMAGE_ONLY = {
    "weights": None,
    "augment": None,
    "input_size": None,
    "mean": None,
    "std": None,
    "crop_pct": None,
    "interpolation": None,
}


def default_text_tuned_block(layer_names):
    """Two thirds of the depth: transformer layer ``ceil(2 L / 3) - 1`` (L layers).

    The rule of :func:`~sknc.finetune._modules.default_tuned_block` for flat
    block lists (ViT), applied to the transformer layers (the embeddings are
    not counted): ``encoder.layer.3`` of the six layers of MiniLM-L6,
    ``encoder.layer.7`` of BERT-base's twelve.
    """
    n = len(layer_names) - 1
    return layer_names[1 + max(math.ceil(2 * n / 3) - 1, 0)]


def resolve_text_blocks(layer_names, tuned_block, last_k=None, module=None):
    """Indices into ``layer_names`` (``list_text_layers``) of the tuned layers, ascending.

    Parameters
    ----------
    layer_names : list of str
        ``[embeddings, layer 0, ..., layer L-1]``.
    tuned_block : int, str, list of int/str or None
        One layer (an index into ``layer_names``, negative from the end, or
        its name), several, or None: :func:`default_text_tuned_block`, or
        the last ``last_k`` transformer layers.
    last_k : int or None
    module : torch.nn.Module or None
        Only named in error messages.

    Returns
    -------
    list of int
    """
    what = type(module).__name__ if module is not None else "the encoder"
    n = len(layer_names) - 1
    if last_k is not None:
        if tuned_block is not None:
            raise ValueError(
                f"Pass either tuned_block or last_k, not both (got tuned_block={tuned_block!r}, "
                f"last_k={last_k!r})."
            )
        if last_k > n:
            raise ValueError(
                f"last_k={last_k} but {what} has only {n} transformer layers: {layer_names[1:]}."
            )
        return list(range(len(layer_names) - int(last_k), len(layer_names)))
    if tuned_block is None:
        return [layer_names.index(default_text_tuned_block(layer_names))]
    items = list(tuned_block) if isinstance(tuned_block, (list, tuple)) else [tuned_block]
    if not items:
        raise ValueError("tuned_block is an empty list; name at least one layer.")
    idx = [resolve_text_layer(module, b, layer_names) for b in items]
    if len(set(idx)) != len(idx):
        raise ValueError(f"tuned_block lists a layer twice: {[layer_names[i] for i in idx]}.")
    return sorted(idx)


class _Replay(nn.Module):
    """Stands in for the embeddings of a suffix view: returns the cached hidden states."""

    def __init__(self):
        super().__init__()
        self.value = None

    def forward(self, *args, **kwargs):
        if self.value is None:
            raise RuntimeError("No cached hidden states were given to the suffix.")
        return self.value


def _layer_view(backbone, layer_names, start=0, stop=None, replay=False):
    """``backbone`` running only transformer layers ``start:stop`` (shares every parameter).

    A shallow copy of the model whose layer list is the slice (the modules
    on the way to it are shallow-copied too, so the original is untouched);
    with ``replay`` its embeddings are a :class:`_Replay`, so the model's
    own forward (attention masks included) runs the suffix from cached
    hidden states.
    """
    list_path = layer_names[1].rpartition(".")[0]
    view = copy.copy(backbone)
    view.__dict__["_modules"] = dict(backbone._modules)
    parent = view
    for part in list_path.split(".")[:-1]:
        child = copy.copy(parent._modules[part])
        child.__dict__["_modules"] = dict(child._modules)
        parent._modules[part] = child
        parent = child
    last = list_path.split(".")[-1]
    parent._modules[last] = nn.ModuleList(list(parent._modules[last])[start:stop])
    if replay:
        emb = layer_names[0]
        if emb not in view._modules:
            raise SplitError(
                f"The embeddings {emb!r} are not a child of {type(backbone).__name__}."
            )
        view._modules[emb] = _Replay()
    return view


class TextFineTuneNet(nn.Module):
    """A text encoder with a new linear head, trained as ``method`` says.

    Parameters
    ----------
    encoder : sknc.features._text.TextEncoder
        Deep-copied: the shared, loaded encoder is never modified.
    n_classes : int
    method : {"linear-probe", "layer-ft", "scl-ft", "full-ft", "lora", "bitfit", "norm"}
        As for :class:`~sknc.finetune.FineTuneNet`.
    tuned_block : int, str, list of int/str or None
        The transformer layer(s) Layer FT / SCL-FT tune (see
        :func:`resolve_text_blocks`); SCL-FT's skip branch reads the first.
    last_k : int or None
        Tune the last ``last_k`` transformer layers instead.
    pool : str
        Pooling of the sentence embedding (head input), as ``TextFeatures(pool=)``.
    combine, projection, projection_rank, skip_pool, skip_norm
        As for :class:`~sknc.finetune.FineTuningClassifier` (SCL-FT only):
        the skip branch pools the tuned layer's output (``skip_pool``:
        "auto"/"avg" masked mean, "token" first token, "max"), optionally
        layer-normalises it, projects it (zero-initialised with "add") and
        adds it to (or concatenates it with) the sentence embedding.
    lora_rank, lora_alpha, lora_dropout, lora_targets
        ``method="lora"``; ``lora_targets="auto"`` adapts every
        ``nn.Linear`` of the transformer layers
        (:func:`~sknc.finetune._peft.default_text_lora_targets`).

    Notes
    -----
    Parameters that cannot reach the output are never trained nor counted
    as trainable: the pooler of BERT-like models (sentence embeddings pool
    the hidden states themselves).
    """

    _split_name = "_split"

    def __init__(
        self,
        encoder,
        n_classes,
        method="scl-ft",
        tuned_block=None,
        pool="auto",
        combine="add",
        projection="auto",
        projection_rank="auto",
        skip_pool="auto",
        skip_norm=False,
        last_k=None,
        lora_rank=8,
        lora_alpha=None,
        lora_dropout=0.0,
        lora_targets="auto",
    ):
        super().__init__()
        self.method = method
        self.classifier_name = None
        backbone = copy.deepcopy(encoder.module)
        self.st_modules = nn.ModuleList(copy.deepcopy(list(encoder.st_modules or [])))
        self.layer_names = list(encoder.layer_names)
        self.pool = pool
        idx = (
            resolve_text_blocks(self.layer_names, tuned_block, last_k, backbone)
            if method in TUNED_METHODS
            else []
        )
        self.tuned_blocks = tuple(self.layer_names[i] for i in idx)
        self.tuned_block = self.tuned_blocks[0] if idx else None
        self._tuned_index = idx[0] if idx else None
        self.__dict__["_split"] = None
        hidden = int(backbone.config.hidden_size)
        self.backbone = backbone
        width = self._embedding_width(hidden)
        # the head first, identically for every method (same seed, same head)
        head = nn.Linear(width, int(n_classes))
        self.lora_targets = None
        self._lora = None
        if method == "lora":
            self._inject_lora(lora_targets, lora_rank, lora_alpha, lora_dropout)
        self.skip = None
        self.combine = combine
        self.skip_pool = skip_pool if skip_pool != "auto" else (pool if pool != "auto" else "avg")
        if method == "scl-ft":
            proj = projection
            if proj == "auto":
                proj = "linear" if combine == "add" else "identity"
            if proj == "identity" and combine == "add" and hidden != width:
                raise ValueError(
                    f"projection='identity' with combine='add' needs the pooled output of "
                    f"{self.tuned_block!r} ({hidden} features) to be as wide as the sentence "
                    f"embedding ({width}); use projection='linear' or combine='concat'."
                )
            rank = _resolve_rank(projection_rank, hidden, width) if proj == "linear" else None
            self.skip = SkipBranch(
                hidden, width, combine=combine, projection=proj, rank=rank, norm=bool(skip_norm)
            )
            if combine == "concat":
                wide = nn.Linear(width + self.skip.out_features, int(n_classes))
                with torch.no_grad():
                    wide.weight.zero_()
                    wide.weight[:, :width].copy_(head.weight)
                    wide.bias.copy_(head.bias)
                head = wide
        self.head = head
        self.head_in_features = head.in_features
        self._freeze()

    def _inject_lora(self, lora_targets, lora_rank, lora_alpha, lora_dropout):
        """LoRA adapters on the backbone (``method="lora"``); sets ``lora_targets``."""
        from ._peft import default_text_lora_targets, inject_lora, resolve_lora_targets

        backbone = self.backbone
        self.lora_targets = resolve_lora_targets(
            backbone,
            lora_targets,
            default=default_text_lora_targets(backbone, self.layer_names)
            if isinstance(lora_targets, str) and lora_targets == "auto"
            else None,
        )
        rank = int(lora_rank)
        self._lora = {
            "targets": list(self.lora_targets),
            "rank": rank,
            "alpha": rank if lora_alpha is None else lora_alpha,
            "dropout": lora_dropout,
        }
        inject_lora(backbone, **self._lora)

    # -- structure -----------------------------------------------------------
    def _embedding_width(self, hidden):
        if self.pool != "auto" or not len(self.st_modules):
            return hidden
        with torch.no_grad():
            inputs = {
                "input_ids": torch.zeros((1, 2), dtype=torch.long),
                "attention_mask": torch.ones((1, 2), dtype=torch.long),
            }
            was = self.backbone.training
            self.backbone.eval()
            width = encode_tokens(self.backbone, self.st_modules, inputs, [(None, "auto")])[0]
            self.backbone.train(was)
        return int(width.shape[1])

    def _unused_parameters(self):
        """Backbone parameters that never reach the head (BERT's pooler)."""
        pooler = getattr(self.backbone, "pooler", None)
        return list(pooler.parameters()) if isinstance(pooler, nn.Module) else []

    def trainable_backbone_parameters(self):
        """The encoder parameters ``method`` trains (the rule of ``FineTuneNet``).

        ``"full-ft"``: all; Layer FT / SCL-FT: those of the tuned layers;
        ``"lora"``: the adapters; ``"bitfit"``: every ``bias``; ``"norm"``:
        the LayerNorm affine parameters; never the unused pooler.
        """
        unused = {id(p) for p in self._unused_parameters()}
        params = FineTuneNet.trainable_backbone_parameters(self)
        if self.method == "full-ft":
            params += [p for m in self.st_modules for p in m.parameters()]
        return [p for p in params if id(p) not in unused]

    def _freeze(self):
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.trainable_backbone_parameters():
            p.requires_grad_(True)
        for module in (self.head, self.skip):
            for p in module.parameters() if module is not None else ():
                p.requires_grad_(True)

    def train(self, mode=True):
        super().train(mode)
        if mode and self.method != "full-ft":
            # frozen parts: no dropout; tuned layers and LoRA's dropout train
            self.backbone.eval()
            self.st_modules.eval()
            for name in self.tuned_blocks:
                self.backbone.get_submodule(name).train(True)
            if self.method == "lora":
                from ._peft import lora_layers

                for _, layer in lora_layers(self.backbone):
                    layer.lora_dropout.train(True)
        return self

    # LoRA and checkpoints: one implementation with the image network
    merge_lora = FineTuneNet.merge_lora
    unmerge_lora = FineTuneNet.unmerge_lora
    backbone_state_dict = FineTuneNet.backbone_state_dict

    # -- forward -------------------------------------------------------------
    def _taps(self, offset=0):
        taps = [(None, self.pool)]
        if self.skip is not None:
            taps.append((self._tuned_index - offset, self.skip_pool))
        return taps

    def _combine(self, out):
        f = out[0]
        if self.skip is None:
            return f
        g = self.skip(out[1])
        return torch.cat([f, g], dim=1) if self.combine == "concat" else f + g

    def head_input(self, input_ids=None, attention_mask=None, token_type_ids=None, cached=None):
        """The features the head reads (sentence embedding, plus the skip for SCL-FT).

        From token ids, or from ``cached`` prefix outputs (see
        :meth:`prefix_outputs`): the sentence embeddings for a linear
        probe, the hidden states entering the first tuned layer otherwise.
        """
        if cached is not None and self.method == "linear-probe":
            cached = cached if isinstance(cached, (list, tuple)) else [cached]
            return cached[0].float()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        st = self.st_modules if len(self.st_modules) else None
        if cached is None:
            return self._combine(encode_tokens(self.backbone, st, inputs, self._taps()))
        split = self.__dict__.get("_split")
        if split is None:
            raise RuntimeError("No prefix split was built; call build_split() first.")
        view, start = split
        replay = view.get_submodule(self.layer_names[0])
        cached = cached if isinstance(cached, (list, tuple)) else [cached]
        replay.value = cached[0]
        try:
            return self._combine(encode_tokens(view, st, inputs, self._taps(offset=start)))
        finally:
            replay.value = None

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, cached=None):
        return self.head(self.head_input(input_ids, attention_mask, token_type_ids, cached))

    # -- prefix caching (the protocol of FineTuneNet) ---------------------------
    @property
    def split(self):
        """The prefix split in use (``"backbone"``, ``(suffix view, start)``) or None."""
        return self.__dict__.get("_split")

    def build_split(self, example):
        """Prepare prefix caching; ``example`` is a small padded batch of token inputs.

        Linear probe: the prefix is the whole encoder. Layer FT / SCL-FT: the
        embeddings and the transformer layers before the first tuned one;
        the suffix is a view of the encoder running the rest (checked on
        ``example``: it must reproduce the uncached head input).

        Raises
        ------
        ValueError
            For full FT, LoRA, BitFit and norm tuning.
        SplitError
            When the embeddings are tuned (nothing frozen before them) or
            the view does not reproduce the encoder.
        """
        if self.method not in CACHEABLE_METHODS:
            raise ValueError(
                f"Prefix caching does not apply to method={self.method!r}: its trainable "
                "parameters start at the first layer."
            )
        if self.method == "linear-probe":
            self.__dict__["_split"] = "backbone"
            return "backbone"
        if self._tuned_index == 0:
            raise SplitError("the embeddings are tuned, so nothing before them is frozen")
        start = self._tuned_index - 1
        try:
            prefix = _layer_view(self.backbone, self.layer_names, stop=start)
            suffix = _layer_view(self.backbone, self.layer_names, start=start, replay=True)
        except (AttributeError, KeyError, TypeError) as exc:
            raise SplitError(
                f"{type(self.backbone).__name__} cannot be cut at {self.tuned_block!r}: {exc}"
            ) from exc
        self.__dict__["_prefix"] = prefix
        self.__dict__["_split"] = (suffix, start)
        try:
            self._check_split(example)
        except Exception:
            self.__dict__["_split"] = self.__dict__["_prefix"] = None
            raise
        return self.__dict__["_split"]

    def _check_split(self, example):
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                ref = self.head_input(**example)
                hidden = self.prefix_outputs(example)[0]
                hidden = hidden * example["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out = self.head_input(**example, cached=[hidden])
        except Exception as exc:
            raise SplitError(
                f"the cut at {self.tuned_block!r} failed on a sample batch "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc
        finally:
            self.train(was)
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        if out.shape != ref.shape or not torch.allclose(
            out, ref, rtol=1e-4, atol=1e-5 * max(scale, 1.0)
        ):
            raise SplitError(
                f"running {type(self.backbone).__name__} from the layer before "
                f"{self.tuned_block!r} does not reproduce its outputs"
            )

    def prefix_outputs(self, inputs):
        """What is cached for a padded batch (call under ``torch.no_grad()``, in eval mode).

        A one-tuple: the sentence embeddings ``(N, C)`` for a linear probe,
        the hidden states entering the first tuned layer ``(N, T, C)``
        otherwise.
        """
        split = self.__dict__.get("_split")
        if split is None:
            raise RuntimeError("No prefix split was built; call build_split() first.")
        if self.training:
            raise RuntimeError("prefix_outputs needs eval mode (call .eval() first).")
        if split == "backbone":
            return (self.head_input(**inputs),)
        out = self.__dict__["_prefix"](**inputs, return_dict=True)
        return (out.last_hidden_state,)

    # -- pickling --------------------------------------------------------------
    def _prepare_backbone(self, module):
        if self._lora is not None:
            from ._peft import inject_lora

            inject_lora(module, **self._lora)
        return module

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_split"] = state["_prefix"] = None
        modules = dict(state["_modules"])
        modules["backbone"] = module_state(modules["backbone"])
        state["_modules"] = modules
        return state

    def __setstate__(self, state):
        state = dict(state)
        modules = dict(state["_modules"])
        self.__dict__["_lora"] = state.get("_lora")
        modules["backbone"] = restore_module(modules["backbone"], prepare=self._prepare_backbone)
        state["_modules"] = modules
        self.__dict__.update(state)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
class TokenDataset(Dataset):
    """Token ids (lists) and labels; :func:`collate_tokens` pads each batch."""

    def __init__(self, ids, types, y, pad_id):
        self.ids = ids
        self.types = types
        self.y = None if y is None else torch.as_tensor(y)
        self.pad_id = int(pad_id)

    def __len__(self):
        return len(self.ids)

    def _label(self, i):
        return self.y[i] if self.y is not None else torch.tensor(0)

    def __getitem__(self, i):
        item = (self.ids[i], None if self.types is None else self.types[i], self.pad_id)
        return item, self._label(i)


class CachedTokenDataset(TokenDataset):
    """:class:`TokenDataset` plus each text's cached hidden states (its real tokens only).

    ``hidden`` is one ``(sum of lengths, C)`` tensor; text ``i`` owns rows
    ``offsets[i]:offsets[i + 1]``. :func:`collate_tokens` pads them with
    zeros, which the attention mask hides.
    """

    def __init__(self, ids, types, y, pad_id, hidden, offsets):
        super().__init__(ids, types, y, pad_id)
        self.hidden = hidden
        self.offsets = offsets

    def __getitem__(self, i):
        (ids, types, pad_id), y = super().__getitem__(i)
        return (ids, types, pad_id, self.hidden[self.offsets[i] : self.offsets[i + 1]]), y

    @property
    def nbytes(self):
        return self.hidden.numel() * self.hidden.element_size()


def collate_tokens(batch):
    """Pad ``((ids, types, pad_id[, hidden]), y)`` items to the longest text of the batch."""
    if isinstance(batch[0][0], dict):  # cached sentence embeddings (linear probe)
        return torch.utils.data.default_collate(batch)
    items, ys = zip(*batch)
    n = len(items)
    t = max(len(item[0]) for item in items)
    pad_id = items[0][2]
    input_ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    has_types = items[0][1] is not None
    types = torch.zeros((n, t), dtype=torch.long) if has_types else None
    cached = len(items[0]) == 4
    if cached:
        h = items[0][3]
        hidden = torch.zeros((n, t, h.shape[-1]), dtype=h.dtype)
    for i, item in enumerate(items):
        ids, tt = item[0], item[1]
        input_ids[i, : len(ids)] = torch.as_tensor(ids)
        mask[i, : len(ids)] = 1
        if has_types:
            types[i, : len(ids)] = torch.as_tensor(tt)
        if cached:
            hidden[i, : len(ids)] = item[3]
    X = {"input_ids": input_ids, "attention_mask": mask}
    if has_types:
        X["token_type_ids"] = types
    if cached:
        X["cached"] = [hidden]
    return X, torch.stack(list(ys))


# --------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------
def _text_features(est):
    """A fitted TextFeatures describing the encoder and its tokenizer settings."""
    model = est.model
    if isinstance(model, TextFeatures):
        feats = clone(model)
        if feats.layers is not None:
            raise ValueError(
                "FineTuningClassifier(TextFeatures(...)) fine-tunes from the sentence "
                f"embedding; leave layers=None (got layers={feats.layers!r}) and pick the "
                "tuned layer with tuned_block=."
            )
    else:
        feats = TextFeatures(model, model_kwargs=est.model_kwargs)
    feats.set_params(device="cpu", verbose=bool(est.verbose), memory=None, output="numpy")
    return feats.fit()


def _check_text_params(est):
    bad = [
        name
        for name, default in _IMAGE_ONLY.items()
        if getattr(est, name) is not default and getattr(est, name) != default
    ]
    if bad:
        raise ValueError(
            f"{bad} apply to images only; a text encoder takes its weights from the model "
            "directory / hub id and its preprocessing from TextFeatures(max_length=, ...)."
        )


def _tokenized(feats, texts):
    enc = feats._get_encoder()
    ids, types = enc.tokenize(texts, feats.max_length_, truncation=feats.truncation)
    if not feats.truncation:
        lengths = [len(x) for x in ids]
        if max(lengths) > feats.max_length_:
            i = int(np.argmax(np.asarray(lengths) > feats.max_length_))
            raise ValueError(
                f"Text {texts[i][:60]!r} has {lengths[i]} tokens, more than "
                f"max_length={feats.max_length_}; use truncation=True."
            )
    pad = enc.tokenizer.pad_token_id
    return ids, types, 0 if pad is None else int(pad)


def _resume_state(est, feats, classes, n_samples, seed, progress):
    """Checkpoint folder, saved state, fingerprint, epochs done and seed (shared rules)."""
    checkpoint_dir, state = est._checkpoint_dir()
    progress["checkpoint_dir"] = checkpoint_dir
    model = feats.model
    fingerprint = {
        "classes": [str(c) for c in classes],
        "n_samples": int(n_samples),
        "method": est.method,
        "model": os.fspath(model)
        if isinstance(model, (str, os.PathLike))
        else type(model).__name__,
        "seed": seed,
    }
    done, seed = est._resume_point(state, fingerprint)
    return checkpoint_dir, state, fingerprint, done, seed


def _auto_layer(est, feats, texts, y_enc):
    """``(layer, {layer: NC1})`` for ``tuned_block="auto"``: the image rule on text layers.

    One forward pass taps every transformer layer (pooled as the skip
    branch pools it) and measures NC1 of the training texts;
    :func:`~sknc.finetune._modules.select_block_by_collapse` picks the
    first layer after which the collapse stops improving.
    """
    from ..metrics import nc1
    from ._modules import select_block_by_collapse

    if np.bincount(y_enc).max() < 2:
        raise ValueError(
            "tuned_block='auto' needs at least one class with two or more training texts: "
            "with one text per class NC1 is zero at every layer and cannot rank them. "
            "Pass tuned_block explicitly."
        )
    names = feats._get_encoder().layer_names
    pool = est.skip_pool if est.skip_pool != "auto" else feats.pools_["penultimate"]
    taps = clone(feats).set_params(
        layers=list(range(1, len(names))), pool="avg" if pool == "auto" else pool
    )
    parts = taps.fit().transform_layers(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block_nc = {name: float(nc1(Z, y_enc)) for name, Z in parts.items()}
    return select_block_by_collapse(block_nc, tolerance=est.auto_block_tolerance), block_nc


def _make_net(est, feats, n_classes, seed, device, callbacks, max_epochs, tuned_block):
    from skorch.dataset import ValidSplit

    from ._callbacks import FineTuneSkorchNet

    optimizer, optimizer_kwargs = est._optimizer_args()
    train_split = None
    if est.validation_fraction:
        train_split = ValidSplit(float(est.validation_fraction), stratified=True, random_state=seed)
    return FineTuneSkorchNet(
        module=TextFineTuneNet,
        module__encoder=feats._get_encoder(),
        module__n_classes=n_classes,
        module__method=est.method,
        module__tuned_block=tuned_block,
        module__last_k=est.last_k,
        module__pool=feats.pools_["penultimate"],
        module__combine=est.combine,
        module__projection=est.projection,
        module__projection_rank=est.projection_rank,
        module__skip_pool=est.skip_pool,
        module__skip_norm=est.skip_norm,
        module__lora_rank=est.lora_rank,
        module__lora_alpha=est.lora_alpha,
        module__lora_dropout=est.lora_dropout,
        module__lora_targets=est.lora_targets,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=optimizer,
        lr=float(est.lr),
        max_epochs=max_epochs,
        batch_size=int(est.batch_size),
        train_split=train_split,
        callbacks=callbacks,
        classes=list(range(n_classes)),
        device=str(device),
        verbose=int(est.verbose),
        iterator_train__shuffle=True,
        iterator_train__num_workers=int(est.num_workers),
        iterator_train__collate_fn=collate_tokens,
        iterator_valid__collate_fn=collate_tokens,
        amp_dtype=est._amp_dtype(device),
        **optimizer_kwargs,
    )


def _set_fitted(est, net, feats, classes, checkpoint_dir, done, block_nc):
    module = net.module_
    est.classes_ = classes
    est.net_ = net
    est.text_features_ = feats
    blocks = list(module.tuned_blocks)
    est.tuned_block_ = None if not blocks else blocks[0] if len(blocks) == 1 else blocks
    est.block_nc_ = block_nc
    est.lora_targets_ = module.lora_targets
    est.data_config_ = {
        "max_length": feats.max_length_,
        "truncation": bool(feats.truncation),
        "pool": module.pool,
    }
    est.n_params_, est.n_trainable_params_ = count_parameters(module)
    est.trainable_fraction_ = est.n_trainable_params_ / max(est.n_params_, 1)
    est._n_features_out = module.head_in_features
    est.checkpoint_dir_ = checkpoint_dir
    est.resumed_from_ = done


def fit_text(est, X, y, progress=None):
    """``FineTuningClassifier.fit`` on texts (see the class docstring)."""
    from ..utils import resolve_device

    progress = {} if progress is None else progress
    start = time.perf_counter()
    est._check_params()
    _check_text_params(est)
    texts = check_texts(X)
    classes, y_enc = est._check_y(y, len(texts))
    seed = int(check_random_state(est.random_state).randint(np.iinfo(np.int32).max))
    device = resolve_device(est.device)
    feats = _text_features(est)
    checkpoint_dir, state, fingerprint, done, seed = _resume_state(
        est, feats, classes, len(texts), seed, progress
    )
    tuned_block, block_nc = est.tuned_block, None
    if est.method in TUNED_METHODS and isinstance(tuned_block, str) and tuned_block == "auto":
        tuned_block, block_nc = _auto_layer(est, feats, texts, y_enc)
    net = _make_net(
        est,
        feats,
        len(classes),
        seed,
        device,
        est._callbacks(checkpoint_dir, fingerprint, state),
        int(est.max_epochs) - done,
        None if tuned_block == "auto" else tuned_block,
    )
    progress["net"] = net
    ids, types, pad_id = _tokenized(feats, texts)
    fork = []
    if device.type == "cuda":
        fork = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        net.initialize()
        if state is not None:
            est._restore(net, state)
        _set_fitted(est, net, feats, classes, checkpoint_dir, done, block_nc)
        module = net.module_
        try:
            dataset = _build_cache(est, module, ids, types, pad_id, y_enc, done)
            est.prefix_cached_ = dataset is not None
            if dataset is None:
                dataset = TokenDataset(ids, types, y_enc, pad_id)
            if state is not None:
                torch.set_rng_state(state["torch_rng"])
                if fork and state["cuda_rng"]:
                    torch.cuda.set_rng_state(state["cuda_rng"][fork[0]], device)
            if est.max_epochs > done:
                net.partial_fit(dataset, y_enc)
            _finish(est, net, dataset, y_enc, checkpoint_dir)
        finally:
            module.__dict__["_split"] = module.__dict__["_prefix"] = None
    module.eval()
    est.fit_time_ = time.perf_counter() - start
    return est


def _finish(est, net, dataset, y_enc, checkpoint_dir):
    est.history_ = net.history
    est.n_iter_ = len(net.history)
    durations = [row["dur"] for row in net.history if "dur" in row]
    est.seconds_per_epoch_ = float(np.median(durations)) if durations else None
    est.checkpoints_ = est._checkpoint_paths(net, checkpoint_dir)
    est.n_inputs_cached_ = 0  # texts are tokenised once per fit anyway
    est.train_nc1_ = est.train_nc1_time_ = None
    if est.compute_train_nc1:
        from ..metrics import nc1

        start = time.perf_counter()
        Z = _head_inputs(est, net.module_, dataset)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.train_nc1_ = float(nc1(Z, y_enc))
        except ValueError:
            est.train_nc1_ = float("nan")
        est.train_nc1_time_ = time.perf_counter() - start


def _build_cache(est, module, ids, types, pad_id, y_enc, done=0):
    """The cached training dataset (``cache_prefix``, as for images), or None."""
    from ._estimator import AUTO_CACHE_MAX_BYTES

    if est.cache_prefix is False or est.max_epochs <= done:
        return None
    reason = None
    if est.method not in CACHEABLE_METHODS:
        reason = (
            f"method={est.method!r} trains parameters throughout the encoder, "
            "so no prefix is frozen"
        )
    elif module._tuned_index == 0:
        reason = "the embeddings are tuned, so no prefix is frozen"
    if reason is not None:
        if est.cache_prefix is True:
            raise ValueError(f"cache_prefix=True cannot be used: {reason}.")
        return None
    module.eval()
    example, _ = collate_tokens(
        [
            ((ids[i], None if types is None else types[i], pad_id), _ZERO)
            for i in range(min(2, len(ids)))
        ]
    )
    example = {k: v.to(est.device_) for k, v in example.items()}
    try:
        module.build_split(example)
    except SplitError as exc:
        if est.cache_prefix is True:
            raise ValueError(
                f"cache_prefix=True but the encoder cannot be cut at {module.tuned_block!r}: {exc}"
            ) from exc
        warn_external(f"Prefix caching disabled, training without it: {exc}", CacheWarning)
        return None
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    hidden = int(module.backbone.config.hidden_size)
    size = 4 if est.net_.amp_dtype is None else 2
    if est.method == "linear-probe":
        estimate = len(ids) * module.head_in_features * 4
    else:
        estimate = int(lengths.sum()) * hidden * size
    if est.cache_prefix == "auto" and estimate > AUTO_CACHE_MAX_BYTES:
        warn_external(
            f"Prefix caching disabled: the cache would take {estimate / 1024**3:.1f} GiB "
            f"(> {AUTO_CACHE_MAX_BYTES / 1024**3:.0f} GiB); pass cache_prefix=True to "
            "cache anyway.",
            CacheWarning,
        )
        return None
    if est.method == "linear-probe":
        Z = _run_sorted(est, module, ids, types, pad_id, "prefix", desc="caching embeddings")
        dataset = CachedPrefixDataset([torch.from_numpy(Z)], y_enc)
    else:
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat = [None]

        def store(sel, out):
            if flat[0] is None:
                flat[0] = torch.empty((int(offsets[-1]), out.shape[-1]), dtype=out.dtype)
            for row, i in enumerate(sel):
                flat[0][offsets[i] : offsets[i + 1]] = out[row, : lengths[i]].cpu()

        _run_sorted(est, module, ids, types, pad_id, "prefix", store=store, desc="caching prefix")
        dataset = CachedTokenDataset(ids, types, y_enc, pad_id, flat[0], offsets)
    if est.verbose:
        nbytes = getattr(dataset, "nbytes", 0)
        print(f"Cached prefix activations for {len(ids)} texts: {nbytes / 1024**2:.1f} MiB.")
    return dataset


def _run_sorted(est, module, ids, types, pad_id, what, store=None, desc=None):
    """Run ``module`` over token lists in batches sorted by length (no grad, eval mode).

    ``what``: ``"features"`` (head input), ``"logits"`` or ``"prefix"``
    (:meth:`TextFineTuneNet.prefix_outputs`). Returns an ``(N, C)`` float32
    array, or hands every batch to ``store(indices, output)`` instead.
    """
    from tqdm.auto import tqdm

    device = est.device_
    was = module.training
    module.eval()
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(-lengths, kind="stable")
    bs = max(int(est.batch_size), 64)
    out = None
    try:
        with (
            torch.no_grad(),
            est.net_._autocast(),
            tqdm(total=len(ids), desc=desc, disable=not (desc and est.verbose), leave=False) as bar,
        ):
            for s in range(0, len(order), bs):
                sel = order[s : s + bs]
                batch = [
                    ((ids[i], None if types is None else types[i], pad_id), _ZERO) for i in sel
                ]
                X, _ = collate_tokens(batch)
                X = {k: v.to(device) for k, v in X.items()}
                if what == "prefix":
                    z = module.prefix_outputs(X)[0]
                else:
                    z = module.head_input(**X) if what == "features" else module(**X)
                bar.update(len(sel))
                if store is not None:
                    store(sel, z)
                    continue
                z = z.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(ids), z.shape[1]), dtype=np.float32)
                out[sel] = z
    finally:
        module.train(was)
    return out


def _head_inputs(est, module, dataset):
    """Head-input features of the training data (from the cache when there is one)."""
    if isinstance(dataset, CachedPrefixDataset):
        return dataset.tensors[0].float().numpy()
    if not isinstance(dataset, CachedTokenDataset):
        return _run_sorted(est, module, dataset.ids, dataset.types, dataset.pad_id, "features")
    out = np.empty((len(dataset), module.head_in_features), dtype=np.float32)
    lengths = np.diff(dataset.offsets)
    order = np.argsort(-lengths, kind="stable")
    bs = max(int(est.batch_size), 64)
    was = module.training
    module.eval()
    try:
        with torch.no_grad(), est.net_._autocast():
            for s in range(0, len(order), bs):
                sel = order[s : s + bs]
                X, _ = collate_tokens([dataset[i] for i in sel])
                X = {
                    k: [t.to(est.device_) for t in v] if k == "cached" else v.to(est.device_)
                    for k, v in X.items()
                }
                out[sel] = module.head_input(**X).float().cpu().numpy()
    finally:
        module.train(was)
    return out


def forward_text(est, X, features=False):
    """Logits (or head-input features) of the fitted text net on texts ``X``."""
    texts = check_texts(X)
    ids, types, pad_id = _tokenized(est.text_features_, texts)
    what = "features" if features else "logits"
    return _run_sorted(est, est.net_.module_, ids, types, pad_id, what)

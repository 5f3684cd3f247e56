"""Fine-tuning text encoders: the text path of :class:`~sknc.finetune.FineTuningClassifier`.

``FineTuningClassifier.fit`` hands over to :func:`fit_text` when its
``model`` is a text encoder (:func:`sknc.features._text.is_text_model`: a
Hugging Face model directory or hub id, a ``transformers`` module, or a
:class:`~sknc.features.TextFeatures` carrying the tokenizer settings).

Contents
--------
TextFineTuneNet
    Encoder copy + optional skip branch from one transformer layer (SCL-FT)
    + linear head; freezing per method.
TokenDataset, collate_tokens
    Token ids per text, padded per batch (no global padding).
fit_text(estimator, X, y), forward_text(estimator, X, features=False)
    What ``FineTuningClassifier`` runs for text.
"""

import copy
import math
import numbers
import time
import warnings

import numpy as np
import torch
from sklearn.base import clone
from sklearn.utils import check_random_state
from torch import nn
from torch.utils.data import Dataset

from ..features._text import (
    TextFeatures,
    check_texts,
    encode_tokens,
    module_state,
    resolve_text_layer,
    restore_module,
)
from ._modules import SkipBranch, _resolve_rank, count_parameters

__all__ = ["TextFineTuneNet", "TokenDataset", "collate_tokens", "fit_text", "forward_text"]

_TEXT_METHODS = ("linear-probe", "layer-ft", "scl-ft", "full-ft")
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


class TextFineTuneNet(nn.Module):
    """A text encoder with a new linear head; linear probe, Layer FT, SCL-FT, full FT.

    Parameters
    ----------
    encoder : sknc.features._text.TextEncoder
        Deep-copied: the shared, loaded encoder is never modified.
    n_classes : int
    method : {"linear-probe", "layer-ft", "scl-ft", "full-ft"}
    tuned_block : int, str or None
        The transformer layer Layer FT / SCL-FT tune: an index into
        ``list_layers`` (0 the embeddings, ``i`` layer ``i - 1``) or its
        name; None: :func:`default_text_tuned_block`.
    pool : str
        Pooling of the sentence embedding (head input), as ``TextFeatures(pool=)``.
    combine, projection, projection_rank, skip_pool, skip_norm
        As for :class:`~sknc.finetune.FineTuningClassifier` (SCL-FT only):
        the skip branch pools the tuned layer's output (``skip_pool``:
        "auto"/"avg" masked mean, "token" first token, "max"), optionally
        layer-normalises it, projects it (zero-initialised with "add") and
        adds it to (or concatenates it with) the sentence embedding.
    """

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
    ):
        super().__init__()
        self.method = method
        self.classifier_name = None
        self.backbone = copy.deepcopy(encoder.module)
        self.st_modules = nn.ModuleList(copy.deepcopy(list(encoder.st_modules or [])))
        self.layer_names = list(encoder.layer_names)
        self.pool = pool
        for p in self.parameters():
            p.requires_grad_(False)
        self.tuned_block = None
        self._tuned_index = None
        if method in ("layer-ft", "scl-ft"):
            if tuned_block is None:
                name = default_text_tuned_block(self.layer_names)
            else:
                name = self.layer_names[
                    resolve_text_layer(self.backbone, tuned_block, self.layer_names)
                ]
            self.tuned_block = name
            self._tuned_index = self.layer_names.index(name)
            for p in self.backbone.get_submodule(name).parameters():
                p.requires_grad_(True)
        elif method == "full-ft":
            for p in self.parameters():
                p.requires_grad_(True)
        hidden = int(self.backbone.config.hidden_size)
        width = self._embedding_width(hidden)
        self.skip = None
        self.combine = combine
        self.skip_pool = skip_pool if skip_pool != "auto" else (pool if pool != "auto" else "avg")
        head = nn.Linear(width, int(n_classes))
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

    def train(self, mode=True):
        super().train(mode)
        if mode and self.method != "full-ft":
            # frozen parts: no dropout; the tuned layer trains normally
            self.backbone.eval()
            self.st_modules.eval()
            if self.tuned_block is not None:
                self.backbone.get_submodule(self.tuned_block).train(True)
        return self

    def head_input(self, input_ids=None, attention_mask=None, token_type_ids=None, features=None):
        """The features the head reads (sentence embedding, plus the skip for SCL-FT)."""
        if features is not None:  # cached sentence embeddings (linear probe)
            return features.float()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        pool = "auto" if self.pool == "auto" else self.pool
        taps = [(None, pool)]
        if self.skip is not None:
            taps.append((self._tuned_index, self.skip_pool))
        st = self.st_modules if len(self.st_modules) else None
        out = encode_tokens(self.backbone, st, inputs, taps)
        f = out[0]
        if self.skip is None:
            return f
        g = self.skip(out[1])
        return torch.cat([f, g], dim=1) if self.combine == "concat" else f + g

    def __getstate__(self):
        state = dict(self.__dict__)
        modules = dict(state["_modules"])
        modules["backbone"] = module_state(modules["backbone"])
        state["_modules"] = modules
        return state

    def __setstate__(self, state):
        state = dict(state)
        modules = dict(state["_modules"])
        modules["backbone"] = restore_module(modules["backbone"])
        state["_modules"] = modules
        self.__dict__.update(state)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, features=None):
        return self.head(self.head_input(input_ids, attention_mask, token_type_ids, features))


class TokenDataset(Dataset):
    """Token ids (lists) and labels; :func:`collate_tokens` pads each batch."""

    def __init__(self, ids, types, y, pad_id):
        self.ids = ids
        self.types = types
        self.y = None if y is None else torch.as_tensor(y)
        self.pad_id = int(pad_id)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        item = (self.ids[i], None if self.types is None else self.types[i], self.pad_id)
        y = self.y[i] if self.y is not None else torch.tensor(0)
        return item, y


def collate_tokens(batch):
    """Pad a list of ``((ids, types, pad_id), y)`` to the longest text of the batch."""
    if isinstance(batch[0][0], dict):  # cached features (linear probe)
        return torch.utils.data.default_collate(batch)
    items, ys = zip(*batch)
    n = len(items)
    t = max(len(ids) for ids, _, _ in items)
    pad_id = items[0][2]
    input_ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    has_types = items[0][1] is not None
    types = torch.zeros((n, t), dtype=torch.long) if has_types else None
    for i, (ids, tt, _) in enumerate(items):
        input_ids[i, : len(ids)] = torch.as_tensor(ids)
        mask[i, : len(ids)] = 1
        if has_types:
            types[i, : len(ids)] = torch.as_tensor(tt)
    X = {"input_ids": input_ids, "attention_mask": mask}
    if has_types:
        X["token_type_ids"] = types
    return X, torch.stack(list(ys))


class _FeatureDataset(Dataset):
    def __init__(self, features, y):
        self.features = features
        self.y = torch.as_tensor(y)

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return {"features": self.features[i]}, self.y[i]


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
    feats.set_params(device="cpu", verbose=False, memory=None, output="numpy")
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
    if est.method not in _TEXT_METHODS:
        raise ValueError(
            f"method={est.method!r} is not available for text encoders yet; use one of "
            f"{_TEXT_METHODS}."
        )
    tb = est.tuned_block
    if not (tb is None or isinstance(tb, (str, numbers.Integral))) or tb == "auto":
        raise ValueError(
            f"tuned_block for a text encoder is None, a layer index or a layer name "
            f"(see sknc.features.list_layers), got {tb!r}."
        )
    if est.cache_prefix is True and est.method != "linear-probe":
        raise ValueError(
            "cache_prefix=True is only supported for text encoders with method='linear-probe' "
            "(its frozen sentence embeddings are computed once)."
        )


def _tokenized(est, feats, texts):
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


def fit_text(est, X, y):
    """``FineTuningClassifier.fit`` on texts (see the class docstring)."""
    from skorch.dataset import ValidSplit

    from ..utils import resolve_device
    from ._callbacks import FineTuneSkorchNet

    start = time.perf_counter()
    est._check_params()
    _check_text_params(est)
    texts = check_texts(X)
    classes, y_enc = est._check_y(y, len(texts))
    seed = int(check_random_state(est.random_state).randint(np.iinfo(np.int32).max))
    device = resolve_device(est.device)
    optimizer, optimizer_kwargs = est._optimizer_args()
    feats = _text_features(est)
    encoder = feats._get_encoder()
    pool = feats.pools_["penultimate"]
    checkpoint_dir = None
    if est.save_checkpoints:
        import os
        import tempfile

        parent = None if est.checkpoint_dir is None else os.fspath(est.checkpoint_dir)
        if parent is not None:
            os.makedirs(parent, exist_ok=True)
        checkpoint_dir = tempfile.mkdtemp(prefix="sknc-ft-", dir=parent)
    train_split = None
    if est.validation_fraction:
        train_split = ValidSplit(float(est.validation_fraction), stratified=True, random_state=seed)
    net = FineTuneSkorchNet(
        module=TextFineTuneNet,
        module__encoder=encoder,
        module__n_classes=len(classes),
        module__method=est.method,
        module__tuned_block=est.tuned_block,
        module__pool=pool,
        module__combine=est.combine,
        module__projection=est.projection,
        module__projection_rank=est.projection_rank,
        module__skip_pool=est.skip_pool,
        module__skip_norm=est.skip_norm,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=optimizer,
        lr=float(est.lr),
        max_epochs=int(est.max_epochs),
        batch_size=int(est.batch_size),
        train_split=train_split,
        callbacks=est._callbacks(checkpoint_dir),
        classes=list(range(len(classes))),
        device=str(device),
        verbose=int(est.verbose),
        iterator_train__shuffle=True,
        iterator_train__num_workers=int(est.num_workers),
        iterator_train__collate_fn=collate_tokens,
        iterator_valid__collate_fn=collate_tokens,
        amp_dtype=est._amp_dtype(device),
        **optimizer_kwargs,
    )
    ids, types, pad_id = _tokenized(est, feats, texts)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net.initialize()
        module = net.module_
        est.classes_ = classes
        est.net_ = net
        est.text_features_ = feats
        est.tuned_block_ = module.tuned_block
        est.data_config_ = {
            "max_length": feats.max_length_,
            "truncation": bool(feats.truncation),
            "pool": pool,
        }
        est.n_params_, est.n_trainable_params_ = count_parameters(module)
        est.trainable_fraction_ = est.n_trainable_params_ / max(est.n_params_, 1)
        est._n_features_out = module.head_in_features
        est.checkpoint_dir_ = checkpoint_dir
        cache = None
        if est.method == "linear-probe" and est.cache_prefix is not False and est.max_epochs > 0:
            # frozen encoder: its sentence embeddings are computed once
            cache = torch.from_numpy(_embed(est, module, ids, types, pad_id))
        est.prefix_cached_ = cache is not None
        if cache is not None:
            dataset = _FeatureDataset(cache, y_enc)
        else:
            dataset = TokenDataset(ids, types, y_enc, pad_id)
        if est.max_epochs > 0:
            net.partial_fit(dataset, y_enc)
        est.history_ = net.history
        est.n_iter_ = len(net.history)
        est.checkpoints_ = [row["checkpoint"] for row in net.history if "checkpoint" in row]
        est.train_nc1_ = None
        if est.compute_train_nc1:
            from ..metrics import nc1

            Z = (
                cache.numpy()
                if cache is not None
                else _embed(est, module, ids, types, pad_id, features=True)
            )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.train_nc1_ = float(nc1(Z, y_enc))
            except ValueError:
                est.train_nc1_ = float("nan")
    module.eval()
    est.fit_time_ = time.perf_counter() - start
    return est


def _embed(est, module, ids, types, pad_id, features=True):
    """Head input (``features=True``) or logits of token lists, batches sorted by length."""
    device = est.device_
    was = module.training
    module.eval()
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(-lengths, kind="stable")
    bs = max(int(est.batch_size), 64)
    out = None
    try:
        with torch.no_grad(), est.net_._autocast():
            for s in range(0, len(order), bs):
                sel = order[s : s + bs]
                batch = [
                    ((ids[i], None if types is None else types[i], pad_id), torch.tensor(0))
                    for i in sel
                ]
                X, _ = collate_tokens(batch)
                X = {k: v.to(device) for k, v in X.items()}
                z = module.head_input(**X) if features else module(**X)
                z = z.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(ids), z.shape[1]), dtype=np.float32)
                out[sel] = z
    finally:
        module.train(was)
    return out


def forward_text(est, X, features=False):
    """Logits (or head-input features) of the fitted text net on texts ``X``."""
    texts = check_texts(X)
    ids, types, pad_id = _tokenized(est, est.text_features_, texts)
    return _embed(est, est.net_.module_, ids, types, pad_id, features=features)

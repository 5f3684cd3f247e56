"""Text encoders (Hugging Face ``transformers`` / sentence-transformers) as transformers.

Contents
--------
TextFeatures
    Strings -> sentence embeddings or pooled hidden states of any layer, in a
    Pipeline; the text sibling of :class:`~sknc.features.BackboneFeatures`
    (same ``layers``, ``pool``, ``batch_size``, ``device``, ``amp``,
    ``output``, ``memory``, ``verbose``, ``random_state`` parameters).
is_text_model(model)
    Whether a ``model`` argument names a text encoder (a Hugging Face model
    directory or hub id, a ``transformers``/sentence-transformers module, a
    :class:`TextFeatures`). :class:`~sknc.finetune.FineTuningClassifier` and
    :func:`~sknc.features.list_layers` dispatch on it.
load_text_encoder(model, ...)
    Load (once per process, shared by clones) the encoder module, its
    tokenizer and the sentence-transformers modules after it.
TextEncoder
    What ``load_text_encoder`` returns; ``encode(inputs, taps)`` runs one
    forward pass and pools the tapped hidden states.
list_text_layers(module), resolve_text_layer(module, layer)
    The tappable layers (``embeddings`` then every transformer layer: the
    entries of ``output_hidden_states``) and the index of one of them.
check_texts(X)
    Validate a list / array / pandas column of strings.
pool_tokens(hidden, mask, pool)
    Attention-masked mean, first token (CLS) or masked max.
quiet_loading(quiet=True)
    Silence transformers' loading bars and logs for a block, then restore them.

``transformers`` and ``sentence_transformers`` are imported inside the
functions: ``import sknc.features`` imports neither.
"""

import collections
import contextlib
import copy
import difflib
import hashlib
import numbers
import os
import threading
import weakref

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..utils import resolve_device
from ..utils._options import amp_dtype, check_amp
from ._backbone_features import BackboneFeatures, _cpu_copy
from ._cache import resolve_cache
from ._hub import offline_unless_reachable
from ._layers import PENULTIMATE
from ._weights import weights_fingerprint

__all__ = [
    "TextEncoder",
    "TextFeatures",
    "check_texts",
    "encode_tokens",
    "is_text_model",
    "list_text_layers",
    "load_text_encoder",
    "pool_tokens",
    "quiet_loading",
    "resolve_text_layer",
]

_CACHE_VERSION = 1
#: pool names (BackboneFeatures' vocabulary, plus the usual text aliases)
TEXT_POOLS = {
    "auto": "auto",
    "avg": "avg",
    "mean": "avg",
    "token": "token",
    "cls": "token",
    "max": "max",
}
_BACKENDS = ("auto", "transformers", "sentence-transformers")
_TIMM_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:", "timm/")
_ST_POOLS = {"mean": "avg", "cls": "token", "max": "max"}
_MAX_LOADED = 4  # encoders kept loaded per process (clones and unpickled copies share them)
_LOADED = collections.OrderedDict()
_LOAD_LOCK = threading.Lock()
_FORWARD_LOCKS = weakref.WeakKeyDictionary()  # module -> RLock (a loaded module is shared)


# --------------------------------------------------------------------------
# what is a text model
# --------------------------------------------------------------------------
def _is_hf_dir(path):
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, f)) for f in ("config.json", "modules.json")
    )


def is_text_model(model):
    """Whether ``model`` names a text encoder rather than an image backbone.

    True for a :class:`TextFeatures`, a ``transformers`` or
    sentence-transformers module, a directory holding ``config.json`` or
    ``modules.json`` (a saved Hugging Face / sentence-transformers model), and
    a Hugging Face hub id ``"owner/name"`` that is neither a local path nor
    timm's ``hf-hub:`` / ``local-dir:`` form. timm model names never contain
    ``"/"``.

    Parameters
    ----------
    model : object

    Returns
    -------
    bool
    """
    if isinstance(model, TextFeatures):
        return True
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if _is_hf_dir(path):
            return True
        if os.path.exists(path) or path.startswith(_TIMM_PREFIXES):
            return False
        return "/" in path and not path.startswith(("/", ".", "~")) and path.count("/") == 1
    mod = type(model).__module__ or ""
    return mod.startswith(("transformers.", "sentence_transformers."))


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------
def check_texts(X, *, allow_empty=False):
    """Validate text input; return a list of str.

    Accepts a list or tuple of str, a 1-D numpy array of str/object, a
    pandas Series, or a single-column 2-D array / DataFrame (a text column
    selected with ``ColumnTransformer``).

    Raises
    ------
    TypeError
        For a single string, or an element that is not a str (naming its
        index and type; missing values included).
    ValueError
        For an empty collection or more than one column.
    """
    if isinstance(X, (str, bytes)):
        raise TypeError(
            "X must be a collection of strings (a list, array or column), got a single "
            f"{type(X).__name__}; wrap it in a list: [text]."
        )
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # pandas DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"X has {X.shape[1]} columns; TextFeatures takes one text column "
                "(select it, e.g. with a ColumnTransformer)."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "to_numpy") and not isinstance(X, np.ndarray):  # pandas Series
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(
                f"X must be a 1-D collection of strings (or one column), got shape {X.shape}."
            )
        if X.dtype.kind not in ("U", "O", "S"):
            raise TypeError(f"X must hold strings, got an array of dtype {X.dtype}.")
        X = X.tolist()
    try:
        texts = list(X)
    except TypeError as exc:
        raise TypeError(f"X must be a collection of strings, got {type(X).__name__}.") from exc
    if not texts and not allow_empty:
        raise ValueError("X is empty: got 0 texts, need at least 1.")
    for i, t in enumerate(texts):
        if isinstance(t, np.str_):
            texts[i] = str(t)
        elif isinstance(t, bytes):
            raise TypeError(f"X[{i}] is bytes, not str: decode it first (e.g. .decode('utf-8')).")
        elif not isinstance(t, str):
            what = "a missing value" if t is None or (isinstance(t, float) and t != t) else ""
            raise TypeError(
                f"X[{i}] is {what or 'not a str'} ({type(t).__name__}: {t!r:.50}); "
                "TextFeatures takes strings only."
            )
    return texts


def _fingerprint_texts(texts):
    h = hashlib.blake2b(digest_size=20)
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------
# layers and pooling
# --------------------------------------------------------------------------
def list_text_layers(module):
    """The layers of a text encoder that can be tapped, in forward order.

    ``[<embeddings>, <layer 0>, ..., <layer L-1>]``: the embedding module
    (the top-level child holding the input embeddings) and every module of
    the encoder's layer list (the longest ``nn.ModuleList``, e.g.
    ``encoder.layer`` for BERT). Entry ``i`` is ``hidden_states[i]`` of
    ``model(..., output_hidden_states=True)``, so ``layers=i`` taps the same
    tensor as Hugging Face's index ``i``.

    Parameters
    ----------
    module : transformers.PreTrainedModel, or a path / hub id

    Returns
    -------
    list of str
    """
    from torch import nn

    if isinstance(module, TextFeatures):
        module = load_text_encoder(module.model, **module._load_args()).module
    elif not isinstance(module, nn.Module):
        module = load_text_encoder(module).module
    elif type(module).__module__.startswith("sentence_transformers."):
        module = module[0].auto_model
    lists = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(
            f"{type(module).__name__} has no list of transformer layers (nn.ModuleList) to tap."
        )
    name, layers = max(lists, key=lambda item: len(item[1]))
    emb_name = "embeddings"
    get_emb = getattr(module, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if emb is not None:
        for child_name, child in module.named_children():
            if any(m is emb for m in child.modules()):
                emb_name = child_name
                break
    return [emb_name] + [f"{name}.{i}" for i in range(len(layers))]


def resolve_text_layer(module, layer, names=None):
    """Index into :func:`list_text_layers` (= ``hidden_states`` index) of ``layer``.

    Parameters
    ----------
    module : torch.nn.Module
    layer : int or str
        An index (negative counts from the end; 0 is the embeddings, ``i`` the
        output of transformer layer ``i - 1``) or an entry of
        ``list_text_layers``.

    Returns
    -------
    int
    """
    names = list_text_layers(module) if names is None else names
    if isinstance(layer, (bool, np.bool_)):
        raise ValueError(f"layer must be an int or a str, got {layer!r}.")
    if isinstance(layer, numbers.Integral):
        idx = int(layer)
        if not -len(names) <= idx < len(names):
            raise ValueError(
                f"Layer index {idx} is out of range for {type(module).__name__}, which has "
                f"{len(names)} taps (embeddings + {len(names) - 1} layers): {names}."
            )
        return idx % len(names)
    if not isinstance(layer, str):
        raise ValueError(f"layer must be an int or a str, got {type(layer).__name__}.")
    if layer in names:
        return names.index(layer)
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    hint = f" Closest: {close}." if close else ""
    raise ValueError(
        f"Unknown layer {layer!r} for {type(module).__name__}. Text encoders can tap "
        f"{PENULTIMATE!r} (the sentence embedding) and their hidden states: {names}.{hint}"
    )


def pool_tokens(hidden, mask, pool):
    """``(N, T, C)`` token states -> ``(N, C)``, ignoring padding (``mask == 0``).

    ``pool`` is ``"avg"`` (masked mean), ``"token"`` (first token: CLS) or
    ``"max"`` (masked max); the aliases ``"mean"`` and ``"cls"`` work too.
    Computed in float32.
    """
    pool = TEXT_POOLS.get(pool, pool)
    h = hidden.float()
    if pool == "token":
        return h[:, 0]
    m = mask.to(device=h.device, dtype=h.dtype).unsqueeze(-1)
    if pool == "avg":
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    if pool == "max":
        return h.masked_fill(m == 0, float("-inf")).amax(dim=1)
    raise ValueError(f"pool must be one of {sorted(TEXT_POOLS)}, got {pool!r}.")


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------
def _signature(path):
    """Cheap identity of a local model directory: names, sizes, mtimes of its files."""
    if not os.path.isdir(path):
        return None
    out = []
    for root, _dirs, files in os.walk(path):
        for f in sorted(files):
            p = os.path.join(root, f)
            st = os.stat(p)
            out.append((os.path.relpath(p, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


@contextlib.contextmanager
def _text_hub_guard(name):
    """Hub ids offline: fail fast (offline mode) with a message saying what to do."""
    guard = contextlib.nullcontext() if os.path.exists(name) else offline_unless_reachable()
    with guard as reason:
        try:
            yield
        except (OSError, ValueError, KeyError) as exc:
            where = (
                f"the directory {name!r} does not hold a loadable model"
                if os.path.exists(name)
                else f"{reason or 'the download failed'} and it is not in the local cache"
            )
            raise ValueError(
                f"Could not load the text model {name!r}: {where}. Pass a local directory "
                "saved with save_pretrained() / SentenceTransformer.save() (config.json, "
                f"weights, tokenizer files). Original error: {type(exc).__name__}: {exc}"
            ) from exc


_QUIET_LOCK = threading.Lock()
_QUIET = {"depth": 0, "restore": None}


def _silence_loading():
    """Switch off transformers' / huggingface_hub's bars and info logs; return the undo."""
    import logging

    undo = []
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - the text extra installs it
        hf_logging = None
    try:
        from huggingface_hub.utils import (
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )
    except ImportError:  # pragma: no cover
        are_progress_bars_disabled = None
    if are_progress_bars_disabled is not None:
        hub_off = are_progress_bars_disabled()
        undo.append(lambda: None if hub_off else enable_progress_bars())
    if hf_logging is not None:
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        undo.append(lambda: hf_logging.enable_progress_bar() if bars else None)
        undo.append(lambda: hf_logging.set_verbosity(verbosity))
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if are_progress_bars_disabled is not None:
        disable_progress_bars()
    st_logger = logging.getLogger("sentence_transformers")
    level = st_logger.level
    undo.append(lambda: st_logger.setLevel(level))
    st_logger.setLevel(logging.ERROR)

    def restore():
        for fn in reversed(undo):
            fn()

    return restore


@contextlib.contextmanager
def quiet_loading(quiet=True):
    """Silence the loading messages of ``transformers`` and sentence-transformers.

    Inside the block, the ``Loading weights`` progress bars of
    ``transformers`` and ``huggingface_hub`` are off and their loggers (and
    sentence-transformers') show errors only; on leaving it, every one of
    these settings is put back as it was (also after an error, and when
    several threads load at once: the last one out restores). With
    ``quiet=False`` nothing is changed. sknc loads text encoders inside it
    unless ``verbose`` is set.

    Examples
    --------
    >>> from transformers.utils import logging as hf_logging
    >>> from sknc.features._text import quiet_loading
    >>> before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    >>> with quiet_loading():
    ...     hf_logging.is_progress_bar_enabled()
    False
    >>> (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before
    True
    """
    if not quiet:
        yield
        return
    with _QUIET_LOCK:
        if _QUIET["depth"] == 0:
            _QUIET["restore"] = _silence_loading()
        _QUIET["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET["depth"] -= 1
            if _QUIET["depth"] == 0:
                restore, _QUIET["restore"] = _QUIET["restore"], None
                restore()


class TextEncoder:
    """A loaded text encoder: module, tokenizer and sentence-transformers tail.

    Attributes
    ----------
    module : transformers.PreTrainedModel
        The transformer (for a sentence-transformers model, its first
        module's ``auto_model``).
    tokenizer : transformers tokenizer
    st_modules : list of torch.nn.Module or None
        The sentence-transformers modules after the transformer (pooling,
        dense, normalise), or None for a plain ``transformers`` model.
    default_max_length : int
        ``max_seq_length`` of a sentence-transformers model, else the
        tokenizer's ``model_max_length`` (bounded by the position embeddings).
    layer_names : list of str
        :func:`list_text_layers` of ``module``.
    """

    def __init__(self, module, tokenizer, st_modules=None):
        self.module = module
        self.tokenizer = tokenizer
        self.st_modules = st_modules
        self.layer_names = list_text_layers(module)
        self.default_max_length = self._default_max_length()

    def _default_max_length(self):
        limit = getattr(self.module.config, "max_position_embeddings", None) or 512
        if getattr(self.module.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            limit -= 2  # position ids start after the padding index
        st_len = getattr(self, "_st_max_length", None)
        tok_len = getattr(self.tokenizer, "model_max_length", None)
        for cand in (st_len, tok_len):
            if isinstance(cand, numbers.Integral) and 0 < cand < 1_000_000:
                return int(min(cand, limit))
        return int(min(limit, 512))

    @property
    def st_pool(self):
        """The pooling of the sentence-transformers model in TEXT_POOLS terms (or None)."""
        for m in self.st_modules or ():
            mode = getattr(m, "pooling_mode", None)
            if mode is None:
                cfg = getattr(m, "get_config_dict", None)
                mode = (cfg() if callable(cfg) else {}).get("pooling_mode")
            if mode is not None:
                return _ST_POOLS.get(mode)
        return None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["module"] = module_state(self.module)
        return state

    def __setstate__(self, state):
        state = dict(state)
        state["module"] = restore_module(state["module"])
        self.__dict__.update(state)

    def lock(self):
        with _LOAD_LOCK:
            return _FORWARD_LOCKS.setdefault(self.module, threading.RLock())

    def tokenize(self, texts, max_length, truncation=True):
        """Token ids of each text (lists, no padding) and token type ids if the model uses them."""
        enc = self.tokenizer(
            list(texts),
            truncation=bool(truncation),
            max_length=int(max_length) if truncation else None,
            padding=False,
            return_attention_mask=False,
        )
        ids = enc["input_ids"]
        types = enc.get("token_type_ids")
        return ids, types

    def pad(self, ids, types, device):
        """Pad a batch of token-id lists -> dict of tensors on ``device``."""
        import torch

        n = len(ids)
        t = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id
        pad_id = 0 if pad_id is None else int(pad_id)
        input_ids = np.full((n, t), pad_id, dtype=np.int64)
        mask = np.zeros((n, t), dtype=np.int64)
        tt = np.zeros((n, t), dtype=np.int64) if types is not None else None
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for i, x in enumerate(ids):
            sl = slice(t - len(x), t) if left else slice(0, len(x))
            input_ids[i, sl] = x
            mask[i, sl] = 1
            if tt is not None:
                tt[i, sl] = types[i]
        out = {"input_ids": input_ids, "attention_mask": mask}
        if tt is not None:
            out["token_type_ids"] = tt
        return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in out.items()}

    def encode(self, inputs, taps):
        """One forward pass of :func:`encode_tokens` with this encoder's modules."""
        return encode_tokens(self.module, self.st_modules, inputs, taps)


def encode_tokens(module, st_modules, inputs, taps):
    """One forward pass; ``taps`` is a list of ``(hidden_index or None, pool)``.

    ``None`` is the sentence embedding: the sentence-transformers tail
    (``st_modules``) with ``pool="auto"``, else the last hidden state pooled
    with ``pool`` ("auto": masked mean). Returns a list of float32
    ``(N, C)`` tensors. Gradients flow (callers choose ``no_grad``).
    """
    need_hidden = any(idx is not None for idx, _ in taps)
    out = module(**inputs, output_hidden_states=need_hidden, return_dict=True)
    mask = inputs["attention_mask"]
    feats = []
    for idx, pool in taps:
        if idx is None:
            last = out.last_hidden_state
            if pool == "auto" and st_modules:
                features = dict(inputs)
                features["token_embeddings"] = last
                for m in st_modules:
                    features = m(features)
                feats.append(features["sentence_embedding"].float())
            else:
                feats.append(pool_tokens(last, mask, "avg" if pool == "auto" else pool))
        else:
            feats.append(pool_tokens(out.hidden_states[idx], mask, pool))
    return feats


def _load(model, backend, pretrained, tokenizer, seed, model_kwargs, verbose=False):
    with quiet_loading(not verbose):
        return _load_quietly(model, backend, pretrained, tokenizer, seed, model_kwargs)


def _load_quietly(model, backend, pretrained, tokenizer, seed, model_kwargs):
    import torch
    from torch import nn

    kwargs = dict(model_kwargs or {})
    st_modules = None
    if isinstance(model, nn.Module):
        module = copy.deepcopy(model)
        if type(module).__module__.startswith("sentence_transformers."):
            parts = list(module)
            st_modules = parts[1:]
            tok = module.tokenizer
            module = parts[0].auto_model
        else:
            tok = None
    else:
        name = os.fspath(model)
        if os.path.exists(name) and not _is_hf_dir(name):
            raise ValueError(
                f"Could not load the text model {name!r}: the directory does not hold a "
                "config.json (transformers) or modules.json (sentence-transformers)."
            )
        use_st = backend == "sentence-transformers" or (
            backend == "auto"
            and (
                os.path.isfile(os.path.join(name, "modules.json"))
                or name.startswith("sentence-transformers/")
            )
        )
        with _text_hub_guard(name):
            if use_st:
                from sentence_transformers import SentenceTransformer

                stm = SentenceTransformer(name, device="cpu", **kwargs)
                parts = list(stm)
                module, st_modules, tok = parts[0].auto_model, parts[1:], stm.tokenizer
                st_len = getattr(stm, "max_seq_length", None)
            else:
                from transformers import AutoModel

                module = AutoModel.from_pretrained(name, **kwargs)
                tok = None
                st_len = None
            if tok is None and tokenizer is None:
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(name)
    if tokenizer is not None:
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            with _text_hub_guard(os.fspath(tokenizer)):
                tok = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        else:
            tok = copy.deepcopy(tokenizer)
    if tok is None:
        raise ValueError(
            f"No tokenizer for the module {type(model).__name__}: pass tokenizer= a "
            "tokenizer or the directory / hub id it was saved to."
        )
    if not pretrained:
        from transformers import AutoModel

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            module = AutoModel.from_config(module.config)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    enc = TextEncoder.__new__(TextEncoder)
    enc._st_max_length = st_len if not isinstance(model, nn.Module) else None
    if st_modules is not None:
        st_modules = [m.eval() for m in st_modules]
    TextEncoder.__init__(enc, module, tok, st_modules)
    return enc


def load_text_encoder(
    model,
    *,
    backend="auto",
    pretrained=True,
    tokenizer=None,
    seed=None,
    model_kwargs=None,
    verbose=False,
):
    """Load a text encoder, sharing it with earlier loads of the same model in this process.

    Parameters
    ----------
    model : str, path-like or torch.nn.Module
        A local directory (``save_pretrained`` / sentence-transformers
        ``save``), a hub id (needs internet or the local hub cache), or a
        ``transformers`` / sentence-transformers module (deep-copied).
    backend : {"auto", "transformers", "sentence-transformers"}, default="auto"
        "auto" uses sentence-transformers for a directory with
        ``modules.json`` and ``sentence-transformers/...`` hub ids.
    pretrained : bool, default=True
        False keeps the architecture (from the config) with random weights.
    tokenizer : None, str, path-like or tokenizer, default=None
        The tokenizer; default: the model's own.
    seed : int or None
        Seeds the random initialisation (``pretrained=False``).
    model_kwargs : dict or None
        Extra arguments for ``from_pretrained`` / ``SentenceTransformer``.
    verbose : bool, default=False
        Show the loading messages and progress bars of ``transformers`` /
        sentence-transformers (by default they are silenced during the load,
        see :func:`quiet_loading`).

    Returns
    -------
    TextEncoder
        Shared (do not modify its module in place; deep-copy it to train).
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}.")
    cacheable = isinstance(model, (str, os.PathLike)) and (
        tokenizer is None or isinstance(tokenizer, (str, os.PathLike))
    )
    if not cacheable:
        return _load(model, backend, pretrained, tokenizer, seed, model_kwargs, verbose)
    name = os.fspath(model)
    name = os.path.abspath(name) if os.path.exists(name) else name
    key = (
        name,
        _signature(name),
        backend,
        bool(pretrained),
        None if pretrained else seed,
        None if tokenizer is None else os.fspath(tokenizer),
        repr(sorted((model_kwargs or {}).items())),
    )
    with _LOAD_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    enc = _load(name, backend, pretrained, tokenizer, seed, model_kwargs, verbose)
    with _LOAD_LOCK:
        enc = _LOADED.setdefault(key, enc)
        _LOADED.move_to_end(key)
        while len(_LOADED) > _MAX_LOADED:
            _LOADED.popitem(last=False)
    return enc


def module_state(module):
    """A picklable stand-in for a ``transformers`` module: class, config, CPU state dict.

    ``transformers`` 5 installs local-function forward hooks on a model's
    layers at its first ``output_hidden_states`` call, which plain pickling
    cannot store. :func:`restore_module` rebuilds the module.
    """
    return {
        "__sknc_hf_module__": 1,
        "cls": type(module),
        "config": module.config,
        "state": {k: v.detach().to("cpu").clone() for k, v in module.state_dict().items()},
        "requires_grad": {n: p.requires_grad for n, p in module.named_parameters()},
        "training": module.training,
    }


def restore_module(state, prepare=None):
    """Inverse of :func:`module_state`.

    ``prepare(module)``, when given, runs on the freshly built module before
    the weights are loaded (e.g. to add the LoRA layers the state holds).
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        module = state["cls"](state["config"])
        if prepare is not None:
            module = prepare(module)
    module.load_state_dict(state["state"], strict=True)
    for n, p in module.named_parameters():
        p.requires_grad_(state["requires_grad"].get(n, True))
    return module.train(state["training"])


def _tokenizer_fingerprint(tok):
    h = hashlib.blake2b(digest_size=20)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        h.update(backend.to_str().encode())
    else:
        h.update(repr(sorted(tok.get_vocab().items())).encode())
    h.update(type(tok).__name__.encode())
    h.update(repr(getattr(tok, "padding_side", "right")).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------
class TextFeatures(TransformerMixin, BaseEstimator):
    """Features of a pretrained text encoder (Hugging Face / sentence-transformers).

    The text sibling of :class:`~sknc.features.BackboneFeatures`: put it at
    the front of a pipeline, e.g. ``make_pipeline(TextFeatures(
    "sentence-transformers/all-MiniLM-L6-v2"), LogisticRegression())``.
    ``transform`` maps strings to the sentence embedding or to pooled hidden
    states of any layer. Parameters shared with ``BackboneFeatures`` mean the
    same.

    Parameters
    ----------
    model : str, path-like or torch.nn.Module, default="sentence-transformers/all-MiniLM-L6-v2"
        A local model directory (saved by ``save_pretrained`` or
        sentence-transformers' ``save``), a Hugging Face hub id (needs
        internet or the local hub cache; fails fast offline), or a
        ``transformers`` / sentence-transformers module you built
        (deep-copied; pass ``tokenizer``).
    tokenizer : None, str, path-like or tokenizer, default=None
        The tokenizer; default: the one saved with the model.
    backend : {"auto", "transformers", "sentence-transformers"}, default="auto"
        How to load ``model``: "auto" loads directories with ``modules.json``
        and ``sentence-transformers/...`` ids with sentence-transformers
        (its pooling and normalisation give the sentence embedding), others
        with ``transformers.AutoModel``.
    pretrained : bool, default=True
        False keeps the architecture with random weights (seeded by
        ``random_state``): a random-init baseline.
    layers : None, int, str or list of those, default=None
        Which features. None or ``"penultimate"``: the sentence embedding
        (see ``pool``). An int indexes the hidden states (0: embeddings,
        ``i``: output of transformer layer ``i - 1``, negative from the end;
        the index of Hugging Face's ``output_hidden_states``). A str is an
        entry of :func:`~sknc.features.list_layers` (``"encoder.layer.3"``).
        A list extracts several in one forward pass, concatenated in the
        order given; see :meth:`split_layers` and :meth:`transform_layers`.
    pool : {"auto", "avg", "mean", "token", "cls", "max"}, default="auto"
        How token states become one vector: "avg"/"mean" the mean over the
        real tokens (padding masked out), "token"/"cls" the first token,
        "max" the masked max. "auto": the sentence-transformers model's own
        pooling (and normalisation) for the sentence embedding and its
        pooling mode for hidden states; the masked mean for plain
        ``transformers`` models.
    max_length : int or None, default=None
        Tokens per text (special tokens included); default: the model's
        ``max_seq_length`` (sentence-transformers) or the tokenizer's
        ``model_max_length``.
    truncation : bool, default=True
        Cut longer texts to ``max_length``; False raises a ``ValueError``
        naming the first text that is too long.
    sort_by_length : bool, default=True
        Batch texts of similar token length together (less padding; the
        output keeps the input order).
    batch_size : int, default=64
        Texts per forward pass.
    device : str or torch.device, default="auto"
        As for ``BackboneFeatures``; resolved at each ``transform``.
    amp : bool or {"float16", "fp16", "bfloat16", "bf16"}, default=False
        Mixed precision (``torch.autocast``) on CUDA: True, ``"float16"``
        or ``"fp16"`` is float16, ``"bfloat16"`` or ``"bf16"`` bfloat16 (the
        same meaning in every sknc estimator). Ignored, with a warning at
        fit, on other devices.
    output : {"numpy", "torch"}, default="numpy"
        float32 numpy array, or float32 tensor on the compute device.
    memory : None, str, path-like or joblib.Memory, default=None
        Cache ``transform`` outputs on disk, keyed on the model (name,
        weights hash), the tokenizer (its vocabulary and rules), ``max_length``,
        ``truncation``, the layers, the pooling, the precision and the texts;
        not on device, batch size or ordering, which do not change the
        features beyond float32 round-off.
    store_weights_in_pickle : bool, default=False
        Pickles of a model loaded from a directory or hub id leave the
        weights out and reload them (once per process) at the next
        ``transform``; True stores them. Modules passed as objects are
        always stored.
    verbose : bool or int, default=False
        Progress bar (tqdm); also shows the loading messages and progress
        bars of ``transformers`` / sentence-transformers, which are silenced
        (and their settings restored afterwards) when False.
    model_kwargs : dict or None, default=None
        Extra arguments for ``AutoModel.from_pretrained`` or
        ``SentenceTransformer`` (e.g. ``{"revision": ...}``).
    random_state : int, RandomState instance or None, default=None
        Seeds the random weights of ``pretrained=False``.

    Attributes
    ----------
    model_ : torch.nn.Module
        The transformer (loaded lazily after unpickling). Loaded models are
        shared, read-only, by the estimators of a process that load the same
        model (clones do not reload it).
    tokenizer_ : tokenizer
    layers_ : list of str
        The resolved layers: ``"penultimate"`` and/or entries of ``list_layers``.
    pools_ : dict of str to str
        The pooling used for each layer.
    max_length_ : int
    layer_slices_ : dict of str to slice
    n_features_out_ : int
    feature_names_out_ : ndarray of str

    See Also
    --------
    sknc.features.BackboneFeatures : The same for images.
    sknc.finetune.FineTuningClassifier : Fine-tunes a text encoder (pass a
        model directory or a ``TextFeatures`` as ``model``).

    Notes
    -----
    **Repeated texts** are encoded once. **Ordering by length** changes
    which texts share a batch; with masked pooling the features do not
    depend on the padding beyond float32 round-off.

    Examples
    --------
    A tiny random BERT saved to a folder (any ``save_pretrained`` folder, e.g.
    all-MiniLM-L6-v2's, loads the same way):

    >>> import os, tempfile
    >>> from transformers import BertConfig, BertModel, BertTokenizerFast
    >>> from sknc.features import TextFeatures
    >>> folder = tempfile.mkdtemp()
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "sat"]
    >>> with open(os.path.join(folder, "vocab.txt"), "w") as fh:
    ...     _ = fh.write("\\n".join(vocab))
    >>> _ = BertTokenizerFast(os.path.join(folder, "vocab.txt")).save_pretrained(folder)
    >>> config = BertConfig(vocab_size=9, hidden_size=8, num_hidden_layers=2,
    ...                     num_attention_heads=2, intermediate_size=16)
    >>> BertModel(config).save_pretrained(folder)
    >>> feats = TextFeatures(folder, layers=[None, 1]).fit()
    >>> feats.layers_, feats.pools_["penultimate"]
    (['penultimate', 'encoder.layer.0'], 'avg')
    >>> feats.transform(["a cat sat", "a dog", "a cat sat"]).shape
    (3, 16)
    """

    def __init__(
        self,
        model="sentence-transformers/all-MiniLM-L6-v2",
        *,
        tokenizer=None,
        backend="auto",
        pretrained=True,
        layers=None,
        pool="auto",
        max_length=None,
        truncation=True,
        sort_by_length=True,
        batch_size=64,
        device="auto",
        amp=False,
        output="numpy",
        memory=None,
        store_weights_in_pickle=False,
        verbose=False,
        model_kwargs=None,
        random_state=None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.backend = backend
        self.pretrained = pretrained
        self.layers = layers
        self.pool = pool
        self.max_length = max_length
        self.truncation = truncation
        self.sort_by_length = sort_by_length
        self.batch_size = batch_size
        self.device = device
        self.amp = amp
        self.output = output
        self.memory = memory
        self.store_weights_in_pickle = store_weights_in_pickle
        self.verbose = verbose
        self.model_kwargs = model_kwargs
        self.random_state = random_state

    # shared with BackboneFeatures (one implementation)
    _layer_specs = BackboneFeatures._layer_specs
    _amp_dtype = BackboneFeatures._amp_dtype
    _lock = BackboneFeatures._lock
    _cached_extract = BackboneFeatures._cached_extract
    split_layers = BackboneFeatures.split_layers
    transform_layers = BackboneFeatures.transform_layers
    get_feature_names_out = BackboneFeatures.get_feature_names_out

    # ------------------------------------------------------------------
    def _check_params(self):
        if self.pool not in TEXT_POOLS:
            raise ValueError(f"pool must be one of {sorted(TEXT_POOLS)}, got {self.pool!r}.")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}.")
        if self.output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch', got {self.output!r}.")
        for name in ("batch_size", "max_length"):
            v = getattr(self, name)
            if name == "max_length" and v is None:
                continue
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        check_amp(self.amp, type(self).__name__)
        if self.model_kwargs is not None and not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a dict or None, got {self.model_kwargs!r}.")

    def _load_args(self):
        seed = None
        if not self.pretrained:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            if self.random_state is None:
                seed = None
        return {
            "backend": self.backend,
            "pretrained": bool(self.pretrained),
            "tokenizer": self.tokenizer,
            "seed": seed,
            "model_kwargs": self.model_kwargs,
        }

    def _reloadable(self):
        return isinstance(self.model, (str, os.PathLike)) and (
            self.tokenizer is None or isinstance(self.tokenizer, (str, os.PathLike))
        )

    def _get_encoder(self):
        enc = self.__dict__.get("_encoder")
        if enc is None:
            if "layers_" not in self.__dict__:
                raise AttributeError("not fitted")
            with self._lock():
                enc = self.__dict__.get("_encoder")
                if enc is None:
                    enc = load_text_encoder(
                        self.model, **self._load_kwargs, verbose=bool(self.verbose)
                    )
                    sig = _signature(os.fspath(self.model)) if self._reloadable() else None
                    if sig != self._source_signature:
                        raise ValueError(
                            f"The model files of {self.model!r} changed since this "
                            "TextFeatures was fitted (it was pickled without its weights); "
                            "refit it, or pickle with store_weights_in_pickle=True."
                        )
                    self._encoder = enc
        return enc

    @property
    def model_(self):
        return self._get_encoder().module

    @property
    def tokenizer_(self):
        return self._get_encoder().tokenizer

    # ------------------------------------------------------------------
    def fit(self, X=None, y=None):
        """Load the encoder (shared within the process) and resolve layers and widths.

        Parameters
        ----------
        X : list of str or None, default=None
            Only validated.
        y : ignored

        Returns
        -------
        self : TextFeatures
        """
        self._check_params()
        if X is not None:
            check_texts(X)
        load_args = self._load_args()
        enc = load_text_encoder(self.model, **load_args, verbose=bool(self.verbose))
        names = enc.layer_names
        layers, taps = [], []
        for spec in self._layer_specs():
            if isinstance(spec, str) and spec == PENULTIMATE:
                path, idx = PENULTIMATE, None
            else:
                idx = resolve_text_layer(enc.module, spec, names)
                path = names[idx]
            if path in layers:
                raise ValueError(f"Layer {spec!r} appears twice in layers={self.layers!r}.")
            layers.append(path)
            taps.append(idx)
        pool = TEXT_POOLS[self.pool]
        pools = {}
        for path, idx in zip(layers, taps):
            if pool != "auto":
                pools[path] = pool
            elif idx is None and enc.st_modules:
                pools[path] = "auto"  # the sentence-transformers tail
            else:
                pools[path] = enc.st_pool or "avg"
        max_length = int(self.max_length or enc.default_max_length)
        device = resolve_device(self.device)
        amp_dtype(self.amp, device, what="features are computed")
        self._encoder = enc
        self._load_kwargs = load_args
        self._source_signature = _signature(os.fspath(self.model)) if self._reloadable() else None
        self._taps = [(idx, pools[p]) for p, idx in zip(layers, taps)]
        self._fingerprint = None
        self.layers_ = layers
        self.pools_ = pools
        self.max_length_ = max_length
        # one short text: learn the width of every tap (and check the hidden states)
        ids, types = enc.tokenize(["a"], max_length)
        with self._forward_context(device) as run:
            if any(idx is not None for idx in taps):
                out = enc.module(**enc.pad(ids, types, device), output_hidden_states=True)
                if len(out.hidden_states) != len(names):
                    raise ValueError(
                        f"{type(enc.module).__name__} returns {len(out.hidden_states)} hidden "
                        f"states but has {len(names)} tappable layers {names}; its layers "
                        "cannot be tapped by index."
                    )
            widths = [int(f.shape[1]) for f in run(enc.pad(ids, types, device))]
        self.layer_slices_ = {}
        feature_names = []
        start = 0
        for path, width in zip(layers, widths):
            self.layer_slices_[path] = slice(start, start + width)
            feature_names.extend(f"{path}__{i}" for i in range(width))
            start += width
        self.n_features_out_ = start
        self.feature_names_out_ = np.asarray(feature_names, dtype=object)
        return self

    # ------------------------------------------------------------------
    @contextlib.contextmanager
    def _forward_context(self, device):
        """Yields ``run(inputs) -> list of (n, C_i) float32 tensors`` on ``device``."""
        import torch

        enc = self._get_encoder()
        amp_dtype = self._amp_dtype(device)
        autocast = (
            torch.autocast(device_type=device.type, dtype=amp_dtype)
            if amp_dtype is not None
            else contextlib.nullcontext()
        )
        with enc.lock(), torch.inference_mode(), autocast:
            enc.module.to(device).eval()
            for m in enc.st_modules or ():
                m.to(device).eval()
            yield lambda inputs: enc.encode(inputs, self._taps)

    def _extract(self, texts, as_torch=False):
        """Features of a list of str as float32 numpy (or torch on the device)."""
        import torch
        from tqdm.auto import tqdm

        enc = self._get_encoder()
        device = resolve_device(self.device)
        index = {}
        inverse = np.fromiter(
            (index.setdefault(t, len(index)) for t in texts), dtype=np.int64, count=len(texts)
        )
        unique = list(index)
        ids, types = enc.tokenize(unique, self.max_length_, truncation=self.truncation)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if not self.truncation and lengths.max() > self.max_length_:
            i = int(np.argmax(lengths > self.max_length_))
            raise ValueError(
                f"Text {unique[i][:60]!r} has {lengths[i]} tokens, more than "
                f"max_length={self.max_length_}; pass truncation=True or a larger max_length."
            )
        order = np.argsort(-lengths, kind="stable") if self.sort_by_length else np.arange(len(ids))
        width = self.n_features_out_
        feats = torch.empty((len(unique), width), dtype=torch.float32, device=device)
        bs = int(self.batch_size)
        with (
            self._forward_context(device) as run,
            tqdm(
                total=len(unique),
                disable=not self.verbose,
                desc=type(self).__name__,
                unit="text",
                leave=False,
            ) as bar,
        ):
            for start in range(0, len(order), bs):
                sel = order[start : start + bs]
                batch = enc.pad(
                    [ids[i] for i in sel],
                    None if types is None else [types[i] for i in sel],
                    device,
                )
                z = torch.cat(run(batch), dim=1)
                feats[torch.as_tensor(sel, device=device)] = z
                bar.update(len(sel))
        inv = torch.as_tensor(inverse, device=device)
        out = feats[inv] if len(unique) != len(texts) else feats
        if as_torch:
            return out
        return out.cpu().numpy()

    def _cache_key(self, texts):
        enc = self._get_encoder()
        if getattr(self, "_fingerprint", None) is None:
            with self._lock():
                self._fingerprint = (
                    weights_fingerprint(enc.module),
                    _tokenizer_fingerprint(enc.tokenizer),
                    weights_fingerprint(_module_list(enc.st_modules)) if enc.st_modules else None,
                )
        model = self.model
        if not isinstance(model, (str, os.PathLike)):
            model = f"{type(model).__module__}.{type(model).__qualname__}"
        amp_dtype = self._amp_dtype(resolve_device(self.device))
        return {
            "version": _CACHE_VERSION,
            "kind": "text",
            "model": os.fspath(model),
            "architecture": repr(enc.module.config.to_dict()),
            "weights": self._fingerprint,
            "max_length": self.max_length_,
            "truncation": bool(self.truncation),
            "layers": list(self.layers_),
            "pools": repr(sorted(self.pools_.items())),
            "precision": str(amp_dtype or "float32"),
            "input": _fingerprint_texts(texts),
        }

    def transform(self, X):
        """Encode texts.

        Parameters
        ----------
        X : list, array or pandas column of str

        Returns
        -------
        Z : ndarray of shape (n_samples, `n_features_out_`), float32
            Or a float32 tensor on the compute device with ``output="torch"``.
        """
        check_is_fitted(self, "layers_")
        self._check_params()
        texts = check_texts(X)
        cache = resolve_cache(self.memory)
        if cache is None:
            return self._extract(texts, as_torch=self.output == "torch")
        Z = self._cached_extract(texts, cache)
        if self.output == "torch":
            import torch

            return torch.from_numpy(np.array(Z, dtype=np.float32)).to(resolve_device(self.device))
        return np.array(Z, dtype=np.float32, copy=True)

    # ------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.input_tags.allow_nan = False
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = []
        tags.requires_fit = True
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_lock_obj", None)
        enc = state.pop("_encoder", None)
        if enc is not None and (self.store_weights_in_pickle or not self._reloadable()):
            copy_ = TextEncoder.__new__(TextEncoder)
            copy_.__dict__.update(enc.__dict__)
            if enc.st_modules:
                copy_.st_modules = [_cpu_copy(m) for m in enc.st_modules]
            state["_encoder"] = copy_  # its module is stored as a state dict
        return state


def _module_list(modules):
    from torch import nn

    return nn.ModuleList(modules)

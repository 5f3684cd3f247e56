"""BackboneFeatures: a pretrained network as a scikit-learn transformer."""

import contextlib
import copy
import itertools
import numbers
import threading

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..utils import resolve_device
from ..utils._options import amp_dtype, check_amp
from ..utils._warnings import CacheWarning, warn_external
from ._cache import UnkeyableError, key_digest, module_fingerprint, resolve_cache
from ._create import create_backbone
from ._images import (
    LAYOUTS,
    check_images,
    fingerprint_images,
    iter_batches,
    resolve_data_config,
)
from ._layers import PENULTIMATE, POOLS, LayerTap, resolve_layer, token_info
from ._weights import (
    classifier_name,
    strip_classifier,
    warn_identity_blocks,
    weights_fingerprint,
)

__all__ = ["BackboneFeatures"]

_CACHE_VERSION = 2
_FLUSH_EVERY = 8  # CUDA: copy features to the host every few batches, not every batch


def _cpu_copy(module, force=False):
    """``module`` with every parameter and buffer on CPU, copied without a GPU duplicate.

    A module already on CPU is returned as is unless ``force``. Shared
    (tied) tensors stay shared.
    """
    import torch
    from torch import nn

    tensors = itertools.chain(module.parameters(), module.buffers())
    if not force and all(t.device.type == "cpu" for t in tensors):
        return module
    memo = {}
    for t in itertools.chain(module.parameters(), module.buffers()):
        if id(t) in memo:
            continue
        cpu = t.detach().to("cpu")
        if isinstance(t, nn.Parameter):
            cpu = nn.Parameter(cpu, requires_grad=t.requires_grad)
        memo[id(t)] = cpu
    with torch.no_grad():
        return copy.deepcopy(module, memo)


class BackboneFeatures(TransformerMixin, BaseEstimator):
    """Features of a pretrained network (timm or any torch module) as a transformer.

    Put a backbone at the front of a pipeline, e.g.
    ``make_pipeline(BackboneFeatures("resnet50", pretrained=True),
    LogisticRegression())``. ``transform`` maps images to the penultimate
    (pre-logits) features, or to pooled features of intermediate blocks.

    Parameters
    ----------
    model : str, torch.nn.Module or callable, default="resnet18"
        A timm model name (``timm.create_model``), a module you built (a
        torchvision model, your own net; it is deep-copied, never modified),
        or a module class / factory called with ``model_kwargs``.
    pretrained : bool, default=False
        Load timm's hub weights (timm names only). On a machine without
        network access (or with ``HF_HUB_OFFLINE=1``) this fails within
        seconds, unless the weights are in the local Hugging Face cache,
        with a message explaining how to use a local file (``weights=``).
    weights : str, path-like or None, default=None
        A local weight file loaded after the model is built:
        ``.safetensors``, or ``.pth``/``.pt``/``.bin`` read with
        ``torch.load(weights_only=True)``. Checkpoint containers
        (``{"state_dict": ...}``, ``{"model": ...}``) and wrapper prefixes
        (``module.``) are unwrapped. Keys and shapes must match, except the
        classifier head, which features discard. Mismatches raise a
        ``ValueError`` listing them.
    layers : None, int, str or list of those, default=None
        Which features. None: the penultimate (pre-logits) features, sized
        by timm's ``head_hidden_size`` (other modules: the input of their
        last ``nn.Linear``, the classifier; a module without one is used as
        it is, its output pooled like a block). An int indexes the model's blocks
        (``list_layers``: timm's ``feature_info`` modules, the blocks of
        ``forward_intermediates``; negative ints count from the end; an int
        is a block *index*, not timm's "last n blocks"). A str is a module
        path (``"layer3"``, ``"layer3.1"``, ``"blocks.6"``) or
        ``"penultimate"`` (as is None inside a list). A list extracts several
        layers in one forward pass, concatenated as blocks of columns in the order given; see
        :meth:`split_layers` and :meth:`transform_layers`.
    pool : {"auto", "avg", "token", "max", "flatten"}, default="auto"
        How intermediate outputs become vectors: feature maps are averaged
        over space ("auto"/"avg") or max-pooled; token outputs of
        transformers give the class token ("auto" when the model has one,
        "token") or the mean of the patch tokens ("auto" otherwise, "avg");
        "flatten" keeps everything. The penultimate features are always
        used as they are.
    input_size : int, (H, W), (C, H, W) or None, default=None
        Size images are resized and centre-cropped to; default from the
        model's data config (``timm.data.resolve_model_data_config``;
        224 x 224 for non-timm modules). Images already at this size are
        used as they are.
    mean, std : float, sequence or None, default=None
        Normalisation; default from the model's data config.
    crop_pct : float or None, default=None
        Centre-crop fraction; default from the data config.
    interpolation : {"bilinear", "bicubic", "nearest"} or None, default=None
        Resize interpolation; default from the data config.
    layout : {"NHW", "NHWC", "NCHW"} or None, default=None
        The layout of image arrays (for lists of arrays, of each item:
        ``"NHWC"`` (H, W, C), ``"NCHW"`` (C, H, W)). None guesses it from the
        shape and raises a ``ValueError`` naming the choices where two
        readings are possible, e.g. ``(N, 3, 1, 1)`` or a single
        ``(H, W, 3)`` image passed as X (which would read as H greyscale
        images).
    batch_size : int, default=64
        Images per forward pass.
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"``, ... Resolved at each ``transform`` (so an estimator
        fitted on a GPU machine and unpickled elsewhere runs there).
    amp : bool or {"float16", "fp16", "bfloat16", "bf16"}, default=False
        Mixed precision (``torch.autocast``) on CUDA: True, ``"float16"``
        or ``"fp16"`` is float16, ``"bfloat16"`` or ``"bf16"`` bfloat16 (the
        same meaning in every sknc estimator). Ignored, with a warning at
        fit, on other devices.
    channels_last : bool, default=False
        Run in ``torch.channels_last`` memory format (faster for many CNNs
        on recent GPUs).
    output : {"numpy", "torch"}, default="numpy"
        ``transform`` returns a float32 numpy array, or a float32 torch
        tensor on the compute device.
    memory : None, str, path-like or joblib.Memory, default=None
        Cache ``transform`` outputs on disk, in this folder (or the
        ``joblib.Memory``'s); see Notes.
    file_key : {"stat", "content"}, default="stat"
        How the cache keys image files: by path and ``os.stat`` (size,
        modification and status-change times, inode; no file is read), or
        by the hash of their bytes (every file is read at each ``transform``;
        keys survive moving or copying the files). See Notes.
    verbose : bool or int, default=False
        Show a progress bar (tqdm) during extraction.
    model_kwargs : dict or None, default=None
        Extra arguments for ``timm.create_model`` or the model factory (e.g.
        ``{"img_size": 64}``, ``{"in_chans": 1}``).
    random_state : int, RandomState instance or None, default=None
        Seeds the random initialisation of the weights (models built with
        ``pretrained=False`` and no ``weights``), so that random-init
        backbones give the same features at every fit.
    head : {None, "logits", "proba"}, default=None
        Also return the pretrained classifier's outputs on the penultimate
        features, from the same forward pass, as the last block of columns
        (key ``"head"`` of :meth:`split_layers`): its logits, or their
        softmax probabilities -- what LEEP and NCE
        (:func:`sknc.metrics.leep`, :func:`sknc.metrics.nce`) need. Requires
        ``"penultimate"`` among ``layers`` and a model with a classifier.

    Attributes
    ----------
    model_ : torch.nn.Module
        The backbone with its classifier replaced by identity, in eval mode.
    head_ : torch.nn.Module or None
        A copy of the pretrained classifier (with ``head=...``), else None.
    layers_ : list of str
        The resolved layers: module paths and/or ``"penultimate"``.
    layer_slices_ : dict of str to slice
        Columns of each layer in the output.
    data_config_ : dict
        The preprocessing: ``input_size``, ``mean``, ``std``, ``crop_pct``,
        ``interpolation``, ``crop_mode``.
    n_features_out_ : int
        Number of output columns.
    feature_names_out_ : ndarray of str
        ``"<layer>__<i>"``, e.g. ``"layer3__0"``, ``"penultimate__511"``.

    See Also
    --------
    sknc.features.list_layers : The blocks a model offers.

    Notes
    -----
    **Inputs.** numpy arrays or torch tensors of images (N, H, W),
    (N, H, W, C) or (N, C, H, W), uint8 (or integers in [0, 255]) or float
    in [0, 1]; lists or 1-D arrays of image file paths (read lazily, batch
    by batch; RGBA files are converted to RGB by dropping alpha); lists of
    PIL images or of single-image arrays of any size. Every form gives the
    same features for the same pixels. Greyscale images are repeated to
    RGB. Images are resized and centre-cropped like timm's eval transform
    unless already at ``input_size``. On CUDA, uint8 pixels are sent to the
    device as bytes and converted and normalised there.

    **Caching.** With ``memory``, ``transform`` outputs are stored as
    ``.npy`` files (float32) in ``<memory>/sknc-features/``, written
    atomically (temporary file + rename) so that processes sharing the folder
    (Dask workers, ``n_jobs``) never read half a file. Entries are read with
    ``allow_pickle=False`` and used only if they hold a float32 array of the
    expected shape; anything else (a pickle, a truncated file) is a miss
    and is replaced, so nothing in a shared cache folder can run code. The
    key covers what determines the features: the model argument and
    ``model_kwargs``; the built module's ``repr``, a hash of its state dict
    (names, dtypes, shapes, values) and a hash of everything else its
    forward can read (every sub-module's Python attributes, plain tensor
    attributes, non-persistent buffers, forward hooks, and the code of
    module classes defined outside torch, timm and torchvision, whose
    versions are in the key); the layers, pooling, preprocessing config,
    ``layout`` and numerical precision (``amp`` when it applies); and the
    input (array bytes, dtype and shape; PIL pixels; files per
    ``file_key``: with ``"stat"`` the path, size, modification and
    status-change times and inode, which change with any rewrite except one
    within the file system's timestamp granularity, a few milliseconds on
    Linux, that keeps size and inode; with ``"content"`` the file bytes). A
    module with an attribute that cannot be hashed (a lock, an open file)
    is not cached: ``transform`` warns and computes the features. Device,
    ``batch_size``, ``channels_last``, ``output`` and ``verbose`` are *not*
    in the key, so features cached on a GPU are reused on a CPU (they agree
    to float32 round-off). The model hash is taken once per fit: refit after
    changing ``model_`` in place. A ``memory`` folder that cannot be created
    or written (read-only, or a file) does not fail ``transform``: it warns
    and the features are computed (entries already there are still read
    from a read-only folder). Unlike ``Pipeline(memory=...)``, which caches
    fitted transformers keyed on all constructor parameters and only at
    fit time, every ``transform`` call, on training or test data, in any
    clone, is served from the cache, so a ``GridSearchCV`` over the
    downstream classifier runs the backbone once per distinct input.

    **Fit.** ``fit`` only builds the model, resolves the layers and the data
    config and runs one dummy image to learn the output widths; it ignores
    ``y`` and only validates ``X``.

    **Random weights.** With ``pretrained=False`` and no ``weights`` the
    model keeps its random initialisation. timm initialises the last
    BatchNorm of every residual block of its ResNets (and RegNets, ...) to
    zero (``zero_init_last=True``), which is what training from scratch
    wants, but for *frozen* features it turns every residual branch off:
    the features then barely depend on the blocks (a random ``resnet18`` on
    32-pixel digits gives 18.5% five-fold linear-probe accuracy, against
    92.2% with ``model_kwargs={"zero_init_last": False}``;
    ``benchmarks/bench_zero_init_last.py``). ``fit`` warns when a model
    it built with random weights has such all-zero scales (BatchNorm
    weights, or convolution gains of NF nets); sknc does not change timm's
    default, so that ``BackboneFeatures(name)`` is always
    ``timm.create_model(name)``. For a random baseline pass
    ``model_kwargs={"zero_init_last": False}``.

    **Pickling.** The model is pickled on CPU and moved to the device given
    by ``device`` at the next ``transform``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sknc.features import BackboneFeatures
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = np.array([0, 1] * 4)
    >>> feats = BackboneFeatures("resnet18", input_size=32, random_state=0)
    >>> feats.fit_transform(X).shape
    (8, 512)
    >>> multi = BackboneFeatures("resnet18", layers=["layer3", -1], input_size=32,
    ...                          random_state=0).fit(X)
    >>> {k: v.shape for k, v in multi.transform_layers(X).items()}
    {'layer3': (8, 256), 'layer4': (8, 512)}
    >>> clf = make_pipeline(BackboneFeatures("resnet18", input_size=32, random_state=0),
    ...                     LogisticRegression()).fit(X, y)
    >>> clf.predict(X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        model="resnet18",
        *,
        pretrained=False,
        weights=None,
        layers=None,
        pool="auto",
        input_size=None,
        mean=None,
        std=None,
        crop_pct=None,
        interpolation=None,
        layout=None,
        batch_size=64,
        device="auto",
        amp=False,
        channels_last=False,
        output="numpy",
        memory=None,
        file_key="stat",
        verbose=False,
        model_kwargs=None,
        random_state=None,
        head=None,
    ):
        self.model = model
        self.pretrained = pretrained
        self.weights = weights
        self.layers = layers
        self.pool = pool
        self.input_size = input_size
        self.mean = mean
        self.std = std
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self.layout = layout
        self.batch_size = batch_size
        self.device = device
        self.amp = amp
        self.channels_last = channels_last
        self.output = output
        self.memory = memory
        self.file_key = file_key
        self.verbose = verbose
        self.model_kwargs = model_kwargs
        self.random_state = random_state
        self.head = head

    # ------------------------------------------------------------------
    # parameters
    # ------------------------------------------------------------------
    def _check_params(self):
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}.")
        if self.output not in ("numpy", "torch"):
            raise ValueError(f"output must be 'numpy' or 'torch', got {self.output!r}.")
        if (
            not isinstance(self.batch_size, numbers.Integral)
            or isinstance(self.batch_size, bool)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}.")
        check_amp(self.amp, type(self).__name__)
        if self.model_kwargs is not None and not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a dict or None, got {self.model_kwargs!r}.")
        if self.file_key not in ("stat", "content"):
            raise ValueError(f"file_key must be 'stat' or 'content', got {self.file_key!r}.")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ValueError(f"layout must be None or one of {LAYOUTS}, got {self.layout!r}.")
        if self.head not in (None, "logits", "proba"):
            raise ValueError(f"head must be None, 'logits' or 'proba', got {self.head!r}.")

    def _layer_specs(self):
        layers = self.layers
        if layers is None:
            return [PENULTIMATE]
        if isinstance(layers, (str, numbers.Integral)) and not isinstance(layers, bool):
            return [layers]
        if isinstance(layers, (list, tuple)) and layers:
            return [PENULTIMATE if spec is None else spec for spec in layers]
        raise ValueError(
            f"layers must be None, an int, a str or a non-empty list of those; got {layers!r}."
        )

    def _amp_dtype(self, device):
        import torch

        name = amp_dtype(self.amp, device)
        return None if name is None else getattr(torch, name)

    # ------------------------------------------------------------------
    # fit
    # ------------------------------------------------------------------
    def fit(self, X=None, y=None):
        """Build the backbone, resolve layers and preprocessing.

        A failed ``fit`` leaves the estimator as it was (fitted or not).

        Parameters
        ----------
        X : image collection or None, default=None
            Only validated (cheaply; nothing is decoded). See Notes for the
            accepted forms.
        y : ignored

        Returns
        -------
        self : BackboneFeatures
        """
        self._check_params()
        module = self._build_module()
        clf = classifier_name(module)
        layers = self._resolve_layers(module, clf)
        head_module = self._head_module(module, clf, layers)
        if clf is not None:
            strip_classifier(module)
        data_config = resolve_data_config(
            module,
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
        )
        if X is not None:
            check_images(X, n_channels=data_config["input_size"][0], layout=self.layout)
        device = resolve_device(self.device)
        amp_dtype(self.amp, device, what="features are computed")

        previous = dict(vars(self))
        try:
            self.model_ = module
            self.head_ = head_module
            self.layers_ = layers
            self.data_config_ = data_config
            self._placement = ("cpu", False)
            self._fingerprint = None
            self._learn_widths(device)
        except BaseException:
            vars(self).clear()
            vars(self).update(previous)
            raise
        return self

    def _build_module(self):
        """The backbone (seeded from ``random_state``), warning about zero-scale layers."""
        import torch

        seed = None
        if self.random_state is not None:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        module = create_backbone(
            self.model,
            pretrained=self.pretrained,
            weights=self.weights,
            model_kwargs=self.model_kwargs,
            seed=seed,
        )
        if (
            not self.pretrained
            and self.weights is None
            and not isinstance(self.model, torch.nn.Module)
        ):
            warn_identity_blocks(module, self.model, what="features")
        return module

    def _resolve_layers(self, module, clf):
        """``layers`` -> module paths (or ``"penultimate"``); never the classifier ``clf``."""
        layers = []
        for spec in self._layer_specs():
            if isinstance(spec, str) and spec == PENULTIMATE:
                path = PENULTIMATE
            else:
                path = resolve_layer(module, spec)
                if clf is not None and (path == clf or path.startswith(clf + ".")):
                    raise ValueError(
                        f"Layer {spec!r} is the classifier head {clf!r}, which "
                        "BackboneFeatures discards; use layers=None for the pre-logits "
                        "features."
                    )
            if path in layers:
                raise ValueError(f"Layer {spec!r} appears twice in layers={self.layers!r}.")
            layers.append(path)
        return layers

    def _head_module(self, module, clf, layers):
        """A copy of the classifier ``clf`` for ``head=...`` (before it is stripped), or None."""
        if self.head is None:
            return None
        if clf is None:
            raise ValueError(
                f"head={self.head!r} needs the model's classifier, but "
                f"{type(module).__name__} has none."
            )
        if PENULTIMATE not in layers:
            raise ValueError(
                f"head={self.head!r} applies the classifier to the penultimate features; "
                "include 'penultimate' (or None) in layers."
            )
        return copy.deepcopy(module.get_submodule(clf)).eval()

    def _learn_widths(self, device):
        """Run one dummy image: ``layer_slices_``, ``n_features_out_``, ``feature_names_out_``."""
        import torch

        dummy = torch.zeros((1, *self.data_config_["input_size"]))
        try:
            with self._forward_context(device) as run:
                widths = [int(np.prod(f.shape[1:])) for f in run(dummy)]
        except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
            raise ValueError(
                f"The backbone does not run on a {tuple(dummy.shape[1:])} input "
                f"(data_config_['input_size'], from input_size={self.input_size!r}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.layer_slices_ = {}
        names = []
        start = 0
        blocks = self.layers_ + (["head"] if self.head_ is not None else [])
        for path, width in zip(blocks, widths):
            self.layer_slices_[path] = slice(start, start + width)
            names.extend(f"{path}__{i}" for i in range(width))
            start += width
        self.n_features_out_ = start
        self.feature_names_out_ = np.asarray(names, dtype=object)

    # ------------------------------------------------------------------
    # extraction
    # ------------------------------------------------------------------
    def _lock(self):
        return self.__dict__.setdefault("_lock_obj", threading.RLock())

    def _place_model(self, device):
        import torch

        placement = (str(device), bool(self.channels_last))
        if getattr(self, "_placement", None) != placement:
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            self.model_.to(device=device, memory_format=fmt)
            if getattr(self, "head_", None) is not None:
                self.head_.to(device=device)
            self._placement = placement

    @contextlib.contextmanager
    def _forward_context(self, device):
        """Yields ``run(batch) -> list of (n, C_i) tensors`` with the model on ``device``."""
        import torch

        n_prefix, has_cls, fmt = token_info(self.model_)
        amp_dtype = self._amp_dtype(device)
        with self._lock():
            self._place_model(device)
            self.model_.eval()
            tap = LayerTap(
                self.model_,
                self.layers_,
                pool=self.pool,
                num_prefix_tokens=n_prefix,
                has_class_token=has_cls,
                fmt=fmt,
            )
            autocast = (
                torch.autocast(device_type=device.type, dtype=amp_dtype)
                if amp_dtype is not None
                else contextlib.nullcontext()
            )
            try:
                with torch.inference_mode(), autocast:
                    head = getattr(self, "head_", None)
                    pen = self.layers_.index(PENULTIMATE) if head is not None else None

                    def run(batch):
                        feats = [f.reshape(f.shape[0], -1).float() for f in tap(batch.to(device))]
                        if head is not None:
                            out = head(feats[pen]).float()
                            feats.append(out.softmax(dim=1) if self.head == "proba" else out)
                        return feats

                    yield run
            finally:
                tap.remove()

    def _extract(self, source, as_torch=False):
        """Features of an :class:`ImageSource` as float32 numpy (or torch on device)."""
        import torch
        from tqdm.auto import tqdm

        device = resolve_device(self.device)
        n = len(source)
        width = self.n_features_out_
        fmt = torch.channels_last if self.channels_last else None
        if as_torch:
            out = torch.empty((n, width), dtype=torch.float32, device=device)
        else:
            out = np.empty((n, width), dtype=np.float32)
        cuda = device.type == "cuda"
        pending = []  # (start, stop, features on the device) not yet copied out
        inflight = []  # CUDA: (start, stop, pinned host buffer, event) being copied

        def flush(final=False):
            # On CUDA, features go to the host asynchronously (pinned buffer + event)
            # every few batches, so the GPU never waits for the host mid-run.
            if pending:
                lo, hi = pending[0][0], pending[-1][1]
                block = torch.cat([z for _, _, z in pending]) if len(pending) > 1 else pending[0][2]
                pending.clear()
                if as_torch:
                    out[lo:hi] = block
                elif cuda:
                    host = torch.empty(block.shape, dtype=block.dtype, pin_memory=True)
                    host.copy_(block, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record(torch.cuda.current_stream(device))
                    inflight.append((lo, hi, host, event))
                else:
                    out[lo:hi] = block.numpy()
            while len(inflight) > (0 if final else 1):
                lo, hi, host, event = inflight.pop(0)
                event.synchronize()
                out[lo:hi] = host.numpy()

        with (
            self._forward_context(device) as run,
            tqdm(
                total=n,
                disable=not self.verbose,
                desc=type(self).__name__,
                unit="img",
                leave=False,
            ) as bar,
        ):
            for start, stop, batch in iter_batches(
                source,
                self.data_config_,
                batch_size=self.batch_size,
                device=device,
                memory_format=fmt,
            ):
                z = torch.cat(run(batch), dim=1)
                if z.shape[1] != width:  # pragma: no cover - widths are fixed by the config
                    raise RuntimeError(f"Got {z.shape[1]} features, expected {width}.")
                pending.append((start, stop, z))
                if not cuda or len(pending) >= _FLUSH_EVERY:
                    flush()
                bar.update(stop - start)
            flush(final=True)
        return out

    def _model_fingerprint(self):
        """(state-dict hash, behaviour hash or None), computed once per fit."""
        fingerprint = getattr(self, "_fingerprint", None)
        if not (isinstance(fingerprint, tuple) and len(fingerprint) == 3):  # or pickled by sknc 0.1
            with self._lock():
                try:
                    behaviour = module_fingerprint(self.model_)
                    reason = None
                except UnkeyableError as exc:
                    behaviour, reason = None, str(exc)
                self._fingerprint = (weights_fingerprint(self.model_), behaviour, reason)
        return self._fingerprint

    def _cache_key(self, source):
        """The cache key of ``source`` (a dict), or None when the model cannot be keyed."""
        import timm
        import torch

        weights, behaviour, _ = self._model_fingerprint()
        if behaviour is None:
            return None
        model = self.model
        if not isinstance(model, str):
            name = getattr(model, "__qualname__", type(model).__qualname__)
            model = f"{getattr(model, '__module__', type(model).__module__)}.{name}"
        amp_dtype = self._amp_dtype(resolve_device(self.device))
        return {
            "version": _CACHE_VERSION,
            "libraries": [torch.__version__, timm.__version__],
            "model": model,
            "model_kwargs": repr(sorted((self.model_kwargs or {}).items())),
            "architecture": repr(self.model_),
            "weights": weights,
            "module": behaviour,
            "layers": list(self.layers_),
            "head": self.head,
            "pool": self.pool,
            "data_config": repr(sorted(self.data_config_.items())),
            "precision": str(amp_dtype or "float32"),
            "input": fingerprint_images(source, files=self.file_key),
            "file_key": self.file_key,
            "layout": self.layout,
        }

    def _cached_extract(self, source, cache):
        """Features of ``source`` from ``cache``, computed and stored on a miss."""
        key = self._cache_key(source)
        if key is None:
            warn_external(
                f"{type(self).__name__}(memory=...) does not cache this model: "
                f"{self._fingerprint[2]}, so a cache key could not tell it from "
                "another model. The features are computed without caching.",
                CacheWarning,
            )
            return self._extract(source)
        digest = key_digest(key)
        Z = cache.load(digest, (len(source), self.n_features_out_))
        if Z is None:
            Z = self._extract(source)
            cache.save(digest, Z)
        return Z

    def transform(self, X):
        """Extract features.

        Parameters
        ----------
        X : image collection
            Arrays/tensors (N, H, W), (N, H, W, C), (N, C, H, W); file paths;
            PIL images; see Notes.

        Returns
        -------
        Z : ndarray of shape (n_samples, `n_features_out_`), float32
            Or a float32 torch tensor on the compute device with
            ``output="torch"``.
        """
        check_is_fitted(self, "model_")
        self._check_params()
        source = check_images(X, n_channels=self.data_config_["input_size"][0], layout=self.layout)
        cache = resolve_cache(self.memory)
        if cache is None:
            return self._extract(source, as_torch=self.output == "torch")
        Z = self._cached_extract(source, cache)
        if self.output == "torch":
            import torch

            return torch.from_numpy(np.array(Z, dtype=np.float32)).to(resolve_device(self.device))
        return np.array(Z, dtype=np.float32, copy=True)

    def split_layers(self, Z):
        """Split a ``transform`` output into one block of columns per layer.

        Parameters
        ----------
        Z : ndarray or tensor of shape (n_samples, `n_features_out_`)

        Returns
        -------
        dict of str to ndarray or tensor
            Keyed by ``layers_`` entries (module paths, ``"penultimate"``).
        """
        check_is_fitted(self, "layer_slices_")
        if Z.ndim != 2 or Z.shape[1] != self.n_features_out_:
            raise ValueError(
                f"Z must have shape (n_samples, {self.n_features_out_}), got {tuple(Z.shape)}."
            )
        return {path: Z[:, sl] for path, sl in self.layer_slices_.items()}

    def transform_layers(self, X):
        """Features of every layer in one forward pass, as a dict.

        Equivalent to ``self.split_layers(self.transform(X))``.

        Parameters
        ----------
        X : image collection

        Returns
        -------
        dict of str to ndarray
        """
        return self.split_layers(self.transform(X))

    def get_feature_names_out(self, input_features=None):
        """Output feature names, ``"<layer>__<i>"``.

        Parameters
        ----------
        input_features : ignored
            Present for API consistency (the inputs are images).

        Returns
        -------
        ndarray of str objects
        """
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    # ------------------------------------------------------------------
    # scikit-learn / pickling plumbing
    # ------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images or file paths, not tabular data
        tags.input_tags.three_d_array = True  # (N, H, W) greyscale images (and 4-D)
        tags.input_tags.string = True  # file paths
        tags.input_tags.allow_nan = False
        tags.target_tags.required = False
        tags.transformer_tags.preserves_dtype = []  # always float32
        tags.requires_fit = True
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_lock_obj", None)
        state.pop("_placement", None)
        if "model_" in state:
            state["model_"] = _cpu_copy(state["model_"])
        if state.get("head_") is not None:
            state["head_"] = _cpu_copy(state["head_"])
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._placement = None  # re-place (device, memory format) at the next transform

"""Training datasets of :mod:`sknc.finetune` (torch ``Dataset`` objects for skorch).

Contents
--------
make_train_dataset(X, y, data_config, augment=None, cache_bytes=0)
    Images -> :class:`sknc.features.ImageDataset` yielding
    ``(normalised CHW float32 tensor, label)``; with ``augment``, the
    augmentation runs on the float image in [0, 1] before resizing and
    normalisation. Without ``augment`` and with ``cache_bytes > 0``, a
    :class:`CachedImageDataset` instead.
CachedImageDataset(dataset, max_bytes)
    An ``ImageDataset`` whose first images are kept preprocessed in memory,
    up to ``max_bytes``: the same tensors, bit for bit, computed once.
INPUT_CACHE_MAX_BYTES
    The bound of ``FineTuningClassifier(cache_inputs="auto")``: 1 GiB.
AugmentThenPreprocess(augment, data_config)
    The picklable transform used for that.
CachedPrefixDataset(tensors, y)
    Items ``({"cached": [t[i] for t in tensors]}, y[i])``: skorch passes the
    dict to ``FineTuneNet.forward(cached=...)``.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

from ..features import ImageDataset
from ..features._images import preprocess_batch

__all__ = [
    "INPUT_CACHE_MAX_BYTES",
    "AugmentThenPreprocess",
    "CachedImageDataset",
    "CachedPrefixDataset",
    "input_cache_bound",
    "make_train_dataset",
]

#: ``cache_inputs="auto"`` keeps at most this many bytes of preprocessed images.
INPUT_CACHE_MAX_BYTES = 1024**3


class AugmentThenPreprocess:
    """``augment`` on a float CHW image in [0, 1], then the standard preprocessing.

    The augmentation sees the image at its original size (so e.g.
    ``RandomResizedCrop`` can crop from the full image) and returns a CHW
    tensor of any size; it is then resized/centre-cropped to the model's
    input size if needed and normalised, exactly like un-augmented images.
    """

    def __init__(self, augment, data_config):
        self.augment = augment
        self.data_config = data_config

    def __call__(self, img):
        out = self.augment(img)
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"augment returned {type(out).__name__}; it must return a CHW tensor "
                "(use torchvision.transforms.v2 transforms, which work on tensors)."
            )
        if out.ndim != 3:
            raise ValueError(f"augment must return a CHW tensor, got shape {tuple(out.shape)}.")
        return preprocess_batch(out[None], self.data_config, check=False)[0]


def input_cache_bound(cache_inputs):
    """Bytes of preprocessed images ``cache_inputs`` allows (None: no bound)."""
    if cache_inputs is True:
        return None
    if cache_inputs is False:
        return 0
    if isinstance(cache_inputs, str) and cache_inputs == "auto":
        return INPUT_CACHE_MAX_BYTES
    return int(cache_inputs)


def make_train_dataset(X, y, data_config, augment=None, cache_bytes=0):
    """The training ``Dataset`` over images ``X`` with integer labels ``y``.

    Without ``augment`` the preprocessing is deterministic, so with
    ``cache_bytes`` other than 0 (None: no bound) the images are preprocessed
    once and kept (:class:`CachedImageDataset`).
    """
    if augment is None:
        dataset = ImageDataset(X, y, data_config=data_config)
        if cache_bytes is None or cache_bytes > 0:
            return CachedImageDataset(dataset, cache_bytes)
        return dataset
    return ImageDataset(
        X,
        y,
        data_config=data_config,
        transform=AugmentThenPreprocess(augment, data_config),
        transform_input="tensor",
    )


class CachedImageDataset(Dataset):
    """An :class:`~sknc.features.ImageDataset` with its first images kept preprocessed.

    ``dataset[i]`` is computed once for the first ``n_cached`` images (as
    many as fit in ``max_bytes``) and stored in one float32 tensor; items
    are then read from it, the others preprocessed on every access as
    before. Items equal ``dataset[i]`` bit for bit: they are its own
    outputs.

    Parameters
    ----------
    dataset : sknc.features.ImageDataset
        Without ``transform`` (deterministic preprocessing) and with labels.
    max_bytes : int or None
        Bound on the memory of the stored tensors; None: no bound.

    Attributes
    ----------
    tensor : torch.Tensor of shape (n_cached, C, H, W), float32
    n_cached : int

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.features import ImageDataset
    >>> from sknc.finetune._data import CachedImageDataset
    >>> X = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    >>> config = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3,
    ...           "crop_pct": 1.0, "interpolation": "bilinear", "crop_mode": "center"}
    >>> ds = CachedImageDataset(ImageDataset(X, [0, 1, 0, 1, 0], data_config=config),
    ...                         max_bytes=3 * 4 * 3 * 32 * 32)  # room for 3 images
    >>> ds.n_cached, len(ds), float(ds[4][0][0, 0, 0]), ds[4][1]
    (3, 5, -1.0, 0)
    """

    def __init__(self, dataset, max_bytes):
        if dataset.transform is not None or dataset.pixels != "normalized":
            raise ValueError("Only deterministic, normalised preprocessing can be cached.")
        self.dataset = dataset
        shape = tuple(dataset.data_config["input_size"])
        per_image = 4 * int(np.prod(shape))
        n = len(dataset)
        self.n_cached = n if max_bytes is None else min(n, int(max_bytes) // per_image)
        self.tensor = torch.empty((self.n_cached, *shape), dtype=torch.float32)
        for i in range(self.n_cached):
            x = dataset[i][0]
            if tuple(x.shape) != shape:  # pragma: no cover - preprocessing gives input_size
                raise RuntimeError(f"Image {i} was preprocessed to {tuple(x.shape)}, not {shape}.")
            self.tensor[i] = x

    @property
    def y(self):
        return self.dataset.y

    @property
    def nbytes(self):
        """Memory held by the stored tensors, in bytes."""
        return self.tensor.numel() * self.tensor.element_size()

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if 0 <= i < self.n_cached:
            return self.tensor[i], self.dataset.y[i]
        return self.dataset[i]


class CachedPrefixDataset(Dataset):
    """Cached prefix activations (and labels) as a ``Dataset``.

    Parameters
    ----------
    tensors : list of torch.Tensor
        Each of shape ``(N, ...)``.
    y : array-like of shape (N,)
    """

    def __init__(self, tensors, y):
        self.tensors = list(tensors)
        self.y = y
        n = len(y)
        for t in self.tensors:
            if t.shape[0] != n:
                raise ValueError(f"Cached tensor has {t.shape[0]} rows for {n} labels.")

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"cached": [t[i] for t in self.tensors]}, self.y[i]

    @property
    def nbytes(self):
        """Memory held by the cached tensors, in bytes."""
        return sum(t.numel() * t.element_size() for t in self.tensors)

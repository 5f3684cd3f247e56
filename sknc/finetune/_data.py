"""Training datasets of :mod:`sknc.finetune` (torch ``Dataset`` objects for skorch).

Contents
--------
make_train_dataset(X, y, data_config, augment=None)
    Images -> :class:`sknc.features.ImageDataset` yielding
    ``(normalised CHW float32 tensor, label)``; with ``augment``, the
    augmentation runs on the float image in [0, 1] before resizing and
    normalisation.
AugmentThenPreprocess(augment, data_config)
    The picklable transform used for that.
CachedPrefixDataset(tensors, y)
    Items ``({"cached": [t[i] for t in tensors]}, y[i])``: skorch passes the
    dict to ``FineTuneNet.forward(cached=...)``.
"""

import torch
from torch.utils.data import Dataset

from ..features import ImageDataset
from ..features._images import preprocess_batch

__all__ = ["AugmentThenPreprocess", "CachedPrefixDataset", "make_train_dataset"]


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


def make_train_dataset(X, y, data_config, augment=None):
    """The training ``Dataset`` over images ``X`` with integer labels ``y``."""
    if augment is None:
        return ImageDataset(X, y, data_config=data_config)
    return ImageDataset(
        X,
        y,
        data_config=data_config,
        transform=AugmentThenPreprocess(augment, data_config),
        transform_input="tensor",
    )


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

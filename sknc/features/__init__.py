"""Pretrained backbones (timm models or any torch module) as scikit-learn transformers.

Public API
----------
BackboneFeatures
    Images -> penultimate or intermediate-layer features, in a Pipeline.
ImageDataset
    Preprocessed images (and targets) as a ``torch.utils.data.Dataset``.
list_layers
    The blocks of a model that ``BackboneFeatures(layers=...)`` can tap.

The shared machinery (model creation, weight loading, layer taps, image
preprocessing) lives in ``sknc.features._backbone`` and
``sknc.features._images``; see their module docstrings.
"""

from ._backbone import list_layers
from ._backbone_features import BackboneFeatures

__all__ = ["BackboneFeatures", "ImageDataset", "list_layers"]


def __getattr__(name):
    # ImageDataset subclasses torch's Dataset: import torch only when asked for.
    if name == "ImageDataset":
        from ._images import ImageDataset

        return ImageDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

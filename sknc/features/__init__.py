"""Pretrained backbones (timm models or any torch module) as scikit-learn transformers.

Public API
----------
BackboneFeatures
    Images -> penultimate or intermediate-layer features, in a Pipeline.
ImageDataset
    Preprocessed images (and targets) as a ``torch.utils.data.Dataset``.
TextFeatures
    Strings -> sentence embeddings or pooled hidden states of a Hugging Face
    / sentence-transformers encoder (``transformers`` imported lazily).
list_layers
    The blocks of a model that ``BackboneFeatures(layers=...)`` (or, for a
    text encoder, ``TextFeatures(layers=...)``) can tap.

The shared machinery (model creation, weight loading, layer taps, image
preprocessing) lives in ``sknc.features._backbone`` and
``sknc.features._images``; see their module docstrings.
"""

from ._backbone import list_layers
from ._backbone_features import BackboneFeatures
from ._text import TextFeatures

__all__ = ["BackboneFeatures", "ImageDataset", "TextFeatures", "list_layers"]


def __getattr__(name):
    # ImageDataset subclasses torch's Dataset: import torch only when asked for.
    if name == "ImageDataset":
        from ._images import ImageDataset

        return ImageDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
create_backbone
    A timm name, module or factory -> a module in eval mode on CPU, with
    hub or local weights.
load_weights
    Load a weight file (safetensors, or ``torch.load(weights_only=True)``)
    strictly into a module, unwrapping containers and prefixes and
    converting known foreign layouts (torchvision MobileNetV2,
    EfficientNet-Lite) to timm's names.
convert_torchvision_mobilenet_v2, convert_efficientnet_lite, detect_layout
    The weight-layout converters ``load_weights`` uses.

The shared machinery (model creation, weight loading, layer taps, image
preprocessing) lives in ``sknc.features._backbone`` and
``sknc.features._images``; see their module docstrings.
"""

from ._backbone import create_backbone, list_layers, load_weights
from ._backbone_features import BackboneFeatures
from ._convert import convert_efficientnet_lite, convert_torchvision_mobilenet_v2, detect_layout
from ._images import ImageDataset
from ._text import TextFeatures

__all__ = [
    "BackboneFeatures",
    "ImageDataset",
    "TextFeatures",
    "convert_efficientnet_lite",
    "convert_torchvision_mobilenet_v2",
    "create_backbone",
    "detect_layout",
    "list_layers",
    "load_weights",
]

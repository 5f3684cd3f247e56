"""Pretrained backbones (timm models or any torch module) as scikit-learn transformers.

Public API
----------
BackboneFeatures
    Images -> penultimate or intermediate-layer features, in a Pipeline.
TextFeatures
    Strings -> sentence embeddings or pooled hidden states of a Hugging Face
    / sentence-transformers encoder (``transformers`` imported lazily).

The backbone core (plain ``torch.nn.Module`` objects, no scikit-learn), along
timm's lines:

create_backbone
    A timm name, module or factory -> a module in eval mode on CPU, with
    hub or local weights.
load_weights, read_state_dict
    Read a weight file (safetensors, or ``torch.load(weights_only=True)``),
    unwrapping containers and prefixes, and load it strictly into a module,
    converting known foreign layouts (torchvision MobileNetV2,
    EfficientNet-Lite) to timm's names.
classifier_name, strip_classifier
    Find the final classifier layer; replace it by identity (pre-logits
    features).
list_layers, resolve_layer
    The blocks of a model that ``BackboneFeatures(layers=...)`` (or, for a
    text encoder, ``TextFeatures(layers=...)``) can tap; an index or path ->
    a module path.
pool_features, token_info, LayerTap
    Pool one layer output to ``(N, C)``; how a model's blocks are pooled;
    the pooled outputs of several layers from one forward pass.
convert_torchvision_mobilenet_v2, convert_efficientnet_lite, detect_layout
    The weight-layout converters ``load_weights`` uses.
resolve_data_config, ImageNormalizer, ImageDataset
    A model's preprocessing (input size, mean/std, crop); the normalisation
    as a module; preprocessed images (and targets) as a
    ``torch.utils.data.Dataset``.

Implementation modules: ``_hub`` (hub probing, offline guard), ``_create``
(model creation), ``_weights`` (weight files, classifier head), ``_layers``
(layer listing, pooling, taps), ``_convert`` (weight layouts), ``_images``
(image inputs and preprocessing).
"""

from ._backbone_features import BackboneFeatures
from ._convert import convert_efficientnet_lite, convert_torchvision_mobilenet_v2, detect_layout
from ._create import create_backbone
from ._images import ImageDataset, ImageNormalizer, resolve_data_config
from ._layers import LayerTap, list_layers, pool_features, resolve_layer, token_info
from ._text import TextFeatures
from ._weights import classifier_name, load_weights, read_state_dict, strip_classifier

__all__ = [
    "BackboneFeatures",
    "ImageDataset",
    "ImageNormalizer",
    "LayerTap",
    "TextFeatures",
    "classifier_name",
    "convert_efficientnet_lite",
    "convert_torchvision_mobilenet_v2",
    "create_backbone",
    "detect_layout",
    "list_layers",
    "load_weights",
    "pool_features",
    "read_state_dict",
    "resolve_data_config",
    "resolve_layer",
    "strip_classifier",
    "token_info",
]

"""Datasets: embedded glyph data, digits as images, image folders and real-data loaders.

Built locally, no download:

- :func:`load_glyphs`: characters of 170 classes drawn by 15-23 typefaces
  each (fonts shipped with matplotlib), cached under :func:`get_data_home`.
- :func:`load_digits_images`: scikit-learn's digits upscaled for backbones.
- :func:`load_image_folder`: any ``root/<class>/<image>`` folder.
- :func:`load_text_files`, :func:`load_text_table`: your own labelled texts
  (``root/<class>/<file>.txt``, or a CSV/TSV with text and label columns).

Real data fetched once by ``benchmarks/fetch_data.py`` (no download at run
time): :func:`load_fashion_mnist`, :func:`load_emoji` and
:func:`load_pretrained_backbone` (ImageNet MobileNetV2 / EfficientNet-Lite), and labelled text:
:func:`load_brown`, :func:`load_fortunes`, :func:`load_spam_assassin`,
:func:`load_debian_descriptions`.

The splits for transfer experiments (``split_classes``,
``source_novel_split``, ``subsample_per_class``) moved to
:mod:`sknc.model_selection`; their old names here are deprecated aliases
(``FutureWarning``) for one release.
"""

from .. import model_selection as _model_selection
from ..utils._deprecation import deprecated_alias
from ._base import clear_data_home, get_data_home
from ._digits import load_digits_images
from ._folder import IMAGE_EXTENSIONS, load_image_folder
from ._glyphs import GLYPH_DROPPED, load_glyphs
from ._pretrained import PRETRAINED_BACKBONES, load_pretrained_backbone
from ._real import EMOJI_VENDORS, load_emoji, load_fashion_mnist, read_idx
from ._text import (
    load_brown,
    load_debian_descriptions,
    load_fortunes,
    load_spam_assassin,
    load_text_files,
    load_text_table,
)

__all__ = [
    "EMOJI_VENDORS",
    "GLYPH_DROPPED",
    "IMAGE_EXTENSIONS",
    "PRETRAINED_BACKBONES",
    "clear_data_home",
    "load_brown",
    "load_debian_descriptions",
    "load_fortunes",
    "load_spam_assassin",
    "load_text_files",
    "load_text_table",
    "get_data_home",
    "load_digits_images",
    "load_emoji",
    "load_fashion_mnist",
    "load_glyphs",
    "load_image_folder",
    "load_pretrained_backbone",
    "read_idx",
]

# deprecated aliases (since 0.2), not in __all__: the splits live in sknc.model_selection
split_classes = deprecated_alias(
    _model_selection.split_classes,
    "sknc.datasets.split_classes",
    "sknc.model_selection.split_classes",
)
source_novel_split = deprecated_alias(
    _model_selection.source_novel_split,
    "sknc.datasets.source_novel_split",
    "sknc.model_selection.source_novel_split",
)
subsample_per_class = deprecated_alias(
    _model_selection.subsample_per_class,
    "sknc.datasets.subsample_per_class",
    "sknc.model_selection.subsample_per_class",
)

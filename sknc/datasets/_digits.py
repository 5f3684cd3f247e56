"""scikit-learn's 8x8 handwritten digits as images for image backbones.

Contents
--------
load_digits_images
    :func:`sklearn.datasets.load_digits` upscaled to ``size`` x ``size`` uint8
    images: a quick real-data downstream target for transfer experiments.
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

from ._base import _check_size, _to_rgb


def load_digits_images(*, size=32, rgb=False, return_X_y=False):
    """Load scikit-learn's handwritten digits as upscaled uint8 images.

    The 1,797 real 8x8 digits of :func:`sklearn.datasets.load_digits` (grey
    values 0..16) are mapped to 0..255 and resized with bilinear
    interpolation (PIL) to ``size`` x ``size``, ready for
    ``sknc.features`` transformers and the fine-tuners. Ink is bright on a
    black background, as in the original.

    For a scarce training set (e.g. 10% of the training data per class), use
    :func:`~sknc.model_selection.subsample_per_class` on the training part of a
    :func:`sklearn.model_selection.train_test_split` (``stratify=y``).

    Parameters
    ----------
    size : int, default=32
        Side of the square output images in pixels (at least 8).
    rgb : bool, default=False
        If True, return (n_samples, size, size, 3) images (grey repeated).
    return_X_y : bool, default=False
        If True, return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        images : ndarray of shape (1797, size, size) or (1797, size, size, 3), uint8
        data : ndarray of shape (1797, n_pixels), the same pixels flattened
        target : ndarray of shape (1797,), the digit
        target_names : ndarray of shape (10,), ``0..9``
        DESCR : str

    (images, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    >>> from sknc.datasets import load_digits_images
    >>> digits = load_digits_images(size=16)
    >>> digits.images.shape, digits.images.dtype
    ((1797, 16, 16), dtype('uint8'))
    >>> load_digits_images(size=16, rgb=True).images.shape
    (1797, 16, 16, 3)
    """
    from PIL import Image

    size = _check_size(size)
    raw = load_digits()
    small = np.round(raw.images * (255.0 / 16.0)).astype(np.uint8)
    if size == 8:
        images = small.copy()
    else:
        images = np.stack(
            [np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in small]
        )
    target = raw.target.astype(np.int64)
    if rgb:
        images = _to_rgb(images)
    if return_X_y:
        return images, target
    descr = (
        f"Digits as images (sknc)\n-----------------------\n\n"
        f"scikit-learn's 8x8 digits (grey 0..16) mapped to 0..255 and resized "
        f"bilinearly to {size} x {size} uint8{' RGB' if rgb else ''} images.\n\n" + raw.DESCR
    )
    return Bunch(
        images=images,
        data=images.reshape(len(images), -1),
        target=target,
        target_names=np.arange(10),
        DESCR=descr,
    )

"""Loaders for the real data that ``benchmarks/fetch_data.py`` puts on disk.

Nothing here downloads: the loaders read files fetched beforehand and say how
to fetch them when they are missing.

Contents
--------
load_fashion_mnist
    Fashion-MNIST from its IDX files (the Debian ``dataset-fashion-mnist``
    package, or a copy under ``data_home/fashion-mnist``).
load_emoji
    Multi-vendor emoji joined by code point (one emoji = one class, one
    vendor = one sample), with Unicode categories and subcategories.
read_idx
    Parser for the IDX format (optionally gzipped), numpy only.
EMOJI_VENDORS
    The vendor folders ``load_emoji`` knows, in their canonical order.
"""

import gzip
import hashlib
import json
import os

import numpy as np
from sklearn.utils import Bunch

from ._base import DATA_HOME_ENV, _check_size, _fetch_hint

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_FASHION_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

#: Emoji vendors (sub-folders of the emoji data folder), canonical order.
EMOJI_VENDORS = ("google", "twitter", "openmoji", "fluent", "noto-v1", "emojione", "fxemoji")

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _data_home_path(data_home):
    """Like get_data_home but without creating the folder."""
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV, os.path.join("~", "sknc_data"))
    return os.path.abspath(os.path.expanduser(os.fspath(data_home)))


def read_idx(path):
    """Read an IDX file (the MNIST format), gzipped or not, into a numpy array.

    Parameters
    ----------
    path : str or path-like
        The file; a name ending in ``.gz`` is decompressed.

    Returns
    -------
    array : ndarray
        With the shape and element type stored in the header, in native
        byte order.

    Raises
    ------
    ValueError
        If the header is not an IDX header or the data are truncated.

    Examples
    --------
    >>> import os, struct, tempfile
    >>> import numpy as np
    >>> from sknc.datasets import read_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny-idx2-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(struct.pack(">BBBBii", 0, 0, 0x08, 2, 2, 3) + bytes(range(6)))
    >>> read_idx(path)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # includes gzip.BadGzipFile
        raise ValueError(f"cannot read IDX file {path!r}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number {raw[:4]!r}).")
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {path!r} is truncated inside its header.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"IDX file {path!r} holds {len(raw)} bytes but its header {shape} "
            f"of {dtype.name} needs {expected}; the file is truncated or corrupt."
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _find_fashion_dir(path, data_home):
    if path is not None:
        candidates = [os.path.abspath(os.path.expanduser(os.fspath(path)))]
    else:
        candidates = [
            os.path.join(_data_home_path(data_home), "fashion-mnist"),
            _FASHION_SYSTEM_DIR,
        ]
    needed = [f for pair in _FASHION_FILES.values() for f in pair]
    for folder in candidates:
        if all(os.path.exists(os.path.join(folder, f)) for f in needed):
            return folder
    raise FileNotFoundError(_fetch_hint(f"Fashion-MNIST (files {needed})", candidates))


def load_fashion_mnist(path=None, *, data_home=None, subset="train", return_X_y=False):
    """Load Fashion-MNIST (Zalando, MIT licence) from its IDX files.

    70,000 greyscale 28x28 images of 10 clothing classes: 60,000 for
    training, 10,000 for testing. Nothing is downloaded: the files come from
    the Debian package ``dataset-fashion-mnist``, fetched by
    ``benchmarks/fetch_data.py``.

    Parameters
    ----------
    path : str or path-like, default=None
        Folder holding ``train-images-idx3-ubyte.gz`` and the three other
        files. None looks in ``data_home/fashion-mnist`` and then in
        ``/usr/share/datasets/fashion-mnist`` (where the Debian package
        installs them).
    data_home : str or path-like, default=None
        See :func:`get_data_home`.
    subset : {'train', 'test', 'all'}, default='train'
        Which part to load; 'all' is train followed by test.
    return_X_y : bool, default=False
        If True, return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        images : ndarray of shape (n_samples, 28, 28), uint8 (bright object on black)
        data : ndarray of shape (n_samples, 784), the same pixels flattened
        target : ndarray of shape (n_samples,), int64
        target_names : ndarray of shape (10,), the class names
        DESCR : str

    (images, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        If the files are not found, with the command that fetches them.
    ValueError
        If ``subset`` is unknown or a file is corrupt.

    Examples
    --------
    >>> from sknc.datasets import load_fashion_mnist
    >>> fmnist = load_fashion_mnist(subset="test")  # doctest: +SKIP
    >>> fmnist.images.shape  # doctest: +SKIP
    (10000, 28, 28)
    """
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}.")
    folder = _find_fashion_dir(path, data_home)
    parts = ["train", "test"] if subset == "all" else [subset]
    images, target = [], []
    for part in parts:
        img_file, lbl_file = (os.path.join(folder, f) for f in _FASHION_FILES[part])
        x, y = read_idx(img_file), read_idx(lbl_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST files in {folder!r} do not match: images {x.shape}, labels {y.shape}."
            )
        images.append(x.astype(np.uint8, copy=False))
        target.append(y.astype(np.int64))
    images = np.concatenate(images)
    target = np.concatenate(target)
    if return_X_y:
        return images, target
    descr = (
        "Fashion-MNIST\n-------------\n\n"
        f"Zalando's article images, {subset} subset: {len(images)} greyscale "
        f"{images.shape[1]}x{images.shape[2]} images, 10 classes "
        f"({', '.join(FASHION_MNIST_CLASSES)}). MIT licence. Read from {folder}."
    )
    return Bunch(
        images=images,
        data=images.reshape(len(images), -1),
        target=target,
        target_names=np.asarray(FASHION_MNIST_CLASSES),
        DESCR=descr,
    )


def _emoji_char(unified):
    return "".join(chr(int(cp, 16)) for cp in unified.split("-"))


def _load_rgb_on_white(path, size):
    """Open an image, composite RGBA on white, resize to size x size; uint8 (H, W, 3)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            if im.size != (size, size):
                im = im.resize((size, size), Image.LANCZOS)
    except OSError as exc:
        raise ValueError(f"cannot read emoji image {path!r}: {exc}") from exc
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, im).convert("RGB"))


def _identical_drawing_roots(images, target, vendor, n_classes):
    """For each class, the first class linked to it by identical drawings of one vendor.

    Two classes are linked when one vendor draws them with exactly the same
    pixels; links are followed transitively (union-find), and every group is
    represented by its lowest class index.
    """
    parent = list(range(n_classes))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = {}
    for img, v, k in zip(images, vendor, target):
        key = (str(v), hashlib.sha1(np.ascontiguousarray(img).tobytes()).hexdigest())
        if key in first:
            a, b = find(first[key]), find(int(k))
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first[key] = int(k)
    return np.array([find(i) for i in range(n_classes)], dtype=np.int64)


def load_emoji(
    path=None,
    *,
    data_home=None,
    vendors=None,
    min_vendors=2,
    size=64,
    dedupe=True,
    return_X_y=False,
    verbose=False,
):
    """Load multi-vendor emoji: one emoji is one class, one vendor's drawing one sample.

    The emoji of several designers (Google, Twitter, OpenMoji, Microsoft
    Fluent, Noto v1, EmojiOne, Firefox OS) are joined by code point through
    ``emoji.json`` of the ``emoji-datasource`` package, which also gives each
    emoji its category (10) and subcategory (~99). This is an Omniglot-like
    set of real artwork: many classes, few samples each, with ``vendor`` as a
    natural group for held-out splits. Only base emoji are used (no
    skin-tone variants). Nothing is downloaded: run
    ``benchmarks/fetch_data.py`` first.

    Transparent pixels are composited on **white**, so the images are RGB.

    Some vendors draw two emoji with exactly the same image (the
    gender-neutral "COOK" as "MAN COOK", "PEDESTRIAN" as "MAN WALKING", ...;
    84 emoji among those drawn by at least 4 of the 7 vendors). Two classes
    sharing a sample cannot be told apart on it, and when all their drawings
    coincide their class means are equal and the CDNV is infinite. By
    default (``dedupe=True``) such emoji are merged: classes linked by an
    identical drawing of the same vendor are grouped (transitively) and only
    the first of each group in the emoji order is kept, with all of its own
    samples; the names of the others are in ``duplicates_dropped``.

    Parameters
    ----------
    path : str or path-like, default=None
        Folder holding ``emoji.json`` and one sub-folder of PNG files per
        vendor (``<vendor>/<code points>.png``, as written by the fetch
        script). None means ``data_home/emoji``.
    data_home : str or path-like, default=None
        See :func:`get_data_home`.
    vendors : list of str, default=None
        Vendors to use, among those present; None uses all present ones, in
        the order of :data:`EMOJI_VENDORS`.
    min_vendors : int, default=2
        Keep only emoji drawn by at least this many of the selected vendors.
    size : int, default=64
        Side of the square output images (the files are 64x64 PNGs).
    dedupe : bool, default=True
        Drop the emoji that a vendor draws with exactly the same pixels (at
        ``size``, among the selected vendors) as an emoji kept (see above).
        False keeps every emoji.
    return_X_y : bool, default=False
        If True, return ``(images, target)`` instead of a Bunch.
    verbose : bool, default=False
        Show a progress bar while decoding the images.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        images : ndarray of shape (n_samples, size, size, 3), uint8
        target : ndarray of shape (n_samples,), class index
        target_names : ndarray of shape (n_classes,), the emoji names
        emoji : ndarray of shape (n_classes,), the emoji characters
        unified : ndarray of shape (n_classes,), code points such as ``'1F600'``
        vendor : ndarray of shape (n_samples,), the designer of each sample
        category, subcategory : ndarray of shape (n_samples,)
        duplicates_dropped : list of str, names of the emoji dropped by
        ``dedupe`` (empty without it), in the emoji order
        DESCR : str

    (images, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        If the emoji folder or ``emoji.json`` is missing.
    ValueError
        For unknown vendors, ``min_vendors`` larger than the number of
        vendors, a ``dedupe`` that is not a bool, or no emoji left.

    Examples
    --------
    >>> from sknc.datasets import load_emoji
    >>> emoji = load_emoji(min_vendors=4, size=32)  # doctest: +SKIP
    >>> emoji.images.shape[1:]  # doctest: +SKIP
    (32, 32, 3)
    """
    size = _check_size(size)
    if not isinstance(dedupe, (bool, np.bool_)):
        raise ValueError(f"dedupe must be True or False, got {dedupe!r}.")
    folder, vendors = _emoji_vendors(path, data_home, vendors, min_vendors)
    classes, samples = _emoji_samples(folder, vendors, min_vendors)
    iterator = samples
    if verbose:
        from tqdm.auto import tqdm

        iterator = tqdm(samples, desc="decoding emoji", unit="image")
    images = np.stack([_load_rgb_on_white(f, size) for _, _, f in iterator])
    target = np.asarray([k for k, _, _ in samples], dtype=np.int64)
    vendor = np.asarray([v for _, v, _ in samples])
    names = [c.get("name") or c.get("short_name") or c["unified"] for c in classes]
    dropped = []
    if dedupe:
        roots = _identical_drawing_roots(images, target, vendor, len(classes))
        keep = np.flatnonzero(roots == np.arange(len(classes)))
        if len(keep) < len(classes):
            dropped = [names[i] for i in range(len(classes)) if roots[i] != i]
            mask = np.isin(target, keep)
            images, vendor = images[mask], vendor[mask]
            target = np.searchsorted(keep, target[mask]).astype(np.int64)
            classes = [classes[i] for i in keep]
            names = [names[i] for i in keep]
    if return_X_y:
        return images, target
    category = np.asarray([c.get("category") or "" for c in classes])
    subcategory = np.asarray([c.get("subcategory") or "" for c in classes])
    return Bunch(
        images=images,
        target=target,
        target_names=np.asarray(names),
        emoji=np.asarray([_emoji_char(c["unified"]) for c in classes]),
        unified=np.asarray([c["unified"] for c in classes]),
        vendor=vendor,
        category=category[target],
        subcategory=subcategory[target],
        duplicates_dropped=dropped,
        DESCR=_emoji_descr(
            target, category, subcategory, vendors, min_vendors, size, dedupe, dropped
        ),
    )


def _emoji_vendors(path, data_home, vendors, min_vendors):
    """``load_emoji``'s folder and selected vendors, checked; ``(folder, vendors)``."""
    folder = (
        os.path.abspath(os.path.expanduser(os.fspath(path)))
        if path is not None
        else os.path.join(_data_home_path(data_home), "emoji")
    )
    if not os.path.exists(os.path.join(folder, "emoji.json")):
        raise FileNotFoundError(_fetch_hint("Emoji data (emoji.json)", [folder]))
    present = [
        v
        for v in sorted(os.listdir(folder))
        if not v.startswith((".", "_")) and os.path.isdir(os.path.join(folder, v))
    ]
    order = {v: i for i, v in enumerate(EMOJI_VENDORS)}
    present.sort(key=lambda v: (order.get(v, len(order)), v))
    if vendors is None:
        vendors = present
    else:
        vendors = [vendors] if isinstance(vendors, str) else list(vendors)
        unknown = [v for v in vendors if v not in present]
        if unknown or not vendors:
            raise ValueError(
                f"vendors {unknown or vendors} not found in {folder!r}; present: {present}."
            )
    if not vendors:
        raise ValueError(f"no vendor folders in {folder!r}; run benchmarks/fetch_data.py.")
    if (
        isinstance(min_vendors, bool)
        or not isinstance(min_vendors, (int, np.integer))
        or min_vendors < 1
    ):
        raise ValueError(f"min_vendors must be a positive int, got {min_vendors!r}.")
    if min_vendors > len(vendors):
        raise ValueError(
            f"min_vendors={min_vendors} but only {len(vendors)} vendors are selected: {vendors}."
        )
    return folder, vendors


def _emoji_samples(folder, vendors, min_vendors):
    """``(classes, samples)``: the emoji.json entries kept, and (class, vendor, file) triples."""
    with open(os.path.join(folder, "emoji.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    meta = sorted(meta, key=lambda e: (e.get("sort_order", 0), e["unified"]))
    listing = {v: set(os.listdir(os.path.join(folder, v))) for v in vendors}

    classes, samples = [], []  # samples: (class index, vendor, file)
    for entry in meta:
        image = entry.get("image") or entry["unified"].lower() + ".png"
        drawn = [v for v in vendors if image in listing[v]]
        if len(drawn) < min_vendors:
            continue
        k = len(classes)
        classes.append(entry)
        samples.extend((k, v, os.path.join(folder, v, image)) for v in drawn)
    if not classes:
        raise ValueError(
            f"no emoji is drawn by {min_vendors} or more of the vendors {vendors} in {folder!r}."
        )
    return classes, samples


def _emoji_descr(target, category, subcategory, vendors, min_vendors, size, dedupe, dropped):
    """The ``DESCR`` of ``load_emoji``'s bunch."""
    n_per_class = np.bincount(target)
    return (
        "Multi-vendor emoji (sknc)\n-------------------------\n\n"
        f"{len(category)} emoji (classes) drawn by at least {min_vendors} of the vendors "
        f"{vendors}; {len(target)} images of {size}x{size} RGB (transparent pixels on white). "
        f"Samples per class: min {n_per_class.min()}, median {int(np.median(n_per_class))}, "
        f"max {n_per_class.max()}. {len(np.unique(category))} categories, "
        f"{len(np.unique(subcategory))} subcategories (from emoji-datasource's emoji.json).\n"
        "Licences: Google Noto and Noto v1 (Apache-2.0), Twitter Twemoji (CC-BY-4.0), "
        "OpenMoji (CC-BY-SA-4.0), Microsoft Fluent (MIT), EmojiOne 2 (CC-BY-4.0), "
        "Firefox OS emoji (Apache-2.0).\n"
        + (
            f"{len(dropped)} emoji drawn by some vendor exactly like another emoji were "
            "dropped (dedupe=True; names in duplicates_dropped)."
            if dedupe
            else "Emoji drawn by some vendor exactly like another emoji are kept (dedupe=False)."
        )
    )

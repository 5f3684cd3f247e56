"""Image folders in the ImageFolder convention (one sub-folder per class).

Contents
--------
load_image_folder
    ``root/<class>/**/<image>`` -> file paths, integer targets and class names.
IMAGE_EXTENSIONS
    The file extensions recognised by default.
"""

import os

import numpy as np
from sklearn.utils import Bunch

#: Extensions (lower case) that :func:`load_image_folder` treats as images.
IMAGE_EXTENSIONS = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)


def _normalise_extensions(extensions):
    if isinstance(extensions, str):
        extensions = (extensions,)
    out = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.strip("."):
            raise ValueError(f"extensions must be non-empty strings such as '.png', got {ext!r}.")
        ext = ext.lower()
        out.append(ext if ext.startswith(".") else "." + ext)
    if not out:
        raise ValueError("extensions is empty.")
    return tuple(out)


def load_image_folder(path, *, extensions=IMAGE_EXTENSIONS, allow_empty=False, return_X_y=False):
    """List the images of a folder laid out one sub-folder per class.

    The layout is torchvision's ``ImageFolder`` convention::

        path/cat/001.png
        path/cat/more/002.jpg     (sub-folders are searched too)
        path/dog/003.png

    Class names are the sub-folder names, sorted; ``target[i]`` indexes
    ``target_names``. Hidden files and folders (names starting with ``.``)
    are skipped, as are files with other extensions. Symbolic links to
    folders are followed, but no real folder is listed twice for a class
    (so a link loop, or a link to a folder already listed, adds nothing). Files are not opened:
    the returned paths go straight to ``sknc.features`` transformers and the
    fine-tuners, which load them lazily.

    Parameters
    ----------
    path : str or path-like
        The root folder.
    extensions : str or tuple of str, default=IMAGE_EXTENSIONS
        File extensions (case-insensitive) counted as images.
    allow_empty : bool, default=False
        If False, a class folder without any image is an error; if True it
        is kept in ``target_names`` with no samples.
    return_X_y : bool, default=False
        If True, return ``(filenames, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        filenames : ndarray of str, shape (n_samples,), sorted per class
        target : ndarray of int, shape (n_samples,)
        target_names : ndarray of str, shape (n_classes,)
        DESCR : str

    (filenames, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    NotADirectoryError
        If ``path`` is a file.
    ValueError
        If ``path`` has no class sub-folders, or a class folder has no image
        (listing them) and ``allow_empty`` is False.

    Examples
    --------
    >>> import os, tempfile
    >>> from PIL import Image
    >>> from sknc.datasets import load_image_folder
    >>> root = tempfile.mkdtemp()
    >>> for name in ["cat", "dog"]:
    ...     os.makedirs(os.path.join(root, name))
    ...     Image.new("RGB", (8, 8)).save(os.path.join(root, name, "a.png"))
    >>> folder = load_image_folder(root)
    >>> folder.target_names.tolist(), folder.target.tolist()
    (['cat', 'dog'], [0, 1])
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist.")
    if not os.path.isdir(root):
        raise NotADirectoryError(
            f"{root!r} is a file; pass the folder that holds one sub-folder per class."
        )
    extensions = _normalise_extensions(extensions)

    with os.scandir(root) as it:
        classes = sorted(
            e.name for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)
        )
    if not classes:
        raise ValueError(
            f"image folder {root!r} has no class sub-folders; expected the layout "
            "root/<class name>/<image files>."
        )
    filenames, target, empty = [], [], []
    for k, name in enumerate(classes):
        found = []
        top = os.path.join(root, name)
        seen = {os.path.realpath(top)}  # real folders walked for this class
        for dirpath, dirnames, files in os.walk(top, followlinks=True):
            keep = []
            # real sub-folders first, so a folder is listed under its own path
            # rather than under a link to it
            subdirs = sorted(d for d in dirnames if not d.startswith("."))
            for d in sorted(subdirs, key=lambda d: os.path.islink(os.path.join(dirpath, d))):
                real = os.path.realpath(os.path.join(dirpath, d))
                if real in seen:  # a link back to a folder already listed (or a loop)
                    continue
                seen.add(real)
                keep.append(d)
            dirnames[:] = sorted(keep)
            for f in sorted(files):
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions:
                    found.append(os.path.join(dirpath, f))
        if not found:
            empty.append(name)
        filenames.extend(found)
        target.extend([k] * len(found))
    if empty and not allow_empty:
        raise ValueError(
            f"class folder(s) without images in {root!r}: {empty[:20]}"
            f"{' ...' if len(empty) > 20 else ''} (extensions searched: {list(extensions)}). "
            "Remove them or pass allow_empty=True."
        )
    filenames = np.asarray(filenames, dtype=str)
    target = np.asarray(target, dtype=np.int64)
    if return_X_y:
        return filenames, target
    return Bunch(
        filenames=filenames,
        target=target,
        target_names=np.asarray(classes, dtype=str),
        DESCR=f"Image folder {root}: {len(filenames)} images in {len(classes)} classes.",
    )

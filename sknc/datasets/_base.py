"""Shared helpers of :mod:`sknc.datasets`: data home, atomic cache files, checks.

Contents
--------
get_data_home
    Where sknc keeps its cached and fetched data (``SKNC_DATA`` or ``~/sknc_data``).
clear_data_home
    Delete that folder.
_atomic_savez
    Write an ``.npz`` file through a temporary file and an atomic rename.
_check_size, _to_rgb, _fetch_hint
    Small validation and formatting helpers.
"""

import hashlib
import json
import numbers
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

#: Environment variable that overrides the default data home.
DATA_HOME_ENV = "SKNC_DATA"


def get_data_home(data_home=None):
    """Return the folder where sknc caches datasets, creating it if needed.

    The folder is, in order of precedence: the ``data_home`` argument, the
    ``SKNC_DATA`` environment variable, or ``~/sknc_data``. ``~`` is expanded.
    This mirrors :func:`sklearn.datasets.get_data_home`.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The folder to use. ``None`` means ``$SKNC_DATA`` or ``~/sknc_data``.

    Returns
    -------
    data_home : str
        The absolute path of the (existing) data folder.

    Examples
    --------
    >>> import tempfile
    >>> from sknc.datasets import get_data_home
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     get_data_home(tmp) == tmp
    True
    """
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV, os.path.join("~", "sknc_data"))
    data_home = os.path.abspath(os.path.expanduser(os.fspath(data_home)))
    os.makedirs(data_home, exist_ok=True)
    return data_home


def clear_data_home(data_home=None):
    """Delete the whole content of the data home folder.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The folder to delete; see :func:`get_data_home`.

    Examples
    --------
    >>> import os, tempfile
    >>> from sknc.datasets import clear_data_home
    >>> tmp = tempfile.mkdtemp()
    >>> clear_data_home(tmp)
    >>> os.path.exists(tmp)
    False
    """
    data_home = get_data_home(data_home)
    shutil.rmtree(data_home)


def _cache_key(params):
    """Short stable hash of a JSON-serialisable dict of parameters."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def _atomic_savez(path, **arrays):
    """Save arrays to ``path`` (.npz) via a temporary file and ``os.replace``.

    Concurrent readers never see a half-written file, and two writers racing
    on the same key both leave a complete file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache is shareable
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_size(size, name="size", minimum=8):
    """Validate an image side length; return it as int."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {size!r}.")
    if size < minimum:
        raise ValueError(f"{name} must be at least {minimum} pixels, got {size}.")
    return int(size)


def _to_rgb(images):
    """(N, H, W) uint8 -> (N, H, W, 3) by repeating the grey channel."""
    return np.repeat(images[..., None], 3, axis=-1)


def _fetch_hint(what, tried):
    """Message for loaders whose files are missing."""
    tried = "\n  ".join(str(t) for t in tried)
    return (
        f"{what} not found. Looked in:\n  {tried}\n"
        "Fetch it once with `python benchmarks/fetch_data.py --data-dir DIR` "
        "(from a source checkout of sknc), then pass data_home=DIR, set the "
        f"{DATA_HOME_ENV} environment variable to DIR, or pass path= explicitly."
    )

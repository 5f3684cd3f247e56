"""Shared pieces of the real-data reproductions (``benchmarks/reproduce_*.py``).

Not part of the package: the scripts put ``benchmarks/`` on ``sys.path`` and
import this module. It holds what both reproductions must agree on (the
emoji source / novel split, image resizing, where data and caches live) and
small I/O helpers (atomic JSON, the command line that produced a result).
"""

import json
import os
import shlex
import sys
import time

import numpy as np

from sknc.experiments._common import to_jsonable, write_text

# the one set of report formatters; the scripts use rc.finite, rc.num, rc.percent
from sknc.experiments._format import finite, num, percent  # noqa: F401

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
#: Where ``benchmarks/fetch_data.py`` puts the real data (git-ignored).
DATA_DIR = os.path.join(BENCH_DIR, "data")
#: On-disk feature cache shared by the scripts (``BackboneFeatures(memory=...)``).
CACHE_DIR = os.path.join(DATA_DIR, "cache")
#: Default parent of the scripts' output folders (git-ignored).
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

#: The emoji protocol both scripts share: emoji drawn by >= 4 of the 7
#: vendors, a quarter of the emoji (stratified by Unicode category) are the
#: novel classes, and two vendors are held out of source training (two, so
#: that the held-out drawings of a class have a variance: CDNV needs two
#: samples per class).
EMOJI_MIN_VENDORS = 4
EMOJI_N_NOVEL = 0.25
EMOJI_TEST_VENDORS = 2
EMOJI_NATIVE_SIZE = 64  # the vendors' PNGs are 64 x 64

IMAGENET_BACKBONES = (
    "mobilenetv2_100",
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
)
SHORT_NAMES = {
    "mobilenetv2_100": "MobileNetV2",
    "tf_efficientnet_lite0": "EffNet-Lite0",
    "tf_efficientnet_lite1": "EffNet-Lite1",
    "tf_efficientnet_lite2": "EffNet-Lite2",
}


def set_threads(n_threads):
    """Torch and BLAS on ``n_threads`` threads for the rest of the run (1 is fastest on a busy CPU).

    Holds one :class:`sknc.utils.thread_limits` (the library's thread policy)
    for the life of the script; also works offline (``HF_HUB_OFFLINE``).
    """
    from sknc.utils import thread_limits

    limits = thread_limits(int(n_threads), torch=True)
    limits.__enter__()  # released when the process ends
    os.environ.setdefault("OMP_NUM_THREADS", str(n_threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return limits


def command_line(argv=None):
    """The command that is running, relative to the repository root."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), REPO_DIR)
    return " ".join(["python", shlex.quote(script)] + [shlex.quote(a) for a in argv[1:]])


def log(message):
    """A time-stamped progress line on stdout (the scripts run under nohup)."""
    print(time.strftime("[%H:%M:%S] ") + message, flush=True)


def write_json(path, obj):
    """Write ``obj`` as JSON (indent 1), atomically (a crash never leaves half a file).

    ``obj`` goes through :func:`to_jsonable` (sknc's: numpy to Python, NaN
    and inf to None).
    """
    return write_text(path, json.dumps(to_jsonable(obj), indent=1, ensure_ascii=False) + "\n")


def finish(out, res, t_start):
    """End a reproduction: wall time, ``OUT/results.json`` (atomic), a line per claim."""
    res["wall_seconds"] = time.perf_counter() - t_start
    path = os.path.join(out, "results.json")
    write_json(path, res)
    for c in res["claims"].values():
        log(f"{c['title']}: {c['status']}. {c['verdict']}")
    log(f"done in {res['wall_seconds'] / 60:.1f} min: {path}")
    return res


def read_json(path, default=None):
    """The JSON in ``path``, or ``default`` when the file does not exist."""
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def replot(out, claims, figures):
    """``--replot``: the verdicts and figures again from ``out/results.json``.

    ``claims(res)`` recomputes the verdicts and ``figures(res, out)`` redraws
    the figures of a reproduction script; the results file is updated and
    returned. No measurement is re-run.
    """
    path = os.path.join(out, "results.json")
    res = read_json(path)
    if res is None:
        raise SystemExit(f"--replot: no results.json in {out}")
    res["claims"] = claims(res)
    res["figures"] = figures(res, out)
    write_json(path, res)
    log(f"recomputed the verdicts, redrew {sorted(res['figures'].values())} in {out}")
    return res


def resize_rgb(images, size, resample="bicubic"):
    """Images (N, H, W) or (N, H, W, 3) uint8 -> (N, size, size, 3) uint8 RGB, with PIL.

    Greyscale images are repeated to three channels. Images already at
    ``size`` are only converted.
    """
    from PIL import Image

    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}.")
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W) or (N, H, W, 3) images, got {images.shape}.")
    if images.shape[1:3] == (size, size):
        return np.ascontiguousarray(images)
    method = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}[
        resample
    ]
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), method))
    return out


def _subset_classes(emoji, keep, **extra):
    """``emoji`` restricted to the sorted class indices ``keep`` (re-encoded 0 .. k-1)."""
    from sklearn.utils import Bunch

    keep = np.asarray(keep)
    mask = np.isin(emoji.target, keep)
    return Bunch(
        images=emoji.images[mask],
        target=np.searchsorted(keep, emoji.target[mask]),
        target_names=emoji.target_names[keep],
        emoji=emoji.emoji[keep],
        unified=emoji.unified[keep],
        vendor=emoji.vendor[mask],
        category=emoji.category[mask],
        subcategory=emoji.subcategory[mask],
        DESCR=emoji.DESCR,
        **extra,
    )


def load_emoji_protocol(seed=0, max_classes=None):
    """The multi-vendor emoji at 64 px and the source / novel split of both papers' runs.

    Parameters
    ----------
    seed : int
        Seeds the split (novel classes stratified by category, two held-out
        vendors).
    max_classes : int or None
        Keep only this many emoji (a random, category-stratified subset;
        for ``--quick`` smoke runs).

    Returns
    -------
    emoji : Bunch
        From :func:`sknc.datasets.load_emoji` with ``dedupe=True`` (emoji
        that a vendor draws exactly like another are dropped; their names in
        ``duplicates_dropped``), possibly subset, with ``target`` re-encoded
        to 0 .. n_classes - 1.
    split : Bunch
        From :func:`sknc.model_selection.source_novel_split`.
    """
    from sknc.datasets import load_emoji
    from sknc.model_selection import source_novel_split, split_classes

    emoji = load_emoji(
        data_home=DATA_DIR, min_vendors=EMOJI_MIN_VENDORS, size=EMOJI_NATIVE_SIZE, dedupe=True
    )
    if max_classes is not None and max_classes < len(emoji.target_names):
        _, keep = split_classes(
            emoji.target, n_novel=int(max_classes), strata=emoji.category, random_state=seed
        )
        emoji = _subset_classes(emoji, keep, duplicates_dropped=emoji.duplicates_dropped)
    split = source_novel_split(
        emoji.target,
        emoji.vendor,
        n_novel=EMOJI_N_NOVEL,
        test_size=EMOJI_TEST_VENDORS,
        strata=emoji.category,
        random_state=seed,
    )
    return emoji, split


def imagenet_backbone(name):
    """(module with ImageNet weights, its data config) from the fetched weight files."""
    from sknc.datasets import load_pretrained_backbone

    return load_pretrained_backbone(name, data_home=DATA_DIR)


def git_revision():
    """The repository's HEAD commit (and '+dirty' for local changes), or None."""
    import subprocess

    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty" if dirty else "")


def environment():
    """Versions and hardware, stored in every results.json."""
    import platform

    import sklearn
    import timm
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "scikit-learn": sklearn.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "git": git_revision(),
    }

"""Shared pieces of the real-data reproductions (``benchmarks/reproduce_*.py``).

Not part of the package: the scripts put ``benchmarks/`` on ``sys.path`` and
import this module. It holds what both reproductions must agree on (the
emoji source / novel split, image resizing, where data and caches live) and
small I/O helpers (atomic JSON, the command line that produced a result).
"""

import json
import os
import shlex
import subprocess
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


#: The folders whose content a result depends on (their untracked files count as changes).
CODE_FOLDERS = ("sknc", "benchmarks")


def _git(args, cwd):
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.rstrip("\n")


def code_revision(repo_dir=None):
    """The code a run uses: ``{"git", "commit", "changed", "trees"}``, or None without git.

    ``commit`` is HEAD's full hash and ``git`` its short form with ``+dirty``
    when ``changed`` is not empty: the files under :data:`CODE_FOLDERS` that
    differ from HEAD or are untracked (not ignored); documentation and tests
    do not change what a reproduction computes. ``trees``
    holds git's tree hash of each folder at HEAD: it names the content, so it
    still identifies the code after a rebase rewrites the commit.
    """
    repo_dir = REPO_DIR if repo_dir is None else repo_dir
    try:
        commit = _git(["rev-parse", "HEAD"], repo_dir)
        short = _git(["rev-parse", "--short", "HEAD"], repo_dir)
        status = _git(["status", "--porcelain", "--untracked-files=all"], repo_dir)
        trees = {
            f: _git(["rev-parse", f"HEAD:{f}"], repo_dir)
            for f in CODE_FOLDERS
            if os.path.isdir(os.path.join(repo_dir, f))
        }
    except (OSError, subprocess.CalledProcessError):
        return None
    code = tuple(f + "/" for f in CODE_FOLDERS)
    changed = [line[3:] for line in status.splitlines() if line[3:].startswith(code)]
    return {
        "git": short + ("+dirty" if changed else ""),
        "commit": commit,
        "changed": changed,
        "trees": trees,
    }


def git_revision():
    """The repository's HEAD commit (and '+dirty' for local changes), or None."""
    rev = code_revision()
    return None if rev is None else rev["git"]


def revision_at_end(start, repo_dir=None):
    """``start`` (:func:`code_revision` at the start of a run), checked again at its end.

    The revision a result records is the one that ran, taken when the run
    started; if the code changed while it ran (a commit, a rebase or an edit
    under :data:`CODE_FOLDERS`), ``"at_end"`` holds the revision at the end and
    a line is logged, so a result never silently names code that did not run.
    A commit that leaves the code as it was (documentation, tests) is not a
    change.
    """
    if start is None:
        return None
    end = code_revision(repo_dir)
    out = dict(start)
    if end is not None and (end["trees"], end["changed"]) != (start["trees"], start["changed"]):
        out["at_end"] = end
        log(
            f"warning: the code changed while the run ran (started at {start['git']}, "
            f"now {end['git']}); results.json records the start."
        )
    return out


def environment(revision=None):
    """Versions and hardware, stored in every results.json.

    ``"git"`` is ``revision["git"]`` when given (the :func:`code_revision`
    taken when the run started), else the revision now.
    """
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
        "git": git_revision() if revision is None else revision["git"],
    }

"""Helpers shared by the demo and the evaluation: errors, progress, threads, files.

Contents
--------
InputError
    A problem with what the user asked for (missing folder, empty class,
    unknown model); the ``sknc`` command turns it into a message and exit
    status 2.
Progress
    Step lines and tqdm bars on stderr, all switchable off.
torch_threads
    Context manager setting torch's intra-op thread count (default: the
    cores this process may use) and restoring it.
single_threaded_blas
    Context manager limiting numpy's BLAS to one thread for small problems.
to_jsonable, write_json, write_text, save_figure
    ``results.json`` (NaN becomes null) and files written atomically, so an
    interrupted run never leaves half-written files behind.
check_out_dir
    Validate an output folder before any work (an existing file, or a
    folder that cannot be created, is an :class:`InputError`).
staged_output, Interrupted
    A run's files are written to a staging folder inside the output folder
    and moved into place together at the end, with Ctrl-C held back during
    the move: an interrupted run never mixes its files with those of an
    earlier complete run. :class:`Interrupted` (a ``KeyboardInterrupt``)
    carries what was kept.
check_model, check_int, check_device
    Turn an unknown model name, a bad count or an unavailable device into an
    :class:`InputError`.
environment
    The ``environment`` entry of ``results.json`` (device, threads, versions).
write_results
    Finish a run: total time, ``results.json`` and ``report.md``.
"""

import contextlib
import json
import math
import numbers
import os
import platform
import sys
import tempfile
import time

import numpy as np

from ..utils import thread_limits


class InputError(ValueError):
    """What the user asked for cannot be done (bad folder, class, model, weights)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; ``str()`` says what was kept and what was left untouched.

    A ``KeyboardInterrupt``, so that code catching that still sees it.
    """


def check_out_dir(path):
    """Validate an output folder before any work is done; return it as a str.

    An existing non-folder, a path below a file, or a folder that cannot be
    created or written to (no permission) is an :class:`InputError`. Nothing
    is created here.
    """
    path = os.fspath(path)
    if not path:
        raise InputError("the output folder is an empty path.")
    full = os.path.abspath(path)
    if os.path.exists(full):
        if not os.path.isdir(full):
            raise InputError(
                f"output folder {path!r} is an existing file, not a folder; choose another --out."
            )
        if not os.access(full, os.W_OK | os.X_OK):
            raise InputError(f"output folder {path!r} is not writable (permission denied).")
        return path
    parent = full
    while not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:  # pragma: no cover - the root always exists
            break
        parent = up
    if not os.path.isdir(parent):
        raise InputError(
            f"output folder {path!r} cannot be created: {parent!r} is a file, not a folder."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(
            f"output folder {path!r} cannot be created: {parent!r} is not writable "
            "(permission denied)."
        )
    return path


@contextlib.contextmanager
def deferred_interrupt():
    """Hold back Ctrl-C (SIGINT) inside the block and raise it at its end.

    For short sequences that must not be cut in the middle (moving a run's
    files into place). Outside the main thread, or where signals cannot be
    set, the block runs as it is.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except (ValueError, OSError):  # pragma: no cover - no signals here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@contextlib.contextmanager
def staged_output(out_dir):
    """Write a run's files to a staging folder, then move them into ``out_dir`` together.

    Yields the staging folder (inside ``out_dir``, so the moves are
    renames on one file system). When the block ends normally, every file
    and folder in it replaces its namesake in ``out_dir``, with Ctrl-C held
    back until all are in place; when it raises (Ctrl-C included), the
    staging folder is removed and ``out_dir`` keeps what it had.
    """
    import shutil

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".sknc-staging-", dir=out_dir)
    try:
        yield stage
        with deferred_interrupt():
            for name in sorted(os.listdir(stage)):
                src, dst = os.path.join(stage, name), os.path.join(out_dir, name)
                if os.path.isdir(src):
                    if os.path.isdir(dst) and not os.path.islink(dst):
                        shutil.rmtree(dst)
                    elif os.path.lexists(dst):
                        os.remove(dst)
                os.replace(src, dst)
            os.rmdir(stage)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def torch_threads(n_threads=None):
    """Run torch's CPU operations on ``n_threads`` threads (default: all usable cores).

    :class:`sknc.utils.thread_limits` (the library's one thread policy) on
    torch only, capped at the usable cores; a bad count is an InputError.
    Not capped at :func:`sknc.utils.idle_cores`: that cap is read once when
    a call starts and suits a call that lasts milliseconds; a run in this
    block lasts minutes to hours, and a busy instant at its start says
    little about the cores it gets later (``threads=1`` asks for one).
    """
    try:
        limits = thread_limits(-1 if n_threads is None else n_threads, torch=True, blas=False)
        with limits as n:
            yield n
    except ValueError as exc:
        if "must be None" in str(exc):
            raise InputError(f"threads must be a positive int, got {n_threads!r}.") from exc
        raise


def single_threaded_blas():
    """Limit numpy/scipy BLAS to one thread (restored on exit); torch's threads untouched.

    The dense algebra after feature extraction (a logistic-regression probe
    on a few hundred samples, NC1 of a few thousand) is made of small
    matrix products, which run faster on one thread than on several, and
    much faster when other processes compete for the cores. torch keeps its
    threads (feature extraction runs inside some of these blocks).
    :class:`sknc.utils.thread_limits` is the one implementation.
    """
    return thread_limits(1, torch=False, blas=True)


class Progress:
    """Progress on stderr: numbered step lines and tqdm bars.

    Parameters
    ----------
    enabled : bool
        False silences everything.
    n_steps : int
        Number of steps, for the ``[i/n]`` prefix.
    stream : file, default=sys.stderr
    """

    def __init__(self, enabled, n_steps, stream=None):
        self.enabled = bool(enabled)
        self.n_steps = n_steps
        self.stream = sys.stderr if stream is None else stream
        self._step = 0

    def step(self, message):
        """Announce the next step."""
        self._step += 1
        self.note(f"[{self._step}/{self.n_steps}] {message}")

    def note(self, message):
        """An indented line under the current step."""
        if self.enabled:
            print(message, file=self.stream, flush=True)

    def bar(self, iterable=None, *, total=None, desc=None, unit="it"):
        """A tqdm bar on the stream (disabled when progress is off)."""
        from tqdm.auto import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            file=self.stream,
            disable=not self.enabled,
            leave=False,
            dynamic_ncols=True,
        )


def check_model(model, image_size=None):
    """Build ``model`` (random weights) once; an unknown name becomes an InputError.

    With ``image_size``, also run two blank ``image_size`` x ``image_size``
    RGB images through it, so that a model that cannot take that size fails
    here with a clear message rather than in the middle of training.
    """
    from ..features import create_backbone

    try:
        module = create_backbone(model)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise InputError(str(exc)) from exc
    if image_size is not None:
        import torch

        try:
            with torch.no_grad():
                module(torch.zeros(2, 3, image_size, image_size))
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise InputError(
                f"model {model!r} does not run on {image_size} x {image_size} images "
                f"({str(exc).strip() or type(exc).__name__}); choose another size or model."
            ) from exc
    return module


def check_int(value, name, low):
    """``value`` as an int, or an InputError if it is not an int ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an int >= {low}, got {value!r}.")
    return int(value)


def check_device(device):
    """The torch device ``device`` resolves to; an unavailable one is an InputError."""
    from ..utils import resolve_device

    try:
        return resolve_device(device)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise InputError(str(exc)) from exc


def environment(device, n_threads):
    """Where and with what a run was computed, for ``results.json``."""
    import sklearn
    import timm
    import torch

    from .. import __version__

    return {
        "device": str(device),
        "threads": n_threads,
        "sknc": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def write_results(out_dir, results, timing, t_start, render):
    """Add the timings, then write ``results.json`` and ``report.md`` to ``out_dir``.

    The report is rendered by ``render`` from what ``results.json`` holds
    (NaN as None), so both always agree. Returns that JSON-ready dict.
    """
    timing["total"] = time.perf_counter() - t_start
    results["timing"] = timing
    results = to_jsonable(results)
    write_json(os.path.join(out_dir, "results.json"), results)
    write_text(os.path.join(out_dir, "report.md"), render(results))
    return results


def to_jsonable(obj):
    """Plain JSON types: numpy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())  # a list, or a scalar for 0-d arrays
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path, write):
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return path


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return _atomic(path, write)


def write_json(path, obj):
    """Write ``to_jsonable(obj)`` as indented JSON, atomically."""
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def save_figure(fig, path, dpi=120):
    """Save a matplotlib figure as PNG atomically."""
    return _atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def new_figure(ncols=1, figsize=(5.5, 4.0)):
    """A figure with ``ncols`` axes, made without pyplot (no global state, no GUI)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def relative(path, start):
    """``path`` relative to ``start`` with forward slashes (for Markdown links)."""
    return os.path.relpath(path, start).replace(os.sep, "/")

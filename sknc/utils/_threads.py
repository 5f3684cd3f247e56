"""One thread policy for every sknc path: torch intra-op threads and BLAS threads.

The rule
--------
Oversubscription must never make a call slower than it is on one thread.
On a machine whose cores are shared (other processes, other Python
threads), an operation split over several threads waits for the slowest
of them; a small operation (an element-wise step, a reduction, a product
of a few hundred rows) then costs many times its one-thread time. So:

1. **Budget.** A call uses at most :func:`thread_budget` threads: the
   ``n_jobs`` it was given (``-1``: every usable core), else what the user
   set: ``torch.get_num_threads()`` (``torch.set_num_threads``,
   ``OMP_NUM_THREADS``) when torch is loaded, else numpy's BLAS limit
   (``threadpoolctl.threadpool_limits``, ``OPENBLAS_NUM_THREADS``...);
   never more than the cores this process may run on. Paths that split
   their work over worker threads also leave out the cores that other
   threads are running on when the call starts (``thread_budget(...,
   idle=True)``, :func:`idle_cores`): on a busy machine (and on Linux with
   autogroup scheduling, where a process's share of the CPU does not grow
   with its thread count) a second worker cannot add CPU time, only
   hand-offs, so such a call runs on one thread as it would at
   ``n_jobs=1``.
2. **Small operations run on one thread** (:func:`single_thread`):
   torch's intra-op threads and BLAS threads both limited to 1.
   Parallelism over independent pieces of work comes from worker threads,
   each single-threaded (:func:`map_threads`), so a thread slowed down by a
   busy machine takes fewer pieces instead of stalling the others.
3. **Large matrix products** (GEMMs with thousands of rows) run on the
   budget: ``thread_limits(thread_budget(n_jobs))``.

Both limits are restored when the block ends. torch's setting is per
thread (OpenMP); BLAS limits set through threadpoolctl are process-wide.
"""

import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ContextDecorator
from numbers import Integral

__all__ = [
    "available_cores",
    "blas_threads",
    "idle_cores",
    "map_threads",
    "single_thread",
    "thread_budget",
    "thread_limits",
]

_CONTROLLERS = {}
# Linux: "1-min 5-min 15-min running/total last-pid"
_LOADAVG = "/proc/loadavg"
_TASKS = "/proc/self/task"
# instants sampled by idle_cores (a process that runs in bursts may be
# between two of them at any one instant), a millisecond apart
_IDLE_SAMPLES = 3
_IDLE_SPACING = 0.001
# seconds an idle_cores answer is reused (calls in a loop do not sample again)
_IDLE_TTL = 0.05
# the last answer: (time.monotonic(), sources read, cores, idle cores)
_IDLE_LAST = [None]


def _blas_controller():
    """threadpoolctl controller of the BLAS libraries loaded now (cached).

    A controller lists the libraries loaded when it is built, so one is kept
    per set of loaded numerical modules (scipy and torch may bring their own
    BLAS).
    """
    key = tuple(name in sys.modules for name in ("scipy.linalg", "torch", "sklearn"))
    ctl = _CONTROLLERS.get(key)
    if ctl is None:
        from threadpoolctl import ThreadpoolController

        ctl = _CONTROLLERS[key] = ThreadpoolController().select(user_api="blas")
    return ctl


def available_cores():
    """Number of CPU cores this process may run on (its affinity mask).

    Examples
    --------
    >>> from sknc.utils import available_cores
    >>> available_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def idle_cores():
    """Usable cores that no other process's thread is running on now (at least 1).

    :func:`available_cores` minus the threads of *other* processes running
    or ready to run, at the busiest of a few instants a millisecond apart
    (Linux: the running count of ``/proc/loadavg`` less this process's
    running threads from ``/proc/self/task``; elsewhere, or if it cannot be
    read, every usable core is taken as idle). This process's own threads
    (the caller, a BLAS or OpenMP thread still spinning after its last
    product) are not other work: on an otherwise quiet machine every core
    counts as idle. Read when a call starts, not averaged.

    Sampling stops as soon as every core is taken (more instants cannot
    change the answer), and an answer is reused for 50 ms, so calls in a
    loop do not pay for the samples each time: a call costs about 0.1 ms on
    a busy machine or within 50 ms of the previous one, about 2 ms
    otherwise.

    Examples
    --------
    >>> from sknc.utils import available_cores, idle_cores
    >>> 1 <= idle_cores() <= available_cores()
    True
    """
    cores = available_cores()
    if cores == 1:
        return 1
    sources = (_LOADAVG, _TASKS)
    now = time.monotonic()
    last = _IDLE_LAST[0]
    if last is not None and last[1:3] == (sources, cores) and 0 <= now - last[0] < _IDLE_TTL:
        return last[3]
    others = 0
    for i in range(_IDLE_SAMPLES):
        if i:
            time.sleep(_IDLE_SPACING)
        # this process's running threads just before and just after the
        # count: one that stops spinning between the two reads (an OpenMP or
        # BLAS thread going to sleep right after the caller's last product)
        # is still in the count and must not pass for another process's
        own = _own_running_threads()
        try:
            with open(_LOADAVG, "rb") as f:
                running = int(f.read().split()[3].split(b"/")[0])
        except (OSError, ValueError, IndexError):
            return cores
        others = max(others, running - max(own, _own_running_threads()))
        if others >= cores - 1:  # every core but the caller's is taken
            break
    idle = max(1, min(cores, cores - others))
    _IDLE_LAST[0] = (time.monotonic(), sources, cores, idle)
    return idle


def _own_running_threads():
    """Threads of this process running or runnable now (Linux), 1 if unknown."""
    try:
        names = os.listdir(_TASKS)
    except OSError:
        return 1
    count = 0
    for name in names:
        try:
            with open(f"{_TASKS}/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        # "pid (comm) S ...": the state follows the last parenthesis
        end = stat.rfind(b")")
        if stat[end + 2 : end + 3] == b"R":
            count += 1
    return max(1, count)


def blas_threads():
    """Threads numpy's BLAS may use now, at most :func:`available_cores`.

    Respects ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
    and any ``threadpoolctl`` limit in force.

    Examples
    --------
    >>> from threadpoolctl import threadpool_limits
    >>> from sknc.utils import blas_threads
    >>> with threadpool_limits(1, user_api="blas"):
    ...     blas_threads()
    1
    """
    counts = [lib.num_threads for lib in _blas_controller().lib_controllers]
    return max(1, min(max(counts, default=1), available_cores()))


def _user_threads():
    """The thread count the user set: torch's if torch is loaded, else BLAS's."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, min(torch.get_num_threads(), available_cores()))
    return blas_threads()


def thread_budget(n_jobs=None, *, name="n_jobs", idle=False):
    """Number of threads a call may use.

    Parameters
    ----------
    n_jobs : int or None, default=None
        None: the user's setting (``torch.get_num_threads()`` when torch is
        loaded, else numpy's BLAS limit). ``-1``: every usable core; ``-2``
        all but one, and so on (scikit-learn's convention). A positive int:
        that many. Always capped at :func:`available_cores`: more threads
        than cores can only wait on each other.
    name : str, default="n_jobs"
        The parameter's name in the error message.
    idle : bool, default=False
        Also cap the count at :func:`idle_cores`, the cores no other thread
        is running on now: for work split over worker threads, which a busy
        machine would only slow down (see the module's rule 1).

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    ValueError
        If ``n_jobs`` is not None, a negative int or a positive int.

    Examples
    --------
    >>> from sknc.utils import available_cores, thread_budget
    >>> thread_budget(1)
    1
    >>> thread_budget(-1) == available_cores()
    True
    """
    cores = available_cores()
    if n_jobs is None:
        n = _user_threads()
    elif isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or n_jobs == 0:
        raise ValueError(f"{name} must be None, -1 or an integer >= 1; got {n_jobs!r}.")
    elif n_jobs < 0:
        n = max(1, cores + 1 + int(n_jobs))
    else:
        n = min(int(n_jobs), cores)
    if idle and n > 1:
        n = min(n, idle_cores())
    return n


class thread_limits(ContextDecorator):
    """Limit torch's intra-op threads and BLAS threads inside a block.

    A context manager, also usable as a decorator; the previous settings are
    restored on exit (also on an exception or Ctrl-C). Re-entrant; a limit
    already in force costs nothing.

    Parameters
    ----------
    n : int or None, default=None
        Thread count, resolved by :func:`thread_budget` when the block is
        entered (None: the user's setting, capped at the usable cores).
    torch : bool or None, default=None
        Limit torch's intra-op threads: True imports torch, None only if
        torch is already loaded (nothing can run on torch's threads
        otherwise), False leaves them alone. torch's setting applies to the
        thread that enters the block (and to threads torch starts later).
    blas : bool, default=True
        Limit the BLAS libraries (numpy, scipy) through threadpoolctl;
        process-wide.

    See Also
    --------
    single_thread : ``thread_limits(1)``, for small operations.
    map_threads : independent work on single-threaded worker threads.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.utils import blas_threads, thread_limits
    >>> with thread_limits(1):
    ...     blas_threads()
    1
    >>> @thread_limits(1)
    ... def small_product(a):
    ...     return a @ a.T
    >>> small_product(np.eye(3)).shape
    (3, 3)
    """

    def __init__(self, n=None, *, torch=None, blas=True):
        self.n = n
        self.torch = torch
        self.blas = blas
        self._local = threading.local()

    def __enter__(self):
        n = thread_budget(self.n, name="n")
        undo = []
        try:
            if self.torch or (self.torch is None and "torch" in sys.modules):
                import torch

                old = torch.get_num_threads()
                if old != n:
                    torch.set_num_threads(n)
                    undo.append(lambda: torch.set_num_threads(old))
            if self.blas:
                ctl = _blas_controller()
                if any(lib.num_threads != n for lib in ctl.lib_controllers):
                    limiter = ctl.limit(limits=n)
                    undo.append(limiter.restore_original_limits)
        except BaseException:
            _undo(undo)
            raise
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(undo)
        return n

    def __exit__(self, *exc):
        _undo(self._local.stack.pop())
        return False


def _undo(actions):
    for action in reversed(actions):
        action()


def single_thread():
    """Run a block with torch and BLAS on one thread: ``thread_limits(1)``.

    For small operations, which are faster on one thread and do not stall
    when other processes share the cores.

    Examples
    --------
    >>> from sknc.utils import blas_threads, single_thread
    >>> with single_thread():
    ...     blas_threads()
    1
    """
    return thread_limits(1)


def _one_thread_worker():
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def map_threads(func, items, n_jobs=None, *, prefetch=2):
    """``map(func, items)`` on single-threaded worker threads, results in order.

    A generator. ``func`` runs with torch and BLAS on one thread, in up to
    ``thread_budget(n_jobs)`` worker threads (in the calling thread when
    that is 1). At most ``prefetch`` items per worker are started ahead of
    the result being consumed, so memory stays bounded however long
    ``items`` is. The limits hold in the calling thread too until the
    generator ends: consume it in a ``for`` loop (or close it).

    Parameters
    ----------
    func : callable
        Called as ``func(item)``; it should release the GIL for most of its
        time (torch and numpy kernels do).
    items : iterable
    n_jobs : int or None, default=None
        See :func:`thread_budget`.
    prefetch : int, default=2
        Items in flight per worker.

    Yields
    ------
    The results of ``func``, in the order of ``items``. An exception in
    ``func`` is raised here; pending items are cancelled.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.utils import map_threads
    >>> [float(r) for r in map_threads(np.sum, [np.ones(3), np.ones(5)], n_jobs=2)]
    [3.0, 5.0]
    """
    n = thread_budget(n_jobs)
    with single_thread():
        if n == 1:
            for item in items:
                yield func(item)
            return
        pool = ThreadPoolExecutor(n, initializer=_one_thread_worker)
        pending = deque()
        try:
            for item in items:
                pending.append(pool.submit(func, item))
                if len(pending) >= prefetch * n:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True)

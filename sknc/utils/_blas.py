"""A first-use slowdown of OpenBLAS's float32 GEMM, and its remedy.

Measured (issue 19, 2026-12-08; AMD EPYC (Zen 1) VM, numpy 2.4.6 with its
OpenBLAS 0.3.31; scipy's own OpenBLAS behaves alike): in a fresh process a
single-threaded ``sgemm`` with an output at most a few hundred columns wide
(``X @ R``, ``X`` 200,000 x 512, ``R`` 512 x 200) took 3.7-4.0 s, against
1.0-1.1 s for the same call once OpenBLAS had written a larger part of its
packing buffer: 2.2-3.6x over d = 64 to 2,048 and widths 16 to 204. Any call
that writes about 1 MiB of that buffer ends the slow state for the rest of
the process: a multi-threaded ``sgemm``, a ``syrk`` of 128 x 128 or more, or
the buffer set by hand (``blas_memory_alloc`` + ``memset`` of 1 MiB; 256 KiB
was not enough). The slow kernel reads buffer memory that no call has
written yet. ``dgemm``, ``dsyrk``, ``ssyrk`` and torch's GEMM were not
affected. A user's first :func:`sknc.metrics.collapse_report` on float32
NumPy input took 4.2-4.6 s instead of 1.3-1.6 s (1 and 2 threads), and
every benchmark that timed a warmed-up process missed it.

:func:`prime_float32_gemm` runs one small ``sgemm`` (1,024 x 320 by
320 x 704, about 25 ms, mostly its own memory) through numpy before the
first large float32 product. OpenBLAS hands each *concurrent* call its own
buffer, so work split over ``n`` single-threaded worker threads needs ``n``
primed buffers: the priming products run in ``n`` threads at once. Without
that, two workers of ``collapse_report`` ran pass 2 only 1.15-1.26x faster
than one (one worker's products stayed slow); with both buffers primed,
1.74-1.80x (the same chunks, 2 threads, 2026-12-08). Each buffer stays
written for the rest of the process; with another BLAS the priming costs the
same once and changes nothing.
"""

import threading

import numpy as np

from ._threads import single_thread

__all__ = ["prime_float32_gemm"]

# numpy shapes (rows, inner, columns) of the priming product: an output wider
# than twice OpenBLAS' row block (2 x 320) makes it pack whole panels, which
# writes about 1.7 MiB of the buffer (1 MiB was enough in every case measured)
_PRIME_SHAPE = (1024, 320, 704)
# products per priming thread after they all start together (so that they
# overlap, each on its own buffer)
_PRIME_ROUNDS = 2
# below this many flops the slow state costs less than the priming itself
_MIN_FLOPS = 4e8
# how many buffers have been primed (concurrent products at priming time)
_STATE = {"primed": 0}
_LOCK = threading.Lock()


def prime_float32_gemm(flops, n_threads=1):
    """Prime OpenBLAS's float32 GEMM before ``flops`` of work on ``n_threads``.

    Runs the priming product (see the module's notes) in ``n_threads``
    threads at once, unless that many buffers were primed before in this
    process or ``flops`` is too small to matter. Returns the number of
    priming threads run (0 when nothing was needed).
    """
    n_threads = max(1, int(n_threads))
    if _STATE["primed"] >= n_threads or flops < _MIN_FLOPS:
        return 0
    with _LOCK:
        if _STATE["primed"] >= n_threads:
            return 0
        m, k, n = _PRIME_SHAPE
        a = np.zeros((m, k), np.float32)
        b = np.zeros((k, n), np.float32)
        start = threading.Barrier(n_threads, timeout=10)

        def prime():
            try:
                start.wait()
            except threading.BrokenBarrierError:  # a thread failed to start: prime anyway
                pass
            for _ in range(_PRIME_ROUNDS):
                np.matmul(a, b)

        with single_thread():
            others = [threading.Thread(target=prime, daemon=True) for _ in range(n_threads - 1)]
            for thread in others:
                thread.start()
            prime()
            for thread in others:
                thread.join()
        _STATE["primed"] = n_threads
    return n_threads

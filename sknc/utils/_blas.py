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
320 x 704, about 25 ms, mostly its own memory) through numpy once per
process, before the first large float32 product; with another BLAS it costs
the same 25 ms once and changes nothing.
"""

import threading

import numpy as np

from ._threads import single_thread

__all__ = ["prime_float32_gemm"]

# numpy shapes (rows, inner, columns) of the priming product: an output wider
# than twice OpenBLAS' row block (2 x 320) makes it pack whole panels, which
# writes about 1.7 MiB of the buffer (1 MiB was enough in every case measured)
_PRIME_SHAPE = (1024, 320, 704)
# below this many flops the slow state costs less than the priming itself
_MIN_FLOPS = 4e8
_STATE = {"primed": False}
_LOCK = threading.Lock()


def prime_float32_gemm(flops):
    """Prime OpenBLAS's float32 GEMM once per process before ``flops`` of work.

    Returns True when this call ran the priming product (see the module's
    notes); False when it had run before or ``flops`` is too small to matter.
    """
    if _STATE["primed"] or flops < _MIN_FLOPS:
        return False
    with _LOCK:
        if _STATE["primed"]:
            return False
        m, k, n = _PRIME_SHAPE
        with single_thread():
            np.matmul(np.zeros((m, k), np.float32), np.zeros((k, n), np.float32))
        _STATE["primed"] = True
    return True

"""Mergeable per-class statistics for streaming neural-collapse metrics."""

import contextlib
import functools
import threading

import numpy as np
from sklearn.exceptions import NotFittedError

from ..utils import is_torch_tensor, single_thread, thread_budget, thread_limits, to_numpy
from ..utils._blas import prime_float32_gemm
from ..utils._rounding import dot_error, gamma64, row_margin, safe_margin
from ._backend import _NumpyOps, class_sums64, sum64_rows
from ._collapse import (
    _CDNV_VARIANTS,
    _EQUIANGULARITY_KINDS,
    _NC3_VARIANTS,
    _build_report,
    check_report_options,
)
from ._core import (
    _CDNV_BIAS,
    BetweenGeometry,
    cdnv_values,
    centered_means,
    equiangularity_value,
    equinorm_value,
    ldexp,
    nc1_from_scatter,
    nc2_value,
    nc3_value,
    offset_reference,
    run_chunk_groups,
    sample_rows,
    scale_exponent,
    warn_narrow_nc1,
)
from ._validation import (
    check_center,
    check_chunk_size,
    check_coef,
    check_features,
    check_option,
    encode_labels,
    raise_not_finite,
)

# default rows per internal chunk: temporaries of a few MB; a batch of 20,000
# rows of 512 float32 features makes 10 chunks, shared evenly by 2 workers
_STREAM_CHUNK_BYTES = 2**22
# the metrics read from the statistics are small products (K x d, d x d): one
# thread (BLAS threads would only stall on a busy machine)


def _one_thread(method):
    """Run ``method`` with torch and BLAS on one thread."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with single_thread():
            return method(*args, **kwargs)

    return wrapper


# rows per float32 Gram product of the within-class scatter (accumulated in float64)
_GRAM_ROWS = 512


def _state_to(ops, arrays):
    """Move a dict of state arrays (numpy or torch) to the backend ``ops``."""
    out = {}
    for key, value in arrays.items():
        if value is None:
            out[key] = None
        elif ops.is_torch:
            if is_torch_tensor(value):
                out[key] = value.to(ops.device)
            else:
                out[key] = ops.from_numpy(value)
        else:
            out[key] = to_numpy(value)
    return out


def _weighted_outer(a, w):
    """``sum_c w_c a_c a_c^T`` for ``w >= 0``: one ``B^T B`` (numpy's syrk, symmetric)."""
    B = a * np.sqrt(w)[:, None]
    return B.T @ B


def _batch_statistics(X, ops, codes, Kb, chunk_size, ref, n_workers, centre=None, scratch=None):
    """Counts, sums, sums of squares and scatter of one batch (float64 numpy).

    Sums are relative to ``ref`` (a new reference point is chosen from rows
    spread over the batch when ``ref`` is None), accumulated in float64. The
    within-class residuals are formed against ``centre`` (the class means
    of the statistics so far, one row per batch class) in one pass with
    the sums when given and the batch's class means stay close to it (see
    :meth:`_Batch.fused`); otherwise against the batch's own class means,
    in a second pass. Either centre is rounded to X's dtype and the float64
    rest corrected exactly, so offsets cost nothing. All sums, squares and
    products are in units of ``2**exp`` (``exp`` 0 unless the data's
    magnitude is extreme for its dtype): linear quantities scaled by
    ``2**-exp``, squares by ``2**-2exp``. The passes over the data run on
    ``n_workers`` worker threads (numpy input), with scratch arrays from
    ``scratch`` (a :class:`_Scratch`). Returns ``(counts, sums, ss,
    scatter, ref, exp)``.
    """
    batch = _Batch(X, ops, codes, Kb, chunk_size, ref, n_workers)
    batch.scratch = _Scratch() if scratch is None else scratch
    counts = ops.to_numpy(ops.counts(codes, Kb)).astype(np.int64)
    if centre is not None:
        fused = batch.fused(counts, centre)
        if fused is not None:
            return fused
    sums, pre = batch.class_sums()
    rel = ldexp(sums / counts.astype(np.float64)[:, None], pre)  # class means - ref, units of X
    ss, scatter, exp = batch.scatter(counts, rel)
    return counts, ldexp(sums, pre - exp), ss, scatter, batch.ref, exp


def _stream_reference(sample, np_dtype):
    """The reference point of the class sums (see :func:`offset_reference`).

    0 when every feature's offset is within the spread of ``sample``: then
    ``|x| <= |x - ref| + spread`` and the float64 sums lose at most a bit
    to the offset, while the subtraction (a float64 pass over every row)
    is saved.
    """
    ref = offset_reference(sample, np_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        spread = sample.std(0) if len(sample) > 1 else np.zeros_like(ref)
    small = np.all(np.isfinite(spread)) and np.all(np.abs(ref) <= spread)
    return np.zeros_like(ref) if small else ref


# the one-pass update centres a batch on the class means so far: accepted
# when, for every class c and feature j, the shift of the batch's own means
# from that centre adds at most _SHIFT_TOL to the spread about the own means
# (n_c |delta_c|^2 <= _SHIFT_TOL * ss_c, sum_c n_c delta_cj^2 <= _SHIFT_TOL *
# S_jj): the rounding bound of the float32 products, proportional to the
# spread about their centre, grows by at most that factor (1 + 2**-5)
_SHIFT_TOL = 2.0**-5
# ... and tried only when every class has this many rows in the batch (for
# Gaussian classes the shift term is about (1 + n_b / n_a) / n_b of the spread)
_FUSED_MIN_ROWS = 128


# runs of chunks per worker thread: each run sets up and returns its own
# (d + 1, d) float64 Gram sum, so a few runs only (still load-balanced)
_RUNS = 2


class _Scratch:
    """Scratch arrays of the passes (numpy), kept between runs and batches.

    A fresh array of a few MB costs page faults on its first use (about
    2 ms per run of chunks for the arrays here); an :class:`NCStatistics`
    keeps one set per worker thread instead (about 9 MB each for 512
    float32 features).
    """

    def __init__(self):
        self._free = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def arrays(self):
        """A function ``get(name, shape, dtype, order="C")`` of arrays for one worker."""
        with self._lock:
            arrays = self._free.pop() if self._free else {}

        def get(name, shape, dtype, order="C"):
            a = arrays.get(name)
            layout = a is not None and (
                a.flags.c_contiguous if order == "C" else a.flags.f_contiguous
            )
            if not layout or a.shape != shape or a.dtype != np.dtype(dtype):
                a = arrays[name] = np.empty(shape, dtype=dtype, order=order)
            return a

        try:
            yield get
        finally:
            with self._lock:
                self._free.append(arrays)


def _sum_parts(parts):
    """Sum of the partial results (fresh arrays), in order, into the first."""
    total = parts[0]
    for part in parts[1:]:
        total += part
    return total


class _Batch:
    """One batch of :func:`_batch_statistics`: its chunks, reference point and passes."""

    def __init__(self, X, ops, codes, Kb, chunk_size, ref, n_workers):
        n, d = X.shape
        self.X, self.ops, self.codes, self.Kb, self.d = X, ops, codes, Kb, d
        self.n_workers = n_workers
        self.cdt = ops.compute_dtype(X)
        self.np_cdt = ops.np_dtype(self.cdt)
        itemsize = np.dtype(self.np_cdt).itemsize
        chunk = chunk_size or max(
            ops.chunk_rows(d, itemsize), _STREAM_CHUNK_BYTES // (itemsize * d)
        )
        self.chunks = [(i, min(i + chunk, n)) for i in range(0, n, chunk)]
        self.rows = min(chunk, n)
        # rows for the reference point (the first batch) or only a first
        # scale estimate (checked: a pass that overflows is rerun)
        sample = sample_rows(X, ops, max_rows=1024 if ref is None else 256)
        self.ref = _stream_reference(sample, self.np_cdt) if ref is None else ref
        with np.errstate(invalid="ignore", over="ignore"):
            self.amax = float(np.max(np.abs(sample - self.ref), initial=0.0))
        # a zero reference point is not subtracted (one float64 pass less)
        self.ref_dev = ops.from_numpy(self.ref, dtype=ops.f64()) if self.ref.any() else None
        self.sums0 = None  # float64 class sums (pre 0) of a declined one-pass update

    def amax_all(self):
        """Largest ``|x - ref|`` over the whole batch (an extra pass, rarely needed)."""
        ops, X = self.ops, self.X
        with np.errstate(invalid="ignore", over="ignore"):
            return max(ops.amax_abs(ops.shifted64(X[a:b], self.ref_dev)) for a, b in self.chunks)

    def class_sums(self):
        """Float64 class sums of ``(x - ref) 2**-pre``; ``(sums, pre)``.

        Float64 data near the top of their range are scaled by ``2**-pre``
        first (and the pass rerun if a sum still overflowed).
        """
        ops = self.ops
        pre = scale_exponent(self.amax, np.float64) if self.np_cdt == np.float64 else 0
        if pre == 0 and self.sums0 is not None:
            return self.sums0, 0
        sums = self._sums_pass(pre)
        if not np.isfinite(sums).all():
            finite = bool(ops.all_finite(self.X))
            if not (finite and pre == 0 and self.np_cdt == np.float64):
                raise_not_finite(self.X, ops)
            pre = scale_exponent(self.amax_all(), np.float64, force=True)
            sums = self._sums_pass(pre)
            if not np.isfinite(sums).all():
                raise_not_finite(self.X, ops)
        return sums, pre

    def _sums_pass(self, pre):
        ops, X, codes, Kb, d, rows = self.ops, self.X, self.codes, self.Kb, self.d, self.rows

        def work(group):
            sums = ops.zeros((Kb, d), dtype=ops.f64())
            with self.scratch.arrays() as get, np.errstate(invalid="ignore", over="ignore"):
                buf = (
                    None
                    if ops.is_torch
                    else get("sums64", (min(rows, sum64_rows(d)), d), np.float64)
                )
                for start, stop in group:
                    c = codes[start:stop]
                    sums += class_sums64(ops, X[start:stop], c, Kb, self.ref_dev, pre, buf)
            return ops.to_numpy(sums)

        return _sum_parts(run_chunk_groups(ops, self.chunks, work, self.n_workers, _RUNS))

    def fused(self, counts, centre):
        """The batch's statistics in one pass, residuals against ``centre``; or None.

        ``centre`` are the class means of the statistics so far (float64,
        one row per batch class, units of X). The residuals ``x - hi``
        (``hi``: ``centre`` rounded to X's dtype) give the sums of squares
        and Gram products about ``hi``, the float64 class sums (relative to
        ``ref``, in the same pass) the exact shift ``delta`` of the batch's
        own means from ``hi``; the parallel-axis identity
        ``sum (x - mu)(x - mu)^T = sum (x - hi)(x - hi)^T - n delta delta^T``
        then gives the scatter about the batch's means. None (two passes
        instead) when a class has fewer than ``_FUSED_MIN_ROWS`` rows, the
        data need rescaling, a value is not finite, or the shift is not
        small against the spread (``_SHIFT_TOL``); the class sums are kept
        for the two passes then.
        """
        if counts.min() < _FUSED_MIN_ROWS:
            return None
        with np.errstate(invalid="ignore", over="ignore"):
            hi = centre.astype(self.np_cdt)
            rel_hi = hi.astype(np.float64) - self.ref  # exact: both in X's dtype
            spread = max(self.amax, float(np.abs(rel_hi - rel_hi.mean(0)).max(initial=0.0)))
        if not np.isfinite(rel_hi).all() or scale_exponent(spread, self.np_cdt) != 0:
            return None
        if scale_exponent(self.amax, np.float64) != 0:
            return None
        with np.errstate(invalid="ignore", over="ignore"):
            sums, ss, gram = self._residual_pass(hi, 0, with_sums=True)
        if not (np.isfinite(sums).all() and np.isfinite(ss).all()):
            return None
        self.sums0 = sums
        n_b = counts.astype(np.float64)
        delta = sums / n_b[:, None] - rel_hi  # batch means - hi, float64
        shift = n_b * np.einsum("ij,ij->i", delta, delta)
        ss = ss - shift
        if not np.all(shift <= _SHIFT_TOL * ss):
            return None
        scatter = self.ops.gram_full(gram)
        D = _weighted_outer(delta, n_b)
        scatter -= D
        if not (
            np.isfinite(scatter).all()
            and np.all(np.diagonal(D) <= _SHIFT_TOL * np.diagonal(scatter))
        ):
            return None
        return counts, sums, ss, scatter, self.ref, 0

    def scatter(self, counts, rel):
        """Within-class sums of squares and scatter; ``(ss, scatter, exp)``.

        ``rel`` are the class means minus ``ref``, in X's units; the scale
        ``2**exp`` is raised (and the pass rerun) if a value overflowed.
        """
        mean_abs = rel + self.ref
        spread = max(self.amax, float(np.abs(rel - rel.mean(0)).max(initial=0.0)))
        exp = scale_exponent(spread, self.np_cdt)
        with np.errstate(invalid="ignore", over="ignore"):
            ss, scatter = self._scatter_pass(counts, mean_abs, exp)
            if not (np.isfinite(ss).all() and np.isfinite(scatter).all()):
                new_exp = scale_exponent(self.amax_all(), self.np_cdt, force=True)
                if new_exp != exp:
                    exp = new_exp
                    ss, scatter = self._scatter_pass(counts, mean_abs, exp)
        if not (np.isfinite(ss).all() and np.isfinite(scatter).all()):
            raise ValueError(
                "X spans too wide a range of magnitudes for its dtype: its within-class "
                "sums of squares overflow; convert X to float64."
            )
        return ss, scatter, exp

    def _scatter_pass(self, counts, mean_abs, exp):
        hi = mean_abs.astype(self.np_cdt)
        _, ss, gram = self._residual_pass(hi, exp, with_sums=False)
        n_b = counts.astype(np.float64)
        lo = ldexp(mean_abs - hi.astype(np.float64), -exp)  # exact remainder
        ss = ss - n_b * np.einsum("ij,ij->i", lo, lo)
        scatter = self.ops.gram_full(gram) - _weighted_outer(lo, n_b)
        return ss, scatter

    def _residual_pass(self, hi, exp, with_sums):
        """``(sums, ss, gram)`` of the residuals ``(x - hi[c]) 2**-exp`` (one pass).

        ``gram`` is the float64 sum of the residuals' Gram products (see
        :meth:`ops.gram_full`); ``sums`` the float64 class sums of ``x -
        ref`` when ``with_sums`` (else None), read in the same pass.
        """
        ops, X, codes, Kb, d, cdt = self.ops, self.X, self.codes, self.Kb, self.d, self.cdt
        hi_dev = ops.from_numpy(hi, dtype=cdt)

        def work(group):
            with self.scratch.arrays() as get:
                return run(group, get)

        def run(group, get):
            sums = ops.zeros((Kb, d), dtype=ops.f64()) if with_sums else None
            ss = ops.zeros(Kb, dtype=ops.f64())
            if ops.is_torch:
                sbuf, gram = None, ops.gram_sum(d, cdt)
                buf = ops.empty_like_rows(self.rows, d, cdt)
            else:
                sbuf = (
                    get("sums64", (min(self.rows, sum64_rows(d)), d), np.float64)
                    if with_sums
                    else None
                )
                gram = ops.gram_sum(d, cdt, get("gram", (d + 1, d), cdt, "F"))
                buf = get("residuals", (self.rows, d), cdt)
            for start, stop in group:
                c = codes[start:stop]
                if with_sums:
                    sums += class_sums64(ops, X[start:stop], c, Kb, self.ref_dev, 0, sbuf)
                E = ops.take_rows(hi_dev, c, out=buf[: stop - start])
                ops.subtract(ops.astype(X[start:stop], cdt), E, out=E)
                ops.scale_(E, exp)
                ss += ops.weighted_counts(c, ops.rownorm2(E), Kb)
                # products in X's dtype over a few hundred rows at most, summed
                # in float64: the rounding error does not grow with the batch
                for i in range(0, stop - start, _GRAM_ROWS):
                    gram.add(E[i : i + _GRAM_ROWS])
            return (
                None if sums is None else ops.to_numpy(sums),
                ops.to_numpy(ss),
                gram.total(),
            )

        parts = run_chunk_groups(ops, self.chunks, work, self.n_workers, _RUNS)
        sums = _sum_parts([p[0] for p in parts]) if with_sums else None
        return sums, _sum_parts([p[1] for p in parts]), _sum_parts([p[2] for p in parts])


class NCStatistics:
    """Mergeable per-class statistics from which every NC metric follows.

    Accumulates, batch by batch, per-class counts, per-class sums (float64,
    relative to a reference point fixed at the first update), per-class
    within-class sums of squares and the total within-class scatter
    ``S_W = sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T`` (d x d, float64). Each
    batch is centred before any product (so float32 features with large
    offsets lose nothing): on the class means so far, in one pass, when its
    classes are known, large, and their means have moved little; otherwise
    on its own class means, in two passes. Either way the exact float64
    shift of its own means is removed, and the batch is folded in with
    Chan's parallel update ``S = S_a + S_b + sum_c n_a n_b / (n_a + n_b)
    d_c d_c^T``. Memory is O(K d + d^2), independent of the number of
    samples (plus a few MB of scratch arrays per worker thread, kept between
    updates).

    Batches may be numpy arrays or torch tensors on any device; the state lives
    where the data are (no per-batch copy to the CPU). Classes are discovered
    as they appear (any sortable hashable labels) and aligned by label on
    :meth:`merge`; metrics are always reported over the sorted labels.
    Pickling stores CPU numpy arrays only, so statistics travel between
    processes and machines (e.g. Dask workers).

    NC4 needs the final class means, hence a second pass: see
    :meth:`nc4_counter`.

    Parameters
    ----------
    chunk_size : int or None, default=None
        Rows of a batch processed at a time, bounding the temporaries.
        None picks about 8 MB worth of rows (per worker thread).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Sorted labels seen so far.
    n_samples_ : int
        Number of samples seen.
    n_features_ : int
        Feature dimension.
    class_counts_ : ndarray of shape (n_classes,)
        Samples per class, in ``classes_`` order.
    means_ : ndarray of shape (n_classes, n_features)
        Class means (float64).
    class_variances_ : ndarray of shape (n_classes,)
        ``Var_c``, mean squared distance of class ``c``'s samples to its mean.
    within_class_covariance_ : ndarray of shape (n_features, n_features)
        ``Sigma_W = S_W / N``.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import NCStatistics, nc1
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 100)
    >>> X = np.eye(3)[y] * 5 + rng.normal(size=(100, 3))
    >>> stats = NCStatistics()
    >>> for start in range(0, 100, 25):
    ...     _ = stats.update(X[start:start + 25], y[start:start + 25])
    >>> bool(np.isclose(stats.nc1(), nc1(X, y)))
    True
    >>> a = NCStatistics().update(X[:60], y[:60])
    >>> b = NCStatistics().update(X[60:], y[60:])
    >>> bool(np.isclose(a.merge(b).nc1(), stats.nc1()))
    True
    """

    def __init__(self, chunk_size=None):
        self.chunk_size = chunk_size
        self._clear()

    # ------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------

    def _clear(self):
        self._ops = None
        self._labels = []
        self._index = {}
        self._n_features = None
        self._ref = None  # numpy float64 (d,), the reference point of the sums
        self._exp = 0  # sums are in units of 2**_exp, ss and scatter of 4**_exp
        self._counts = None  # (K,) int64
        self._sums = None  # (K, d) float64, relative to _ref
        self._ss = None  # (K,) float64 within-class sums of squares
        self._scatter = None  # (d, d) float64 within-class scatter S_W
        self._scratch = None  # _Scratch arrays of the passes (not pickled or copied)

    def _arrays(self):
        return {
            "counts": self._counts,
            "sums": self._sums,
            "ss": self._ss,
            "scatter": self._scatter,
        }

    def _set_arrays(self, arrays):
        self._counts = arrays["counts"]
        self._sums = arrays["sums"]
        self._ss = arrays["ss"]
        self._scatter = arrays["scatter"]

    def _move_to(self, ops):
        """Move the state to another backend/device (small arrays only)."""
        if self._ops is not None and self._ops == ops:
            return
        self._set_arrays(_state_to(ops, self._arrays()))
        self._ops = ops

    def __getstate__(self):
        state = {
            "chunk_size": self.chunk_size,
            "labels": list(self._labels),
            "n_features": self._n_features,
            "ref": self._ref,
            "exp": self._exp,
        }
        for key, value in self._arrays().items():
            state[key] = None if value is None else to_numpy(value).copy()
        return state

    def __setstate__(self, state):
        self.chunk_size = state["chunk_size"]
        self._clear()
        self._labels = list(state["labels"])
        self._index = {lab: i for i, lab in enumerate(self._labels)}
        self._n_features = state["n_features"]
        self._ref = state["ref"]
        self._exp = int(state.get("exp", 0))
        self._set_arrays({k: state[k] for k in ("counts", "sums", "ss", "scatter")})
        if self._counts is not None:
            self._ops = _NumpyOps()

    def copy(self):
        """Return an independent copy (same backend and device).

        Returns
        -------
        NCStatistics
            The copy.
        """
        new = NCStatistics.__new__(NCStatistics)
        new.chunk_size = self.chunk_size
        new._clear()
        new._ops = self._ops
        new._labels = list(self._labels)
        new._index = dict(self._index)
        new._n_features = self._n_features
        new._ref = None if self._ref is None else self._ref.copy()
        new._exp = self._exp
        arrays = {}
        for key, value in self._arrays().items():
            if value is not None:
                value = value.clone() if is_torch_tensor(value) else value.copy()
            arrays[key] = value
        new._set_arrays(arrays)
        return new

    def to_numpy(self):
        """Return a copy whose state is held in CPU numpy arrays.

        Returns
        -------
        NCStatistics
            A copy on the CPU (the original is unchanged).
        """
        new = self.copy()
        if new._ops is not None:
            new._move_to(_NumpyOps())
        return new

    # ------------------------------------------------------------------
    # accumulation
    # ------------------------------------------------------------------

    def _register(self, batch_labels):
        """Global indices for the batch's labels; new ones appended (not yet committed)."""
        new = [lab for lab in batch_labels if lab not in self._index]
        if new:
            try:
                sorted(self._labels + new)
            except TypeError as exc:
                raise ValueError(
                    "Labels of different kinds (e.g. strings and numbers) cannot "
                    "be mixed in one NCStatistics."
                ) from exc
        lut = []
        extra = {}
        for lab in batch_labels:
            if lab in self._index:
                lut.append(self._index[lab])
            else:
                extra[lab] = len(self._labels) + len(extra)
                lut.append(extra[lab])
        return np.asarray(lut, dtype=np.int64), new

    @staticmethod
    def _merge_into(ops, state, rows, counts_b, sums_b, ss_b, scatter_b):
        """Chan's parallel merge of batch statistics into ``state`` (in place).

        ``rows`` are the state rows of the batch's classes (numpy int64 on
        the CPU); the batch arrays have one row per entry of ``rows``.
        """
        f64 = ops.f64()
        rows_dev = rows if not ops.is_torch else ops.from_numpy(rows)
        n_a = ops.astype(state["counts"][rows_dev], f64)
        n_b = ops.astype(counts_b, f64)
        total = n_a + n_b
        sums_a = state["sums"][rows_dev]
        nz_a = ops.astype(n_a > 0, f64)
        mean_a = sums_a / (n_a + (1 - nz_a))[:, None]
        mean_b = sums_b / (n_b + ops.astype(n_b == 0, f64))[:, None]
        delta = mean_b - mean_a
        w = n_a * n_b / (total + ops.astype(total == 0, f64))
        B = delta * (w**0.5)[:, None]  # w >= 0: one symmetric B^T B
        state["scatter"] += scatter_b
        state["scatter"] += B.T @ B
        state["ss"][rows_dev] += ss_b + w * ops.rownorm2(delta)
        state["sums"][rows_dev] += sums_b
        state["counts"][rows_dev] += counts_b

    def update(self, X, y):
        """Fold a batch of features and labels into the statistics.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A batch of features (numpy, or torch on any device).
        y : array-like or torch.Tensor of shape (n_samples,)
            Its labels (any sortable hashable kind; new classes are added).

        Returns
        -------
        self : NCStatistics
            The updated statistics.

        Raises
        ------
        ValueError
            On NaN/inf, non-2-D X, a length mismatch, or a feature dimension
            different from earlier batches. The statistics are unchanged then.
        """
        chunk_size = check_chunk_size(self.chunk_size)
        # worker threads for the passes, read before any limit below: no
        # more than the idle cores (see sknc.utils.thread_budget)
        n_workers = thread_budget(idle=True)
        X_in, home = check_features(X, cpu_tensors_as_numpy=False)
        X, ops = check_features(X_in)  # CPU tensors are computed on zero-copy numpy views
        n, d = X.shape
        if self._n_features is not None and d != self._n_features:
            raise ValueError(
                f"X has {d} features but the statistics were built from "
                f"{self._n_features} features."
            )
        batch_classes, codes = encode_labels(y, n, ops, min_classes=1)
        batch_labels = batch_classes.tolist()
        rows, new = self._register(batch_labels)
        ref = self._ref if self._ref is not None else None
        centre = self._centre(rows) if not new else None
        # numpy: the passes on single-threaded workers, everything else
        # (small products) on one thread; torch parallelises its own operations
        with contextlib.nullcontext() if ops.is_torch else single_thread():
            if self._scratch is None:
                self._scratch = _Scratch()
            batch = _batch_statistics(
                X, ops, codes, len(batch_labels), chunk_size, ref, n_workers, centre, self._scratch
            )
        counts_b, sums_b, ss_b, scatter_b, ref, exp_b = batch

        # commit (nothing above changed the state); small (K, d) and (d, d)
        # updates: one thread (torch would wait on its pool for each)
        with single_thread():
            if self._ops is None:
                self._ops = home
                self._n_features = d
                self._ref = ref
                self._exp = exp_b
                self._set_arrays(
                    {
                        "counts": home.zeros(0, dtype=home.i64()),
                        "sums": home.zeros((0, d), dtype=home.f64()),
                        "ss": home.zeros(0, dtype=home.f64()),
                        "scatter": home.zeros((d, d), dtype=home.f64()),
                    }
                )
            else:
                self._move_to(home)
            exp = self._rescale_to(max(self._exp, exp_b))
            sums_b = ldexp(sums_b, exp_b - exp)
            ss_b = ldexp(ss_b, 2 * (exp_b - exp))
            scatter_b = ldexp(scatter_b, 2 * (exp_b - exp))
            self._grow(new)
            state = self._arrays()
            batch = _state_to(home, {"c": counts_b, "s": sums_b, "ss": ss_b, "sc": scatter_b})
            self._merge_into(home, state, rows, batch["c"], batch["s"], batch["ss"], batch["sc"])
            self._set_arrays(state)
        return self

    def _centre(self, rows):
        """Class means so far (float64, units of X) of the state rows ``rows``; or None.

        The centre of a one-pass update (see :meth:`_Batch.fused`); None
        when the state is rescaled (``_exp`` not 0) or empty.
        """
        if self._ops is None or self._exp != 0:
            return None
        with single_thread():
            counts = to_numpy(self._counts)[rows].astype(np.float64)
            if counts.min(initial=1.0) <= 0:
                return None
            return to_numpy(self._sums)[rows] / counts[:, None] + self._ref

    def _rescale_to(self, exp):
        """Express the state in units of ``2**exp`` (exact powers of two); return exp."""
        if exp != self._exp:
            k = self._exp - exp
            f = 2.0**k
            self._sums = self._sums * f
            self._ss = self._ss * f * f
            self._scatter = self._scatter * f * f
            self._exp = exp
        return exp

    def _grow(self, new):
        """Append zero rows for new labels."""
        if not new:
            return
        ops = self._ops
        k = len(new)
        d = self._n_features
        cat = ops.torch.cat if ops.is_torch else np.concatenate
        self._counts = cat([self._counts, ops.zeros(k, dtype=ops.i64())])
        self._sums = cat([self._sums, ops.zeros((k, d), dtype=ops.f64())])
        self._ss = cat([self._ss, ops.zeros(k, dtype=ops.f64())])
        for lab in new:
            self._index[lab] = len(self._labels)
            self._labels.append(lab)

    def merge(self, other):
        """Fold another :class:`NCStatistics` into this one (in place).

        Classes are aligned by label; ``other`` may hold classes this one has
        not seen (and vice versa), may use another reference point and may
        live on another backend/device (its small arrays are moved here).
        Merging two halves gives the statistics of the whole.

        Parameters
        ----------
        other : NCStatistics
            Statistics to add. It is not modified.

        Returns
        -------
        self : NCStatistics
            The merged statistics.
        """
        if not isinstance(other, NCStatistics):
            raise TypeError(f"Can only merge another NCStatistics, got {type(other).__name__}.")
        if other._ops is None:
            return self
        if self._ops is None:
            merged = other.copy()
            merged.chunk_size = self.chunk_size
            self.__dict__.update(merged.__dict__)
            return self
        if other._n_features != self._n_features:
            raise ValueError(
                f"Cannot merge statistics of {other._n_features} features into "
                f"statistics of {self._n_features} features."
            )
        if other is self:
            other = other.copy()
        ops = self._ops
        rows, new = self._register(list(other._labels))
        o = _state_to(ops, other._arrays())
        f64 = ops.f64()
        # common units, then other's sums re-expressed relative to this
        # reference point
        exp = self._rescale_to(max(self._exp, other._exp))
        f = 2.0 ** (other._exp - exp)
        shift = ops.from_numpy(ldexp(other._ref - self._ref, -exp), dtype=f64)
        sums_o = o["sums"] * f + ops.astype(o["counts"], f64)[:, None] * shift
        o["ss"] = o["ss"] * f * f
        o["scatter"] = o["scatter"] * f * f
        self._grow(new)
        state = self._arrays()
        self._merge_into(ops, state, rows, o["counts"], sums_o, o["ss"], o["scatter"])
        self._set_arrays(state)
        return self

    # ------------------------------------------------------------------
    # snapshot of the (small) state on the CPU, sorted by label
    # ------------------------------------------------------------------

    def _snapshot(self, min_classes=2):
        if self._ops is None or not self._labels:
            raise NotFittedError("This NCStatistics has seen no data yet; call update(X, y) first.")
        K = len(self._labels)
        if K < min_classes:
            raise ValueError(
                f"The statistics hold {K} class(es); neural-collapse metrics need "
                f"at least {min_classes} classes."
            )
        order = sorted(range(K), key=lambda i: self._labels[i])
        counts = to_numpy(self._counts)[order].astype(np.int64)
        sums = to_numpy(self._sums)[order]
        ss = to_numpy(self._ss)[order]
        rel_means = sums / counts[:, None]
        # "means", "ss" and "scatter" in the internal units (2**_exp), for
        # the metrics; "means_abs" in the units of the data
        return {
            "classes": np.asarray([self._labels[i] for i in order]),
            "counts": counts,
            "rel_means": rel_means,
            "means": rel_means + ldexp(self._ref, -self._exp),
            "means_abs": ldexp(rel_means, self._exp) + self._ref,
            "ss": np.maximum(ss, 0.0),
            "n": int(counts.sum()),
        }

    @property
    def classes_(self):
        return self._snapshot(min_classes=1)["classes"]

    @property
    def n_samples_(self):
        return self._snapshot(min_classes=1)["n"]

    @property
    def n_features_(self):
        self._snapshot(min_classes=1)
        return self._n_features

    @property
    def class_counts_(self):
        return self._snapshot(min_classes=1)["counts"]

    @property
    def means_(self):
        return self._snapshot(min_classes=1)["means_abs"]

    @property
    def class_variances_(self):
        snap = self._snapshot(min_classes=1)
        with np.errstate(over="ignore"):
            return ldexp(snap["ss"] / snap["counts"], 2 * self._exp)

    @property
    def within_class_covariance_(self):
        snap = self._snapshot(min_classes=1)
        with np.errstate(over="ignore"):
            return ldexp(to_numpy(self._scatter) / snap["n"], 2 * self._exp)

    # ------------------------------------------------------------------
    # metrics
    # ------------------------------------------------------------------

    def _centered(self, snap, center):
        return centered_means(snap["means"], snap["counts"], check_center(center))

    @_one_thread
    def nc1(self, center="global"):
        """NC1 = tr(Sigma_W Sigma_B^+)/K, see :func:`sknc.metrics.nc1`.

        Parameters
        ----------
        center : {"global", "class-means"}, default="global"
            Centre of the class means.

        Returns
        -------
        float
            The NC1 value.
        """
        snap = self._snapshot()
        return self._nc1(snap, self._centered(snap, center))

    def _nc1(self, snap, Mc):
        warn_narrow_nc1(self._n_features, len(snap["classes"]))
        return nc1_from_scatter(to_numpy(self._scatter), BetweenGeometry(Mc), snap["n"])

    @_one_thread
    def cdnv(self, variant="symmetric", return_matrix=False, bias="plugin"):
        """Class-distance normalised variance, see :func:`sknc.metrics.cdnv`.

        Parameters
        ----------
        variant : {"symmetric", "asymmetric"}, default="symmetric"
            Which form to average.
        bias : {"plugin", "corrected"}, default="plugin"
            Plug-in estimator (population variances) or the bias-corrected one
            (unbiased variances and squared distances), see
            :func:`sknc.metrics.cdnv`.
        return_matrix : bool, default=False
            Also return the (K, K) matrix over the sorted labels.

        Returns
        -------
        value : float
            The mean CDNV.
        matrix : ndarray of shape (n_classes, n_classes)
            Only when ``return_matrix=True``.
        """
        check_option(variant, "variant", _CDNV_VARIANTS)
        check_option(bias, "bias", _CDNV_BIAS)
        snap = self._snapshot()
        value, mat = cdnv_values(snap["ss"], snap["counts"], snap["means"], variant, bias)
        return (value, mat) if return_matrix else value

    @_one_thread
    def nc2(self, center="global"):
        """NC2, distance to a simplex ETF, see :func:`sknc.metrics.nc2`.

        Parameters
        ----------
        center : {"global", "class-means"}, default="global"
            Centre of the class means.

        Returns
        -------
        float
            The NC2 value.
        """
        snap = self._snapshot()
        Mc = self._centered(snap, center)
        return nc2_value(Mc)

    @_one_thread
    def equinorm(self, center="global"):
        """Equinorm, see :func:`sknc.metrics.equinorm`.

        Parameters
        ----------
        center : {"global", "class-means"}, default="global"
            Centre of the class means.

        Returns
        -------
        float
            std/mean of the centred class-mean norms.
        """
        snap = self._snapshot()
        Mc = self._centered(snap, center)
        return equinorm_value(Mc)

    @_one_thread
    def equiangularity(self, center="global", kind="std"):
        """Equiangularity, see :func:`sknc.metrics.equiangularity`.

        Parameters
        ----------
        center : {"global", "class-means"}, default="global"
            Centre of the class means.
        kind : {"std", "max-angle"}, default="std"
            Which form to compute.

        Returns
        -------
        float
            The equiangularity value.
        """
        check_option(kind, "kind", _EQUIANGULARITY_KINDS)
        snap = self._snapshot()
        Mc = self._centered(snap, center)
        return equiangularity_value(Mc, kind)

    @_one_thread
    def nc3(self, coef, center="global", variant="papyan", classes=None):
        """NC3 self-duality, see :func:`sknc.metrics.nc3`.

        Parameters
        ----------
        coef : array-like or torch.Tensor of shape (n_classes, n_features)
            Linear classifier weights, rows in sorted label order (or as
            given by ``classes``); binary (1, d) weights are expanded.
        center : {"global", "class-means"}, default="global"
            Centre of the class means.
        variant : {"papyan", "zhu"}, default="papyan"
            Which distance to compute.
        classes : array-like or None, default=None
            Labels of the rows of ``coef``.

        Returns
        -------
        float
            The NC3 value.
        """
        check_option(variant, "variant", _NC3_VARIANTS)
        snap = self._snapshot()
        _, _, _, W_y = check_coef(coef, None, snap["classes"], self._n_features, classes)
        Mc = self._centered(snap, center)
        return nc3_value(W_y, Mc, variant)

    @_one_thread
    def nc4_counter(self, coef, intercept=None, classes=None):
        """A mergeable NC4 counter bound to the current class means.

        NC4 compares each sample's linear prediction with its nearest class
        mean, so it needs the final means: feed the data a second time to the
        returned counter (``update`` per batch, ``merge`` across workers) and
        read ``value``.

        Parameters
        ----------
        coef : array-like or torch.Tensor of shape (n_classes, n_features)
            Linear classifier weights (binary (1, d) weights are expanded).
        intercept : array-like, scalar or None, default=None
            Intercepts; None means zeros.
        classes : array-like or None, default=None
            Labels of the rows of ``coef`` when they are not the sorted
            classes seen here.

        Returns
        -------
        NC4Counter
            An empty counter.
        """
        snap = self._snapshot()
        self._centered(snap, "global")  # raises if all class means coincide
        return NC4Counter(
            snap["means_abs"],
            coef,
            intercept,
            labels=snap["classes"],
            classes=classes,
            chunk_size=self.chunk_size,
        )

    @_one_thread
    def report(
        self,
        coef=None,
        *,
        center="global",
        cdnv_variant="symmetric",
        nc3_variant="papyan",
        classes=None,
        nc4=None,
        cdnv_bias="plugin",
    ):
        """All metrics in one :class:`CollapseReport`.

        Parameters
        ----------
        coef : array-like or torch.Tensor of shape (n_classes, n_features), default=None
            Linear classifier weights; enables NC3.
        center : {"global", "class-means"}, default="global"
            Centre of the class means.
        cdnv_variant : {"symmetric", "asymmetric"}, default="symmetric"
            CDNV form.
        nc3_variant : {"papyan", "zhu"}, default="papyan"
            NC3 form.
        classes : array-like or None, default=None
            Labels of the rows of ``coef``.
        nc4 : NC4Counter, float or None, default=None
            A filled counter from :meth:`nc4_counter` (or its value) to
            include NC4 in the report.
        cdnv_bias : {"plugin", "corrected"}, default="plugin"
            CDNV estimator, see :func:`sknc.metrics.cdnv`.

        Returns
        -------
        CollapseReport
            The report (``nc4`` is None unless given).
        """
        check_report_options(center, cdnv_variant, nc3_variant, cdnv_bias)
        snap = self._snapshot()
        Mc = self._centered(snap, center)
        W_y = None
        if coef is not None:
            _, _, _, W_y = check_coef(coef, None, snap["classes"], self._n_features, classes)
        if isinstance(nc4, NC4Counter):
            nc4 = nc4.value
        return _build_report(
            Mc,
            W_y,
            nc1=self._nc1(snap, Mc),
            cdnv=cdnv_values(snap["ss"], snap["counts"], snap["means"], cdnv_variant, cdnv_bias)[0],
            nc4=nc4,
            n_samples=snap["n"],
            n_features=self._n_features,
            classes=snap["classes"],
            center=center,
            cdnv_variant=cdnv_variant,
            cdnv_bias=cdnv_bias,
            nc3_variant=nc3_variant,
        )

    def __repr__(self):
        if self._ops is None:
            return "NCStatistics(empty)"
        where = "numpy" if not self._ops.is_torch else f"torch:{self._ops.device}"
        return (
            f"NCStatistics(n_classes={len(self._labels)}, n_samples="
            f"{int(to_numpy(self._counts).sum())}, n_features={self._n_features}, "
            f"backend={where!r})"
        )


class NC4Counter:
    """Mergeable counter of NC4 disagreements, bound to fixed class means.

    Counts samples whose linear prediction ``argmax(W x + b)`` differs from
    their nearest class mean ``argmin_c ||x - mu_c||``. Labels are not needed.
    Usually obtained from :meth:`NCStatistics.nc4_counter` after a first pass.

    Parameters
    ----------
    means : array-like of shape (n_classes, n_features)
        Class means, one row per class.
    coef : array-like or torch.Tensor of shape (n_classes, n_features)
        Linear classifier weights; binary (1, d) weights are expanded to
        ``[-w/2, w/2]``.
    intercept : array-like, scalar or None, default=None
        Intercepts; None means zeros.
    labels : array-like of shape (n_classes,) or None, default=None
        Labels of the rows of ``means``; None means ``0..K-1``.
    classes : array-like or None, default=None
        Labels of the rows of ``coef``; None means the same as ``labels``.
    chunk_size : int or None, default=None
        Rows processed at a time.

    Attributes
    ----------
    n_samples_ : int
        Samples counted so far.
    n_disagree_ : int
        Disagreements counted so far.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import NC4Counter
    >>> counter = NC4Counter([[0.0], [4.0]], coef=[[-1.0], [1.0]])
    >>> counter.update(np.array([[0.0], [1.0], [3.0], [4.0]])).value
    0.25
    """

    def __init__(
        self,
        means,
        coef,
        intercept=None,
        *,
        labels=None,
        classes=None,
        chunk_size=None,
    ):
        means = np.asarray(to_numpy(means), dtype=np.float64)
        if means.ndim != 2 or means.shape[0] < 2:
            raise ValueError(f"means must be 2-D with at least 2 rows, got shape {means.shape}.")
        if not np.isfinite(means).all():
            raise ValueError("means contains NaN or infinity.")
        K, d = means.shape
        labels = np.arange(K) if labels is None else np.asarray(to_numpy(labels))
        if labels.shape != (K,):
            raise ValueError(f"labels must have shape ({K},), one per row of means.")
        self.chunk_size = check_chunk_size(chunk_size)
        W, b, row_codes, _ = check_coef(coef, intercept, labels, d, classes)
        self._means = means
        self._W, self._b, self._row_codes = W, b, row_codes
        # scores are computed relative to the centre of the class means
        self._ref = means.mean(0)
        self._n = 0
        self._dis = 0
        self._dev_cache = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_n"] = int(self._n)
        state["_dis"] = int(self._dis)
        state["_dev_cache"] = {}
        return state

    def _constants(self, ops, cdt):
        key = (ops, str(cdt))
        if key not in self._dev_cache:
            np_cdt = ops.np_dtype(cdt)
            ref_c = self._ref.astype(np_cdt)
            ref64 = ref_c.astype(np.float64)
            # scores on (x - ref) * 2**-exp: exact rescaling, no overflow of
            # the products for features of extreme magnitude
            exp = scale_exponent(float(np.abs(self._means - ref64).max()), np_cdt)
            ybar = ldexp(self._means - ref64, -exp)
            W, b = self._W, ldexp(self._b, -exp)
            A = np.hstack([ybar.T, W.T])
            bias_ncc = -np.einsum("ij,ij->i", ybar, ybar)
            bias_lin = W @ ldexp(ref64, -exp) + b
            # near-tie margins per row, linear in ||x - ref|| (see
            # sknc.utils._rounding): products in the compute dtype, float64 tables
            d = W.shape[1]
            g64 = gamma64(d)
            ymax = float(np.linalg.norm(ybar, axis=1).max())
            wmax = float(np.linalg.norm(W, axis=1).max())
            ref_norm = float(np.linalg.norm(ldexp(ref64, -exp)))
            tol_ncc = (
                safe_margin(g64 * ymax**2),
                safe_margin(2.0 * dot_error(d, np_cdt) * ymax),
            )
            tol_lin = (
                safe_margin(g64 * (wmax * ref_norm + float(np.abs(b).max(initial=0.0)))),
                safe_margin(dot_error(d, np_cdt) * wmax),
            )
            self._dev_cache[key] = dict(
                ref=ops.from_numpy(ref_c, dtype=cdt),
                A=ops.from_numpy(A, dtype=cdt),
                bias_ncc=ops.from_numpy(bias_ncc, dtype=ops.f64()),
                bias_lin=ops.from_numpy(bias_lin, dtype=ops.f64()),
                row_codes=ops.from_numpy(self._row_codes.astype(np.int64)),
                W=ops.from_numpy(W.T, dtype=ops.f64()),
                b=ops.from_numpy(b, dtype=ops.f64()),
                means=ops.from_numpy(ldexp(self._means, -exp), dtype=ops.f64()),
                exp=exp,
                tol_ncc=tol_ncc,
                tol_lin=tol_lin,
            )
        return self._dev_cache[key]

    def update(self, X):
        """Count the disagreements in a batch of features.

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features)
            A batch of features (numpy, or torch on any device).

        Returns
        -------
        self : NC4Counter
            The updated counter.
        """
        X, ops = check_features(X)
        n, d = X.shape
        if d != self._means.shape[1]:
            raise ValueError(f"X has {d} features but the class means have {self._means.shape[1]}.")
        # numpy: its products on the idle cores only (see sknc.utils.thread_budget)
        limit = thread_limits(thread_budget(idle=True)) if not ops.is_torch else None
        with limit or contextlib.nullcontext():
            dis, total = self._count(X, ops)
        if not np.isfinite(float(total)):
            raise_not_finite(X, ops)
        self._dis += int(dis)
        self._n += n
        return self

    def _count(self, X, ops):
        """Disagreements in ``X`` and the sum of its squared row norms (finiteness)."""
        n, d = X.shape
        cdt = ops.compute_dtype(X)
        K = self._means.shape[0]
        cst = self._constants(ops, cdt)
        chunk = ops.chunk_rows(d, np.dtype(ops.np_dtype(cdt)).itemsize, self.chunk_size)
        dis = 0
        total = 0.0
        f64 = ops.f64()
        if not ops.is_torch and ops.np_dtype(cdt) == np.float32:
            # OpenBLAS' float32 GEMM is 2-4x slower until primed (sknc.utils._blas)
            prime_float32_gemm(2.0 * n * d * cst["A"].shape[1])
        for start in range(0, n, chunk):
            with np.errstate(invalid="ignore", over="ignore"):
                Y = ops.scale_(ops.astype(X[start : start + chunk], cdt) - cst["ref"], cst["exp"])
                ynorm2 = ops.rownorm2(Y)
            # NaN/inf in X shows in this sum (checked once at the end)
            total = total + ops.sum64(ynorm2)
            Z = Y @ cst["A"]
            S_ncc = 2.0 * ops.astype(Z[:, :K], f64) + cst["bias_ncc"]
            S_lin = Z[:, K:] + cst["bias_lin"]
            ncc = ops.argmax(S_ncc)
            lin = ops.argmax(S_lin)
            ynorm = ops.astype(ynorm2, f64) ** 0.5
            near = ops.near_ties(S_ncc, ncc, row_margin(cst["tol_ncc"], ynorm))
            near |= ops.near_ties(S_lin, lin, row_margin(cst["tol_lin"], ynorm))
            redo = ops.nonzero(near)
            if len(redo):
                x64 = ops.scale_(ops.astype(X[start : start + chunk][redo], f64), cst["exp"])
                if np.isfinite(float(ops.sum64(x64))):
                    lin[redo] = ops.argmax(x64 @ cst["W"] + cst["b"])  # b scaled too
                    ncc[redo] = ops.nearest_rows(x64, cst["means"])
            dis = dis + ops.count_neq(cst["row_codes"][lin], ncc)
        return dis, total

    def merge(self, other):
        """Add the counts of another counter bound to the same means and weights.

        Parameters
        ----------
        other : NC4Counter
            Counter to add; it is not modified.

        Returns
        -------
        self : NC4Counter
            The merged counter.
        """
        if not isinstance(other, NC4Counter):
            raise TypeError(f"Can only merge another NC4Counter, got {type(other).__name__}.")
        same = (
            np.array_equal(self._means, other._means)
            and np.array_equal(self._W, other._W)
            and np.array_equal(self._b, other._b)
            and np.array_equal(self._row_codes, other._row_codes)
        )
        if not same:
            raise ValueError(
                "Cannot merge NC4 counters bound to different class means or classifier weights."
            )
        self._n += other._n
        self._dis += other._dis
        return self

    @property
    def n_samples_(self):
        return int(self._n)

    @property
    def n_disagree_(self):
        return int(self._dis)

    @property
    def value(self):
        """NC4: the share of counted samples whose two predictions differ."""
        if self._n == 0:
            raise ValueError("The NC4 counter has seen no samples; call update(X) first.")
        return self._dis / self._n

    def __repr__(self):
        return (
            f"NC4Counter(n_classes={self._means.shape[0]}, n_samples={self._n}, "
            f"n_disagree={self._dis})"
        )

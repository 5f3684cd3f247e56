"""Neural-collapse metrics on in-memory features: two chunked passes.

Pass 1 accumulates per-class counts and sums (in X's dtype per chunk, in
float64 across chunks; a large common offset is removed first), which gives
the class means, the centred class means ``Mc`` and their thin SVD
``Mc = U S V^T`` (K x d: cheap).

Pass 2 forms, chunk by chunk, the within-class residuals ``E = X - hi[y]``
(``hi`` the class means rounded to X's dtype, so that large common offsets
vanish before any product) and runs one matrix product
``E @ [V S^-1 | W^T]`` (about 2K columns). From it come

* NC1 = sum over kept directions of ``||E v_i||^2 / (N s_i^2)``, since
  ``Sigma_B^+ = K V S^-2 V^T``: no (d, d) matrix is formed or inverted;
* the nearest-class-mean decision, because the class-mean differences lie in
  ``span(V)``: ``E Mc^T = (E V S^-1) S^2 U^T`` (a small K x K product);
* the linear classifier scores ``W x + b = W E + (W hi_y + b)``;

and per-class sums of ``||E||^2`` (row norms + bincount) give the class
variances for CDNV. The tiny remainder ``lo = mean - hi`` is corrected for
exactly with per-class tables. Samples whose two best scores are closer than
a bound on the rounding error are decided again from their float64 values
(``x W^T + b`` and direct distances to the means), so NC4 follows the
textbook decisions even on exact ties.

Temporaries are chunk-sized; nothing of size (N, N), (N, K, d) or an extra
(N, d) is built. numpy input is processed by as many worker threads as BLAS
may use, each with single-threaded BLAS on its own chunks; the small final
algebra runs single-threaded.
"""

import functools
from contextvars import ContextVar
from dataclasses import dataclass, field

import numpy as np

from ..utils import single_thread, thread_budget
from ..utils._blas import prime_float32_gemm
from ..utils._rounding import dot_error, gamma64, row_margin, safe_margin, unit_roundoff
from ..utils._warnings import warn_external
from ._backend import class_sums64, sum64_rows
from ._core import (
    _CDNV_BIAS,
    BetweenGeometry,
    NCDegenerateWarning,
    cdnv_values,
    centered_means,
    equiangularity_value,
    equinorm_value,
    ldexp,
    nc2_value,
    nc3_value,
    offset_reference,
    pairwise_sq_dists,
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

_CDNV_VARIANTS = ("symmetric", "asymmetric")
_NC3_VARIANTS = ("papyan", "zhu")
_EQUIANGULARITY_KINDS = ("std", "max-angle")


# --------------------------------------------------------------------------
# the two passes
# --------------------------------------------------------------------------


# Worker threads for the chunked passes of the current call (see _lean_blas).
_N_WORKERS = ContextVar("sknc_metrics_workers", default=None)


def _lean_blas(func):
    """Run a metric function with single-threaded BLAS outside its passes.

    The small final algebra (SVD of the K x d class means, K x K products)
    is faster on one thread and does not stall on a busy machine; the chunked
    passes get the BLAS thread budget as worker threads instead.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        token = _N_WORKERS.set(thread_budget(idle=True))
        try:
            with single_thread():
                return func(*args, **kwargs)
        finally:
            _N_WORKERS.reset(token)

    return wrapper


def _offset_negligible(sample, ref):
    """True when summing ``x`` rather than ``x - ref`` costs no more than a factor ~2.

    The float64 class sums of ``n`` rows carry a rounding error of at most
    ``gamma_n sum_i |x_ij - s_j|`` for rows shifted by ``s`` (Higham, eq.
    4.4). Without the shift (``s = 0``) the bound is ``gamma_n sum_i |x_ij|
    <= gamma_n (sum_i |x_ij - ref_j| + n |ref_j|)``: no more than twice the
    shifted bound when ``|ref_j|`` is at most the mean absolute deviation
    of column ``j``, which ``sample`` (rows spread over all of X) measures.
    Offsets larger than that, in any column (a constant column included),
    keep the shift; so do non-finite samples (the comparison is False).
    The shift costs a float64 pass over every element: about 0.1x one GEMM
    over X in :func:`collapse_report`.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        mad = np.mean(np.abs(sample - ref), axis=0)
        return bool(np.all(np.abs(ref) <= mad))


class _Prepared:
    """Validated input plus the results of pass 1."""

    def __init__(self, X, y, chunk_size):
        chunk_size = check_chunk_size(chunk_size)
        X, ops = check_features(X)
        self.X, self.ops = X, ops
        self.n_samples, self.n_features = X.shape
        self.classes, self.codes = encode_labels(y, self.n_samples, ops)
        self.n_classes = len(self.classes)
        self.cdtype = ops.compute_dtype(X)
        self.np_cdtype = ops.np_dtype(self.cdtype)
        itemsize = np.dtype(self.np_cdtype).itemsize
        self.chunk = ops.chunk_rows(self.n_features, itemsize, chunk_size)
        self._pass1()

    def chunks(self):
        return [
            (start, min(start + self.chunk, self.n_samples))
            for start in range(0, self.n_samples, self.chunk)
        ]

    def n_workers(self):
        """Worker threads for the chunked passes of this call (see run_chunk_groups)."""
        n = _N_WORKERS.get()
        return min(thread_budget(idle=True) if n is None else n, len(self.chunks()))

    def run_chunks(self, work, n_workers=None):
        """Run ``work(list_of_chunks)`` over all chunks (see run_chunk_groups)."""
        n_workers = self.n_workers() if n_workers is None else n_workers
        return run_chunk_groups(self.ops, self.chunks(), work, n_workers)

    def _pass1(self, pre=None):
        """Class counts and float64 class sums; the class means.

        Every chunk is converted to float64 and shifted by a reference point
        (the rounded mean of rows spread over all of X) before it is summed,
        so a common offset, a large spread of the class means or the order of
        the rows cost no digits. The shift is skipped (``ref`` is 0) when the
        offset is negligible (:func:`_offset_negligible`). Enormous float64
        values are first scaled by a power of two (``pre``) so that their
        sums cannot overflow.
        """
        ops, X, K = self.ops, self.X, self.n_classes
        sample = sample_rows(X, ops)
        self.ref = offset_reference(sample, self.np_cdtype)
        shift = not _offset_negligible(sample, self.ref)
        if not shift:
            self.ref = np.zeros_like(self.ref)
        with np.errstate(invalid="ignore", over="ignore"):
            amax = float(np.max(np.abs(sample - self.ref), initial=0.0))
        if pre is None:
            # float32 data cannot overflow a float64 sum; float64 data near
            # the top of its range can
            pre = scale_exponent(amax, np.float64) if self.np_cdtype == np.float64 else 0
        ref_dev = ops.from_numpy(self.ref, dtype=ops.f64()) if shift else None
        rows = min(self.chunk, self.n_samples)

        def work(chunks):
            sums = ops.zeros((K, self.n_features), dtype=ops.f64())
            buf = (
                None
                if ops.is_torch
                else np.empty((min(rows, sum64_rows(self.n_features)), self.n_features))
            )
            with np.errstate(invalid="ignore", over="ignore"):
                for start, stop in chunks:
                    c = self.codes[start:stop]
                    sums += class_sums64(ops, X[start:stop], c, K, ref_dev, pre, buf)
            return ops.to_numpy(sums)

        sums = sum(self.run_chunks(work))
        if not np.isfinite(sums).all():
            if pre == 0 and self.np_cdtype == np.float64 and self._all_finite():
                # an outlier the sample missed: scale by the largest value
                return self._pass1(pre=scale_exponent(self._amax(), np.float64, force=True))
            raise_not_finite(X, ops)
        self.counts = ops.to_numpy(ops.counts(self.codes, K)).astype(np.int64)
        # class means in the units of X (float64), relative to ref and absolute
        rel = ldexp(sums / self.counts[:, None], pre)
        self.means_abs = rel + self.ref
        # computations run on X * 2**-exp (exact); exp is 0 unless the
        # magnitude of the data is extreme for X's dtype
        spread = max(amax, float(np.abs(rel - rel.mean(0)).max(initial=0.0)))
        self._set_exponent(scale_exponent(spread, self.np_cdtype))

    def _set_exponent(self, exp):
        self.exp = exp
        self.means = ldexp(self.means_abs, -exp)  # rescaled units

    def _all_finite(self):
        if self.ops.is_torch:
            return bool(self.ops.torch.isfinite(self.X).all())
        return bool(np.isfinite(self.X).all())

    def _amax(self):
        """Largest ``|x - ref|`` over all of X (an extra pass, rarely needed)."""
        ops = self.ops
        ref_dev = ops.from_numpy(self.ref, dtype=ops.f64())
        amax = 0.0
        with np.errstate(invalid="ignore", over="ignore"):
            for start, stop in self.chunks():
                amax = max(amax, ops.amax_abs(ops.shifted64(self.X[start:stop], ref_dev)))
        return amax

    def run_pass2(self, **kwargs):
        """:meth:`pass2`, rescaled and run again if a value overflowed."""
        out = self.pass2(**kwargs)
        if all(v is None or np.all(np.isfinite(v)) for v in out[:2]):
            return out
        exp = scale_exponent(self._amax(), self.np_cdtype, force=True)
        if exp != self.exp:
            old = self.exp
            self._set_exponent(exp)
            geometry = kwargs.get("geometry")
            if geometry is not None:
                kwargs["geometry"] = BetweenGeometry(ldexp(geometry.Mc, old - exp))
            out = self.pass2(**kwargs)
            if all(v is None or np.all(np.isfinite(v)) for v in out[:2]):
                return out
        raise ValueError(
            "X spans too wide a range of magnitudes for its dtype: its within-class "
            "sums of squares overflow; convert X to float64."
        )

    def pass2(self, *, want_var=False, geometry=None, linear=None):
        """Second pass; returns (class sums of squares, nc1 sum, disagreements).

        want_var : bool
            Accumulate the per-class sums of ``||x - mu_y||^2``.
        geometry : BetweenGeometry or None
            When given, NC1's projected within-class scatter is accumulated.
        linear : tuple (W, b, row_codes) or None
            When given (geometry must be too), NC4 disagreements are counted.

        Each requested quantity is a part (:class:`_VarPart`,
        :class:`_NC1Part`, :class:`_NC4Part`) fed the same residual chunks
        (:class:`_Chunk`); the result of a part not requested is None.
        """
        res = _Residuals(self)
        parts, blocks = {}, []
        if want_var:
            parts["ss"] = _VarPart(res)
        if geometry is not None:
            parts["nc1"] = _NC1Part(res, geometry)
            blocks.append(parts["nc1"].P)
        if linear is not None:
            parts["dis"] = _NC4Part(res, geometry, linear)
            blocks.append(linear[0].T)
        ops = self.ops
        A_dev = ops.from_numpy(_padded_columns(blocks), dtype=self.cdtype) if blocks else None
        n_workers = self.n_workers()
        if A_dev is not None and not ops.is_torch and self.np_cdtype == np.float32:
            # OpenBLAS' float32 GEMM is 2-4x slower until each buffer the
            # workers will use has been written once (sknc.utils._blas)
            flops = 2.0 * self.n_samples * self.n_features * A_dev.shape[1]
            prime_float32_gemm(flops, n_workers)
        rows = min(self.chunk, self.n_samples)

        def work(chunks):
            bufs = _ChunkBuffers(res, A_dev, rows)
            accs = {name: part.start(rows) for name, part in parts.items()}
            for start, stop in chunks:
                chunk = _Chunk(res, bufs, start, stop)
                for name, part in parts.items():
                    accs[name] = part.add(accs[name], chunk)
            return {name: part.to_host(accs[name]) for name, part in parts.items()}

        results = self.run_chunks(work, n_workers)
        return tuple(
            parts[name].finish([r[name] for r in results]) if name in parts else None
            for name in ("ss", "nc1", "dis")
        )

    def geometry(self, center):
        return BetweenGeometry(centered_means(self.means, self.counts, center))


# --------------------------------------------------------------------------
# pass 2: residual chunks and the parts accumulated from them
# --------------------------------------------------------------------------


# GEMM widths that are a multiple of this run at full speed in OpenBLAS'
# kernels; an odd width (K + span = 199 for K = 100) was 10% slower
_GEMM_WIDTH = 4


def _padded_columns(blocks):
    """``np.hstack(blocks)`` with zero columns up to a multiple of ``_GEMM_WIDTH``.

    The products with the zero columns are never read.
    """
    width = sum(b.shape[1] for b in blocks)
    pad = -width % _GEMM_WIDTH
    if pad:
        blocks = [*blocks, np.zeros((blocks[0].shape[0], pad))]
    return np.hstack(blocks)


class _Residuals:
    """What every part of pass 2 shares: the split of the class means.

    ``hi`` are the class means in X's units and compute dtype, so that
    ``x - hi`` is (nearly) exact; everything else is in the rescaled units
    ``x * 2**-exp``: ``hi_s`` (``hi`` rescaled, exact) and the exact float64
    remainder ``lo = means - hi_s``.
    """

    def __init__(self, prep):
        self.prep, self.ops, self.exp = prep, prep.ops, prep.exp
        hi = prep.means_abs.astype(prep.np_cdtype)
        self.hi_s = ldexp(hi.astype(np.float64), -prep.exp)
        self.lo = prep.means - self.hi_s
        self.counts = prep.counts.astype(np.float64)
        self.hi_dev = prep.ops.from_numpy(hi, dtype=prep.cdtype)


class _ChunkBuffers:
    """One worker's chunk-sized buffers: residuals and their product with ``A``."""

    def __init__(self, res, A_dev, rows):
        ops, prep = res.ops, res.prep
        self.A = A_dev
        self.E = ops.empty_like_rows(rows, prep.n_features, prep.cdtype)
        self.Z = None if A_dev is None else ops.empty_like_rows(rows, A_dev.shape[1], prep.cdtype)


class _Chunk:
    """One chunk of rows in pass 2: residuals ``E = (x - hi_y) 2**-exp``, lazily more.

    ``en2`` (squared row norms of ``E``) and ``Z = E @ A`` are computed on
    first use, once for all parts.
    """

    def __init__(self, res, bufs, start, stop):
        ops, prep = res.ops, res.prep
        self.ops, self.res, self.bufs = ops, res, bufs
        self.start, self.stop, self.n = start, stop, stop - start
        self.codes = prep.codes[start:stop]
        Xc = ops.astype(prep.X[start:stop], prep.cdtype)
        E = ops.take_rows(res.hi_dev, self.codes, out=bufs.E[: self.n])
        ops.subtract(Xc, E, out=E)
        self.E = ops.scale_(E, res.exp)

    @functools.cached_property
    def en2(self):
        return self.ops.rownorm2(self.E)

    @functools.cached_property
    def Z(self):
        return self.ops.matmul(self.E, self.bufs.A, out=self.bufs.Z[: self.n])


class _VarPart:
    """Per-class sums of ``||x - mu_y||^2`` (class variances, CDNV)."""

    def __init__(self, res):
        self.res = res

    def start(self, rows):
        ops = self.res.ops
        return ops.zeros(self.res.prep.n_classes, dtype=ops.f64())

    def add(self, ss, chunk):
        return ss + self.res.ops.weighted_counts(chunk.codes, chunk.en2, self.res.prep.n_classes)

    def to_host(self, ss):
        return self.res.ops.to_numpy(ss)

    def finish(self, parts):
        lo = self.res.lo
        ss = sum(parts) - self.res.counts * np.einsum("ij,ij->i", lo, lo)
        return np.maximum(ss, 0.0)


class _NC1Part:
    """NC1's projected within-class scatter: ``sum ||E V S^-1||^2`` over kept directions.

    ``P = V S^-1`` (all ``span`` directions, which NC4 needs too) are the
    first columns of ``A``; NC1 uses the first ``rank``. The remainder
    ``lo`` is corrected for exactly at the end.
    """

    def __init__(self, res, geometry):
        self.res = res
        self.P = geometry.Vt.T / geometry.s  # V S^-1, shape (d, span)
        self.r = geometry.rank
        lo_P = res.lo @ self.P[:, : self.r]
        self.correction = float(np.sum(res.counts * np.einsum("ij,ij->i", lo_P, lo_P)))

    def start(self, rows):
        return 0.0

    def add(self, total, chunk):
        return total + chunk.ops.sum64(chunk.ops.rownorm2(chunk.Z[:, : self.r]))

    def to_host(self, total):
        return float(total)

    def finish(self, parts):
        return max(float(sum(parts)) - self.correction, 0.0)


class _NC4Part:
    """Samples on which the linear classifier and the nearest class mean disagree.

    Linear scores ``W x + b = W E + (W hi_y + b)``: the table ``T`` is
    computed in float64 and then rounded to the compute dtype, where the
    scores are added and compared. ``W hi_y`` can be large next to the
    score gaps of offset features: the rounding of ``T`` and of the sum
    (``u |T|`` and ``u |T + W E|``) is part of the near-tie margin, so rows
    it could decide wrongly go to the float64 check.
    Nearest class mean: ``argmax_c 2 e.Mc_c - ||mu_y - mu_c||^2`` with
    ``e = E - lo_y`` the exact residual and ``E Mc^T = (E V S^-1) S^2 U^T``
    (``C``); the table ``Dt`` holds the distances between class means plus
    the ``lo`` correction, in the compute dtype (as accurate as the products
    it is compared with). Rows whose two best scores are closer than the
    rounding bound (``sknc.utils._rounding``) are decided again from the
    float64 data (``x W^T + b`` and direct distances to the means), so NC4
    agrees with the textbook computation even on exact ties.
    """

    def __init__(self, res, geometry, linear):
        ops, prep = res.ops, res.prep
        cdt, f64 = prep.cdtype, ops.f64()
        W, b, row_codes = linear
        self.res, self.span, self.n_rows = res, geometry.Vt.shape[0], W.shape[0]
        b = ldexp(b, -res.exp)  # W x + b = 2**exp (W x' + b 2**-exp)
        Dt = pairwise_sq_dists(prep.means - prep.means.mean(0))
        Dt += 2.0 * (res.lo @ geometry.Mc.T)
        self.C = ops.from_numpy(2.0 * (geometry.s**2)[:, None] * geometry.U.T, dtype=cdt)
        T = res.hi_s @ W.T + b  # float64
        self.T = ops.from_numpy(T, dtype=cdt)
        self.Dt = ops.from_numpy(Dt, dtype=cdt)
        self.row_codes = ops.from_numpy(row_codes.astype(np.int64))
        self.W64 = ops.from_numpy(W.T, dtype=f64)
        self.b64 = ops.from_numpy(b, dtype=f64)
        self.means64 = ops.from_numpy(prep.means, dtype=f64)
        self.tol_lin, self.tol_ncc = self._tolerances(res, geometry, W, b, Dt, T)

    def _tolerances(self, res, geometry, W, b, Dt, T):
        """Near-tie margins ``(c0, c1)`` of both score kinds (:func:`row_margin`).

        See ``sknc.utils._rounding``: ``safe_margin(err64 + err_c)`` with
        ``err_c`` the compute-dtype error of the products from ``E`` and
        ``err64`` that of the float64 tables (``T``, ``Dt``, the SVD).

        Linear scores ``S = fl(fl(T) + Z)`` in the compute dtype (unit
        roundoff ``u``), with ``Z = E W^T`` (``|Z_k| <= (1 + dot_error)
        ||W_k|| ||E||``): rounding ``T`` costs ``u |T|``, the sum ``u |fl(T) +
        Z| <= u ((1 + u) |T| + |Z|)``; both are below ``3 u max|T| + 2 u
        w_max ||E||``, added to the float64 error of ``T`` (``c0``) and to the
        error of the product (``c1``).
        """
        prep = res.prep
        d, K, span, cdt = prep.n_features, prep.n_classes, self.span, prep.np_cdtype
        w_max = float(np.linalg.norm(W, axis=1).max())
        hi_max = float(np.linalg.norm(res.hi_s, axis=1).max())
        mc_fro = float(np.linalg.norm(geometry.Mc))
        m_max = float(np.linalg.norm(geometry.Mc, axis=1).max())
        g64 = gamma64(d)
        u = unit_roundoff(cdt)
        t_max = float(np.abs(T).max(initial=0.0))
        tol_lin = (
            safe_margin(
                g64 * (w_max * hi_max + float(np.abs(b).max(initial=0.0))) + 3.0 * u * t_max
            ),
            safe_margin((dot_error(d, cdt) + 2.0 * u) * w_max),
        )
        tol_ncc = (
            safe_margin(
                unit_roundoff(cdt) * float(np.abs(Dt).max(initial=0.0)) + 4.0 * g64 * m_max**2
            ),
            safe_margin(
                2.0 * dot_error(d + span + 2, cdt) * mc_fro
                + 2.0 * gamma64(max(K, d)) * geometry.s[0]
            ),
        )
        return tol_lin, tol_ncc

    def start(self, rows):
        ops, prep = self.res.ops, self.res.prep
        return {
            "n": 0,
            "S": ops.empty_like_rows(rows, self.n_rows, prep.cdtype),
            "ncc": ops.empty_like_rows(rows, prep.n_classes, prep.cdtype),
            "D": ops.empty_like_rows(rows, prep.n_classes, prep.cdtype),
        }

    def add(self, acc, chunk):
        ops, n, span = chunk.ops, chunk.n, self.span
        S = ops.take_rows(self.T, chunk.codes, out=acc["S"][:n])
        ops.add(S, chunk.Z[:, span : span + self.n_rows], out=S)
        lin_idx = ops.argmax(S)
        ncc = ops.matmul(chunk.Z[:, :span], self.C, out=acc["ncc"][:n])
        ops.subtract(ncc, ops.take_rows(self.Dt, chunk.codes, out=acc["D"][:n]), out=ncc)
        ncc_pred = ops.argmax(ncc)
        enorm = ops.astype(chunk.en2, ops.f64()) ** 0.5
        near = ops.near_ties(S, lin_idx, row_margin(self.tol_lin, enorm))
        near |= ops.near_ties(ncc, ncc_pred, row_margin(self.tol_ncc, enorm))
        redo = ops.nonzero(near)
        if len(redo):
            rows = self.res.prep.X[chunk.start : chunk.stop][redo]
            x64 = ops.scale_(ops.astype(rows, ops.f64()), self.res.exp)
            lin_idx[redo] = ops.argmax(x64 @ self.W64 + self.b64)
            ncc_pred[redo] = ops.nearest_rows(x64, self.means64)
        acc["n"] = acc["n"] + ops.count_neq(self.row_codes[lin_idx], ncc_pred)
        return acc

    def to_host(self, acc):
        return int(acc["n"])

    def finish(self, parts):
        return int(sum(parts))


# --------------------------------------------------------------------------
# report object
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CollapseReport:
    """All neural-collapse metrics of one set of features, from one call.

    Lower is more collapse for every metric. Produced by
    :func:`collapse_report` and :meth:`NCStatistics.report`.

    Attributes
    ----------
    n_samples : int
        Number of samples N.
    n_features : int
        Feature dimension d.
    n_classes : int
        Number of classes K.
    nc1 : float
        ``tr(Sigma_W Sigma_B^+) / K``.
    cdnv : float
        Class-distance normalised variance (variant in ``cdnv_variant``).
    nc2 : float
        Distance of the normalised class-mean Gram to the simplex ETF.
    equinorm : float
        std/mean of the norms of the centred class means.
    equiangularity : float
        Standard deviation of the pairwise cosines of the centred class means.
    max_angle : float
        Mean of ``|cos + 1/(K-1)|`` over class pairs (Papyan's "max-angle").
    nc3 : float or None
        Self-duality distance, when classifier weights were given.
    nc4 : float or None
        Share of samples where the linear classifier and the nearest class
        mean disagree, when classifier weights were given (and the data were
        available for a second pass).
    center : str
        Centring used for NC1, NC2, NC3, equinorm and equiangularity.
    cdnv_variant : str
        ``"symmetric"`` or ``"asymmetric"``.
    cdnv_bias : str
        ``"plugin"`` or ``"corrected"`` (see :func:`cdnv`).
    nc3_variant : str
        ``"papyan"`` or ``"zhu"``.
    classes : ndarray of shape (n_classes,)
        The sorted class labels.
    """

    n_samples: int
    n_features: int
    n_classes: int
    nc1: float
    cdnv: float
    nc2: float
    equinorm: float
    equiangularity: float
    max_angle: float
    nc3: float | None = None
    nc4: float | None = None
    center: str = "global"
    cdnv_variant: str = "symmetric"
    cdnv_bias: str = "plugin"
    nc3_variant: str = "papyan"
    classes: np.ndarray = field(default=None, repr=False, compare=False)

    _METRICS = (
        "nc1",
        "cdnv",
        "nc2",
        "equinorm",
        "equiangularity",
        "max_angle",
        "nc3",
        "nc4",
    )

    def as_dict(self):
        """Return the sizes and metric values as a plain dict.

        ``nc3`` and ``nc4`` are included only when they were computed.

        Returns
        -------
        dict
            Keys ``n_samples``, ``n_features``, ``n_classes``, ``nc1``,
            ``cdnv``, ``nc2``, ``equinorm``, ``equiangularity``,
            ``max_angle`` and possibly ``nc3``, ``nc4``.
        """
        out = {
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
        }
        for name in self._METRICS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def __repr__(self):
        head = (
            f"CollapseReport(n_classes={self.n_classes}, n_samples={self.n_samples}, "
            f"n_features={self.n_features}, center={self.center!r})"
        )
        lines = [head]
        for name in self._METRICS:
            value = getattr(self, name)
            if value is None:
                continue
            label = name
            if name == "cdnv":
                notes = [self.cdnv_variant] if self.cdnv_variant != "symmetric" else []
                notes += [self.cdnv_bias] if self.cdnv_bias != "plugin" else []
                if notes:
                    label = f"cdnv ({', '.join(notes)})"
            if name == "nc3" and self.nc3_variant != "papyan":
                label = f"nc3 ({self.nc3_variant})"
            lines.append(f"  {label:<22}{value:.6g}")
        return "\n".join(lines)

    def to_frame(self):
        """The report as a one-row ``pandas.DataFrame`` (the columns of :meth:`as_dict`).

        Returns
        -------
        pandas.DataFrame
        """
        from ..utils._results import import_pandas

        pd = import_pandas("use .as_dict() instead")
        return pd.DataFrame([self.as_dict()])

    def plot(self, ax=None):
        """Bar chart of the metrics (lower is more collapse), on a log axis when they span widely.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; None creates a new figure.

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.

        Examples
        --------
        >>> import numpy as np
        >>> from sknc.metrics import collapse_report
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat(np.arange(3), 20)
        >>> X = rng.normal(size=(60, 5)) + 4 * np.eye(5)[y]
        >>> ax = collapse_report(X, y).plot()
        >>> [t.get_text() for t in ax.get_yticklabels()][:3]
        ['nc1', 'cdnv', 'nc2']
        """
        from ..utils._plotting import _log_if_positive, _new_axes

        values = {k: v for k, v in self.as_dict().items() if k in self._METRICS}
        ax = _new_axes(ax)
        names = list(values)
        ax.barh(names, [values[k] for k in names], color="C0")
        _log_if_positive(ax, list(values.values()), axis="x")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set_xlabel("value (lower is more collapse)")
        ax.set_title(f"{self.n_classes} classes, {self.n_samples} samples, d={self.n_features}")
        return ax


def _centred_class_means(X, y, center, chunk_size):
    """Pass 1 only: the prepared input and its centred class means ``Mc``."""
    check_center(center)
    prep = _Prepared(X, y, chunk_size)
    return prep, centered_means(prep.means, prep.counts, center)


def _safe_equiangularity(Mc):
    """Equiangularity pair for the report: NaN with a warning if undefined."""
    try:
        return equiangularity_value(Mc, "std"), equiangularity_value(Mc, "max-angle")
    except ValueError as exc:
        warn_external(f"{exc} Reporting NaN.", NCDegenerateWarning)
        return float("nan"), float("nan")


def check_report_options(center, cdnv_variant, nc3_variant, cdnv_bias="plugin"):
    """Validate the options of a :class:`CollapseReport` before any pass over data."""
    check_center(center)
    check_option(cdnv_variant, "cdnv_variant", _CDNV_VARIANTS)
    check_option(cdnv_bias, "cdnv_bias", _CDNV_BIAS)
    check_option(nc3_variant, "nc3_variant", _NC3_VARIANTS)


def _build_report(
    Mc,
    W_y,
    *,
    nc1,
    cdnv,
    nc4,
    n_samples,
    n_features,
    classes,
    center,
    cdnv_variant,
    nc3_variant,
    cdnv_bias="plugin",
):
    """The report of :func:`collapse_report` and :meth:`NCStatistics.report`.

    NC1, CDNV and NC4 come from the passes over the data; NC2, equinorm,
    equiangularity and (with the classifier rows ``W_y``) NC3 follow from the
    centred class means ``Mc``.
    """
    eqa, max_angle = _safe_equiangularity(Mc)
    return CollapseReport(
        n_samples=int(n_samples),
        n_features=int(n_features),
        n_classes=len(classes),
        nc1=nc1,
        cdnv=cdnv,
        nc2=nc2_value(Mc),
        equinorm=equinorm_value(Mc),
        equiangularity=eqa,
        max_angle=max_angle,
        nc3=None if W_y is None else nc3_value(W_y, Mc, nc3_variant),
        nc4=None if nc4 is None else float(nc4),
        center=center,
        cdnv_variant=cdnv_variant,
        cdnv_bias=cdnv_bias,
        nc3_variant=nc3_variant,
        classes=classes,
    )


# --------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------


@_lean_blas
def nc1(X, y, *, center="global", chunk_size=None):
    """NC1: within-class variability relative to between-class separation.

    ``NC1 = tr(Sigma_W Sigma_B^+) / K`` with ``Sigma_W`` the within-class
    covariance (normalised by N), ``Sigma_B`` the covariance of the centred
    class means (normalised by K) and ``^+`` the Moore-Penrose pseudo-inverse
    (eigenvalues below ``n_features * eps * max_eigenvalue`` are dropped, as
    ``scipy.linalg.pinv`` does). Computed through the between-class subspace:
    no (d, d) matrix is inverted. Lower is more collapse.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features. torch tensors are processed on their own device.
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels of any sortable kind (ints, strings, ...).
    center : {"global", "class-means"}, default="global"
        Centre of the class means: the mean of all samples, or the mean of
        the class means (Papyan's balanced convention).
    chunk_size : int or None, default=None
        Rows processed at a time; None picks a cache-friendly size.

    Returns
    -------
    float
        The NC1 value.

    Raises
    ------
    ValueError
        On NaN/inf, fewer than 2 classes, length mismatch, non-2-D X, or when
        all class means coincide.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import nc1
    >>> X = np.array([[0.0, 0.1], [0.0, -0.1], [2.0, 0.1], [2.0, -0.1]])
    >>> y = [0, 0, 1, 1]
    >>> round(nc1(X, y), 6)
    0.0
    >>> round(nc1(X + [[0.1, 0.0], [-0.1, 0.0], [0.0, 0.0], [0.0, 0.0]], y), 6)
    0.0025
    """
    check_center(center)
    prep = _Prepared(X, y, chunk_size)
    geom = prep.geometry(center)
    warn_narrow_nc1(prep.n_features, prep.n_classes)
    _, nc1_sum, _ = prep.run_pass2(geometry=geom)
    return nc1_sum / prep.n_samples


@_lean_blas
def cdnv(X, y, *, variant="symmetric", bias="plugin", return_matrix=False, chunk_size=None):
    """Class-distance normalised variance (Galanti et al., 2022).

    ``variant="symmetric"`` averages ``(Var_i + Var_j) / (2 ||mu_i - mu_j||^2)``
    over unordered class pairs; ``variant="asymmetric"`` averages
    ``Var_i / ||mu_i - mu_j||^2`` over ordered pairs ``i != j``. ``Var_c`` is
    the mean squared distance of class ``c``'s samples to their mean. CDNV
    needs no centring. Lower is more collapse.

    The plug-in value (``bias="plugin"``, the paper's) depends on the number
    of samples per class: the population variance shrinks and the squared
    distance between estimated means grows when classes have fewer samples,
    so the CDNV of 10 samples per class is lower than that of 40 samples of
    the same distribution. ``bias="corrected"`` removes both biases. With
    ``n_c`` samples of class ``c``, ``m_c`` their mean and ``Sigma_c`` the
    class covariance (``tr Sigma_c`` is the variance CDNV means):

    * ``E[ss_c] = (n_c - 1) tr Sigma_c`` for ``ss_c = sum ||x - m_c||^2``, so
      ``V_c = ss_c / (n_c - 1)`` is unbiased (the plug-in ``ss_c / n_c`` is
      low by the factor ``(n_c - 1) / n_c``);
    * ``m_i - m_j`` has mean ``mu_i - mu_j`` and covariance
      ``Sigma_i / n_i + Sigma_j / n_j`` (independent samples), so
      ``E||m_i - m_j||^2 = ||mu_i - mu_j||^2 + tr Sigma_i / n_i + tr Sigma_j / n_j``
      and ``||m_i - m_j||^2 - V_i / n_i - V_j / n_j`` is unbiased for
      ``||mu_i - mu_j||^2``.

    The corrected CDNV is the plug-in formula with these two estimates. It
    needs at least 2 samples per class. The ratio of unbiased estimates is
    not itself unbiased, but its size dependence is of higher order, so sets
    with different numbers of samples per class can be compared (or match
    the sizes with :func:`subsample_classes`). When the corrected squared
    distance of a pair is not positive (means indistinguishable from noise
    at this sample size) its value is ``inf`` with an
    :class:`NCDegenerateWarning`.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features.
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels of any sortable kind.
    variant : {"symmetric", "asymmetric"}, default="symmetric"
        Which form to average.
    bias : {"plugin", "corrected"}, default="plugin"
        ``"plugin"``: population variances and distances between the sample
        means (Galanti et al.); ``"corrected"``: unbiased variances and
        unbiased squared distances (see above).
    return_matrix : bool, default=False
        Also return the (K, K) matrix of pairwise values, rows and columns in
        the order of the sorted labels, zeros on the diagonal.
    chunk_size : int or None, default=None
        Rows processed at a time; None picks a cache-friendly size.

    Returns
    -------
    value : float
        The mean CDNV. Two classes with identical means make it ``inf``, with
        an :class:`NCDegenerateWarning`. Classes of a single sample (variance
        0 by construction) give an :class:`NCNotComparableWarning` (plug-in)
        or a ValueError (corrected).
    matrix : ndarray of shape (n_classes, n_classes)
        Only when ``return_matrix=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import cdnv
    >>> X = np.array([[0.0, 1.0], [0.0, -1.0], [4.0, 1.0], [4.0, -1.0]])
    >>> cdnv(X, [0, 0, 1, 1])
    0.0625
    >>> value, mat = cdnv(X, ["a", "a", "b", "b"], return_matrix=True)
    >>> mat
    array([[0.    , 0.0625],
           [0.0625, 0.    ]])
    >>> round(cdnv(X, [0, 0, 1, 1], bias="corrected"), 6)
    0.142857
    """
    check_option(variant, "variant", _CDNV_VARIANTS)
    check_option(bias, "bias", _CDNV_BIAS)
    prep = _Prepared(X, y, chunk_size)
    ss, _, _ = prep.run_pass2(want_var=True)
    value, mat = cdnv_values(ss, prep.counts, prep.means, variant, bias)
    return (value, mat) if return_matrix else value


@_lean_blas
def nc2(X, y, *, center="global", chunk_size=None):
    """NC2: distance of the class-mean geometry to a simplex ETF.

    ``NC2 = || G/||G||_F - (I - 11^T/K)/sqrt(K-1) ||_F`` with ``G = Mc Mc^T``
    the Gram matrix of the centred class means. See :func:`equinorm` and
    :func:`equiangularity` for the two classical components. Lower is more
    collapse.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features.
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels of any sortable kind.
    center : {"global", "class-means"}, default="global"
        Centre of the class means.
    chunk_size : int or None, default=None
        Rows processed at a time.

    Returns
    -------
    float
        The NC2 value.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import nc2
    >>> X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> round(nc2(X, [0, 1]), 12)
    0.0
    """
    _, Mc = _centred_class_means(X, y, center, chunk_size)
    return nc2_value(Mc)


@_lean_blas
def equinorm(X, y, *, center="global", chunk_size=None):
    """Equinorm: coefficient of variation of the centred class-mean norms.

    ``std_c ||mu_c - mu_G|| / mean_c ||mu_c - mu_G||`` (population std,
    ``ddof=0``). 0 when all centred class means have the same length.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features.
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels of any sortable kind.
    center : {"global", "class-means"}, default="global"
        Centre of the class means.
    chunk_size : int or None, default=None
        Rows processed at a time.

    Returns
    -------
    float
        The equinorm value.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import equinorm
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    >>> round(equinorm(X, [0, 1, 2]), 4)
    0.1716
    """
    _, Mc = _centred_class_means(X, y, center, chunk_size)
    return equinorm_value(Mc)


@_lean_blas
def equiangularity(X, y, *, center="global", kind="std", chunk_size=None):
    """Equiangularity of the centred class means.

    ``kind="std"`` is Papyan et al.'s standard deviation (``ddof=0``) of
    ``cos(mu_c - mu_G, mu_c' - mu_G)`` over pairs ``c != c'``;
    ``kind="max-angle"`` is the mean over ``c != c'`` of
    ``|cos + 1/(K-1)|``, which is 0 only for a simplex's maximal angles.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features.
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels of any sortable kind.
    center : {"global", "class-means"}, default="global"
        Centre of the class means.
    kind : {"std", "max-angle"}, default="std"
        Which form to compute.
    chunk_size : int or None, default=None
        Rows processed at a time.

    Returns
    -------
    float
        The equiangularity value.

    Raises
    ------
    ValueError
        If a centred class mean is zero (its angle is undefined).

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import equiangularity
    >>> X = np.array([[1.0, 0.0], [-0.5, 0.75 ** 0.5], [-0.5, -(0.75 ** 0.5)]])
    >>> round(equiangularity(X, [0, 1, 2], kind="max-angle"), 12)
    0.0
    """
    check_option(kind, "kind", _EQUIANGULARITY_KINDS)
    _, Mc = _centred_class_means(X, y, center, chunk_size)
    return equiangularity_value(Mc, kind)


@_lean_blas
def nc3(X, y, coef, *, center="global", variant="papyan", classes=None, chunk_size=None):
    """NC3: self-duality of classifier weights and centred class means.

    ``variant="papyan"``: ``|| W/||W||_F - Mc/||Mc||_F ||_F`` (unsquared);
    ``variant="zhu"``: ``|| W Mc^T/||W Mc^T||_F - (I - 11^T/K)/sqrt(K-1) ||_F``.
    Rows of ``W`` follow the sorted class labels. Lower is more collapse.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features.
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels of any sortable kind.
    coef : array-like or torch.Tensor of shape (n_classes, n_features)
        Linear classifier weights (e.g. a fitted ``LogisticRegression().coef_``).
        For two classes, a binary scikit-learn ``coef_`` of shape
        (1, n_features) is expanded to ``W = [-w/2, w/2]``, which predicts
        identically.
    center : {"global", "class-means"}, default="global"
        Centre of the class means.
    variant : {"papyan", "zhu"}, default="papyan"
        Which distance to compute.
    classes : array-like or None, default=None
        Labels of the rows of ``coef`` (e.g. the classifier's ``classes_``)
        when they are not exactly the sorted classes of ``y``; every class in
        ``y`` must be among them, and only those rows are used.
    chunk_size : int or None, default=None
        Rows processed at a time.

    Returns
    -------
    float
        The NC3 value.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import nc3
    >>> X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> round(nc3(X, [0, 1], coef=[[2.0, 0.0], [-2.0, 0.0]]), 12)
    0.0
    """
    check_option(variant, "variant", _NC3_VARIANTS)
    prep, Mc = _centred_class_means(X, y, center, chunk_size)
    _, _, _, W_y = check_coef(coef, None, prep.classes, prep.n_features, classes)
    return nc3_value(W_y, Mc, variant)


@_lean_blas
def nc4(X, y, coef, intercept=None, *, classes=None, chunk_size=None):
    """NC4: disagreement between a linear classifier and the nearest class mean.

    Share of samples with ``argmax_k (W x + b)_k != argmin_c ||x - mu_c||``.
    Lower is more collapse.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features.
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels, used for the class means.
    coef : array-like or torch.Tensor of shape (n_classes, n_features)
        Linear classifier weights, rows in sorted label order (or as given by
        ``classes``). A binary ``coef_`` of shape (1, n_features) is expanded
        to ``[-w/2, w/2]`` (intercept ``[-b/2, b/2]``): same predictions.
    intercept : array-like of shape (n_classes,), scalar or None, default=None
        Intercepts; None means zeros.
    classes : array-like or None, default=None
        Labels of the rows of ``coef`` when they differ from the sorted
        classes of ``y`` (rows for classes absent from ``y`` still compete in
        the argmax and count as disagreement when they win).
    chunk_size : int or None, default=None
        Rows processed at a time.

    Returns
    -------
    float
        The share of disagreeing samples, in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import nc4
    >>> X = np.array([[0.0], [1.0], [3.0], [4.0]])
    >>> nc4(X, [0, 0, 1, 1], coef=[[-1.0], [1.0]], intercept=[0.0, 0.0])
    0.25
    """
    prep = _Prepared(X, y, chunk_size)
    W, b, row_codes, _ = check_coef(coef, intercept, prep.classes, prep.n_features, classes)
    geom = prep.geometry("global")
    _, _, n_dis = prep.run_pass2(geometry=geom, linear=(W, b, row_codes))
    return n_dis / prep.n_samples


@_lean_blas
def collapse_report(
    X,
    y,
    coef=None,
    intercept=None,
    *,
    center="global",
    cdnv_variant="symmetric",
    cdnv_bias="plugin",
    nc3_variant="papyan",
    classes=None,
    chunk_size=None,
):
    """Every neural-collapse metric of a set of features in two passes.

    One pass for the class means, one chunked pass whose single matrix
    product gives NC1, the class variances (CDNV) and, with ``coef``, both
    classifiers' decisions (NC4). NC2, equinorm, equiangularity and NC3 come
    from the class means.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features. torch tensors are processed on their own device.
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels of any sortable kind.
    coef : array-like or torch.Tensor of shape (n_classes, n_features), default=None
        Linear classifier weights; enables NC3 and NC4. Binary (1, d)
        coefficients are expanded to ``[-w/2, w/2]``.
    intercept : array-like of shape (n_classes,), scalar or None, default=None
        Intercepts for NC4; None means zeros.
    center : {"global", "class-means"}, default="global"
        Centre of the class means for NC1, NC2, NC3, equinorm, equiangularity.
    cdnv_variant : {"symmetric", "asymmetric"}, default="symmetric"
        CDNV form, see :func:`cdnv`.
    cdnv_bias : {"plugin", "corrected"}, default="plugin"
        CDNV estimator, see :func:`cdnv`.
    nc3_variant : {"papyan", "zhu"}, default="papyan"
        NC3 form, see :func:`nc3`.
    classes : array-like or None, default=None
        Labels of the rows of ``coef``, see :func:`nc4`.
    chunk_size : int or None, default=None
        Rows processed at a time; None picks a cache-friendly size.

    Returns
    -------
    CollapseReport
        Dataclass with ``as_dict()``. An undefined equiangularity (a centred
        class mean at zero) is reported as NaN with an
        :class:`NCDegenerateWarning`.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sknc.metrics import collapse_report
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=1000).fit(X, y)
    >>> report = collapse_report(X, y, clf.coef_, clf.intercept_)
    >>> report.n_classes, report.n_samples
    (3, 150)
    >>> sorted(report.as_dict())[:4]
    ['cdnv', 'equiangularity', 'equinorm', 'max_angle']
    """
    check_report_options(center, cdnv_variant, nc3_variant, cdnv_bias)
    prep = _Prepared(X, y, chunk_size)
    linear = W_y = None
    if coef is not None:
        W, b, row_codes, W_y = check_coef(coef, intercept, prep.classes, prep.n_features, classes)
        linear = (W, b, row_codes)
    elif intercept is not None:
        raise ValueError("intercept was given without coef.")
    geom = prep.geometry(center)
    warn_narrow_nc1(prep.n_features, prep.n_classes)
    ss, nc1_sum, n_dis = prep.run_pass2(want_var=True, geometry=geom, linear=linear)
    return _build_report(
        geom.Mc,
        W_y,
        nc1=nc1_sum / prep.n_samples,
        cdnv=cdnv_values(ss, prep.counts, prep.means, cdnv_variant, cdnv_bias)[0],
        nc4=None if coef is None else n_dis / prep.n_samples,
        n_samples=prep.n_samples,
        n_features=prep.n_features,
        classes=prep.classes,
        center=center,
        cdnv_variant=cdnv_variant,
        cdnv_bias=cdnv_bias,
        nc3_variant=nc3_variant,
    )


def subsample_classes(X, y, n_per_class=None, *, random_state=None):
    """Keep the same number of samples of every class (matched subsampling).

    Plug-in CDNV (and, less strongly, NC1) depend on the number of samples
    per class; comparing two sets of features (e.g. source-train and
    source-test, or two data sets) is fair when both use the same number of
    samples of each class. Draw them with this function (and/or use
    ``cdnv(..., bias="corrected")``).

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features (any array indexable by rows, numpy or torch).
    y : array-like or torch.Tensor of shape (n_samples,)
        Class labels of any sortable kind.
    n_per_class : int or None, default=None
        Samples kept per class; None keeps as many as the smallest class
        has. Pass the same value for every set you compare.
    random_state : int, RandomState instance or None, default=None
        Seed of the draw (without replacement, uniform within each class).

    Returns
    -------
    X_sub : array or tensor of shape (n_classes * n_per_class, n_features)
        The kept rows of ``X``, in their original order.
    y_sub : ndarray or tensor of shape (n_classes * n_per_class,)
        Their labels.

    Raises
    ------
    ValueError
        When a class has fewer than ``n_per_class`` samples, or
        ``n_per_class`` is not a positive int.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import subsample_classes
    >>> X = np.arange(10.0).reshape(-1, 1)
    >>> y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    >>> X_sub, y_sub = subsample_classes(X, y, random_state=0)
    >>> y_sub
    array([0, 1, 2])
    >>> np.bincount(subsample_classes(X, y == 0, n_per_class=4, random_state=0)[1])
    array([4, 4])
    """
    from sklearn.utils import check_random_state

    from ..utils import is_torch_tensor, to_numpy

    n = X.shape[0] if hasattr(X, "shape") else len(X)
    y_np = np.asarray(to_numpy(y)) if is_torch_tensor(y) else np.asarray(y)
    if y_np.ndim != 1 or y_np.shape[0] != n:
        raise ValueError(
            f"y must be 1-D with one label per row of X ({n}), got shape {y_np.shape}."
        )
    classes, codes = np.unique(y_np, return_inverse=True)
    counts = np.bincount(codes.reshape(-1), minlength=len(classes))
    if n_per_class is None:
        n_per_class = int(counts.min())
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)):
        raise ValueError(f"n_per_class must be a positive int or None, got {n_per_class!r}.")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive int or None, got {n_per_class!r}.")
    short = classes[counts < n_per_class]
    if len(short):
        raise ValueError(
            f"{len(short)} class(es) have fewer than n_per_class={n_per_class} samples "
            f"(e.g. {short[0]!r} with {int(counts[counts < n_per_class][0])}); "
            "lower n_per_class or drop those classes."
        )
    rng = check_random_state(random_state)
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(codes == k), n_per_class, replace=False)
            for k in range(len(classes))
        ]
    )
    keep.sort()
    if is_torch_tensor(X):
        import torch

        idx = torch.as_tensor(keep, device=X.device)
        X_sub = X.index_select(0, idx)
    else:
        X_sub = X[keep] if isinstance(X, np.ndarray) else np.asarray(X)[keep]
    if is_torch_tensor(y):
        import torch

        y_sub = y.index_select(0, torch.as_tensor(keep, device=y.device))
    else:
        y_sub = y_np[keep]
    return X_sub, y_sub

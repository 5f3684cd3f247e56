"""Neural-collapse formulas on small per-class summaries (CPU, float64).

Everything here works on arrays whose size does not depend on the number of
samples: class counts (K,), class means (K, d), per-class within-class sums
of squares (K,), and either the full within-class scatter (d, d) or its
projection on the between-class subspace.
"""

import numpy as np

from ..utils import map_threads, single_thread, thread_budget
from ..utils._warnings import SkncWarning, warn_external


def run_chunk_groups(ops, chunks, work, n_workers=None, runs_per_worker=8):
    """Run ``work(list_of_chunks)`` over ``chunks``; list of partial results.

    numpy input is cut into ``runs_per_worker`` runs of consecutive chunks per worker
    thread (``n_workers``, default ``thread_budget(idle=True)``: no more
    workers than idle cores, see :mod:`sknc.utils._threads`), handed
    out by :func:`sknc.utils.map_threads` to single-threaded workers (torch
    and BLAS on one thread each), so the element-wise work is parallel too,
    no thread waits on another between chunks and a thread slowed down by a
    busy machine just takes fewer runs: every run is submitted at once (the
    partial results are small), so a worker never idles while the caller
    waits for a slower worker's earlier run. The partial results come back in
    chunk order, so their sum does not depend on the scheduling. torch input
    (a GPU, or half precision) runs in one sequence (torch parallelises each
    operation itself).
    """
    if n_workers is None:
        n_workers = thread_budget(idle=True)
    if ops.is_torch:
        return [work(chunks)]
    n_workers = min(n_workers, len(chunks))
    if n_workers <= 1:
        # one worker: the calling thread, single-threaded like any worker
        # (the budget may be 1 because the other cores are busy, where BLAS
        # threads would only stall)
        with single_thread():
            return [work(chunks)]
    n_runs = min(len(chunks), runs_per_worker * n_workers)
    bounds = np.linspace(0, len(chunks), n_runs + 1).round().astype(int)
    runs = [chunks[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return list(map_threads(work, runs, n_jobs=n_workers, prefetch=len(runs)))


def sample_rows(X, ops, max_rows=1024):
    """Up to ``max_rows`` rows spread evenly over all of ``X``, as float64 numpy.

    Used to pick the reference point and a first scale estimate: rows from
    the whole array (not its first rows only), so that the choice does not
    depend on how the rows are ordered.
    """
    n = X.shape[0]
    if n <= max_rows:
        rows = X
    else:
        idx = np.linspace(0, n - 1, max_rows).round().astype(np.int64)
        rows = X[ops.from_numpy(idx)] if ops.is_torch else X[idx]
    return np.asarray(ops.to_numpy(ops.astype(rows, ops.f64())), dtype=np.float64)


def offset_reference(sample, np_dtype):
    """Reference point subtracted (in float64) before the class sums.

    The mean of ``sample`` (rows spread over the whole data, see
    :func:`sample_rows`), rounded to X's dtype so that ``x - ref`` is exact
    in float64 for every row ``x``. The class sums are accumulated in float64
    relative to it: a large common offset then costs no digits, whatever the
    order of the rows. Non-finite entries (NaN/inf in the sample) become 0;
    the pass over the data reports them.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        ref = sample.mean(0)
    ref = np.where(np.isfinite(ref), ref, 0.0)
    with np.errstate(over="ignore"):
        ref = ref.astype(np_dtype)
    ref = np.where(np.isfinite(ref), ref, 0.0)
    return ref.astype(np.float64)


# |exponent| of the data magnitude beyond which the computations rescale
# by a power of two (exactly): squares and products of the rescaled values
# then stay far from overflow and underflow in the compute dtype (float32:
# 2**+-40 ~ 1e+-12, squares 1e+-24 with room for sums over rows and
# columns; float64: 2**+-400).
_SAFE_EXPONENT = {np.dtype(np.float32): 40, np.dtype(np.float64): 400}


def scale_exponent(magnitude, np_dtype, force=False):
    """Exponent ``e`` such that the data are computed as ``x * 2**-e``.

    ``magnitude`` is the size of the (offset-free) data. 0 when it lies
    within the safe range of ``np_dtype`` (no rescaling, no extra work);
    otherwise the binary exponent of ``magnitude`` (so the rescaled data
    are of order 1). Multiplying by a power of two is exact, and NC1, CDNV,
    NC2, NC3 and NC4 do not depend on the scale of the features.
    """
    magnitude = float(magnitude)
    if not np.isfinite(magnitude) or magnitude <= 0.0:
        return 0
    e = int(np.frexp(magnitude)[1])
    if force or abs(e) > _SAFE_EXPONENT[np.dtype(np_dtype)]:
        return e
    return 0


def ldexp(a, e):
    """``a * 2**e`` for a float64 numpy array or scalar (exact; ``e`` may be 0)."""
    return a if e == 0 else np.ldexp(a, e)


class NCDegenerateWarning(SkncWarning, RuntimeWarning):
    """Warning raised when a metric is infinite because class means coincide."""


class NCNotComparableWarning(SkncWarning):
    """Warning raised when a metric value is not comparable with other values.

    Examples: NC1 of features no wider than ``n_classes - 1`` (the class
    means then span every feature direction, so NC1 also divides within-class
    variance that wider features would leave out), or CDNV with classes of a
    single sample (their variance is 0 by construction).
    """


def centered_means(means, counts, center):
    """Class means minus the chosen centre, rows in sorted-label order.

    ``center="global"`` subtracts the mean of all samples (count-weighted mean
    of the class means); ``center="class-means"`` subtracts the plain mean of
    the class means (Papyan's balanced convention). Raises ValueError when
    all class means coincide.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if center == "global":
        mu_g = counts @ means / counts.sum()
    else:
        mu_g = means.mean(axis=0)
    Mc = means - mu_g
    # zero up to the float64 rounding of the means themselves
    if np.abs(Mc).max() <= 8 * np.finfo(np.float64).eps * np.abs(means).max():
        raise ValueError(
            "All class means coincide: the between-class scatter is zero and "
            "neural-collapse metrics are undefined."
        )
    return Mc


class BetweenGeometry:
    """Thin SVD of the centred class means ``Mc = U S V^T``.

    ``U``, ``s``, ``Vt`` keep the numerically non-zero singular values
    (``s > max(K, d) * eps * s_max``): they span the class-mean differences.
    NC1 uses the first ``rank`` of them, those whose square exceeds
    ``n_features * eps * s_max**2``, the cut-off ``scipy.linalg.pinv`` applies
    to the eigenvalues of the (d, d) between-class covariance:
    ``Sigma_B^+ = K V_r S_r^-2 V_r^T``.
    """

    def __init__(self, Mc):
        self.Mc = Mc
        with single_thread():
            # small matrix: one thread is faster, and immune to busy CPUs
            U, s, Vt = np.linalg.svd(Mc, full_matrices=False)
        eps = np.finfo(np.float64).eps
        span = int(np.count_nonzero(s > max(Mc.shape) * eps * s[0]))
        self.U = U[:, :span]
        self.s = s[:span]
        self.Vt = Vt[:span]
        self.rank = int(np.count_nonzero(s**2 > Mc.shape[1] * eps * s[0] ** 2))


def nc1_from_projected(proj_diag, geometry, n_samples):
    """NC1 from ``diag(V^T S_W V)`` (within-class scatter on the kept directions)."""
    return float(np.sum(proj_diag / geometry.s[: geometry.rank] ** 2) / n_samples)


def nc1_from_scatter(scatter, geometry, n_samples):
    """NC1 = tr(Sigma_W Sigma_B^+)/K from the full (d, d) within-class scatter."""
    Vt = geometry.Vt[: geometry.rank]
    proj_diag = np.einsum("ij,ij->i", Vt @ scatter, Vt)
    return nc1_from_projected(proj_diag, geometry, n_samples)


def pairwise_sq_dists(M):
    """Squared Euclidean distances between the rows of ``M`` (K, d), accurate.

    The Gram expansion is used and pairs whose distance is small compared
    to their norms (where it would lose digits) are recomputed directly.
    """
    sq = np.einsum("ij,ij->i", M, M)
    D = sq[:, None] + sq[None, :] - 2.0 * (M @ M.T)
    np.maximum(D, 0.0, out=D)
    bad = np.argwhere(np.triu(D < 1e-3 * (sq[:, None] + sq[None, :]), k=1))
    for start in range(0, len(bad), 4096):
        i, j = bad[start : start + 4096].T
        diff = M[i] - M[j]
        v = np.einsum("ij,ij->i", diff, diff)
        D[i, j] = v
        D[j, i] = v
    np.fill_diagonal(D, 0.0)
    return D


_CDNV_BIAS = ("plugin", "corrected")


def class_variances(ss, counts, bias):
    """Per-class variances ``Var_c`` from sums of squares ``ss`` and counts.

    ``bias="plugin"``: ``ss_c / n_c`` (population variance, the paper's);
    ``bias="corrected"``: ``ss_c / (n_c - 1)``, unbiased for the trace of the
    class covariance (needs two samples per class).
    """
    counts = np.asarray(counts, dtype=np.float64)
    # a single sample is its own mean: variance exactly 0 (not the rounding
    # residue of the mean)
    ss = np.where(counts == 1, 0.0, ss)
    if bias == "corrected":
        if np.any(counts < 2):
            raise ValueError(
                f"{int(np.sum(counts < 2))} class(es) have a single sample; the "
                "bias-corrected CDNV needs at least 2 samples per class (an "
                "unbiased variance is undefined with one)."
            )
        return ss / (counts - 1.0)
    return ss / counts


def cdnv_values(ss, counts, means, variant, bias="plugin"):
    """CDNV mean and (K, K) matrix from class sums of squares, counts and means.

    ``variant="symmetric"``: ``(Var_i + Var_j) / (2 ||mu_i - mu_j||^2)``,
    averaged over unordered pairs; ``variant="asymmetric"``:
    ``Var_i / ||mu_i - mu_j||^2`` averaged over ordered pairs ``i != j``.
    ``bias="corrected"`` uses unbiased variances ``ss_c / (n_c - 1)`` and the
    unbiased squared distances ``||m_i - m_j||^2 - Var_i/n_i - Var_j/n_j``
    (see :func:`sknc.metrics.cdnv`). The diagonal of the matrix is 0. A pair
    of coinciding class means (or, corrected, a non-positive squared
    distance) gives ``inf`` with an :class:`NCDegenerateWarning`;
    "coinciding" means equal up to float64 rounding of ``means``, which
    should be absolute (not shifted) class means. Classes of a single sample
    (variance 0 by construction) give an :class:`NCNotComparableWarning`.
    """
    counts = np.asarray(counts, dtype=np.float64)
    variances = class_variances(ss, counts, bias)
    if bias == "plugin" and np.any(counts < 2):
        warn_external(
            f"{int(np.sum(counts < 2))} class(es) have a single sample: their "
            "within-class variance is 0 by construction, so this CDNV is not "
            "comparable with CDNV from more samples per class (use more samples, "
            "or drop those classes).",
            NCNotComparableWarning,
        )
    # centre first: distances are translation invariant and this keeps the
    # Gram expansion well scaled
    M = means - means.mean(axis=0)
    D = pairwise_sq_dists(M)
    # distances at the level of float64 rounding of the means are zero
    scale = np.linalg.norm(means, axis=1).max()
    D[D <= (8 * np.finfo(np.float64).eps * scale) ** 2] = 0.0
    K = len(variances)
    off = ~np.eye(K, dtype=bool)
    zero = off & (D == 0)
    n_identical = int(np.triu(zero).sum())
    if bias == "corrected":
        se = variances / counts
        D = D - se[:, None] - se[None, :]
        zero = off & (D <= 0)
    if variant == "symmetric":
        num = (variances[:, None] + variances[None, :]) / 2.0
    else:
        num = np.broadcast_to(variances[:, None], (K, K)).copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        mat = np.where(off, num / np.where(zero, 1.0, D), 0.0)
    if zero.any():
        i, j = np.argwhere(zero)[0]
        n_zero = int(np.triu(zero).sum())
        if n_identical:
            msg = (
                f"{n_identical} pair(s) of classes have identical means (e.g. "
                f"classes at positions {i} and {j}); their CDNV is infinite."
            )
        else:
            msg = (
                f"{n_zero} pair(s) of classes (e.g. at positions {i} and {j}) have "
                "a non-positive bias-corrected squared distance between their means: "
                "with these sample sizes their means are not distinguishable from "
                "noise; their CDNV is infinite."
            )
        warn_external(msg, NCDegenerateWarning)
        mat[zero] = np.inf
    value = float(mat[off].mean())
    return value, mat


def warn_narrow_nc1(n_features, n_classes):
    """Warn that NC1 of features no wider than ``K - 1`` is not comparable."""
    if n_features <= n_classes - 1:
        warn_external(
            f"NC1 of {n_features} features with {n_classes} classes is not "
            f"comparable with NC1 of wider features: with n_features <= n_classes - 1 "
            "the class means span every feature direction, so NC1 divides all "
            "within-class variance (not only the part along the class-mean "
            "differences) by the between-class spread, and it grows without "
            f"bound as n_features approaches n_classes - 1 = {n_classes - 1}. "
            "Compare NC1 only between features wider than n_classes - 1.",
            NCNotComparableWarning,
        )


def etf_distance(G):
    """``|| G/||G||_F - (I - 11^T/K)/sqrt(K-1) ||_F`` for a (K, K) matrix."""
    K = G.shape[0]
    norm = np.linalg.norm(G)
    if norm == 0:
        raise ValueError("The matrix compared to the simplex ETF is zero.")
    etf = (np.eye(K) - np.full((K, K), 1.0 / K)) / np.sqrt(K - 1)
    return float(np.linalg.norm(G / norm - etf))


def nc2_value(Mc):
    """NC2: distance of the centred class-mean Gram to a simplex ETF."""
    return etf_distance(Mc @ Mc.T)


def equinorm_value(Mc):
    """Equinorm: std/mean of the norms of the centred class means (ddof=0)."""
    norms = np.linalg.norm(Mc, axis=1)
    return float(norms.std() / norms.mean())


def equiangularity_value(Mc, kind):
    """Equiangularity of the centred class means.

    ``kind="std"``: Papyan's standard deviation (ddof=0) of the cosines over
    pairs ``c != c'``; ``kind="max-angle"``: mean over ``c != c'`` of
    ``|cos + 1/(K-1)|``.
    """
    K = Mc.shape[0]
    norms = np.linalg.norm(Mc, axis=1)
    if np.any(norms == 0):
        raise ValueError(
            "A class mean coincides with the centre, so its angle to the other "
            "class means is undefined; equiangularity cannot be computed."
        )
    U = Mc / norms[:, None]
    cos = U @ U.T
    off = cos[~np.eye(K, dtype=bool)]
    if kind == "std":
        return float(off.std())
    return float(np.mean(np.abs(off + 1.0 / (K - 1))))


def nc3_value(W, Mc, variant):
    """NC3 self-duality distance between classifier weights and centred means.

    ``variant="papyan"``: ``|| W/||W||_F - Mc/||Mc||_F ||_F``;
    ``variant="zhu"``: ``|| W Mc^T/||W Mc^T||_F - ETF ||_F``.
    """
    if variant == "zhu":
        G = W @ Mc.T
        if not np.any(G):
            raise ValueError(
                "coef is orthogonal to every centred class mean (W Mc^T = 0); "
                "NC3 (Zhu et al.) is undefined."
            )
        return etf_distance(G)
    nw = np.linalg.norm(W)
    if nw == 0:
        raise ValueError("coef is all zeros; NC3 is undefined.")
    return float(np.linalg.norm(W / nw - Mc / np.linalg.norm(Mc)))

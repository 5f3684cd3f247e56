"""Transferability scores of the field, beside the neural-collapse metrics.

Every score is a plain function on frozen features ``X`` (n_samples,
n_features) of a candidate model on the downstream training data and the
downstream labels ``y`` (any sortable labels; mapped to ``0..C-1`` in sorted
order). numpy arrays and torch tensors (any device) are accepted; the input
is never modified; the computation runs in float64 on the CPU, so float32
features give the float64 answer of the same values, whatever their common
offset. Every score here is "higher is better" (PACTran's loss is negated).

The two scores that need the *source* classifier, :func:`leep` and
:func:`nce`, take the source-class probabilities instead of features.

NCTI and ETran combine per-model parts by min-max normalisation *across the
pool of candidates*: :func:`ncti_parts` / :func:`etran_parts` compute the
parts of one model and :func:`ncti_combine` / :func:`etran_combine` (or
:func:`minmax_combine`) the final scores of a pool.
"""

import functools
import numbers

import numpy as np
from scipy import linalg, sparse
from scipy.linalg import blas, lapack
from scipy.special import logsumexp, softmax

from ..utils import to_numpy
from ._backend import get_ops
from ._validation import check_features, check_option, encode_labels

_ROWS = 4096  # rows per block when forming within-class scatter (bounded extra memory)
_GRAM_BYTES = 1 << 24  # float64 bytes of X converted at a time by _gram (16 MiB)


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------


def _features(X, name="X"):
    """``X`` as a numpy array of its own dtype (no copy for CPU arrays and tensors)."""
    X, _ = check_features(X, name=name)
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    return np.asarray(X)


def _raise_not_finite(name="X"):
    raise ValueError(
        f"{name} contains NaN or infinity; transferability scores need finite features."
    )


def _features64(X, name="X"):
    """``X`` as a float64 numpy array (a copy when it was not float64 numpy)."""
    X = _features(X, name=name)
    X64 = X.astype(np.float64, copy=X.dtype != np.float64)
    if not np.isfinite(X64).all():
        _raise_not_finite(name)
    return X64


def _prepare(X, y, *, min_classes=2, score="this score"):
    """float64 features, sorted classes, integer codes and class counts."""
    X64 = _features64(X)
    n = X64.shape[0]
    classes, codes = encode_labels(y, n, get_ops(X64), min_classes=min_classes)
    codes = np.asarray(codes, dtype=np.intp)
    counts = np.bincount(codes, minlength=len(classes))
    return X64, classes, codes, counts


def _onehot(codes, n_classes):
    """Sparse (C, N) indicator matrix of the classes."""
    n = codes.shape[0]
    return sparse.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_classes, n))


def _class_sums(X, codes, n_classes):
    return np.asarray(_onehot(codes, n_classes) @ X)


def _gram(X, center=None, cross=None, lower_only=False):
    """``(X - center).T @ (X - center)`` in float64, built block by block.

    Each block of rows is converted to float64 into one reused, cache-sized
    buffer (no float64 copy of ``X``; C-ordered float64 blocks are used in
    place when not centred) and added with one BLAS ``dsyrk``
    (``beta=1``, in place). With ``cross(start, stop, B)``, also returns the
    sum over the blocks of its values (e.g. the class sums
    ``Y[start:stop].T @ B``), from the same pass. With ``lower_only`` only
    the lower triangle of the result is filled (enough for LAPACK's ``lower``
    symmetric routines).
    """
    n, d = X.shape
    rows = max(1, min(n, _GRAM_BYTES // (8 * d)))
    G = np.zeros((d, d), order="F")
    buf = None
    R = None
    for a in range(0, n, rows):
        B = X[a : a + rows]
        if center is not None or B.dtype != np.float64 or not B.flags.c_contiguous:
            if buf is None:
                buf = np.empty((rows, d))
            block, B = B, buf[: B.shape[0]]
            B[...] = block
            if center is not None:
                B -= center
        # B.T is Fortran-ordered (d, rows): dsyrk adds the lower triangle of B.T @ B
        G = blas.dsyrk(1.0, B.T, beta=1.0, c=G, lower=1, overwrite_c=1)
        if cross is not None:
            part = cross(a, a + B.shape[0], B)
            R = part if R is None else R + part
    if not lower_only:
        G = np.tril(G)
        G += np.tril(G, -1).T
    return G if cross is None else (G, R)


def _within_gram(X, means, codes):
    """Within-class scatter ``sum_i (x_i - mu_{y_i})(x_i - mu_{y_i})^T``."""
    d = X.shape[1]
    G = np.zeros((d, d))
    for a in range(0, X.shape[0], _ROWS):
        B = X[a : a + _ROWS] - means[codes[a : a + _ROWS]]
        G += B.T @ B
    return G


def _check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _check_positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)


def _pca_exact(Xc, n_components):
    """Exact PCA scores of centred ``Xc`` (N, D) on ``n_components`` axes.

    Signs follow scikit-learn's convention (largest absolute loading of each
    component positive), so the result equals ``PCA(svd_solver="full")``.
    Returns ``(scores, explained_variance)`` of all retained components.
    """
    n, d = Xc.shape
    if d <= n:
        evals, V = np.linalg.eigh(_gram(Xc))
        evals, V = evals[::-1], V[:, ::-1]
    else:
        K = Xc @ Xc.T
        evals, U = np.linalg.eigh(K)
        evals, U = evals[::-1], U[:, ::-1]
        keep = evals > evals[0] * max(n, d) * np.finfo(np.float64).eps
        V = np.zeros((d, evals.size))
        V[:, keep] = (Xc.T @ U[:, keep]) / np.sqrt(evals[keep])
    evals = np.clip(evals, 0.0, None)
    V = V[:, :n_components]
    idx = np.argmax(np.abs(V), axis=0)
    V = V * np.sign(V[idx, np.arange(V.shape[1])])
    return Xc @ V, evals / max(n - 1, 1)


def _n_components_for_variance(explained, ratio):
    total = explained.sum()
    if total <= 0:
        raise ValueError("X has zero variance (all samples equal); the score is undefined.")
    cum = np.cumsum(explained) / total
    return int(np.searchsorted(cum, ratio, side="right") + 1)


# ---------------------------------------------------------------------------
# LogME
# ---------------------------------------------------------------------------


def _tridiagonalize(G, R, overwrite=False):
    """``G = Q T Q^T`` (``dsytrd``, lower): ``T``'s diagonal and off-diagonal, and ``Q^T R``.

    ``Q^T R`` (Fortran-ordered) comes from the Householder reflectors
    (``dormqr``, ``O(D^2 m)``); ``Q`` is never formed. Only the lower
    triangle of ``G`` is read; ``overwrite`` lets it be destroyed. D >= 3.
    """
    d, m = R.shape
    lwork = int(lapack.dsytrd_lwork(d, lower=1)[0])
    A, diag, off, tau, info = lapack.dsytrd(G, lower=1, lwork=lwork, overwrite_a=overwrite)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsytrd failed (info={info}).")
    QtR = np.array(R, dtype=np.float64, order="F")
    # lower storage: Q = H(1)...H(d-1), the reflectors are those of a QR of A[1:, :-1]
    reflectors = np.asfortranarray(A[1:, :-1])
    _, work, info = lapack.dormqr("L", "T", reflectors, tau, QtR[1:], lwork=-1)
    cq, _, info = lapack.dormqr(
        "L", "T", reflectors, tau, QtR[1:], lwork=max(int(work[0]), m), overwrite_c=1
    )
    if info != 0:
        raise np.linalg.LinAlgError(f"dormqr failed (info={info}).")
    QtR[1:] = cq
    return diag, off, QtR


def _tridiagonal_project(diag, off, QtR):
    """Eigenvalues ``w`` (ascending) of the tridiagonal ``T`` and ``Z^T QtR``."""
    w, Z, info = lapack.dstevd(diag, off)
    if info != 0:
        raise np.linalg.LinAlgError(f"the tridiagonal eigensolver failed (info={info}).")
    return w, Z.T @ QtR


def _eigh_project(G, R, overwrite=False):
    """Eigenvalues ``w`` (ascending) of symmetric ``G`` and ``V.T @ R``.

    Equal to ``linalg.eigh(G, driver="evd")`` followed by ``V.T @ R``, without
    forming the eigenvectors ``V = Q Z``: ``G = Q T Q^T`` (``dsytrd``), ``Q^T R``
    from the Householder reflectors (``dormqr``, ``O(D^2 m)``), then the
    eigendecomposition ``T = Z diag(w) Z^T`` (``dstevd``, the divide and
    conquer solver that ``dsyevd`` runs on the same ``T``) and ``Z^T Q^T R``.
    This skips the ``O(D^3)`` back-transformation of the eigenvectors.
    Only the lower triangle of ``G`` is read; ``overwrite`` lets it be destroyed.
    """
    d, m = R.shape
    if d < 3 or m == 0:
        w, V = linalg.eigh(G, driver="evd", check_finite=False)
        return w, V.T @ R
    return _tridiagonal_project(*_tridiagonalize(G, R, overwrite))


def _checked_gram(X, cross):
    """Lower triangle of the float64 Gram and the cross sums; non-finite values raise."""
    G, R = _gram(X, cross=cross, lower_only=True)
    if not (np.isfinite(np.diagonal(G)).all() and np.isfinite(R).all()):
        if not np.isfinite(X).all():
            _raise_not_finite()
        raise ValueError("X is too large: its Gram matrix overflows float64.")
    return G, R


def _kept(sig, n, d):
    """Mask of the eigenvalues of ``X.T @ X`` (or ``X @ X.T``) taken as non-zero."""
    top = sig.max()
    return sig > top * max(n, d) * np.finfo(np.float64).eps if top > 0 else sig > np.inf


def _spectrum(X, cross):
    """Non-zero eigenvalues ``sigma`` of ``X.T @ X`` and ``U.T @ M``.

    ``U`` holds the left singular vectors of the non-zero singular values and
    ``M`` (n_samples, m) the targets, given through ``cross(start, stop, B)``
    = ``M[start:stop].T @ B`` (one-hot class indicators need not be formed).
    For N >= D this uses the (D, D) Gram, built from float64 blocks of ``X``
    in one pass that also gives ``X.T @ M``; otherwise the (N, N) one. ``X``
    may be of any float dtype; non-finite values raise. Returns
    ``(sigma, P)`` with ``P`` of shape (k, m).
    """
    n, d = X.shape
    if n >= d:
        G, R = _checked_gram(X, cross)
        sig, P = _eigh_project(G, R.T, overwrite=True)
        keep = _kept(sig, n, d)
        sig = sig[keep]
        return sig, P[keep] / np.sqrt(sig)[:, None]
    X64 = _features64(X)
    sig, U = linalg.eigh(X64 @ X64.T, driver="evd", check_finite=False)
    keep = _kept(sig, n, d)
    return sig[keep], cross(0, n, U[:, keep]).T


def _spectral_forms(sig, x2, res_x2, t, a):
    """``(m2, res2)`` of the columns ``a`` at ``t = alpha / beta`` from the eigenbasis."""
    m2 = (sig * x2[:, a] / (t + sig) ** 2).sum(0)
    res2 = (x2[:, a] / (1.0 + sig / t) ** 2).sum(0) + res_x2[a]
    return m2, res2


def _tridiagonal_forms(diag, off, b, y2, t, a):
    """``(m2, res2)`` of the columns ``a`` from solves with the tridiagonal ``T + t I``.

    With ``x = (T + t I)^{-1} b`` (``b = Q^T X^T y``, ``G = Q T Q^T``, an
    ``O(D)`` positive definite solve, ``dptsv``): ``m2 = ||x||^2`` and
    ``res2 = ||y - X Q x||^2 = ||y||^2 - b^T x - t ||x||^2``, the same sums
    as over the eigenvalues, ``sum c_i^2 / (t + s_i)^2`` and
    ``||y||^2 - sum c_i^2 (s_i + 2 t) / (t + s_i)^2`` with ``c = Z^T b``.
    """
    m2, bx = np.empty(a.size), np.empty(a.size)
    for i, (j, tj) in enumerate(zip(a, t)):
        bj = b[:, j : j + 1]
        x, info = lapack.dptsv(diag + tj, off, bj)[2:]
        if info != 0:
            raise np.linalg.LinAlgError(f"the tridiagonal solve failed (info={info}).")
        m2[i] = (x * x).sum()
        bx[i] = (bj * x).sum()
    return m2, np.maximum(y2[a] - bx - t * m2, 0.0)


def _fixed_point_forms(X, cross, y2):
    """Eigenvalues ``sigma`` of ``X.T @ X`` and ``forms(t, a) -> (m2, res2)``.

    For N >= D with every eigenvalue kept (full numerical rank), the fixed
    point needs only the eigenvalues (``dsterf``, no eigenvectors) and
    tridiagonal solves per column and iteration (:func:`_tridiagonal_forms`).
    Otherwise (N < D, rank-deficient, D < 3) it uses the projections on the
    kept singular vectors (:func:`_spectrum`), as the reference does.
    """
    n, d = X.shape
    if n >= d >= 3 and y2.size:
        G, R = _checked_gram(X, cross)
        diag, off, b = _tridiagonalize(G, R.T, overwrite=True)
        sig, info = lapack.dsterf(diag, off)
        if info == 0 and _kept(sig, n, d).all():
            return sig, functools.partial(_tridiagonal_forms, diag, off, b, y2)
        sig, P = _tridiagonal_project(diag, off, b)
        keep = _kept(sig, n, d)
        sig = sig[keep]
        P = P[keep] / np.sqrt(sig)[:, None]
    else:
        sig, P = _spectrum(X, cross)
    x2 = P**2
    res_x2 = np.maximum(y2 - x2.sum(0), 0.0)
    return sig, functools.partial(_spectral_forms, sig[:, None], x2, res_x2)


def _logme_fixed_point(sig, forms, m, n, d, tol, max_iter):
    """Evidence per target column, all ``m`` columns at once.

    ``forms(t, a)`` gives ``m2`` and ``res2`` of the columns ``a`` at
    ``t = alpha / beta`` (:func:`_fixed_point_forms`). Each column stops at
    its own iteration, exactly as the per-column loop of the reference.
    """
    k = sig.size
    sig = sig[:, None]
    alpha, beta = np.ones(m), np.ones(m)
    m2, res2 = np.zeros(m), np.zeros(m)
    active = np.ones(m, dtype=bool)
    for _ in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        t = alpha[a] / beta[a]
        gamma = (sig / (sig + t)).sum(0)
        m2[a], res2[a] = forms(t, a)
        alpha[a] = gamma / (m2[a] + 1e-5)
        beta[a] = (n - gamma) / (res2[a] + 1e-5)
        active[a[np.abs(alpha[a] / beta[a] - t) / t <= tol]] = False
    log_det = np.log(alpha + beta * sig).sum(0) + (d - k) * np.log(alpha)
    ev = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * log_det
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * np.log(2 * np.pi)
    )
    return ev / n


def _logme_icml(sig, proj, y2, n, d, tol, max_iter):
    """MacKay iteration per target column, all columns at once (see above)."""
    # proj = U.T y scaled back to V.T X.T y = sqrt(sig) * proj
    k, m = proj.shape
    tmp = np.sqrt(sig)[:, None] * proj
    sig = sig[:, None]
    alpha, beta = np.ones(m), np.ones(m)
    lam = alpha / beta
    alpha_de, beta_de = np.zeros(m), np.zeros(m)
    active = np.ones(m, dtype=bool)
    for _ in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        gamma = (sig / (sig + lam[a])).sum(0)
        mv = tmp[:, a] * beta[a] / (alpha[a] + beta[a] * sig)
        alpha_de[a] = (mv * mv).sum(0)
        alpha[a] = gamma / (alpha_de[a] + 1e-5)
        beta_de[a] = np.maximum(y2[a] - 2.0 * (mv * tmp[:, a]).sum(0) + (sig * mv * mv).sum(0), 0.0)
        beta[a] = (n - gamma) / (beta_de[a] + 1e-5)
        new_lam = alpha[a] / beta[a]
        done = np.abs(new_lam - lam[a]) / lam[a] < tol
        lam[a[~done]] = new_lam[~done]
        active[a[done]] = False
    log_det = np.log(alpha + beta * sig).sum(0) + (d - k) * np.log(alpha)
    ev = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * log_det
        - beta / 2.0 * (beta_de + 1e-5)
        - alpha / 2.0 * (alpha_de + 1e-5)
        - n / 2.0 * np.log(2 * np.pi)
    )
    return ev / n


def logme(X, y, *, regression=False, method="fixed-point", tol=None, max_iter=11):
    r"""LogME: log marginal evidence of a Bayesian linear model on the features.

    For each target column ``t`` (one-hot class indicator, or regression
    target) LogME maximises over the prior precision ``alpha`` and noise
    precision ``beta`` the evidence of ``t = X w + noise``,
    ``w ~ N(0, alpha^-1 I)``:

    .. math::

        \frac1N\Big[\tfrac D2\log\alpha + \tfrac N2\log\beta
        - \tfrac12\log|\alpha I_D + \beta X^T X| - \tfrac\beta2\|t - Xm\|^2
        - \tfrac\alpha2\|m\|^2 - \tfrac N2\log 2\pi\Big]

    and averages it over the columns. **Higher is better.** Features are used
    as given (not centred).

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
        Features.
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Class labels (``regression=False``) or real targets.
    regression : bool, default=False
        Treat ``y`` as real-valued regression targets (one evidence per column).
    method : {"fixed-point", "icml"}, default="fixed-point"
        The fixed-point solver of You et al., JMLR 2022 (default) or the
        MacKay iteration of the ICML 2021 paper.
    tol : float or None, default=None
        Relative change of ``alpha / beta`` that stops the iteration; None
        means the references' values (1e-3 fixed-point, 1e-2 ICML).
    max_iter : int, default=11
        Maximum number of iterations (the references use 11).

    Returns
    -------
    float
        Mean log evidence per sample.

    Notes
    -----
    Cost: one Gram matrix (``min(N, D)`` squared, ``O(N D min(N, D))``), one
    symmetric eigendecomposition, then ``O(min(N, D) C)`` per iteration.
    For ``N >= D`` the float64 Gram and the class sums are built in one pass
    over float64 blocks of ``X`` (no float64 copy of float32 features), and
    the eigenvectors are never formed: ``X^T X = Q T Q^T`` (tridiagonal
    ``T``, reflectors applied to the ``D x C`` sums). When ``X^T X`` has full
    numerical rank the fixed point needs only the eigenvalues of ``T`` and,
    per column and iteration, one ``O(D)`` solve with ``T + (alpha/beta) I``;
    otherwise (and for ``method="icml"``) the sums are projected on the
    eigenvectors of ``T``.
    The log-determinant sums ``log(alpha + beta sigma_i)`` over **all** ``D``
    eigenvalues of ``X^T X``, the zero ones included. The fixed-point
    reference code sums only the ``k <= min(N, D)`` non-zero ones while
    keeping ``D/2 log alpha``, so for ``N < D`` (or rank-deficient features)
    it is off by ``-(D - k)/2 log(alpha) / N``; sknc gives the correct value,
    which agrees with the ICML iteration. Both equal the reference otherwise.

    References
    ----------
    You, Liu, Wang, Long. LogME: Practical Assessment of Pre-trained Models
    for Transfer Learning. ICML 2021. You et al., Ranking and Tuning
    Pre-trained Models: A New Paradigm for Exploiting Model Hubs. JMLR 2022.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import logme
    >>> X, y = load_iris(return_X_y=True)
    >>> round(logme(X, y), 4)
    -0.1601
    """
    check_option(method, "method", ("fixed-point", "icml"))
    max_iter = _check_positive_int(max_iter, "max_iter")
    if tol is None:
        tol = 1e-3 if method == "fixed-point" else 1e-2
    tol = _check_positive_float(tol, "tol")
    Xn = _features(X)
    n, d = Xn.shape
    if regression:
        T = np.asarray(to_numpy(y), dtype=np.float64)
        if T.ndim == 1:
            T = T[:, None]
        if T.ndim != 2 or T.shape[0] != n:
            raise ValueError(
                f"y must have shape (n_samples,) or (n_samples, n_targets) with "
                f"n_samples={n}, got {T.shape}."
            )
        if not np.isfinite(T).all():
            raise ValueError("y contains NaN or infinity; regression targets must be finite.")
        y2 = (T**2).sum(0)

        def cross(a, b, B):
            return T[a:b].T @ B

    else:
        classes, codes = encode_labels(y, n, get_ops(Xn), min_classes=2)
        codes = np.asarray(codes, dtype=np.intp)
        y2 = np.bincount(codes, minlength=len(classes)).astype(np.float64)

        def cross(a, b, B):
            return np.asarray(_onehot(codes[a:b], len(classes)) @ B)

    if method == "fixed-point":
        sig, forms = _fixed_point_forms(Xn, cross, y2)
        evidences = _logme_fixed_point(sig, forms, y2.size, n, d, tol, max_iter)
    else:
        sig, P = _spectrum(Xn, cross)
        evidences = _logme_icml(sig, P, y2, n, d, tol, max_iter)
    return float(np.mean(evidences))


# ---------------------------------------------------------------------------
# H-score
# ---------------------------------------------------------------------------


def _pinv_psd(S, rcond=1e-15):
    evals, V = np.linalg.eigh(S)
    cut = max(evals.max(), 0.0) * rcond
    inv = np.where(evals > cut, 1.0 / np.where(evals > cut, evals, 1.0), 0.0)
    return (V * inv) @ V.T


def hscore(X, y, *, shrinkage=False):
    r"""H-score: how much of the feature covariance the class means explain.

    .. math::

        H = \operatorname{tr}\big(\operatorname{cov}(X)^{+}
        \operatorname{cov}(\mathbb E[X\mid y])\big)

    with population covariances (``1/N``); ``cov(E[X|y]) = sum_c n_c/N
    (mu_c - mu)(mu_c - mu)^T``. **Higher is better**; at most ``C - 1``.
    With ``shrinkage=True`` (Ibrahim et al., ICLR 2022) the feature
    covariance is the Ledoit-Wolf estimate ``(1 - a) S + a tr(S)/D I`` and
    the class-mean covariance is scaled by ``1 - a``, which keeps the score
    meaningful when ``N`` is not much larger than ``D``.

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
        Features.
    y : array-like of shape (n_samples,)
        Class labels.
    shrinkage : bool, default=False
        Use the shrinkage (regularised) H-score.

    Returns
    -------
    float
        The H-score.

    Notes
    -----
    Cost: one centred ``D x D`` Gram and one symmetric eigendecomposition (or
    Cholesky solve with shrinkage). The pseudo-inverse drops eigenvalues
    below ``1e-15`` times the largest, as ``np.linalg.pinv(rcond=1e-15)``
    in the reference code; constant features therefore do not contribute.
    The shrinkage coefficient is scikit-learn's ``ledoit_wolf_shrinkage``,
    computed without the second Gram of the squared features.

    References
    ----------
    Bao, Li, Huang, Zheng, Schoenebeck. An Information-Theoretic Approach to
    Transferability in Task Transfer Learning. ICIP 2019. Ibrahim, Ponomareva,
    Mazumder. Newer is not always better: Rethinking transferability metrics,
    their peculiarities, stability and performance. ECML-PKDD 2022 (ICLR 2022
    workshop).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import hscore
    >>> X, y = load_iris(return_X_y=True)
    >>> round(hscore(X, y), 4), round(hscore(X, y, shrinkage=True), 4)
    (1.1919, 1.17)
    """
    X64, classes, codes, counts = _prepare(X, y, score="H-score")
    n, d = X64.shape
    mu = X64.mean(0)
    means = _class_sums(X64, codes, len(classes)) / counts[:, None]
    Mc = (means - mu) * np.sqrt(counts / n)[:, None]
    G = _gram(X64, mu)
    if np.trace(G) <= 0:
        raise ValueError("X has zero variance (all samples equal); the H-score is undefined.")
    if not shrinkage:
        P = _pinv_psd(G / n)
        return float(np.einsum("ij,jk,ik->", Mc, P, Mc))
    a = _lw_from(X64, mu, G)
    S = (1.0 - a) * G / n
    S[np.diag_indices(d)] += a * np.trace(G) / (n * d)
    sol = linalg.solve(S, Mc.T, assume_a="pos")
    return float((1.0 - a) * np.einsum("ij,ji->", Mc, sol))


def _lw_from(X64, mu, G):
    n, d = X64.shape
    if d == 1:
        return 0.0
    emp_trace = np.trace(G) / n
    m = emp_trace / d
    beta_ = 0.0
    for a in range(0, n, _ROWS):
        B = X64[a : a + _ROWS] - mu
        beta_ += float((np.einsum("ij,ij->i", B, B) ** 2).sum())
    delta_ = float((G**2).sum()) / n**2
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * m * emp_trace + d * m**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


# ---------------------------------------------------------------------------
# LEEP, NCE, NLEEP (scores on a probabilistic assignment to "source" classes)
# ---------------------------------------------------------------------------


def _check_probabilities(P, n, name="source_proba"):
    P = np.asarray(to_numpy(P), dtype=np.float64)
    if P.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D of shape (n_samples, n_source_classes), got shape {P.shape}."
        )
    if P.shape[0] != n:
        raise ValueError(f"{name} has {P.shape[0]} rows but y has {n} labels.")
    if not np.isfinite(P).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    if (P < 0).any() or not np.allclose(P.sum(1), 1.0, rtol=0, atol=1e-4):
        raise ValueError(
            f"{name} must hold probabilities (non-negative rows summing to 1); for "
            "logits pass scipy.special.softmax(logits, axis=1)."
        )
    return P


def _eep(P, codes, n_classes, log):
    """Mean (log) expected empirical prediction of the labels from soft assignments P."""
    n = P.shape[0]
    joint = np.asarray(_onehot(codes, n_classes) @ P) / n  # (C, Z) P(y, z)
    pz = joint.sum(0)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = np.einsum("iz,iz->i", P, cond[codes])
    if not log:
        return float(eep.mean())
    if (eep <= 0).any():  # pragma: no cover - cannot happen with valid probabilities
        return float("-inf")
    return float(np.log(eep).mean())


def leep(source_proba, y, *, log=True):
    r"""LEEP: log expected empirical prediction of the source classifier.

    With ``theta(x)`` the source classifier's probabilities over its ``Z``
    classes, ``P(y, z) = 1/N sum_{i: y_i = y} theta_z(x_i)`` and
    ``P(y | z) = P(y, z) / P(z)``:

    .. math:: \mathrm{LEEP} = \frac1N\sum_i \log \sum_z P(y_i\mid z)\,\theta_z(x_i)

    **Higher is better** (at most 0).

    Parameters
    ----------
    source_proba : array-like or tensor of shape (n_samples, n_source_classes)
        Softmax outputs of the pretrained head on the downstream inputs (see
        ``sknc.features.BackboneFeatures(head="proba")``).
    y : array-like of shape (n_samples,)
        Downstream labels.
    log : bool, default=True
        Mean of the log (LEEP's definition). False gives the mean probability,
        the convention of the SFDA/ETran reference code for NLEEP and SFDA.

    Returns
    -------
    float

    Notes
    -----
    Cost ``O(N Z)``. Reference: Nguyen, Hassner, Seeger, Archambeau. LEEP: A
    New Measure to Evaluate Transferability of Learned Representations.
    ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.metrics import leep
    >>> proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7]])
    >>> round(leep(proba, ["cat", "cat", "dog", "dog"]), 4)
    -0.3426
    """
    y_arr = np.asarray(to_numpy(y))
    n = y_arr.shape[0] if y_arr.ndim else 0
    P = _check_probabilities(source_proba, n)
    classes, codes = encode_labels(y_arr, n, get_ops(P))
    return _eep(P, np.asarray(codes), len(classes), log)


def nce(source_proba, y):
    r"""NCE: negative conditional entropy of the labels given the source labels.

    ``z_i`` is the source classifier's prediction (argmax of
    ``source_proba``, or given directly as integer labels);
    ``NCE = -H(Y | Z) = sum_{y,z} P(y, z) log P(y | z)`` from the empirical
    joint distribution. **Higher is better** (at most 0).

    Parameters
    ----------
    source_proba : array-like of shape (n_samples, n_source_classes) or (n_samples,)
        Source probabilities (or logits: only the argmax is used), or the
        source labels themselves.
    y : array-like of shape (n_samples,)
        Downstream labels.

    Returns
    -------
    float

    Notes
    -----
    Cost ``O(N Z)``. Reference: Tran, Nguyen, Hassner. Transferability and
    Hardness of Supervised Classification Tasks. ICCV 2019.

    Examples
    --------
    >>> from sknc.metrics import nce
    >>> round(nce([0, 0, 1, 1], ["a", "a", "b", "a"]), 4)
    -0.3466
    """
    Z = np.asarray(to_numpy(source_proba))
    y_arr = np.asarray(to_numpy(y))
    if Z.ndim == 2:
        Z = _check_finite_2d(Z, "source_proba").argmax(1)
    elif Z.ndim != 1:
        raise ValueError(f"source_proba must be 1-D or 2-D, got shape {Z.shape}.")
    n = Z.shape[0]
    classes, codes = encode_labels(y_arr, n, get_ops(np.zeros((1, 1))))
    _, zc = np.unique(Z, return_inverse=True)
    codes = np.asarray(codes)
    joint = np.zeros((len(classes), zc.max() + 1))
    np.add.at(joint, (codes, zc.reshape(-1)), 1.0)
    joint /= n
    pz = joint.sum(0)
    cond = joint / pz
    nz = joint > 0
    return float((joint[nz] * np.log(cond[nz])).sum())


def _check_finite_2d(A, name):
    A = np.asarray(A, dtype=np.float64)
    if not np.isfinite(A).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    return A


def nleep(
    X, y, *, n_components_per_class=5, variance=0.8, log=True, max_iter=100, random_state=None
):
    r"""NLEEP: LEEP on the posteriors of a Gaussian mixture of the features.

    The features are reduced by (exact) PCA to the fewest components that
    keep ``variance`` of the variance; a Gaussian mixture with
    ``n_components_per_class * C`` full-covariance components is fitted
    (``sklearn.mixture.GaussianMixture``, seeded by ``random_state``), and
    LEEP is computed on its posteriors in place of a source classifier.
    **Higher is better.**

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_components_per_class : int, default=5
        Mixture components per downstream class (the paper's 5); capped at
        ``n_samples``.
    variance : float in (0, 1], default=0.8
        Share of variance the PCA keeps (the paper's 80%).
    log : bool, default=True
        Mean log (the NLEEP paper, as LEEP). ``False`` gives the mean
        probability that the SFDA/ETran reference scripts return.
    max_iter : int, default=100
        EM iterations of the mixture.
    random_state : int, RandomState instance or None, default=None
        Seeds the mixture's initialisation.

    Returns
    -------
    float

    Notes
    -----
    Cost: a PCA, then EM over ``5 C`` full-covariance Gaussians in ``p``
    dimensions (``O(N C p^2)`` per iteration) -- by far the slowest score.
    The value depends on the mixture's initialisation, hence the seed.
    Reference: Li, Jia, Zhu, Lin, Hu, Tang, Zhu. Ranking Neural Checkpoints.
    CVPR 2021.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import nleep
    >>> X, y = load_iris(return_X_y=True)
    >>> nleep(X, y, random_state=0) > -0.5
    True
    """
    from sklearn.mixture import GaussianMixture

    n_per = _check_positive_int(n_components_per_class, "n_components_per_class")
    if (
        isinstance(variance, bool)
        or not isinstance(variance, numbers.Real)
        or not 0 < variance <= 1
    ):
        raise ValueError(f"variance must be in (0, 1], got {variance!r}.")
    X64, classes, codes, counts = _prepare(X, y, score="NLEEP")
    n = X64.shape[0]
    Xc = X64 - X64.mean(0)
    scores, explained = _pca_exact(Xc, min(Xc.shape))
    p = _n_components_for_variance(explained, variance) if variance < 1 else scores.shape[1]
    Zp = scores[:, :p]
    k = min(n_per * len(classes), n)
    gmm = GaussianMixture(n_components=k, max_iter=max_iter, random_state=random_state)
    post = gmm.fit(Zp).predict_proba(Zp)
    return _eep(post, codes, len(classes), log)


# ---------------------------------------------------------------------------
# TransRate
# ---------------------------------------------------------------------------


def _coding_rate(Z, eps):
    """``1/2 logdet(I + Z^T Z / (n eps))`` via the smaller Gram, Cholesky."""
    n, d = Z.shape
    A = _gram(Z) if d <= n else Z @ Z.T
    A = A / (n * eps)
    A[np.diag_indices(A.shape[0])] += 1.0
    c = linalg.cholesky(A, lower=True, check_finite=False)
    return float(np.log(np.diag(c)).sum())


def transrate(X, y, *, eps=1e-4):
    r"""TransRate: coding rate of the features minus that given the labels.

    With ``Z`` the globally centred features and
    ``R(Z) = 1/2 logdet(I + Z^T Z / (n eps))``:

    .. math:: \mathrm{TransRate} = R(Z) - \frac1C\sum_c R(Z_c)

    (``Z_c`` the rows of class ``c``, not re-centred, ``n`` the rows of the
    matrix at hand). **Higher is better.** This is the convention of the
    authors' code (``1/(n eps)``, an unweighted mean over classes), which
    differs from the paper's ``d/(n eps^2)``.

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    eps : float, default=1e-4
        Distortion of the coding rate.

    Returns
    -------
    float

    Notes
    -----
    Cost: one ``D x D`` Gram and Cholesky factorisation, and per class the
    smaller of its ``n_c x n_c`` and ``D x D`` Grams (``logdet(I + A^T A) =
    logdet(I + A A^T)``). The value grows with ``D``: compare models of
    similar width, or reduce them to a common dimension first.
    Reference: Huang, Huang, Tang, Zhou, Zhang. Frustratingly Easy
    Transferability Estimation. ICML 2022.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import transrate
    >>> X, y = load_iris(return_X_y=True)
    >>> round(transrate(X, y), 3)
    0.589
    """
    eps = _check_positive_float(eps, "eps")
    X64, classes, codes, counts = _prepare(X, y, score="TransRate")
    Z = X64 - X64.mean(0)
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    Zs = Z[order]
    rz = _coding_rate(Z, eps)
    rzy = sum(_coding_rate(Zs[bounds[c] : bounds[c + 1]], eps) for c in range(len(classes)))
    return float(rz - rzy / len(classes))


# ---------------------------------------------------------------------------
# GBC
# ---------------------------------------------------------------------------


def gbc(X, y, *, gaussian="diagonal", n_components=None):
    r"""GBC: Gaussian Bhattacharyya coefficient between the classes.

    Each class is a Gaussian with its mean and a diagonal (or spherical)
    population variance; for two classes with ``Sigma = (Sigma_i + Sigma_j)/2``

    .. math::

        D_B = \tfrac18 (\mu_i-\mu_j)^T\Sigma^{-1}(\mu_i-\mu_j)
        + \tfrac12\log\frac{\det\Sigma}{\sqrt{\det\Sigma_i\det\Sigma_j}},
        \qquad \mathrm{GBC} = -\sum_{i\neq j} e^{-D_B(i, j)}

    over ordered pairs. **Higher is better** (at most 0: less overlap).

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    gaussian : {"diagonal", "spherical"}, default="diagonal"
        Covariance model of each class.
    n_components : int or None, default=None
        Reduce the features by exact PCA first (the paper uses 64 for large
        backbones); None keeps them.

    Returns
    -------
    float

    Notes
    -----
    Cost ``O(N D + C^2 D)``. A feature with zero variance in both classes
    of a pair and equal means does not separate them and is left out of that
    pair; with different means the pair does not overlap (coefficient 0).
    Reference: Pándy, Agostinelli, Uijlings, Ferrari, Mensink. Transferability
    Estimation using Bhattacharyya Class Separability. CVPR 2022.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import gbc
    >>> X, y = load_iris(return_X_y=True)
    >>> round(gbc(X, y), 4)
    -0.2307
    """
    check_option(gaussian, "gaussian", ("diagonal", "spherical"))
    X64, classes, codes, counts = _prepare(X, y, score="GBC")
    if n_components is not None:
        n_components = _check_positive_int(n_components, "n_components")
        X64 = _pca_exact(X64 - X64.mean(0), min(n_components, *X64.shape))[0]
    C = len(classes)
    ref = X64.mean(0)
    S1 = _class_sums(X64 - ref, codes, C)
    S2 = _class_sums((X64 - ref) ** 2, codes, C)
    mu = S1 / counts[:, None]
    var = np.clip(S2 / counts[:, None] - mu**2, 0.0, None)
    if gaussian == "spherical":
        var = np.repeat(var.mean(1, keepdims=True), X64.shape[1], axis=1)
    total = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        logv = np.log(var)
        for i in range(C):
            s = 0.5 * (var[i] + var)  # (C, D)
            diff2 = (mu[i] - mu) ** 2
            zero = s == 0
            maha = np.where(zero, np.where(diff2 == 0, 0.0, np.inf), diff2 / np.where(zero, 1, s))
            logterm = np.where(zero, 0.0, np.log(np.where(zero, 1, s)) - 0.5 * (logv[i] + logv))
            db = 0.125 * maha.sum(1) + 0.5 * logterm.sum(1)
            bc = np.exp(-db)
            bc[i] = 0.0
            total += float(np.nan_to_num(bc, nan=0.0).sum())
    return -total


# ---------------------------------------------------------------------------
# PARC
# ---------------------------------------------------------------------------


def _stratified_subsample(codes, max_samples, random_state):
    from sklearn.utils import check_random_state

    n = codes.shape[0]
    if n <= max_samples:
        return np.arange(n)
    rng = check_random_state(random_state)
    counts = np.bincount(codes)
    share = counts * (max_samples / n)
    take = np.floor(share).astype(int)
    take = np.maximum(take, np.minimum(counts, 1))
    rest = max_samples - take.sum()
    if rest > 0:
        frac = share - np.floor(share)
        extra = np.argsort(-frac, kind="stable")[:rest]
        take[extra] += 1
    idx = []
    for c, t in enumerate(take):
        members = np.flatnonzero(codes == c)
        idx.append(rng.choice(members, size=min(t, members.size), replace=False))
    return np.sort(np.concatenate(idx))


def parc(X, y, *, n_components=32, max_samples=5000, random_state=None):
    r"""PARC: correlation of the feature and label dissimilarity matrices.

    The features are reduced by **exact** PCA to ``n_components`` and
    standardised per column; ``RDM_f = 1 - corr(rows)`` of the samples and
    ``RDM_y = 1 - corr(one-hot rows)``; PARC is 100 times the Spearman
    correlation of their upper triangles. **Higher is better.**

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_components : int, default=32
        PCA dimension (the reference's 32), capped at ``min(N, D)``.
    max_samples : int or None, default=5000
        Above this many samples a class-stratified subsample of this size,
        drawn with ``random_state``, is scored. The pairwise matrices have
        ``N^2`` entries, so this bounds memory and time (``N = 50,000``
        would need 20 GB per matrix). None scores every sample.
    random_state : int, RandomState instance or None, default=None
        Seeds the subsample.

    Returns
    -------
    float

    Notes
    -----
    The label matrix of one-hot rows takes two values (0 within a class,
    ``C/(C-1)`` across), so the Spearman correlation is computed from the
    ranks of the feature dissimilarities and the pair indicator, without
    forming it. Cost ``O(M D + M^2 p + M^2 log M)`` for ``M`` scored samples.
    The reference uses a *randomized* PCA, whose result (and PARC) changes
    with its seed and iteration count (on one data set 3.4 against 12.9);
    sknc uses the exact decomposition, with scikit-learn's sign convention.
    Reference: Bolya, Mittapalli, Hoffman. Scalable Diverse Model Selection
    for Accessible Transfer Learning. NeurIPS 2021.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import parc
    >>> X, y = load_iris(return_X_y=True)
    >>> round(parc(X, y), 1)
    39.4
    """
    n_components = _check_positive_int(n_components, "n_components")
    if max_samples is not None:
        max_samples = _check_positive_int(max_samples, "max_samples", minimum=3)
    X64, classes, codes, counts = _prepare(X, y, score="PARC")
    if max_samples is not None and X64.shape[0] > max_samples:
        keep = _stratified_subsample(codes, max_samples, random_state)
        X64, codes = X64[keep], codes[keep]
    n = X64.shape[0]
    if n < 3:
        raise ValueError("PARC needs at least 3 samples.")
    Xc = X64 - X64.mean(0)
    F = _pca_exact(Xc, min(n_components, *Xc.shape))[0]
    sd = F.std(0)
    F = F[:, sd > 0] / sd[sd > 0]
    if F.shape[1] < 2:
        raise ValueError(
            "PARC needs at least 2 non-constant feature directions to correlate samples; "
            f"X has {F.shape[1]}."
        )
    R = F - F.mean(1, keepdims=True)
    norms = np.linalg.norm(R, axis=1)
    if (norms == 0).any():
        raise ValueError(
            "PARC is undefined: some samples have equal values on every reduced feature, "
            "so their correlation with other samples is undefined."
        )
    R /= norms[:, None]
    iu = np.triu_indices(n, 1)
    rdm = np.empty(iu[0].size)
    same = np.empty(iu[0].size, dtype=bool)
    pos = 0
    for a in range(0, n - 1, 256):
        b = min(a + 256, n - 1)
        block = 1.0 - R[a:b] @ R.T
        for i in range(a, b):
            row = block[i - a, i + 1 :]
            rdm[pos : pos + row.size] = row
            same[pos : pos + row.size] = codes[i + 1 :] == codes[i]
            pos += row.size
    # Spearman's rho with a two-valued variable: the Pearson correlation of the
    # (average) ranks of the feature dissimilarities with the pair indicator.
    # Only the ranks of the within-class pairs (about 1/C of them) are needed.
    m = rdm.size
    # values equal up to rounding (e.g. +-1 correlations with 2 components) tie
    np.round(rdm, 12, out=rdm)
    within = rdm[same]
    rdm.sort()
    lo = np.searchsorted(rdm, within, side="left")
    hi = np.searchsorted(rdm, within, side="right")
    rank_same = ((lo + 1 + hi) / 2.0).sum()  # average ranks, 1-based
    tie = np.flatnonzero(np.diff(rdm) == 0)
    tie_term = 0.0
    if tie.size:  # sum of t^3 - t over runs of equal values
        starts = np.flatnonzero(np.diff(np.r_[-2, tie]) != 1)
        lengths = np.diff(np.r_[starts, tie.size]) + 1
        tie_term = float((lengths.astype(np.float64) ** 3 - lengths).sum())
    del rdm
    n_same = within.size
    n_across = m - n_same
    if n_same == 0 or n_across == 0:
        raise ValueError("PARC needs pairs of samples both within and across classes.")
    total = m * (m + 1) / 2.0
    diff = (total - rank_same) / n_across - rank_same / n_same
    var = (m * m - 1) / 12.0 - tie_term / (12.0 * m)
    p = n_same / m
    r = diff * np.sqrt(p * (1 - p)) / np.sqrt(var)
    return float(100.0 * r)


# ---------------------------------------------------------------------------
# SFDA (and the LDA stage shared with ETran)
# ---------------------------------------------------------------------------


def _lda_proba(X64, codes, counts, shrinkage):
    """Class probabilities of the shrinkage-regularised LDA of SFDA.

    Returns ``(proba, shrinkage, means)``. ``shrinkage=None`` picks
    ``max(exp(-5 lambda_max(S_w)), 1e-10)``. Features constant over all
    samples shift every class's logit by the same amount and are left out of
    the logits (exactly: the regularised within-class scatter is block
    diagonal), but still count in ``tr(S_w) / D``.
    """
    n, d = X64.shape
    C = counts.size
    priors = counts / n
    # the LDA posteriors do not depend on a common offset: centre for precision
    X64 = X64 - X64.mean(0)
    means = _class_sums(X64, codes, C) / counts[:, None]
    Sw = _within_gram(X64, means, codes) / n
    if shrinkage is None:
        lam_max = float(linalg.eigvalsh(Sw, subset_by_index=[d - 1, d - 1])[0])
        shrinkage = max(np.exp(-5.0 * lam_max), 1e-10)
    mu = np.trace(Sw) / d
    if mu <= 0:
        raise ValueError(
            "X has no within-class variance (every class is a single point); the "
            "LDA-based score is undefined."
        )
    varying = np.ptp(X64, axis=0) > 0
    Swv = (1.0 - shrinkage) * Sw[np.ix_(varying, varying)]
    Swv[np.diag_indices(Swv.shape[0])] += shrinkage * mu
    Mv = means[:, varying]
    coef = linalg.solve(Swv, Mv.T, assume_a="pos").T  # (C, d')
    intercept = -0.5 * np.einsum("ij,ij->i", Mv, coef) + np.log(priors)
    logits = X64[:, varying] @ coef.T + intercept
    return softmax(logits, axis=1), shrinkage, means


def sfda(X, y, *, log=False):
    r"""SFDA: self-challenging Fisher discriminant analysis score.

    A regularised Fisher/LDA classifier is fitted on the features (within
    class scatter ``S_w`` shrunk towards ``tr(S_w)/D I`` by
    ``lambda = max(exp(-5 lambda_max(S_w)), 1e-10)``); each sample is then
    moved towards the mean of the *other* classes' means in proportion to
    how unsure the (softened, ``softmax(p)``) classifier is of its class
    (ConfMix), a second LDA with the same ``lambda`` is fitted on the moved
    features, and the score is the mean probability it gives the true
    classes. **Higher is better.**

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    log : bool, default=False
        False: mean probability, the published score (the authors drop the
        log "in case of instability"). True: mean log-probability.

    Returns
    -------
    float

    Notes
    -----
    The reference projects on all ``D`` generalized eigenvectors of
    ``(S_b, S_w)``, which equals multiplying by ``S_w^{-1}``; sknc solves
    with a Cholesky factorisation instead (``O(D^3 / 3)``) and takes the
    exact largest eigenvalue of ``S_w`` where the reference runs three
    power iterations (the two differ only when ``lambda`` exceeds its floor).
    The reference also overwrites the caller's ``X``; sknc does not.
    Cost: two within-class Grams (``O(N D^2)``) and two Cholesky solves.
    Reference: Shao, Zhao, Ge, Wang, Huang, Zhang, Luo. Not All Models Are
    Equal: Predicting Model Transferability in a Self-challenging Fisher
    Space. ECCV 2022.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import sfda
    >>> X, y = load_iris(return_X_y=True)
    >>> round(sfda(X, y), 4)
    0.8765
    """
    X64, classes, codes, counts = _prepare(X, y, score="SFDA")
    X64 = X64 - X64.mean(0)  # SFDA is invariant to a common offset; centring keeps digits
    C = counts.size
    prob, lam, means = _lda_proba(X64, codes, counts, None)
    soft = softmax(prob, axis=1)
    p_true = soft[np.arange(codes.size), codes][:, None]
    others = (means.sum(0) - means) / (C - 1)
    X2 = p_true * X64 + (1.0 - p_true) * others[codes]
    prob2, _, _ = _lda_proba(X2, codes, counts, lam)
    pt = prob2[np.arange(codes.size), codes]
    if log:
        with np.errstate(divide="ignore"):
            return float(np.log(pt).mean())
    return float(pt.mean())


# ---------------------------------------------------------------------------
# PACTran-Gaussian
# ---------------------------------------------------------------------------


def pactran(X, y, *, lda_factor=1.0, max_iter=100, random_state=None):
    r"""PACTran-Gaussian: a PAC-Bayesian bound of a softmax probe (negated).

    A softmax regression ``(W, b)`` on the centred features minimises the
    cross-entropy plus ``||W||^2 / (2 lambda N)`` (``lambda = lda_factor``)
    by L-BFGS from a ``N(0, 0.03^2)`` start seeded by ``random_state``; with
    ``h`` the diagonal of the Hessian at the optimum,
    ``sigma^-2 = sum(h) lambda N / (D C)`` and ``s^2 = 100 lda_factor / D``:

    .. math::

        \mathrm{PACTran} = -\Big[L(W^*) + \frac{D C\, s^2}{2\lambda N}
        \log\sigma^{-2}\Big]

    The authors' code returns the bracket, a loss (lower is better); sknc
    negates it so that **higher is better**, like every other score.

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    lda_factor : float, default=1.0
        Prior precision factor (the paper uses 0.1, 1 or 10).
    max_iter : int, default=100
        L-BFGS iterations (the reference's 100).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights.

    Returns
    -------
    float

    Notes
    -----
    Cost: ``max_iter`` evaluations of ``O(N D C)`` (one product for the loss
    and gradient together). Reference: Ding, Chen, Levinboim, Goodman,
    Soricut. PACTran: PAC-Bayesian Metrics for Estimating the
    Transferability of Pretrained Models to Classification Tasks. ECCV 2022.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import pactran
    >>> X, y = load_iris(return_X_y=True)
    >>> pactran(X, y, random_state=0) < 0
    True
    """
    from scipy.optimize import minimize
    from sklearn.utils import check_random_state

    lda_factor = _check_positive_float(lda_factor, "lda_factor")
    max_iter = _check_positive_int(max_iter, "max_iter")
    X64, classes, codes, counts = _prepare(X, y, score="PACTran")
    F = X64 - X64.mean(0)
    n, d = F.shape
    C = counts.size
    rows = np.arange(n)
    ldas2 = lda_factor * n
    logits = np.empty((n, C))
    grad = np.empty((d + 1, C))

    def loss_grad(theta):
        # the cost is the two (N, D) x (D, C) products; the rest works in place
        # on one (N, C) buffer
        t = theta.reshape(d + 1, C)
        w, b = t[:d], t[d:]
        z = np.matmul(F, w, out=logits)
        z += b
        z -= z.max(1, keepdims=True)
        true = z[rows, codes]
        np.exp(z, out=z)
        norm = z.sum(1)
        xent = float((np.log(norm) - true).sum()) / n
        z /= (norm * n)[:, None]  # softmax / n
        z[rows, codes] -= 1.0 / n  # (q - Y) / n
        gw = np.matmul(F.T, z, out=grad[:d])
        gw += w / ldas2
        z.sum(0, out=grad[d])
        return xent + 0.5 * float((w * w).sum()) / ldas2, grad.ravel().copy()

    rng = check_random_state(random_state)
    theta0 = np.concatenate([rng.normal(size=(d, C)) * 0.03, np.zeros((1, C))]).ravel()
    res = minimize(
        loss_grad, theta0, method="L-BFGS-B", jac=True, options=dict(maxiter=max_iter), tol=1e-6
    )
    theta = res.x
    pac_opt = loss_grad(theta)[0]
    t = theta.reshape(d + 1, C)
    p = softmax(F @ t[:d] + t[d:], axis=1)
    g2 = p - p**2
    # sum of the Hessian diagonal: sum_{i,d,c} F_id^2 g2_ic without an (N, D) square
    h = float(np.einsum("ij,ij->i", F, F) @ g2.sum(1) + d * C / ldas2 + g2.sum())
    kd = d * C
    sigma2_inv = h * ldas2 / kd + 1e-10
    s2 = 100.0 * lda_factor / d
    return float(-(pac_opt + 0.5 * kd / ldas2 * s2 * np.log(sigma2_inv)))


# ---------------------------------------------------------------------------
# k-NN leave-one-out accuracy
# ---------------------------------------------------------------------------


def knn_accuracy(X, y, *, n_neighbors=5, metric="euclidean", max_samples=None, random_state=None):
    r"""Leave-one-out accuracy of a k-nearest-neighbour classifier.

    Each sample is classified by the majority label of its ``n_neighbors``
    nearest *other* samples (ties go to the first class in sorted order,
    as in :class:`~sklearn.neighbors.KNeighborsClassifier`); the score is the
    share classified correctly -- plain accuracy, also for two classes
    (some reference code reports the positive-class F1 there, which is not
    accuracy). **Higher is better.**

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_neighbors : int, default=5
    metric : {"euclidean", "cosine"}, default="euclidean"
    max_samples : int or None, default=None
        Score a class-stratified subsample of this size (seeded by
        ``random_state``) instead of all samples; the cost is quadratic.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    float

    Notes
    -----
    Cost ``O(N^2 D)`` time in blocks of rows, ``O(N)`` extra memory per row
    block; equal to ``cross_val_score(KNeighborsClassifier(k), X, y,
    cv=LeaveOneOut()).mean()`` up to ties between distances.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import knn_accuracy
    >>> X, y = load_iris(return_X_y=True)
    >>> round(knn_accuracy(X, y), 4)
    0.9667
    """
    check_option(metric, "metric", ("euclidean", "cosine"))
    k = _check_positive_int(n_neighbors, "n_neighbors")
    X64, classes, codes, counts = _prepare(X, y, score="k-NN accuracy")
    if max_samples is not None:
        max_samples = _check_positive_int(max_samples, "max_samples", minimum=2)
        keep = _stratified_subsample(codes, max_samples, random_state)
        X64, codes = X64[keep], codes[keep]
    n = X64.shape[0]
    if k > n - 1:
        raise ValueError(f"n_neighbors={k} needs at least {k + 1} samples, got {n}.")
    Z = X64 - X64.mean(0)
    if metric == "cosine":
        nrm = np.linalg.norm(X64, axis=1)
        if (nrm == 0).any():
            raise ValueError("metric='cosine' is undefined for all-zero feature rows.")
        Z = X64 / nrm[:, None]
    sq = np.einsum("ij,ij->i", Z, Z)
    C = counts.size
    correct = 0
    for a in range(0, n, 1024):
        b = min(a + 1024, n)
        D2 = sq[a:b, None] + sq[None, :] - 2.0 * (Z[a:b] @ Z.T)
        D2[np.arange(b - a), np.arange(a, b)] = np.inf
        nn = np.argpartition(D2, k - 1, axis=1)[:, :k] if k < n else np.argsort(D2, 1)[:, :k]
        votes = np.zeros((b - a, C))
        np.add.at(votes, (np.repeat(np.arange(b - a), k), codes[nn].ravel()), 1.0)
        correct += int((votes.argmax(1) == codes[a:b]).sum())
    return correct / n


# ---------------------------------------------------------------------------
# NCTI and ETran: per-model parts and pool-level combiners
# ---------------------------------------------------------------------------


def ncti_parts(X, y, *, n_components=64):
    r"""Per-model parts of NCTI (neural-collapse transferability index).

    As the authors' code: the features are reduced by exact PCA to
    ``p = min(n_components, N - 1, D)`` dimensions (directions without
    variance left out), then a linear
    discriminant analysis (``sklearn.discriminant_analysis.
    LinearDiscriminantAnalysis``) is fitted with shrinkage
    ``s = max(exp(-v), 1e-10)``, ``v`` the summed variance of the first
    ``min(32, p)`` principal components (``solver="eigen"``; at the floor
    ``s = 1e-10``, ``solver="svd"`` without shrinkage). With ``Z`` its
    projection (at most ``C - 1`` dimensions) and ``P`` its class
    probabilities:

    - ``"seli"`` (simplex-ETF-like spread of the classes):
      ``||Z - mean(Z)||_*``, the nuclear norm of the centred projection;
      **higher is better**;
    - ``"ncc"`` (nearest-centre classification, the LDA being a
      nearest-centre rule in the whitened space): the mean probability
      ``P`` gives the true class; **higher is better**;
    - ``"vc"`` (within-class variability): ``log sum_c ||P_c||_*``, the
      nuclear norms of each class's rows of ``P``; **lower is better**.

    NCTI of a model is ``seli + ncc - vc`` after min-max normalisation of
    each part across the candidate pool: :func:`ncti_combine`.

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_components : int, default=64
        PCA dimension (the authors' 64), capped at ``min(N - 1, D)``.

    Returns
    -------
    dict
        ``{"seli": float, "ncc": float, "vc": float}``.

    Notes
    -----
    Equal to the authors' ``NCTI_Score`` (github.com/BUserName/NCTI,
    ``metrics.py``) on the same inputs (relative 1e-6, checked in the test
    suite) when their PCA is exact. Where sknc differs: their ``PCA(64)``
    uses scikit-learn's default solver, which is *randomized* for large
    inputs (the parts then change with the random state), and fails when
    ``N`` or ``D`` is below 64; sknc uses the exact decomposition and adapts
    the dimension. Their ``y`` must be ``0..C-1`` (it indexes ``P``); sknc
    accepts any labels. Cost: a PCA (one Gram and eigendecomposition), an
    LDA in ``p`` dimensions and ``C`` SVDs of ``n_c x C`` blocks.
    Reference: Wang, Luo, Zheng, Huang, Baktashmotlagh. How Far Pre-trained
    Models Are from Neural Collapse on the Target Dataset Informs their
    Transferability. ICCV 2023.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import ncti_parts
    >>> X, y = load_iris(return_X_y=True)
    >>> sorted(ncti_parts(X, y))
    ['ncc', 'seli', 'vc']
    """
    import warnings

    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    n_components = _check_positive_int(n_components, "n_components")
    X64, classes, codes, counts = _prepare(X, y, score="NCTI")
    n, d = X64.shape
    p = min(n_components, n - 1, d)
    if p < 1:
        raise ValueError("NCTI needs at least 2 samples.")
    P, explained = _pca_exact(X64 - X64.mean(0), p)
    if explained.sum() <= 0:
        raise ValueError("X has zero variance (all samples equal); NCTI is undefined.")
    # directions without variance (constant features, N - 1 < p) carry nothing
    P = P[:, explained[:p] > explained[0] * max(n, d) * np.finfo(np.float64).eps]
    shrinkage = max(np.exp(-explained[: min(32, p)].sum()), 1e-10)
    if shrinkage == 1e-10:
        lda = LinearDiscriminantAnalysis(solver="svd")
    else:
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=float(shrinkage))
    try:
        with warnings.catch_warnings():
            # collinear PCA components (N close to p): the SVD solver copes
            warnings.filterwarnings("ignore", message="Variables are collinear")
            Z = lda.fit(P, codes).transform(P)
            proba = lda.predict_proba(P)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise ValueError(
            f"NCTI's discriminant analysis failed on these features ({exc}); the "
            "within-class scatter of the reduced features is degenerate (too few "
            "samples per class?)."
        ) from exc
    seli = float(np.linalg.norm(Z - Z.mean(0), ord="nuc"))
    ncc = float(proba[np.arange(n), codes].mean())
    within = sum(np.linalg.norm(proba[codes == c], ord="nuc") for c in range(counts.size))
    return {"seli": seli, "ncc": ncc, "vc": float(np.log(within))}


def etran_parts(X, y, *, energy_fraction=0.005):
    r"""Per-model parts of ETran (energy-based transferability).

    - ``"energy"``: the features read as logits, ``E(x) = log sum_j exp(x_j)``
      (free energy up to sign), averaged over the ``energy_fraction`` share of
      samples with the lowest energy (at least one); in-distribution samples
      have high ``log-sum-exp``, so **higher is better**;
    - ``"lda"``: mean true-class probability of the regularised LDA
      classifier of SFDA's first stage (**higher is better**).

    ETran of a model is the sum of the parts after min-max normalisation
    across the candidate pool: :func:`etran_combine`.

    Parameters
    ----------
    X : array-like or torch tensor of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    energy_fraction : float in (0, 1], default=0.005
        Share of lowest-energy samples averaged; 0.005 is what the authors'
        evaluation script uses (``percent=0.5`` there means 0.5%).

    Returns
    -------
    dict
        ``{"energy": float, "lda": float}``.

    Notes
    -----
    The paper's third part (an SVD-based regression score) serves detection
    and regression targets and is not included. The reference LDA passes the
    non-symmetric ``S_w^{-1} S_b`` to a symmetric eigensolver; sknc uses the
    exact LDA of SFDA. Cost: a within-class Gram and a Cholesky solve.
    Reference: Gholami, Akbari, Wang, Zhang. ETran: Energy-Based
    Transferability Estimation. ICCV 2023.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sknc.metrics import etran_parts
    >>> X, y = load_iris(return_X_y=True)
    >>> sorted(etran_parts(X, y))
    ['energy', 'lda']
    """
    if (
        isinstance(energy_fraction, bool)
        or not isinstance(energy_fraction, numbers.Real)
        or not 0 < energy_fraction <= 1
    ):
        raise ValueError(f"energy_fraction must be in (0, 1], got {energy_fraction!r}.")
    X64, classes, codes, counts = _prepare(X, y, score="ETran")
    energy = logsumexp(X64, axis=1)
    m = max(1, int(energy_fraction * energy.size))
    low = np.partition(energy, m - 1)[:m]
    prob, _, _ = _lda_proba(X64, codes, counts, None)
    return {
        "energy": float(low.mean()),
        "lda": float(prob[np.arange(codes.size), codes].mean()),
    }


def minmax_combine(parts, *, weights=None):
    """Combine per-model score parts by min-max normalisation across the pool.

    Each part is rescaled to ``[0, 1]`` over the candidates
    (``(v - min) / (max - min)``) and the weighted parts are summed. A part
    that is equal for every candidate contributes 0 to each (it cannot
    rank them). Non-finite values are an error.

    Parameters
    ----------
    parts : dict of str to dict of str to float
        Model name -> part name -> value; every model must have the same parts.
    weights : dict of str to float or None, default=None
        Weight of each part; None means 1 for each.

    Returns
    -------
    dict of str to float
        Model name -> combined score (higher is better).

    Examples
    --------
    >>> from sknc.metrics import minmax_combine
    >>> minmax_combine({"a": {"p": 1.0, "q": 5.0}, "b": {"p": 3.0, "q": 4.0}})
    {'a': 1.0, 'b': 1.0}
    """
    if not isinstance(parts, dict) or not parts:
        raise ValueError("parts must be a non-empty dict of model name -> dict of parts.")
    names = list(parts)
    keys = list(parts[names[0]])
    for name in names:
        if not isinstance(parts[name], dict) or set(parts[name]) != set(keys):
            raise ValueError(
                f"Every model needs the same parts {sorted(keys)}; {name!r} has "
                f"{sorted(parts[name]) if isinstance(parts[name], dict) else parts[name]!r}."
            )
    weights = {k: 1.0 for k in keys} if weights is None else dict(weights)
    missing = set(keys) - set(weights)
    if missing:
        raise ValueError(f"weights lacks the part(s) {sorted(missing)}.")
    out = dict.fromkeys(names, 0.0)
    for k in keys:
        v = np.array([parts[name][k] for name in names], dtype=np.float64)
        if not np.isfinite(v).all():
            bad = [name for name, val in zip(names, v) if not np.isfinite(val)]
            raise ValueError(f"Part {k!r} is not finite for {bad}; cannot normalise it.")
        span = v.max() - v.min()
        scaled = (v - v.min()) / span if span > 0 else np.zeros_like(v)
        for name, s in zip(names, scaled):
            out[name] += float(weights[k]) * float(s)
    return out


def ncti_combine(parts):
    """NCTI scores of a pool from the :func:`ncti_parts` of each model.

    ``seli + ncc - vc`` of the parts min-max normalised across the pool,
    as the authors' evaluation script.

    Parameters
    ----------
    parts : dict of str to dict
        Model name -> ``ncti_parts(X_model, y)``.

    Returns
    -------
    dict of str to float
        Model name -> NCTI (in [-1, 2]; higher is better).

    Examples
    --------
    >>> from sknc.metrics import ncti_combine
    >>> ncti_combine({"a": {"seli": 9.0, "ncc": 0.9, "vc": 2.0},
    ...               "b": {"seli": 5.0, "ncc": 0.8, "vc": 2.5}})
    {'a': 2.0, 'b': -1.0}
    """
    return minmax_combine(parts, weights={"seli": 1.0, "ncc": 1.0, "vc": -1.0})


def etran_combine(parts):
    """ETran scores of a pool from the :func:`etran_parts` of each model.

    Parameters
    ----------
    parts : dict of str to dict
        Model name -> ``etran_parts(X_model, y)``.

    Returns
    -------
    dict of str to float
        Model name -> ETran (sum of the min-max normalised parts, in [0, 2]).

    Examples
    --------
    >>> from sknc.metrics import etran_combine
    >>> etran_combine({"a": {"energy": 3.0, "lda": 0.5}, "b": {"energy": 2.0, "lda": 0.7}})
    {'a': 1.0, 'b': 1.0}
    """
    return minmax_combine(parts)

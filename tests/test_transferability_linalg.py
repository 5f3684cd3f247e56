"""The float64 linear algebra under LogME: blockwise Gram and eigen-projections."""

import functools
import tracemalloc

import numpy as np
import pytest
from scipy import linalg

import sknc.metrics._transferability as tr_module
from sknc.metrics import hscore, logme


def _data(n=300, d=12, c=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * 3.0 + 1000.0).astype(dtype)
    y = rng.integers(0, c, n)
    return X, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_in_several_float64_blocks_equals_one_float64_product(monkeypatch, dtype):
    X, y = _data(dtype=dtype)
    X64 = X.astype(np.float64)
    Y = np.eye(4)[y]
    monkeypatch.setattr(tr_module, "_GRAM_BYTES", 8 * X.shape[1] * 37)  # 37-row blocks
    G, R = tr_module._gram(X, cross=lambda a, b, B: Y[a:b].T @ B)
    np.testing.assert_allclose(G, X64.T @ X64, rtol=1e-13)
    assert np.array_equal(G, G.T)
    np.testing.assert_allclose(R, Y.T @ X64, rtol=1e-13)
    mu = X64.mean(0)
    np.testing.assert_allclose(
        tr_module._gram(X, center=mu), (X64 - mu).T @ (X64 - mu), rtol=1e-10, atol=1e-8
    )


@pytest.mark.parametrize("rank", [12, 5])
def test_eigen_projection_equals_eigh_with_back_transformed_vectors(rank):
    rng = np.random.default_rng(rank)
    A = rng.standard_normal((rank, 12))
    G = A.T @ A
    R = rng.standard_normal((12, 3))
    w, P = tr_module._eigh_project(G, R)
    w_ref, V = linalg.eigh(G, driver="evd")
    np.testing.assert_array_equal(w, w_ref)  # the same dsytrd + dstedc
    big = w_ref > w_ref.max() * 1e-10  # the null space's basis is arbitrary
    np.testing.assert_allclose(np.abs(P[big]), np.abs(V.T @ R)[big], rtol=1e-10)
    np.testing.assert_allclose((P**2).sum(0), (R**2).sum(0), rtol=1e-12)


def test_logme_makes_no_float64_copy_of_float32_features(monkeypatch):
    X, y = _data(n=4000, d=64)
    expected = logme(X.astype(np.float64), y)
    monkeypatch.setattr(tr_module, "_GRAM_BYTES", 8 * 64 * 500)
    tracemalloc.start()
    try:
        value = logme(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value == pytest.approx(expected, rel=1e-12)
    assert peak < X.nbytes  # a float64 copy alone would take 2 * X.nbytes


def test_logme_non_finite_and_overflowing_features_raise_clearly():
    X, y = _data()
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[7, 3] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            logme(Xb, y)
        with pytest.raises(ValueError, match="NaN or infinity"):
            logme(Xb[:, None].repeat(50, 1).reshape(len(y), -1)[:, :400], y)  # N < D
    with pytest.raises(ValueError, match="overflows float64"):
        logme(X.astype(np.float64) * 1e160, y)


def test_hscore_on_blockwise_gram_is_unchanged_by_the_block_size(monkeypatch):
    X, y = _data()
    one = hscore(X, y)
    monkeypatch.setattr(tr_module, "_GRAM_BYTES", 8 * X.shape[1] * 10)
    assert hscore(X, y) == pytest.approx(one, rel=1e-10)


@pytest.mark.parametrize("d", [2, 12])
def test_eigen_projection_reads_only_the_lower_triangle_of_the_lower_only_gram(d):
    X, _ = _data(d=d, dtype=np.float64)
    R = X[:5].T.copy()
    full = tr_module._gram(X)
    lower = tr_module._gram(X, lower_only=True)
    np.testing.assert_array_equal(np.tril(lower), np.tril(full))
    lower[np.triu_indices(d, 1)] = np.nan  # the upper triangle is never read
    w, P = tr_module._eigh_project(lower, R, overwrite=True)
    w_ref, P_ref = tr_module._eigh_project(full, R)
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(P, P_ref)


def _eigen_path(X, cross, y2):
    """The fixed point's forms from the projections on the singular vectors."""
    sig, P = tr_module._spectrum(X, cross)
    x2 = P**2
    res_x2 = np.maximum(y2 - x2.sum(0), 0.0)
    return sig, functools.partial(tr_module._spectral_forms, sig[:, None], x2, res_x2)


def _fixed_point_cases():
    rng = np.random.default_rng(7)
    n, d = 400, 30
    X = rng.standard_normal((n, d)) * np.linspace(0.2, 3.0, d)
    y = rng.integers(0, 5, n)
    Y = np.eye(5)[y]
    W = rng.standard_normal((d, 3))
    T = X @ W + 0.3 * rng.standard_normal((n, 3))
    near = X.copy()
    near[:, 1] = near[:, 0] + 1e-4 * rng.standard_normal(n)
    return {
        "classes": (X + 2.0 * rng.standard_normal((5, d))[y], Y),
        "float32 offset": ((X * 3.0 + 1000.0).astype(np.float32), Y),
        "near-collinear": (near, Y),
        "regression": (X, T),
        "two classes": (X, np.eye(2)[y % 2]),
    }


@pytest.mark.parametrize("case", list(_fixed_point_cases()))
def test_tridiagonal_solves_give_the_eigenvector_path_forms_and_evidence(case):
    X, Y = _fixed_point_cases()[case]
    n, d = X.shape
    m = Y.shape[1]
    y2 = (Y**2).sum(0)

    def cross(a, b, B):
        return Y[a:b].T @ B

    sig, forms = tr_module._fixed_point_forms(X, cross, y2)
    assert forms.func is tr_module._tridiagonal_forms  # full rank: no eigenvectors
    sig_e, spectral = _eigen_path(X, cross, y2)
    np.testing.assert_allclose(sig, sig_e, rtol=1e-10, atol=1e-13 * sig.max())
    # columns at their own t, a subset of the columns in a shuffled order
    a = np.arange(m)[::-1][: max(2, m - 1)]
    for scale in (1e-4, 1e-1, 1.0, 1e2):
        t = scale * sig.mean() * np.linspace(0.5, 2.0, a.size)
        m2, res2 = forms(t, a)
        m2_e, res2_e = spectral(t, a)
        np.testing.assert_allclose(m2, m2_e, rtol=1e-10)
        np.testing.assert_allclose(res2, res2_e, rtol=1e-10)
    ev = tr_module._logme_fixed_point(sig, forms, m, n, d, 1e-3, 11)
    ev_e = tr_module._logme_fixed_point(sig_e, spectral, m, n, d, 1e-3, 11)
    np.testing.assert_allclose(ev, ev_e, rtol=1e-10)


@pytest.mark.parametrize("shape", ["rank-deficient", "n below d", "two features"])
def test_fixed_point_keeps_the_eigenvector_path_without_full_rank(shape):
    rng = np.random.default_rng(3)
    n, d = {"rank-deficient": (200, 20), "n below d": (40, 60), "two features": (50, 2)}[shape]
    X = rng.standard_normal((n, d))
    if shape == "rank-deficient":
        X[:, 5] = 2.0 * X[:, 4]
    Y = np.eye(3)[rng.integers(0, 3, n)]
    y2 = Y.sum(0)

    def cross(a, b, B):
        return Y[a:b].T @ B

    sig, forms = tr_module._fixed_point_forms(X, cross, y2)
    assert forms.func is tr_module._spectral_forms
    sig_e, spectral = _eigen_path(X, cross, y2)
    np.testing.assert_array_equal(sig, sig_e)
    t = np.full(3, 0.5)
    np.testing.assert_array_equal(forms(t, np.arange(3))[0], spectral(t, np.arange(3))[0])


def test_gram_converts_into_one_buffer_and_uses_float64_blocks_in_place(monkeypatch):
    X, _ = _data(n=4000, d=16, dtype=np.float64)
    monkeypatch.setattr(tr_module, "_GRAM_BYTES", 8 * 16 * 500)  # 500-row blocks
    buffer_bytes = 8 * 16 * 500
    peaks = {}
    for name, data in [("float64", X), ("float32", X.astype(np.float32))]:
        tracemalloc.start()
        try:
            G = tr_module._gram(data)
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        np.testing.assert_allclose(G, data.astype(np.float64).T @ data, rtol=1e-12)
    assert peaks["float64"] < buffer_bytes  # no converted block at all
    assert buffer_bytes <= peaks["float32"] < 2 * buffer_bytes  # one reused block

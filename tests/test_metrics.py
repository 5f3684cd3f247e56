"""Tests of sknc.metrics against an obviously-correct textbook implementation."""

import doctest
import pickle
import random
import tracemalloc

import numpy as np
import pytest
import scipy.linalg

import sknc.metrics as M
from sknc.metrics import (
    CollapseReport,
    NC4Counter,
    NCDegenerateWarning,
    NCStatistics,
    cdnv,
    collapse_report,
    equiangularity,
    equinorm,
    nc1,
    nc2,
    nc3,
    nc4,
)

RTOL = 1e-8
ATOL = 1e-13


# ---------------------------------------------------------------------------
# textbook reference: explicit loops, full matrices, scipy pinv
# ---------------------------------------------------------------------------


def textbook(X, y, W=None, b=None, center="global"):
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    classes = sorted(set(y.tolist()))
    K = len(classes)
    N, d = X.shape
    means = np.array([X[y == c].mean(axis=0) for c in classes])
    mu_g = X.mean(axis=0) if center == "global" else means.mean(axis=0)
    sigma_w = np.zeros((d, d))
    for i in range(N):
        e = X[i] - means[classes.index(y[i])]
        sigma_w += np.outer(e, e)
    sigma_w /= N
    sigma_b = np.zeros((d, d))
    for c in range(K):
        sigma_b += np.outer(means[c] - mu_g, means[c] - mu_g)
    sigma_b /= K
    out = {"nc1": np.trace(sigma_w @ scipy.linalg.pinv(sigma_b)) / K}
    var = np.array(
        [np.mean(np.sum((X[y == c] - means[k]) ** 2, axis=1)) for k, c in enumerate(classes)]
    )
    sym, asym = [], []
    mat_sym = np.zeros((K, K))
    mat_asym = np.zeros((K, K))
    for i in range(K):
        for j in range(K):
            if i == j:
                continue
            dist2 = np.sum((means[i] - means[j]) ** 2)
            mat_sym[i, j] = (var[i] + var[j]) / (2 * dist2)
            mat_asym[i, j] = var[i] / dist2
            asym.append(mat_asym[i, j])
            if i < j:
                sym.append(mat_sym[i, j])
    out.update(cdnv=np.mean(sym), cdnv_asym=np.mean(asym), cdnv_mat=mat_sym, cdnv_asym_mat=mat_asym)
    Mc = means - mu_g
    etf = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)
    G = Mc @ Mc.T
    out["nc2"] = np.linalg.norm(G / np.linalg.norm(G) - etf)
    norms = np.array([np.linalg.norm(m) for m in Mc])
    out["equinorm"] = np.std(norms) / np.mean(norms)
    cosines = [Mc[i] @ Mc[j] / (norms[i] * norms[j]) for i in range(K) for j in range(K) if i != j]
    out["equiangularity"] = np.std(cosines)
    out["max_angle"] = np.mean([abs(c + 1 / (K - 1)) for c in cosines])
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        if np.any(W @ Mc.T):
            out["nc3"] = np.linalg.norm(W / np.linalg.norm(W) - Mc / np.linalg.norm(Mc))
            WM = W @ Mc.T
            out["nc3_zhu"] = np.linalg.norm(WM / np.linalg.norm(WM) - etf)
        disagree = 0
        for i in range(N):
            lin = np.argmax(W @ X[i] + b)
            ncc = np.argmin([np.sum((X[i] - m) ** 2) for m in means])
            disagree += lin != ncc
        out["nc4"] = disagree / N
    return out


def make_data(rng, counts, d, *, spread=3.0, noise=1.0, labels=None):
    K = len(counts)
    centers = rng.normal(scale=spread, size=(K, d))
    y = np.repeat(np.arange(K), counts)
    X = centers[y] + noise * rng.normal(size=(len(y), d))
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    if labels is not None:
        y = np.asarray(labels)[y]
    W = rng.normal(size=(K, d)) + centers
    b = rng.normal(size=K)
    return X, y, W, b


CASES = {
    "balanced": dict(counts=[40] * 4, d=10),
    "imbalanced": dict(counts=[150, 30, 5, 60, 2], d=8),
    "K>d": dict(counts=[12] * 15, d=4),
    "single-sample": dict(counts=[1, 20, 1, 15, 1], d=6),
    "strings": dict(counts=[25, 10, 30], d=5, labels=["dog", "ant", "cat"]),
    "non-contiguous": dict(counts=[20, 9, 31, 7], d=7, labels=[100, -5, 3, 42]),
}


def _case(name, seed=0):
    rng = np.random.default_rng(seed)
    spec = dict(CASES[name])
    return make_data(rng, spec.pop("counts"), spec.pop("d"), **spec)


def _rank_deficient(seed=1):
    rng = np.random.default_rng(seed)
    K, n_c, r, d = 6, 20, 3, 12
    P = rng.normal(size=(r, d))
    centers = rng.normal(scale=3, size=(K, r))
    y = np.repeat(np.arange(K), n_c)
    X = (centers[y] + rng.normal(size=(K * n_c, r))) @ P
    W = rng.normal(size=(K, d))
    return X, y, W, rng.normal(size=K)


def _close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# exactness
# ---------------------------------------------------------------------------


# narrow features or single-sample classes on purpose; their NCNotComparableWarning is tested elsewhere
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
@pytest.mark.parametrize("center", ["global", "class-means"])
@pytest.mark.parametrize("case", list(CASES) + ["rank-deficient"])
def test_functions_match_textbook(case, center):
    X, y, W, b = _rank_deficient() if case == "rank-deficient" else _case(case)
    ref = textbook(X, y, W, b, center=center)
    _close(nc1(X, y, center=center), ref["nc1"])
    _close(nc2(X, y, center=center), ref["nc2"])
    _close(equinorm(X, y, center=center), ref["equinorm"])
    _close(equiangularity(X, y, center=center), ref["equiangularity"])
    _close(equiangularity(X, y, center=center, kind="max-angle"), ref["max_angle"])
    _close(nc3(X, y, W, center=center), ref["nc3"])
    _close(nc3(X, y, W, center=center, variant="zhu"), ref["nc3_zhu"])
    value, mat = cdnv(X, y, return_matrix=True)
    _close(value, ref["cdnv"])
    _close(mat, ref["cdnv_mat"])
    value, mat = cdnv(X, y, variant="asymmetric", return_matrix=True)
    _close(value, ref["cdnv_asym"])
    _close(mat, ref["cdnv_asym_mat"])
    assert nc4(X, y, W, b) == ref["nc4"]


# narrow features or single-sample classes on purpose; their NCNotComparableWarning is tested elsewhere
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
@pytest.mark.parametrize("center", ["global", "class-means"])
@pytest.mark.parametrize("case", list(CASES) + ["rank-deficient"])
def test_report_and_statistics_match_textbook(case, center):
    X, y, W, b = _rank_deficient() if case == "rank-deficient" else _case(case)
    ref = textbook(X, y, W, b, center=center)
    rep = collapse_report(X, y, W, b, center=center, chunk_size=17)
    stats = NCStatistics(chunk_size=13).update(X, y)
    srep = stats.report(W, center=center, nc4=stats.nc4_counter(W, b).update(X))
    for r in (rep, srep):
        for key in ("nc1", "cdnv", "nc2", "equinorm", "equiangularity", "max_angle", "nc3"):
            _close(getattr(r, key), ref[key])
        assert r.nc4 == ref["nc4"]
        assert r.n_samples == len(y) and r.n_classes == len(set(y.tolist()))
    _close(stats.nc1(center=center), ref["nc1"])
    _close(stats.cdnv(variant="asymmetric"), ref["cdnv_asym"])
    _close(stats.cdnv(return_matrix=True)[1], ref["cdnv_mat"])
    _close(stats.nc2(center=center), ref["nc2"])
    _close(stats.equinorm(center=center), ref["equinorm"])
    _close(stats.equiangularity(center=center, kind="max-angle"), ref["max_angle"])
    _close(stats.nc3(W, center=center, variant="zhu"), ref["nc3_zhu"])
    np.testing.assert_array_equal(stats.classes_, np.unique(y))
    np.testing.assert_array_equal(rep.classes, np.unique(y))


def test_chunk_size_does_not_change_results():
    X, y, W, b = _case("imbalanced")
    full = collapse_report(X, y, W, b).as_dict()
    for chunk in (1, 7, 1000):
        other = collapse_report(X, y, W, b, chunk_size=chunk).as_dict()
        for key, value in full.items():
            _close(other[key], value, rtol=1e-12)


def test_strongly_collapsed_float64():
    X, y, W, b = make_data(np.random.default_rng(3), [30] * 5, 6, noise=1e-6)
    ref = textbook(X, y, W, b)
    rep = collapse_report(X + 1e3, y, W, b)
    ref_off = textbook(X + 1e3, y, W, b)
    assert rep.nc1 < 1e-9
    _close(rep.nc1, ref_off["nc1"], rtol=1e-6)
    _close(rep.cdnv, ref_off["cdnv"], rtol=1e-6)
    _close(nc1(X, y), ref["nc1"])
    _close(NCStatistics().update(X + 1e3, y).nc1(), ref_off["nc1"], rtol=1e-6)


@pytest.mark.parametrize("noise, offset", [(1.0, 1e4), (1e-2, 1e4), (1.0, 1e6), (0.5, 4.0)])
def test_float32_with_large_offset(noise, offset):
    rng = np.random.default_rng(4)
    X, y, W, b = make_data(rng, [300, 200, 250, 150], 16, noise=noise)
    X32 = (X + offset).astype(np.float32)
    ref = textbook(X32.astype(np.float64), y, W, b)
    rep = collapse_report(X32, y, W, b)
    stats = NCStatistics().update(X32[:500], y[:500]).update(X32[500:], y[500:])
    srep = stats.report(W, nc4=stats.nc4_counter(W, b).update(X32))
    for r in (rep, srep):
        for key in ("nc1", "cdnv", "nc2", "equinorm", "equiangularity", "max_angle", "nc3"):
            _close(getattr(r, key), ref[key], rtol=1e-4, atol=0)
    # near-ties are decided again in float64: the decisions are the textbook's
    assert rep.nc4 == ref["nc4"]
    assert srep.nc4 == ref["nc4"]


def test_float32_strongly_collapsed():
    rng = np.random.default_rng(5)
    X, y, W, b = make_data(rng, [100] * 4, 8, noise=1e-4)
    X32 = (X + 50.0).astype(np.float32)
    ref = textbook(X32.astype(np.float64), y, W, b)
    rep = collapse_report(X32, y, W, b)
    _close(rep.nc1, ref["nc1"], rtol=1e-4, atol=0)
    _close(rep.cdnv, ref["cdnv"], rtol=1e-4, atol=0)
    _close(NCStatistics().update(X32, y).nc1(), ref["nc1"], rtol=1e-4, atol=0)


def test_binary_coef_expansion():
    from sklearn.linear_model import LogisticRegression

    X, y, _, _ = _case("balanced")
    mask = y < 2
    X, y = X[mask], np.where(y[mask] == 0, "neg", "pos")
    clf = LogisticRegression().fit(X, y)
    assert clf.coef_.shape == (1, X.shape[1])
    W = np.vstack([-clf.coef_[0] / 2, clf.coef_[0] / 2])
    b = np.array([-clf.intercept_[0] / 2, clf.intercept_[0] / 2])
    ref = textbook(X, y, W, b)
    _close(nc3(X, y, clf.coef_), ref["nc3"])
    means = np.array([X[y == c].mean(0) for c in clf.classes_])
    ncc = clf.classes_[np.argmin(((X[:, None] - means) ** 2).sum(-1), axis=1)]
    expected = np.mean(clf.predict(X) != ncc)
    assert nc4(X, y, clf.coef_, clf.intercept_) == expected == ref["nc4"]


def test_coef_classes_subset_and_extra_rows():
    X, y, W, b = _case("balanced")
    keep = y != 3  # a fold where class 3 is absent
    Xk, yk = X[keep], y[keep]
    ref = textbook(Xk, yk, W[:3], b[:3])
    _close(nc3(Xk, yk, W, classes=[0, 1, 2, 3]), ref["nc3"])
    # row 3 still competes in the argmax; it counts as disagreement when it wins
    lin = np.argmax(Xk @ W.T + b, axis=1)
    means = np.array([Xk[yk == c].mean(0) for c in range(3)])
    ncc = np.argmin(((Xk[:, None] - means) ** 2).sum(-1), axis=1)
    assert nc4(Xk, yk, W, b, classes=[0, 1, 2, 3]) == np.mean(lin != ncc)
    with pytest.raises(ValueError, match="not among the classes"):
        nc3(X, y, W[:3], classes=[0, 1, 2])


# narrow features or single-sample classes on purpose; their NCNotComparableWarning is tested elsewhere
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nc4_exact_ties_follow_textbook(dtype):
    # samples at x=2 are equidistant from both class means (1 and 3), and a
    # zero classifier ties everywhere: argmax/argmin take the first class
    X = np.array([[0.0], [2.0], [2.0], [4.0]], dtype=dtype)
    y = [0, 0, 1, 1]
    zero = np.zeros((2, 1))
    assert nc4(X, y, zero, [0.0, 0.0]) == textbook(X, y, zero, np.zeros(2))["nc4"] == 0.25
    # three classes on a simplex, one sample of each at the centroid
    etf = np.array([[1.0, 0.0], [-0.5, 0.75**0.5], [-0.5, -(0.75**0.5)]])
    X = np.vstack([etf * 2, np.zeros((3, 2)), etf * 4]).astype(dtype)
    y = np.tile([0, 1, 2], 3)
    W = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    b = np.zeros(3)
    ref = textbook(X, y, W, b)
    assert nc4(X, y, W, b) == ref["nc4"]
    assert collapse_report(X, y, W, b).nc4 == ref["nc4"]
    stats = NCStatistics().update(X, y)
    assert stats.nc4_counter(W, b).update(X).value == ref["nc4"]


def test_perfect_collapse_and_simplex():
    K = 4
    etf = np.eye(K) - 1.0 / K
    y = np.repeat(np.arange(K), 5)
    X = etf[y]
    rep = collapse_report(X, y, coef=etf)
    assert rep.nc1 == pytest.approx(0, abs=1e-12)
    assert rep.cdnv == pytest.approx(0, abs=1e-12)
    for key in ("nc2", "equinorm", "equiangularity", "max_angle", "nc3", "nc4"):
        assert getattr(rep, key) == pytest.approx(0, abs=1e-7), key


# ---------------------------------------------------------------------------
# statistics object: merges
# ---------------------------------------------------------------------------


def _assert_same_stats(a, b, rtol=1e-10):
    np.testing.assert_array_equal(a.classes_, b.classes_)
    np.testing.assert_array_equal(a.class_counts_, b.class_counts_)
    _close(a.means_, b.means_, rtol=rtol, atol=1e-12)
    _close(a.within_class_covariance_, b.within_class_covariance_, rtol=rtol, atol=1e-12)
    _close(a.class_variances_, b.class_variances_, rtol=rtol, atol=1e-12)
    _close(a.nc1(), b.nc1(), rtol=rtol)
    _close(a.cdnv(), b.cdnv(), rtol=rtol)


def test_merge_two_halves_equals_whole():
    X, y, W, b = _case("imbalanced")
    whole = NCStatistics().update(X, y)
    a = NCStatistics().update(X[:200], y[:200])
    b_ = NCStatistics().update(X[200:], y[200:])
    _assert_same_stats(a.merge(b_), whole)
    _close(whole.nc1(), textbook(X, y)["nc1"])


def test_merge_random_order_batches_equals_whole():
    X, y, _, _ = _case("strings")
    whole = NCStatistics().update(X, y)
    parts = [NCStatistics().update(X[i : i + 7], y[i : i + 7]) for i in range(0, len(y), 7)]
    random.Random(0).shuffle(parts)
    total = NCStatistics()
    for part in parts:
        total.merge(part)
    _assert_same_stats(total, whole)
    # tree-shaped reduction gives the same
    left = parts[0].copy()
    for p in parts[1 : len(parts) // 2]:
        left.merge(p)
    right = parts[len(parts) // 2].copy()
    for p in parts[len(parts) // 2 + 1 :]:
        right.merge(p)
    _assert_same_stats(left.merge(right), whole)


def test_merge_disjoint_class_sets_and_pickle():
    X, y, _, _ = _case("non-contiguous")
    whole = NCStatistics().update(X, y)
    first = np.isin(y, [100, -5])
    a = NCStatistics().update(X[first], y[first])
    b = NCStatistics().update(X[~first] + 0.0, y[~first])
    b = pickle.loads(pickle.dumps(b))
    merged = a.merge(b)
    _assert_same_stats(merged, whole)
    np.testing.assert_array_equal(merged.classes_, [-5, 3, 42, 100])


def test_mixed_dtype_batches():
    X, y, _, _ = _case("imbalanced")
    X = X + 1e3 + 1e-3  # an offset whose float64 mean is not a float32 number
    whole = NCStatistics().update(X, y)
    mixed = NCStatistics().update(X[:100], y[:100]).update(X[100:].astype(np.float32), y[100:])
    data = np.vstack([X[:100], X[100:].astype(np.float32)])
    ref = textbook(data, y)
    _close(mixed.nc1(), ref["nc1"], rtol=1e-5)
    means = np.array([data[y == c].mean(0) for c in np.unique(y)])
    np.testing.assert_allclose(mixed.means_, means, rtol=0, atol=1e-6)
    exact = np.array([X[y == c].mean(0) for c in np.unique(y)])
    np.testing.assert_allclose(whole.means_, exact, rtol=1e-12)


def test_update_discovers_classes_incrementally():
    X, y, _, _ = _case("strings")
    order = np.argsort(y, kind="stable")[::-1]  # classes appear one after another
    stats = NCStatistics(chunk_size=5)
    for i in range(0, len(y), 9):
        idx = order[i : i + 9]
        stats.update(X[idx], y[idx])
    _assert_same_stats(stats, NCStatistics().update(X, y))
    assert stats.classes_.tolist() == ["ant", "cat", "dog"]


def test_statistics_memory_independent_of_n():
    rng = np.random.default_rng(0)
    sizes = []
    for n in (200, 5000):
        X, y, _, _ = make_data(rng, [n // 4] * 4, 6)
        stats = NCStatistics().update(X, y)
        sizes.append(len(pickle.dumps(stats)))
    assert sizes[0] == sizes[1]


def test_collapse_report_temporaries_are_chunk_sized():
    rng = np.random.default_rng(0)
    X, y, W, b = make_data(rng, [10000] * 4, 32)  # 40000 x 32 float64 = 10 MB
    collapse_report(X[:100], y[:100], W, b)  # warm-up imports
    tracemalloc.start()
    collapse_report(X, y, W, b, chunk_size=1000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.25 * X.nbytes


def test_statistics_errors_leave_state_unchanged():
    X, y, _, _ = _case("balanced")
    stats = NCStatistics().update(X, y)
    before = stats.nc1()
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        stats.update(bad, y)
    with pytest.raises(ValueError, match="features"):
        stats.update(X[:, :3], y)
    assert stats.nc1() == before
    assert stats.n_samples_ == len(y)


def test_statistics_not_fitted_and_single_class():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        NCStatistics().nc1()
    stats = NCStatistics().update(np.ones((3, 2)) + np.arange(3)[:, None], [1, 1, 1])
    with pytest.raises(ValueError, match="at least 2 classes"):
        stats.nc1()
    assert repr(NCStatistics()) == "NCStatistics(empty)"


def test_nc4_counter_merge_and_binding():
    X, y, W, b = _case("balanced")
    stats = NCStatistics().update(X, y)
    c1 = stats.nc4_counter(W, b).update(X[:50])
    c2 = pickle.loads(pickle.dumps(stats.nc4_counter(W, b).update(X[50:])))
    assert c1.merge(c2).value == textbook(X, y, W, b)["nc4"]
    assert c1.n_samples_ == len(y)
    with pytest.raises(ValueError, match="different class means"):
        c1.merge(stats.nc4_counter(W * 2, b))
    with pytest.raises(ValueError, match="no samples"):
        _ = stats.nc4_counter(W, b).value


# ---------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_cpu_matches_numpy(dtype):
    torch = pytest.importorskip("torch")
    X, y, W, b = _case("imbalanced")
    Xn = X.astype(dtype)
    Xt = torch.from_numpy(Xn)
    rtol = 1e-10 if dtype == "float64" else 1e-4
    expected = collapse_report(Xn, y, W, b).as_dict()
    for labels in (torch.from_numpy(y), y):
        got = collapse_report(Xt, labels, torch.from_numpy(W), torch.from_numpy(b)).as_dict()
        for key, value in expected.items():
            _close(got[key], value, rtol=rtol)
    stats = NCStatistics().update(Xt[:100], torch.from_numpy(y[:100]))
    stats.update(Xn[100:], y[100:])  # mixing backends is allowed
    _close(stats.nc1(), expected["nc1"], rtol=rtol)
    _close(pickle.loads(pickle.dumps(stats)).nc1(), expected["nc1"], rtol=rtol)
    _close(nc1(Xt, torch.from_numpy(y)), expected["nc1"], rtol=rtol)
    counter = stats.nc4_counter(W, b).update(Xt)
    assert abs(counter.value - expected["nc4"]) <= 1 / len(y)


def test_torch_statistics_stay_on_torch():
    torch = pytest.importorskip("torch")
    X, y, _, _ = _case("balanced")
    stats = NCStatistics().update(torch.from_numpy(X), torch.from_numpy(y))
    assert isinstance(stats._scatter, torch.Tensor)
    cpu = stats.to_numpy()
    assert isinstance(cpu._scatter, np.ndarray)
    assert isinstance(stats._scatter, torch.Tensor)
    _close(cpu.nc1(), stats.nc1())


def test_torch_half_precision_and_errors():
    torch = pytest.importorskip("torch")
    X, y, _, _ = _case("balanced")
    Xh = torch.from_numpy(X).to(torch.bfloat16)
    ref = nc1(Xh.to(torch.float64).numpy(), y)
    _close(nc1(Xh, y), ref, rtol=1e-4)
    bad = torch.from_numpy(X).clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinity"):
        nc1(bad, y)
    with pytest.raises(ValueError, match="2-D"):
        nc1(torch.zeros(5), y[:5])
    with pytest.raises(ValueError, match="NaN"):
        nc1(torch.from_numpy(X), torch.full((len(y),), float("nan")))


@pytest.mark.gpu
def test_cuda_tensors_match_numpy():
    torch = pytest.importorskip("torch")
    X, y, W, b = _case("imbalanced")
    expected = collapse_report(X, y, W, b).as_dict()
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        Xc = torch.from_numpy(X).to("cuda", dtype)
        yc = torch.from_numpy(y).cuda()
        got = collapse_report(Xc, yc, W, b).as_dict()
        for key, value in expected.items():
            _close(got[key], value, rtol=rtol, atol=2 / len(y) if key == "nc4" else ATOL)
        stats = NCStatistics().update(Xc[:100], yc[:100]).update(Xc[100:], yc[100:])
        assert stats._scatter.device.type == "cuda"
        _close(stats.nc1(), expected["nc1"], rtol=rtol)
        counter = stats.nc4_counter(W, b).update(Xc)
        assert abs(counter.value - expected["nc4"]) <= 2 / len(y)


# ---------------------------------------------------------------------------
# degenerate geometry and bad input
# ---------------------------------------------------------------------------


# narrow features or single-sample classes on purpose; their NCNotComparableWarning is tested elsewhere
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
def test_coinciding_means_give_inf_cdnv_with_warning():
    X = np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 2.0], [0.0, -2.0], [5.0, 0.0], [5.0, 0.1]])
    y = [0, 0, 1, 1, 2, 2]
    with pytest.warns(NCDegenerateWarning, match="identical means"):
        value, mat = cdnv(X, y, return_matrix=True)
    assert value == np.inf and mat[0, 1] == np.inf and np.isfinite(mat[0, 2])
    assert np.isfinite(nc1(X, y))


def test_all_means_coincide_raise():
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    y = [0, 0, 1, 1]
    for func in (nc1, nc2, equinorm, collapse_report):
        with pytest.raises(ValueError, match="coincide"):
            func(X, y)


# narrow features or single-sample classes on purpose; their NCNotComparableWarning is tested elsewhere
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
def test_zero_centred_mean_equiangularity():
    X = np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    y = [0, 1, 2]
    with pytest.raises(ValueError, match="undefined"):
        equiangularity(X, y)
    with pytest.warns(NCDegenerateWarning):
        rep = collapse_report(X, y)
    assert np.isnan(rep.equiangularity) and np.isfinite(rep.nc2)


_SAME_MEANS = (
    np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 2.0], [0.0, -2.0], [5.0, 0.0], [5.0, 0.1]]),
    [0, 0, 1, 1, 2, 2],
)
_CENTRED_MEAN = (np.array([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), [0, 1, 2])


# narrow features or single-sample classes on purpose; their NCNotComparableWarning is tested elsewhere
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
@pytest.mark.parametrize(
    "call, data",
    [
        (lambda X, y: cdnv(X, y), _SAME_MEANS),
        (lambda X, y: cdnv(X, y, variant="asymmetric", return_matrix=True), _SAME_MEANS),
        (lambda X, y: collapse_report(X, y), _SAME_MEANS),
        (lambda X, y: collapse_report(X, y), _CENTRED_MEAN),  # equiangularity undefined
        (lambda X, y: NCStatistics().update(X, y).cdnv(), _SAME_MEANS),
        (lambda X, y: NCStatistics().update(X, y).report(), _SAME_MEANS),
        (lambda X, y: NCStatistics().update(X, y).report(), _CENTRED_MEAN),
    ],
    ids=[
        "cdnv",
        "cdnv-matrix",
        "report",
        "report-equiangularity",
        "stats-cdnv",
        "stats-report",
        "stats-report-equiangularity",
    ],
)
def test_degenerate_warnings_point_at_the_caller(call, data):
    X, y = data
    with pytest.warns(NCDegenerateWarning) as record:
        call(X, y)
    assert record[0].filename == __file__, record[0].filename
    # the line of the call, inside the lambda of the parametrisation above
    assert "lambda X, y:" in open(__file__).read().splitlines()[record[0].lineno - 1]


def test_warn_external_skips_every_sknc_frame():
    import warnings

    from sknc.utils._warnings import external_stacklevel, warn_external

    def user_code():
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            warn_external("from here", RuntimeWarning)
            line = record[0].lineno
        return record, line

    record, line = user_code()
    assert record[0].filename == __file__ and record[0].category is RuntimeWarning
    assert "warn_external(" in open(__file__).read().splitlines()[line - 1]
    assert external_stacklevel() == 1  # called outside sknc: this very frame


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.array([[0.0, np.nan], [1.0, 1.0]]), [0, 1], "NaN or infinity"),
        (np.array([[0.0, np.inf], [1.0, 1.0]]), [0, 1], "NaN or infinity"),
        (np.ones((4, 2)), [1, 1, 1, 1], "at least 2 classes"),
        (np.ones((4, 2)), [0, 1, 0], "same length"),
        (np.ones(4), [0, 1, 0, 1], "2D"),
        (np.ones((4, 2)), np.ones((4, 2)), "1d"),
        (np.ones((4, 2)), [0.0, 1.0, np.nan, 1.0], "NaN"),
        (np.ones((4, 2)), np.array(["a", 1, "b", 2], dtype=object), "sorted together"),
        (np.ones((0, 2)), [], "sample"),
    ],
)
def test_bad_input_raises(X, y, match):
    with pytest.raises(ValueError, match=match):
        collapse_report(X, y)
    with pytest.raises(ValueError, match=match):
        NCStatistics().update(X, y).nc1()


def test_bad_options_and_coef_raise():
    X, y, W, b = _case("balanced")
    with pytest.raises(ValueError, match="coef has shape"):
        nc3(X, y, W[:3])
    with pytest.raises(ValueError, match="coef has shape"):
        nc4(X, y, W[:, :4])
    with pytest.raises(ValueError, match="coef has shape"):
        nc3(X, y, W[:1])  # (1, d) is only valid for two classes
    with pytest.raises(ValueError, match="2-D"):
        nc3(X, y, W[0])
    with pytest.raises(ValueError, match="intercept has shape"):
        nc4(X, y, W, b[:2])
    with pytest.raises(ValueError, match="NaN"):
        nc4(X, y, np.full_like(W, np.nan))
    with pytest.raises(ValueError, match="center"):
        nc1(X, y, center="median")
    with pytest.raises(ValueError, match="variant"):
        cdnv(X, y, variant="galanti")
    with pytest.raises(ValueError, match="variant"):
        nc3(X, y, W, variant="other")
    with pytest.raises(ValueError, match="kind"):
        equiangularity(X, y, kind="mean")
    with pytest.raises(ValueError, match="chunk_size"):
        nc1(X, y, chunk_size=0)
    with pytest.raises(ValueError, match="without coef"):
        collapse_report(X, y, intercept=b)
    with pytest.raises(ValueError, match="Labels of different kinds"):
        NCStatistics().update(X[:10], np.zeros(10, int)).update(X[:10], ["a"] * 10)
    with pytest.raises(TypeError):
        NCStatistics().merge(object())


def test_report_dataclass():
    X, y, W, b = _case("balanced")
    rep = collapse_report(X, y)
    assert isinstance(rep, CollapseReport)
    d = rep.as_dict()
    assert "nc3" not in d and "nc4" not in d
    assert d["n_classes"] == 4 and d["n_samples"] == len(y) and d["n_features"] == 10
    text = repr(collapse_report(X, y, W, b, cdnv_variant="asymmetric"))
    assert text.startswith("CollapseReport(n_classes=4") and "nc4" in text
    assert "cdnv (asymmetric)" in text


def test_docstring_examples():
    from sknc.metrics import _collapse, _statistics

    for module in (_collapse, _statistics):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0


def test_public_api():
    for name in M.__all__:
        assert hasattr(M, name)
    assert NC4Counter.__doc__ and NCStatistics.__doc__


# ---------------------------------------------------------------------------
# float32 exact whatever the row order, offset and scale (issue 13, items 1-2)
# ---------------------------------------------------------------------------


def _reference64(X, y):
    """NC1 and CDNV of the float64 values of X (vectorised textbook)."""
    X = np.asarray(X, dtype=np.float64)
    classes, codes = np.unique(y, return_inverse=True)
    K, N = len(classes), X.shape[0]
    counts = np.bincount(codes)
    means = np.stack([X[codes == k].mean(0) for k in range(K)])
    E = X - means[codes]
    sigma_w = E.T @ E / N
    Mc = means - X.mean(0)
    nc1_ref = np.trace(sigma_w @ scipy.linalg.pinv(Mc.T @ Mc / K)) / K
    var = np.bincount(codes, weights=(E * E).sum(1)) / counts
    iu = np.triu_indices(K, 1)
    dist2 = ((means[:, None] - means[None]) ** 2).sum(-1)[iu]
    cdnv_ref = np.mean((var[:, None] + var[None])[iu] / 2 / dist2)
    return nc1_ref, cdnv_ref


def _all_paths(X, y):
    """(nc1, cdnv) from the numpy, torch-CPU and NCStatistics paths."""
    torch = pytest.importorskip("torch")
    Xt = torch.from_numpy(X)
    stats = NCStatistics()
    for part in np.array_split(np.arange(len(y)), 3):
        stats.update(X[part], y[part])
    rep = collapse_report(X, y)
    return {
        "numpy": (nc1(X, y), cdnv(X, y)),
        "report": (rep.nc1, rep.cdnv),
        "torch": (nc1(Xt, y), cdnv(Xt, torch.from_numpy(y))),
        "stats": (stats.nc1(), stats.cdnv()),
        "stats-torch": (NCStatistics().update(Xt, y).nc1(), NCStatistics().update(Xt, y).cdnv()),
    }


def test_float32_offset_the_first_rows_do_not_show():
    # the first rows carry no offset, the rest a large one: the reference point
    # must not be chosen from the first rows only, and the class sums must be
    # float64 (on main: nc1 0.40 where float64 of the same values gives 0.66)
    rng = np.random.default_rng(11)
    N, d, K = 60_000, 8, 5
    y = rng.integers(0, K, N)
    X = (rng.normal(scale=0.3, size=(K, d))[y] + rng.normal(size=(N, d))).astype(np.float32)
    X[1500:] += np.float32(1e4)
    expected = _reference64(X, y)
    # the within-class scatter is dominated by the 1e4 jump, almost orthogonal
    # to the class-mean differences: NC1 projects residuals of size 1e4 onto
    # directions where they are of size 1, a cancellation that float32
    # products pay (u * 1e4 per row); the (d, d) scatter of NCStatistics more
    # so (its products are formed before the projection)
    for path, got in _all_paths(X, y).items():
        rtol = 3e-4 if path.startswith("stats") else 1e-5
        _close(got[0], expected[0], rtol=rtol, atol=0)
        _close(got[1], expected[1], rtol=1e-6, atol=0)
    rolled = np.roll(np.arange(N), 30_000)
    _close(nc1(X[rolled], y[rolled]), expected[0], rtol=1e-5, atol=0)
    # float64 values: float64 exact
    _close(nc1(X.astype(np.float64), y), expected[0], rtol=1e-10, atol=0)


def test_float32_class_means_far_apart_unit_spread():
    # class means 1e4 apart, unit spread, no common offset (on main: NC1 and
    # CDNV 1.06-1.14x too high)
    rng = np.random.default_rng(12)
    N, d, K = 40_000, 6, 4
    y = rng.integers(0, K, N)
    X = (rng.normal(scale=1e4, size=(K, d))[y] + rng.normal(size=(N, d))).astype(np.float32)
    expected = _reference64(X, y)
    for got in _all_paths(X, y).values():
        _close(got, expected, rtol=2e-6, atol=0)


def _scaled_case():
    rng = np.random.default_rng(13)
    X, y, W, b = make_data(rng, [60, 45, 50], 5)
    return X, y, W, b


@pytest.mark.parametrize(
    "dtype, scale",
    [("float64", 1e-300), ("float64", 1e300), ("float32", 1e-30), ("float32", 1e19)],
)
def test_extreme_scales_are_rescaled_exactly(dtype, scale):
    import warnings

    X, y, W, b = _scaled_case()
    X = X.astype(dtype)
    ref = collapse_report(X, y, W, b)
    Xs = (X.astype(np.float64) * scale).astype(dtype)
    expected = collapse_report(Xs.astype(np.float64) / scale, y, W, b)  # same rounding
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, no false "identical means"
        rep = collapse_report(Xs, y, W, b * scale)
        stats = NCStatistics().update(Xs[:70], y[:70]).update(Xs[70:], y[70:])
        srep = stats.report(W, nc4=stats.nc4_counter(W, b * scale).update(Xs))
        values = {
            "nc1": nc1(Xs, y),
            "cdnv": cdnv(Xs, y),
            "cdnv-corrected": cdnv(Xs, y, bias="corrected"),
            "nc4": nc4(Xs, y, W, b * scale),
        }
    rtol = 1e-10 if dtype == "float64" else 1e-5
    for key in ("nc1", "cdnv", "nc2", "equinorm", "equiangularity", "nc3", "nc4"):
        _close(getattr(rep, key), getattr(expected, key), rtol=rtol, atol=0)
        _close(getattr(srep, key), getattr(expected, key), rtol=rtol, atol=0)
    _close(values["nc1"], expected.nc1, rtol=rtol, atol=0)
    _close(values["cdnv"], expected.cdnv, rtol=rtol, atol=0)
    _close(values["nc4"], ref.nc4, atol=0)
    assert np.isfinite(values["cdnv-corrected"])
    # the public statistics stay in the units of the data
    _close(stats.means_, NCStatistics().update(Xs, y).means_, rtol=1e-12, atol=0)
    assert np.all(np.abs(stats.means_) < 1e3 * scale)


def test_statistics_merge_across_scales_and_pickle():
    X, y, _, _ = _scaled_case()
    a = NCStatistics().update(X[:80] * 1e300, y[:80])
    b = NCStatistics().update(X[80:] * 1e300, y[80:])
    whole = NCStatistics().update(X * 1e300, y)
    merged = pickle.loads(pickle.dumps(a)).merge(b)
    _close(merged.nc1(), whole.nc1(), rtol=1e-10)
    _close(merged.cdnv(), whole.cdnv(), rtol=1e-10)
    _close(merged.nc1(), nc1(X, y), rtol=1e-10)


# ---------------------------------------------------------------------------
# bias-corrected CDNV, matched subsampling (issue 13, item 16)
# ---------------------------------------------------------------------------


def _gaussian_classes(rng, n_per_class, K=6, d=20, sep=1.5):
    centers = rng.normal(scale=sep, size=(K, d))
    y = np.repeat(np.arange(K), n_per_class)
    return centers[y] + rng.normal(size=(len(y), d)), y, centers


def test_corrected_cdnv_matches_textbook_formula():
    X, y, W, b = _case("imbalanced")
    classes = np.unique(y)
    n = np.array([np.sum(y == c) for c in classes])
    means = np.stack([X[y == c].mean(0) for c in classes])
    var = np.array([((X[y == c] - means[k]) ** 2).sum() for k, c in enumerate(classes)]) / (n - 1)
    K = len(classes)
    sym, asym = [], []
    for i in range(K):
        for j in range(K):
            if i != j:
                dist2 = ((means[i] - means[j]) ** 2).sum() - var[i] / n[i] - var[j] / n[j]
                asym.append(var[i] / dist2)
                if i < j:
                    sym.append((var[i] + var[j]) / 2 / dist2)
    _close(cdnv(X, y, bias="corrected"), np.mean(sym))
    _close(cdnv(X, y, bias="corrected", variant="asymmetric"), np.mean(asym))
    stats = NCStatistics().update(X[:100], y[:100]).update(X[100:], y[100:])
    _close(stats.cdnv(bias="corrected"), np.mean(sym))
    _close(collapse_report(X, y, cdnv_bias="corrected").cdnv, np.mean(sym))
    _close(stats.report(cdnv_bias="corrected").cdnv, np.mean(sym))
    assert "corrected" in repr(collapse_report(X, y, cdnv_bias="corrected"))
    with pytest.raises(ValueError, match="bias"):
        cdnv(X, y, bias="unbiased")


def test_corrected_cdnv_does_not_depend_on_samples_per_class():
    # the plug-in CDNV of 8 samples per class is far below that of 400 of the
    # same distribution; the corrected one is close to the population value
    rng = np.random.default_rng(21)
    K, d = 6, 20
    centers = rng.normal(scale=1.5, size=(K, d))
    dist2 = ((centers[:, None] - centers[None]) ** 2).sum(-1)
    iu = np.triu_indices(K, 1)
    truth = np.mean(d / dist2[iu])  # Var_c = d (unit isotropic noise)
    plug, corr = {}, {}
    for n in (8, 400):
        vals_p, vals_c = [], []
        for _ in range(20):
            y = np.repeat(np.arange(K), n)
            X = centers[y] + rng.normal(size=(len(y), d))
            vals_p.append(cdnv(X, y))
            vals_c.append(cdnv(X, y, bias="corrected"))
        plug[n], corr[n] = np.median(vals_p), np.median(vals_c)
    # measured: plug-in 0.83x / 1.00x the population value, corrected 1.02x / 1.00x
    assert plug[8] < 0.9 * truth and abs(plug[400] / truth - 1) < 0.02
    assert abs(corr[8] / truth - 1) < 0.06
    assert abs(corr[400] / truth - 1) < 0.02


def test_cdnv_single_sample_classes_warn_or_raise():
    from sknc.metrics import NCNotComparableWarning

    X, y, _, _ = _case("single-sample")
    with pytest.warns(NCNotComparableWarning, match="single sample"):
        cdnv(X, y)
    with pytest.warns(NCNotComparableWarning, match="single sample"):
        NCStatistics().update(X, y).cdnv()
    with pytest.raises(ValueError, match="at least 2 samples per class"):
        cdnv(X, y, bias="corrected")


def test_corrected_cdnv_indistinguishable_means_are_infinite():
    rng = np.random.default_rng(22)
    X = rng.normal(size=(6, 3))
    with pytest.warns(NCDegenerateWarning, match="not distinguishable"):
        value = cdnv(X, [0, 0, 0, 1, 1, 1], bias="corrected")
    assert value == np.inf or value > 0


def test_subsample_classes():
    from sknc.metrics import subsample_classes

    X, y, _, _ = _case("imbalanced")
    Xs, ys = subsample_classes(X, y, random_state=0)
    assert np.all(np.bincount(ys) == 2)
    Xs, ys = subsample_classes(X, y, n_per_class=2, random_state=0)
    Xs2, ys2 = subsample_classes(X, y, n_per_class=2, random_state=0)
    np.testing.assert_array_equal(Xs, Xs2)
    rows = [np.flatnonzero((X == row).all(1))[0] for row in Xs]
    assert rows == sorted(rows) and np.array_equal(y[rows], ys)
    with pytest.raises(ValueError, match="fewer than n_per_class=5"):
        subsample_classes(X, y, n_per_class=5)
    with pytest.raises(ValueError, match="positive int"):
        subsample_classes(X, y, n_per_class=0)
    torch = pytest.importorskip("torch")
    Xt, yt = subsample_classes(torch.from_numpy(X), torch.from_numpy(y), 2, random_state=0)
    np.testing.assert_array_equal(Xt.numpy(), Xs)
    np.testing.assert_array_equal(yt.numpy(), ys)


# ---------------------------------------------------------------------------
# not-comparable NC1 (issue 13, item 17)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("d, warns", [(4, True), (5, True), (6, False)])
def test_nc1_warns_when_width_is_at_most_k_minus_1(d, warns):
    import warnings

    from sknc.metrics import NCNotComparableWarning

    X, y, _, _ = make_data(np.random.default_rng(23), [20] * 6, d)  # K - 1 = 5
    calls = [
        lambda: nc1(X, y),
        lambda: collapse_report(X, y),
        lambda: NCStatistics().update(X, y).nc1(),
        lambda: NCStatistics().update(X, y).report(),
    ]
    for call in calls:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            call()
        got = [w for w in record if issubclass(w.category, NCNotComparableWarning)]
        assert bool(got) == warns
        if warns:
            assert "n_classes - 1" in str(got[0].message) and got[0].filename == __file__


def test_complex_features_error_is_short():
    # issue 13, item 15: the complex-X error printed the whole array
    X = np.zeros((500, 20)) + 1j
    with pytest.raises(ValueError, match="real-valued, got dtype complex128") as info:
        nc1(X, np.arange(500) % 2)
    assert len(str(info.value)) < 100


def test_shared_rounding_helpers():
    """dot_error generalises dot_error32 to any dtype, and its float64 bound holds."""
    from fractions import Fraction

    from sknc.utils._rounding import dot_error, dot_error32, row_margin, unit_roundoff

    for n in (1, 64, 512):
        assert dot_error(n, np.float32) == dot_error32(n)
    assert unit_roundoff(np.float64) == 2.0**-53
    rng = np.random.default_rng(0)
    n = 256
    # cancellation-heavy float64 vectors: a large common part, tiny differences
    a = (1e6 + rng.standard_normal(n)) * rng.choice([-1.0, 1.0], n)
    b = 1e6 + rng.standard_normal(n)
    exact = sum(Fraction(float(x)) * Fraction(float(z)) for x, z in zip(a, b))
    err = abs(Fraction(float(a @ b)) - exact)
    assert err <= Fraction(dot_error(n, np.float64) * np.linalg.norm(a) * np.linalg.norm(b))
    assert row_margin((1.0, 2.0), np.array([0.0, 3.0])).tolist() == [1.0, 7.0]


def test_nc4_decides_exactly_where_the_textbook_rounds():
    """A row whose direct float64 distances round to a tie is still decided exactly.

    Rows far off the class-mean axis (1e8) but nearer class 1 along it: both
    direct squared distances round to 1e16, so a textbook ``cdist`` would
    call a tie (class 0); the residual products decide it exactly (class 1,
    as the linear classifier), so NC4 is 0. (float64 features: a float32
    pass cannot decide these rows and leaves them to the direct check.)
    """
    from sknc.metrics import NCStatistics, collapse_report, nc4

    X = np.array([[-1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.5, 1e8], [0.5, -1e8]])
    y = np.array([0, 0, 1, 1, 0, 0])
    W, b = np.array([[-1.0, 0.0], [1.0, 0.0]]), np.zeros(2)
    assert nc4(X, y, W, b) == 0.0
    assert collapse_report(X, y, coef=W, intercept=b).nc4 == 0.0
    assert NCStatistics().update(X, y).nc4_counter(W, b).update(X).value == 0.0

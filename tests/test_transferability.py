"""Tests of the transferability scores in sknc.metrics (LogME, H-score, ...)."""

import doctest
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, LeaveOneOut, cross_val_score, cross_validate
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline

import sknc.metrics._transferability as tr_module
from sknc.metrics import (
    etran_combine,
    etran_parts,
    gbc,
    get_scorer,
    get_scorer_names,
    hscore,
    knn_accuracy,
    leep,
    logme,
    make_nc_multimetric_scorer,
    make_nc_scorer,
    minmax_combine,
    nce,
    ncti_combine,
    ncti_parts,
    nleep,
    pactran,
    parc,
    sfda,
    transrate,
)

DATA = Path(__file__).parent / "data"
REF = json.loads((DATA / "transferability_reference.json").read_text())


def _ref_data(seed, n, d, c, scale=3.0, sep=1.5):
    """The inputs the reference outputs were computed on (see the fixture's notes)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=sep, size=(c, d))
    y = np.arange(n) % c
    rng.shuffle(y)
    X = centers[y] + scale * rng.normal(size=(n, d))
    return X, y


def _ref_proba(seed, X):
    rng = np.random.default_rng(seed + 100)
    return softmax(X @ rng.normal(size=(X.shape[1], 7)) / np.sqrt(X.shape[1]), axis=1)


# every feature score with fast settings; (function, kwargs)
FEATURE_SCORES = {
    "logme": (logme, {}),
    "logme_icml": (logme, {"method": "icml"}),
    "hscore": (hscore, {}),
    "hscore_shrinkage": (hscore, {"shrinkage": True}),
    "nleep": (nleep, {"random_state": 0}),
    "transrate": (transrate, {}),
    "gbc": (gbc, {}),
    "gbc_spherical": (gbc, {"gaussian": "spherical"}),
    "parc": (parc, {"n_components": 4}),
    "sfda": (sfda, {}),
    "pactran": (pactran, {"random_state": 0, "max_iter": 30}),
    "knn": (knn_accuracy, {"n_neighbors": 3}),
    "ncti": (ncti_parts, {}),
    "etran": (etran_parts, {}),
}


def _call(name, X, y):
    func, kwargs = FEATURE_SCORES[name]
    return func(X, y, **kwargs)


def _as_array(value):
    if isinstance(value, dict):
        return np.array([value[k] for k in sorted(value)])
    return np.array([value])


@pytest.fixture(scope="module")
def blobs():
    X, y = _ref_data(3, 120, 6, 4)
    return X, y


# ---------------------------------------------------------------------------
# exactness against the published reference implementations
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REF["sets"]))
def test_reference_outputs(name):
    seed, n, d, c = REF["sets"][name]
    X, y = _ref_data(seed, n, d, c)
    ref = REF["reference"][name]
    T = np.stack([X[:, 0] * 2 + X[:, 1] ** 2, np.sin(X[:, 2])], 1)
    P = _ref_proba(seed, X)
    rel = 1e-6
    if n >= d:  # the fixed-point reference is right only for N >= D (see below)
        assert logme(X, y) == pytest.approx(ref["logme_fixed_point"], rel=rel)
        assert logme(X[:, 3:], T, regression=True) == pytest.approx(
            ref["logme_regression"], rel=rel
        )
    assert logme(X, y, method="icml") == pytest.approx(ref["logme_icml"], rel=rel)
    assert sfda(X, y) == pytest.approx(ref["sfda"], rel=rel)
    assert nleep(X, y, log=False, random_state=0) == pytest.approx(ref["nleep_prob_seed0"], rel=rel)
    assert parc(X, y, n_components=ref["parc_n_dims"]) == pytest.approx(
        ref["parc_exact_pca"], rel=rel
    )
    # the reference adds 1e-6 I to the unnormalised covariance
    assert hscore(X, y) == pytest.approx(ref["hscore"], rel=1e-6)
    assert pactran(X, y, random_state=0) == pytest.approx(ref["pactran_seed0_neg"], rel=rel)
    assert leep(P, y) == pytest.approx(ref["leep_thuml"], rel=rel)
    assert leep(P, y) == pytest.approx(ref["leep_pactran"], rel=rel)
    assert nce(P, y) == pytest.approx(ref["nce_thuml"], rel=rel)
    assert nce(P.argmax(1), y) == pytest.approx(ref["nce_thuml"], rel=rel)


def test_logme_fixed_point_reference_is_wrong_for_n_below_d():
    # N=60 < D=100: the reference keeps D/2 log(alpha) but sums the log
    # determinant over only k = N eigenvalues
    seed, n, d, c = REF["sets"]["B"]
    X, y = _ref_data(seed, n, d, c)
    ref = REF["reference"]["B"]
    ours = logme(X, y)
    icml = logme(X, y, method="icml")
    assert ours == pytest.approx(icml, rel=1e-2)
    assert ref["logme_icml"] == pytest.approx(icml, rel=1e-6)
    assert abs(ref["logme_fixed_point"] - ours) > 1.0
    # the gap is exactly (D - k) / (2 N) log(alpha) summed over the classes' alphas
    Y = np.eye(c)[y]
    sig, P = tr_module._spectrum(X, lambda a, b, B: Y[a:b].T @ B)
    k = sig.size
    gaps = []
    for j in range(c):
        x2 = P[:, j] ** 2
        res_x2 = Y[:, j].sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sig / (sig + t)).sum()
            m2 = (sig * x2 / (t + sig) ** 2).sum()
            res2 = (x2 / (1.0 + sig / t) ** 2).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        gaps.append((d - k) / (2.0 * n) * np.log(alpha))
    assert ref["logme_fixed_point"] - ours == pytest.approx(np.mean(gaps), rel=1e-6)


def test_parc_reference_randomized_pca_differs_and_ours_is_exact():
    seed, n, d, c = REF["sets"]["B"]
    X, y = _ref_data(seed, n, d, c)
    ref = REF["reference"]["B"]
    ours = parc(X, y, n_components=ref["parc_n_dims"])
    assert ours == pytest.approx(ref["parc_exact_pca"], rel=1e-6)
    assert ours != pytest.approx(ref["parc_randomized_reference"], rel=1e-3)


def test_knn_is_leave_one_out_accuracy_also_for_two_classes():
    seed, n, d, c = REF["sets"]["K2"]
    X, y = _ref_data(seed, n, d, c)
    X, y = X[:70], y[:70]
    for k in (1, 5):
        expected = cross_val_score(KNeighborsClassifier(k), X, y, cv=LeaveOneOut()).mean()
        assert knn_accuracy(X, y, n_neighbors=k) == pytest.approx(expected, abs=1e-12)
    cos = knn_accuracy(X, y, metric="cosine")
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    expected = cross_val_score(KNeighborsClassifier(5), Xn, y, cv=LeaveOneOut()).mean()
    assert cos == pytest.approx(expected, abs=1e-12)


def test_hscore_shrinkage_matches_ledoit_wolf(blobs):
    from sklearn.covariance import LedoitWolf

    X, y = blobs
    lw = LedoitWolf().fit(X)
    a = lw.shrinkage_
    mu = X.mean(0)
    means = np.array([X[y == c].mean(0) for c in range(4)])
    w = np.bincount(y) / len(y)
    cov_g = ((means - mu).T * w) @ (means - mu)
    expected = np.trace(np.linalg.solve(lw.covariance_, (1 - a) * cov_g))
    assert hscore(X, y, shrinkage=True) == pytest.approx(expected, rel=1e-9)


def test_transrate_against_direct_formula(blobs):
    X, y = blobs
    Z = X - X.mean(0)

    def rate(A):
        n, d = A.shape
        return 0.5 * np.linalg.slogdet(np.eye(d) + A.T @ A / (n * 1e-4))[1]

    expected = rate(Z) - np.mean([rate(Z[y == c]) for c in range(4)])
    assert transrate(X, y) == pytest.approx(expected, rel=1e-9)


def test_gbc_against_direct_formula(blobs):
    X, y = blobs
    mu = np.array([X[y == c].mean(0) for c in range(4)])
    var = np.array([X[y == c].var(0) for c in range(4)])
    total = 0.0
    for i in range(4):
        for j in range(4):
            if i == j:
                continue
            s = (var[i] + var[j]) / 2
            db = 0.125 * ((mu[i] - mu[j]) ** 2 / s).sum() + 0.5 * (
                np.log(s).sum() - 0.5 * (np.log(var[i]).sum() + np.log(var[j]).sum())
            )
            total += np.exp(-db)
    assert gbc(X, y) == pytest.approx(-total, rel=1e-9)


def test_leep_log_false_is_mean_probability():
    seed, n, d, c = REF["sets"]["A"]
    X, y = _ref_data(seed, n, d, c)
    P = _ref_proba(seed, X)
    assert leep(P, y, log=False) > np.exp(leep(P, y))  # Jensen


# ---------------------------------------------------------------------------
# robustness: labels, input untouched, float32 offset, torch, edge cases
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_labels_of_any_type_and_order(name, blobs):
    X, y = blobs
    base = _as_array(_call(name, X, y))
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    assert np.allclose(_as_array(_call(name, X, names)), base, rtol=1e-9, atol=1e-12)
    assert np.allclose(_as_array(_call(name, X, y * 10 - 7)), base, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_input_is_not_modified(name, blobs):
    X, y = blobs
    X32 = X.astype(np.float32)
    for A in (X.copy(), X32.copy()):
        before = A.copy()
        y_before = y.copy()
        _call(name, A, y)
        np.testing.assert_array_equal(A, before)
        np.testing.assert_array_equal(y, y_before)


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_float32_with_offset_gives_float64_answer(name, blobs):
    X, y = blobs
    X32 = (X + 1e4).astype(np.float32)
    got = _as_array(_call(name, X32, y))
    expected = _as_array(_call(name, X32.astype(np.float64), y))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_torch_input(name, blobs):
    torch = pytest.importorskip("torch")
    X, y = blobs
    got = _as_array(_call(name, torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y)))
    expected = _as_array(_call(name, X.astype(np.float32), y))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_centred_scores_do_not_depend_on_offset_or_row_order(blobs):
    X, y = blobs
    perm = np.random.default_rng(0).permutation(len(y))
    for func, kw in [(hscore, {}), (hscore, {"shrinkage": True}), (transrate, {}), (sfda, {})]:
        base = func(X, y, **kw)
        assert func(X + 1e6, y, **kw) == pytest.approx(base, rel=1e-6)
        assert func(X[perm], y[perm], **kw) == pytest.approx(base, rel=1e-10)
    assert gbc(X[perm], y[perm]) == pytest.approx(gbc(X, y), rel=1e-10)


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_n_smaller_than_d_and_d_smaller_than_c(name):
    rng = np.random.default_rng(5)
    # N < D
    y = np.arange(30) % 3
    X = rng.normal(size=(30, 50)) + 2 * np.eye(3, 50)[y]
    assert np.all(np.isfinite(_as_array(_call(name, X, y))))
    # D < C
    y = np.arange(200) % 8
    X = rng.normal(size=(200, 3)) + rng.normal(scale=3, size=(8, 3))[y]
    assert np.all(np.isfinite(_as_array(_call(name, X, y))))


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_two_classes_and_constant_features(name):
    rng = np.random.default_rng(6)
    y = np.arange(80) % 2
    X = rng.normal(size=(80, 5)) + 1.5 * y[:, None]
    X = np.hstack([X, np.full((80, 2), 3.0)])  # two constant features
    value = _as_array(_call(name, X, y))
    assert np.all(np.isfinite(value))
    if name not in ("logme", "logme_icml", "etran"):  # these use the raw features
        expected = _as_array(_call(name, X[:, :5], y))
        if name.startswith("nleep") or name.startswith("parc"):
            np.testing.assert_allclose(value, expected, rtol=1e-6)
        elif name in ("pactran", "hscore_shrinkage", "gbc_spherical"):
            pass  # D enters the prior / the shrinkage target tr(S)/D / the mean variance
        elif name in ("transrate",):
            np.testing.assert_allclose(value, expected, rtol=1e-9)
        elif name == "sfda":
            # constant features still count in tr(S_w)/D of the shrinkage target
            assert value == pytest.approx(expected, abs=1e-3)
        else:
            np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_singleton_classes_give_number_or_clear_error(name):
    rng = np.random.default_rng(7)
    y = np.r_[np.arange(60) % 3, 3]  # class 3 has one sample
    X = rng.normal(size=(61, 4)) + 2 * np.eye(4)[y]
    try:
        value = _as_array(_call(name, X, y))
    except ValueError as exc:
        assert "sample" in str(exc) or "class" in str(exc)
    else:
        assert np.all(np.isfinite(value))


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_all_equal_features_give_number_or_clear_error(name):
    y = np.arange(20) % 2
    X = np.ones((20, 3))
    try:
        value = _as_array(_call(name, X, y))
    except ValueError as exc:
        assert any(w in str(exc) for w in ("variance", "constant", "equal", "undefined"))
    else:
        assert np.all(np.isfinite(value))


@pytest.mark.parametrize("name", list(FEATURE_SCORES))
def test_bad_input_clear_errors(name, blobs):
    X, y = blobs
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _call(name, Xn, y)
    with pytest.raises(ValueError, match="same length|labels"):
        _call(name, X, y[:-1])
    with pytest.raises(ValueError, match="class"):
        _call(name, X, np.zeros_like(y))


def test_all_equal_features_raise_or_carry_no_information():
    y = np.arange(20) % 2
    X = np.ones((20, 3))
    for func in (hscore, parc, sfda, nleep):
        with pytest.raises(ValueError, match="variance|constant|equal"):
            func(X, y)
    assert transrate(X, y) == 0.0  # no coding rate with or without the labels


def test_option_validation(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="method"):
        logme(X, y, method="newton")
    with pytest.raises(ValueError, match="gaussian"):
        gbc(X, y, gaussian="full")
    with pytest.raises(ValueError, match="variance"):
        nleep(X, y, variance=1.5)
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_accuracy(X, y, n_neighbors=0)
    with pytest.raises(ValueError, match="eps"):
        transrate(X, y, eps=0)
    with pytest.raises(ValueError, match="probabilities"):
        leep(np.ones((len(y), 3)), y)
    with pytest.raises(ValueError, match="rows"):
        leep(np.full((3, 2), 0.5), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="regression"):
        logme(X, np.r_[np.nan, np.ones(len(y) - 1)], regression=True)


def test_logme_regression_is_multi_target_mean(blobs):
    X, y = blobs
    T = np.stack([X[:, 0] + 0.1 * X[:, 1] ** 2, X[:, 2] ** 2], 1)
    both = logme(X, T, regression=True)
    single = [logme(X, T[:, j], regression=True) for j in range(2)]
    assert both == pytest.approx(np.mean(single), rel=1e-12)


def test_seeded_scores_are_reproducible(blobs):
    X, y = blobs
    assert nleep(X, y, random_state=3) == nleep(X, y, random_state=3)
    assert pactran(X, y, random_state=3) == pactran(X, y, random_state=3)


def test_parc_subsample_bounds_memory_and_is_seeded():
    rng = np.random.default_rng(8)
    y = np.arange(20_000) % 10
    X = rng.normal(size=(20_000, 16)) + rng.normal(scale=2, size=(10, 16))[y]
    a = parc(X, y, max_samples=1000, random_state=0)
    assert a == parc(X, y, max_samples=1000, random_state=0)
    assert np.isfinite(a)
    # the subsample is class-stratified
    idx = tr_module._stratified_subsample(y, 1000, 0)
    assert idx.size == 1000 and np.all(np.bincount(y[idx]) == 100)
    # with N <= max_samples every sample is used
    assert parc(X[:500], y[:500], max_samples=1000) == parc(X[:500], y[:500], max_samples=None)


def test_knn_subsample_and_too_few_samples():
    X = np.array([0.0, 1.0, 2.1, 3.0, 4.0, 5.0])[:, None]
    y = [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="n_neighbors"):
        knn_accuracy(X, y, n_neighbors=6)
    assert knn_accuracy(X, y, n_neighbors=1) == pytest.approx(4 / 6)


# ---------------------------------------------------------------------------
# set-level combiners (NCTI, ETran)
# ---------------------------------------------------------------------------


def test_minmax_combine():
    parts = {"a": {"p": 1.0, "q": 10.0}, "b": {"p": 3.0, "q": 10.0}, "c": {"p": 2.0, "q": 10.0}}
    assert minmax_combine(parts) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert minmax_combine(parts, weights={"p": 2.0, "q": 1.0})["b"] == 2.0
    with pytest.raises(ValueError, match="same parts"):
        minmax_combine({"a": {"p": 1.0}, "b": {"q": 1.0}})
    with pytest.raises(ValueError, match="not finite"):
        minmax_combine({"a": {"p": np.inf}, "b": {"p": 1.0}})
    with pytest.raises(ValueError, match="weights"):
        minmax_combine(parts, weights={"p": 1.0})


def test_ncti_and_etran_rank_cleaner_features_higher():
    rng = np.random.default_rng(9)
    y = np.arange(300) % 5
    centers = rng.normal(scale=3, size=(5, 10))
    pool = {f"noise{s}": centers[y] + s * rng.normal(size=(300, 10)) for s in (0.5, 2.0, 6.0)}
    ncti = ncti_combine({k: ncti_parts(v, y) for k, v in pool.items()})
    assert max(ncti, key=ncti.get) == "noise0.5" and min(ncti, key=ncti.get) == "noise6.0"
    et = etran_combine({k: etran_parts(v, y) for k, v in pool.items()})
    assert set(et) == set(pool)


# ---------------------------------------------------------------------------
# scorers
# ---------------------------------------------------------------------------


def test_transferability_scorers_in_cross_validate_and_grid_search(blobs):
    X, y = blobs
    pipe = make_pipeline(PCA(4), LogisticRegression(max_iter=500))
    scoring = {name: get_scorer(name) for name in ("logme", "sfda", "hscore", "knn")}
    scoring["nc1"] = get_scorer("neg_nc1")
    res = cross_validate(pipe, X, y, scoring=scoring, cv=3)
    # scorers return the scores themselves (greater is better)
    fitted = clone(pipe).fit(X[:80], y[:80])
    Z = fitted[:-1].transform(X[80:])
    assert get_scorer("logme")(fitted, X[80:], y[80:]) == pytest.approx(logme(Z, y[80:]))
    assert np.all(res["test_knn"] <= 1) and np.all(res["test_nc1"] < 0)
    search = GridSearchCV(
        pipe,
        {"pca__n_components": [2, 4]},
        scoring=make_nc_multimetric_scorer({"logme": "logme", "acc": "accuracy"}),
        refit="logme",
        cv=3,
    ).fit(X, y)
    assert "mean_test_logme" in search.cv_results_
    for name in ("logme", "hscore", "hscore_shrinkage", "nleep", "transrate", "gbc", "parc"):
        assert name in get_scorer_names()
    for name in ("sfda", "pactran", "knn"):
        assert name in get_scorer_names()


def test_transferability_scorer_options_and_pickle(blobs):
    X, y = blobs
    scorer = make_nc_scorer("nleep", random_state=0)
    pipe = make_pipeline(PCA(3), LogisticRegression()).fit(X, y)
    value = scorer(pipe, X, y)
    assert value == pytest.approx(nleep(pipe[:-1].transform(X), y, random_state=0))
    assert pickle.loads(pickle.dumps(scorer))(pipe, X, y) == value
    with pytest.raises(ValueError, match="not valid"):
        make_nc_scorer("logme", center="global")


def test_scorers_share_one_extraction_per_fold(blobs):
    from sklearn.base import BaseEstimator, TransformerMixin

    class Counting(TransformerMixin, BaseEstimator):
        calls = 0

        def fit(self, X, y=None):
            self.n_features_in_ = X.shape[1]
            return self

        def transform(self, X):
            type(self).calls += 1
            return X

    X, y = blobs
    pipe = make_pipeline(Counting(), LogisticRegression(max_iter=500)).fit(X, y)
    Counting.calls = 0
    multi = make_nc_multimetric_scorer({k: k for k in ("logme", "sfda", "gbc", "transrate")})
    out = multi(pipe, X, y)
    assert Counting.calls == 1 and set(out) == {"logme", "sfda", "gbc", "transrate"}


def test_docstring_examples():
    failures, _ = doctest.testmod(tr_module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


@pytest.mark.parametrize("n_components", [2, 3, 5])
def test_parc_rank_formula_with_ties_equals_spearman(n_components):
    from scipy import stats

    rng = np.random.default_rng(11)
    n = 300
    y = np.arange(n) % 4
    X = rng.normal(size=(n, 12)) + rng.normal(size=(4, 12))[y]
    F = PCA(n_components, svd_solver="full").fit_transform(X)
    F = (F - F.mean(0)) / F.std(0)
    rdm = np.round(1 - np.corrcoef(F), 12)  # 2 components: only two values, all ties
    iu = np.triu_indices(n, 1)
    expected = 100 * stats.spearmanr(rdm[iu], (y[:, None] != y[None, :])[iu])[0]
    assert parc(X, y, n_components=n_components) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------
# source-classifier outputs for LEEP / NCE from BackboneFeatures
# ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_backbone_features_head_outputs_for_leep_and_nce():
    torch = pytest.importorskip("torch")
    from sknc.features import BackboneFeatures

    images = np.random.default_rng(0).integers(0, 255, (12, 16, 16, 3)).astype(np.uint8)
    y = np.arange(12) % 3
    plain = BackboneFeatures("test_resnet", input_size=16, random_state=0).fit()
    logits = BackboneFeatures("test_resnet", input_size=16, head="logits", random_state=0).fit()
    proba = BackboneFeatures("test_resnet", input_size=16, head="proba", random_state=0).fit()
    Zl, Zp = logits.split_layers(logits.transform(images)), proba.transform(images)
    blocks = proba.split_layers(Zp)
    assert list(blocks) == ["penultimate", "head"]
    # same forward pass: the penultimate block is the plain features
    np.testing.assert_allclose(blocks["penultimate"], plain.transform(images), rtol=1e-6)
    # the head block is the pretrained classifier applied to them
    expected = proba.head_(torch.from_numpy(Zl["penultimate"])).detach().numpy()
    np.testing.assert_allclose(Zl["head"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blocks["head"], softmax(expected, axis=1), rtol=1e-4, atol=1e-7)
    assert np.isfinite(leep(blocks["head"], y)) and np.isfinite(nce(blocks["head"], y))
    with pytest.raises(ValueError, match="head must be"):
        BackboneFeatures("test_resnet", head="probs").fit()
    with pytest.raises(ValueError, match="penultimate"):
        BackboneFeatures("test_resnet", layers=[1], head="proba").fit()
    # rank_backbones scores LEEP/NCE from the head block and the rest from the features
    from sknc.model_selection import rank_backbones

    cands = {
        "a": BackboneFeatures("test_resnet", input_size=16, head="proba", random_state=0),
        "b": BackboneFeatures("test_efficientnet", input_size=16, head="proba", random_state=0),
    }
    res = rank_backbones(
        cands, images, y, accuracy=False, scores=["logme", "leep", "nce"], rank_by="leep"
    )
    row = next(r for r in res.table if r["backbone"] == "a")
    assert row["leep"] == pytest.approx(leep(blocks["head"], y), rel=1e-6)
    assert row["logme"] == pytest.approx(logme(blocks["penultimate"], y), rel=1e-6)
    assert row["n_features"] == blocks["penultimate"].shape[1]


# ---------------------------------------------------------------------------
# NCTI and ETran against the authors' code
# ---------------------------------------------------------------------------

NCTI_ETRAN = json.loads((DATA / "ncti_etran_reference.json").read_text())


@pytest.mark.parametrize("name", list(NCTI_ETRAN["sets"]))
def test_ncti_and_etran_parts_against_the_authors_code(name):
    seed, n, d, c, scale, sep = NCTI_ETRAN["sets"][name]
    X, y = _ref_data(seed, n, d, c, scale=scale, sep=sep)
    ref = NCTI_ETRAN["reference"][name]
    if "ncti_exact_pca" in ref:  # the authors' PCA(64) needs N, D >= 64
        ours = ncti_parts(X, y)
        assert ours == pytest.approx(ref["ncti_exact_pca"], rel=1e-6)
    parts = etran_parts(X, y)
    assert parts["energy"] == pytest.approx(ref["energy_bot_0.5"], rel=1e-6)
    # the published LDA feeds the non-symmetric inv(Sw) @ Sb to a symmetric
    # eigensolver; with the generalized eigenproblem it is the LDA sknc computes
    # (with the shrinkage their three power iterations pick for lambda_max)
    counts = np.bincount(y)
    prob, _, _ = tr_module._lda_proba(X, y, counts, ref["lda_shrinkage"])
    assert prob[np.arange(n), y].mean() == pytest.approx(ref["lda_generalized_eigh"], rel=1e-6)
    if ref["lda_shrinkage"] == 1e-10:  # at the floor both pick the same shrinkage
        assert parts["lda"] == pytest.approx(ref["lda_generalized_eigh"], rel=1e-6)
    else:  # exact lambda_max against three power iterations
        assert parts["lda"] == pytest.approx(ref["lda_generalized_eigh"], rel=1e-2)


def test_published_etran_lda_is_not_the_lda():
    seed, n, d, c, scale, sep = NCTI_ETRAN["sets"]["N2"]
    X, y = _ref_data(seed, n, d, c, scale=scale, sep=sep)
    ref = NCTI_ETRAN["reference"]["N2"]
    assert abs(ref["lda_as_published"] - ref["lda_generalized_eigh"]) > 0.3
    assert etran_parts(X, y)["lda"] == pytest.approx(ref["lda_generalized_eigh"], rel=1e-2)


def test_ncti_combine_is_the_authors_seli_plus_ncc_minus_vc():
    parts = {
        "a": {"seli": 10.0, "ncc": 0.9, "vc": 3.0},
        "b": {"seli": 4.0, "ncc": 0.5, "vc": 4.0},
        "c": {"seli": 7.0, "ncc": 0.6, "vc": 3.5},
    }
    out = ncti_combine(parts)
    assert out["a"] == pytest.approx(2.0) and out["b"] == pytest.approx(-1.0)
    assert out["c"] == pytest.approx(0.5 + 0.25 - 0.5)


def test_ncti_small_data_gives_number_or_clear_error():
    rng = np.random.default_rng(0)
    # N < 64 and D < 64: the authors' PCA(64) fails; sknc adapts the dimension
    parts = ncti_parts(rng.normal(size=(20, 100)), np.arange(20) % 2)
    assert all(np.isfinite(v) for v in parts.values())
    parts = ncti_parts(rng.normal(size=(4, 8)) * 5, [0, 0, 1, 1])
    assert all(np.isfinite(v) for v in parts.values())


# ---------------------------------------------------------------------------
# "Back to the basics" (TMLR 2024): published per-model scores
# ---------------------------------------------------------------------------


def test_back_to_basics_table_weighted_tau():
    from scipy.stats import weightedtau

    from sknc.model_selection import evaluate_rankings

    table = json.loads((DATA / "tmlr2024_back_to_basics.json").read_text())
    acc = table["test_accuracy"]
    scores = {
        "imagenet": {ds: table["imagenet_top1"] for ds in acc},
        "logme": table["logme"],
        "ncti": table["ncti"],
    }
    ev = evaluate_rankings(scores, acc)
    for name, per_ds in scores.items():
        for ds, models in acc.items():
            # the authors' correlations_compute.py: weightedtau(score, metric), defaults
            pairs = sorted((per_ds[ds][m], models[m]) for m in models)
            expected = weightedtau([p[0] for p in pairs], [p[1] for p in pairs])[0]
            assert ev.per_dataset[name][ds]["weighted_tau"] == pytest.approx(expected, abs=1e-12)
    mean = {k: ev.mean[k]["weighted_tau"] for k in scores}
    # computed here from their figures (they publish the tau values as plots only)
    assert mean == pytest.approx({"imagenet": 0.646, "logme": 0.353, "ncti": 0.663}, abs=5e-4)
    # their findings: the ImageNet prior beats LogME; every score suffers on medical data
    assert mean["imagenet"] > mean["logme"]
    medical = ("brain_tumor_kaggle", "breakhis", "skin_splits")
    for name in scores:
        taus = ev.per_dataset[name]
        med = np.mean([taus[ds]["weighted_tau"] for ds in medical])
        nat = np.mean([taus[ds]["weighted_tau"] for ds in acc if ds not in medical])
        assert med < nat - 0.2

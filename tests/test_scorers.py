"""Tests of the neural-collapse scorers in scikit-learn's model selection tools."""

import copy
import pickle

import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, check_scoring
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedKFold,
    cross_val_score,
    cross_validate,
)
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sknc.metrics import (
    NCMultiScorer,
    NCScorer,
    cdnv,
    get_scorer,
    get_scorer_names,
    make_nc_multimetric_scorer,
    make_nc_scorer,
    nc1,
    nc2,
    nc3,
    nc4,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # few PCA components for 10 digit classes keep these tests fast: NC1 of features
    # no wider than K - 1 warns (NCNotComparableWarning), which is tested in test_metrics
    pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning"),
]


class CountingPCA(TransformerMixin, BaseEstimator):
    """A projection that counts its transform calls (on the class)."""

    calls = 0

    def __init__(self, n_components=8):
        self.n_components = n_components

    def fit(self, X, y=None):
        self.pca_ = PCA(self.n_components, random_state=0).fit(X)
        return self

    def fit_transform(self, X, y=None):
        return self.fit(X).pca_.transform(X)

    def transform(self, X):
        type(self).calls += 1
        return self.pca_.transform(X)


class TwoBlocks(TransformerMixin, BaseEstimator):
    """A multi-layer feature map with split_layers, like BackboneFeatures."""

    def fit(self, X, y=None):
        self.n_in_ = X.shape[1]
        return self

    def transform(self, X):
        return np.hstack([X[:, :5], np.tanh(X[:, 5:12])])

    def split_layers(self, Z):
        return {"low": Z[:, :5], "high": Z[:, 5:]}


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:600]
    return X[idx], y[idx]


def _pipe():
    return make_pipeline(
        StandardScaler(), PCA(10, random_state=0), LogisticRegression(max_iter=300)
    )


def _expected(pipe, X, y):
    F = pipe[:-1].transform(X)
    clf = pipe[-1]
    return {
        "nc1": -nc1(F, y),
        "cdnv": -cdnv(F, y),
        "nc2": -nc2(F, y),
        "nc3": -nc3(F, y, clf.coef_, classes=clf.classes_),
        "nc4": -nc4(F, y, clf.coef_, clf.intercept_, classes=clf.classes_),
    }


NC_SCORING = {name: f"neg_{name}" for name in ("nc1", "cdnv", "nc2", "nc3", "nc4")}


def test_scorers_equal_metric_functions_on_folds(digits):
    X, y = digits
    for train, test in StratifiedKFold(3).split(X, y):
        pipe = _pipe().fit(X[train], y[train])
        expected = _expected(pipe, X[test], y[test])
        for name, value in expected.items():
            got = get_scorer(f"neg_{name}")(pipe, X[test], y[test])
            assert got == pytest.approx(value, rel=1e-12)


def test_cross_val_score_and_cross_validate(digits):
    X, y = digits
    cv = StratifiedKFold(3)
    manual_test, manual_train = [], []
    for train, test in cv.split(X, y):
        pipe = _pipe().fit(X[train], y[train])
        manual_test.append(_expected(pipe, X[test], y[test]))
        manual_train.append(_expected(pipe, X[train], y[train]))
    scores = cross_val_score(_pipe(), X, y, cv=cv, scoring=get_scorer("neg_nc1"))
    np.testing.assert_allclose(scores, [m["nc1"] for m in manual_test], rtol=1e-10)
    scoring = {"acc": "accuracy", **{k: get_scorer(v) for k, v in NC_SCORING.items()}}
    res = cross_validate(_pipe(), X, y, cv=cv, scoring=scoring, return_train_score=True)
    for name in NC_SCORING:
        np.testing.assert_allclose(res[f"test_{name}"], [m[name] for m in manual_test], rtol=1e-10)
        train = [m[name] for m in manual_train]
        np.testing.assert_allclose(res[f"train_{name}"], train, rtol=1e-10)
    assert (res["test_acc"] > 0.8).all()
    # held-out NC is less collapsed than on the training fold
    assert (res["test_nc1"] < res["train_nc1"]).all()


@pytest.mark.parametrize("routing", [False, True])
def test_grid_search_refit_on_accuracy(digits, routing):
    X, y = digits
    with sklearn.config_context(enable_metadata_routing=routing):
        clf = LogisticRegression(max_iter=300)
        scaler = StandardScaler()
        fit_params = {}
        if routing:
            clf.set_fit_request(sample_weight=True)
            scaler.set_fit_request(sample_weight=False)
            fit_params = {"sample_weight": np.ones(len(y))}
        pipe = make_pipeline(scaler, PCA(10, random_state=0), clf)
        acc = get_scorer("accuracy")
        if routing:
            acc.set_score_request(sample_weight=True)
        scoring = {"acc": acc, "nc1": make_nc_scorer("nc1"), "nc3": make_nc_scorer("nc3")}
        search = GridSearchCV(
            pipe, {"logisticregression__C": [0.01, 1.0]}, scoring=scoring, refit="acc", cv=3
        ).fit(X, y, **fit_params)
        res = search.cv_results_
        assert search.best_index_ == int(np.argmax(res["mean_test_acc"]))
        assert np.isfinite(res["mean_test_nc1"]).all() and (res["mean_test_nc3"] < 0).all()
        # multi-metric callable form as well
        combined = make_nc_multimetric_scorer({"acc": acc, "nc1": "neg_nc1", "nc4": "neg_nc4"})
        search2 = GridSearchCV(
            pipe, {"logisticregression__C": [0.01, 1.0]}, scoring=combined, refit="acc", cv=3
        ).fit(X, y, **fit_params)
        np.testing.assert_allclose(search2.cv_results_["mean_test_nc1"], res["mean_test_nc1"])
        np.testing.assert_allclose(search2.cv_results_["mean_test_acc"], res["mean_test_acc"])
        res_cv = cross_validate(pipe, X, y, scoring=scoring, cv=3, params=fit_params)
        assert res_cv["test_nc1"].shape == (3,)


def test_features_computed_once_per_fold(digits):
    X, y = digits
    pipe = make_pipeline(CountingPCA(8), LogisticRegression(max_iter=300))
    scoring = {k: get_scorer(v) for k, v in NC_SCORING.items()}
    CountingPCA.calls = 0
    cross_validate(pipe, X, y, cv=3, scoring=scoring, return_train_score=True)
    assert CountingPCA.calls == 3 * 2  # one extraction per (fold, test/train)

    # accuracy in the same dict runs the pipeline's predict once more
    CountingPCA.calls = 0
    cross_validate(pipe, X, y, cv=3, scoring={"acc": "accuracy", **scoring})
    assert CountingPCA.calls == 3 * 2

    # the combined callable shares the extraction with accuracy too
    CountingPCA.calls = 0
    res = cross_validate(
        pipe, X, y, cv=3, scoring=make_nc_multimetric_scorer({"acc": "accuracy", **scoring})
    )
    assert CountingPCA.calls == 3
    ref = cross_validate(pipe, X, y, cv=3, scoring={"acc": "accuracy", **scoring})
    for name in ("acc", *NC_SCORING):
        np.testing.assert_allclose(res[f"test_{name}"], ref[f"test_{name}"], rtol=1e-12)

    # a scorer called on its own caches nothing
    fitted = pipe.fit(X, y)
    CountingPCA.calls = 0
    get_scorer("neg_nc1")(fitted, X, y)
    get_scorer("neg_nc1")(fitted, X, y)
    assert CountingPCA.calls == 2


def test_no_stale_features_across_estimators_and_data(digits):
    X, y = digits
    scoring = check_scoring(None, {k: get_scorer(v) for k, v in NC_SCORING.items()})
    a = _pipe().fit(X[:300], y[:300])
    b = make_pipeline(StandardScaler(), PCA(6, random_state=0), LogisticRegression(max_iter=300))
    b.fit(X[300:], y[300:])
    for est in (a, b, a):
        for data in (X[:200], X[200:400]):
            labels = y[:200] if np.shares_memory(data, X[:200]) else y[200:400]
            got = scoring(est, data, labels)
            expected = _expected(est, data, labels)
            for name in NC_SCORING:
                assert got[name] == pytest.approx(expected[name], rel=1e-12)
    # the same X object mutated between rounds is recomputed
    data = X[:200].copy()
    first = scoring(a, data, y[:200])["nc1"]
    data *= 2.0
    data += np.random.default_rng(0).normal(size=data.shape)
    second = scoring(a, data, y[:200])["nc1"]
    assert second == pytest.approx(_expected(a, data, y[:200])["nc1"], rel=1e-12)
    assert second != first


def test_parallel_jobs_match_serial(digits):
    X, y = digits
    scoring = {"acc": "accuracy", "nc1": make_nc_scorer("nc1"), "nc4": make_nc_scorer("nc4")}
    serial = cross_validate(_pipe(), X, y, cv=2, scoring=scoring, n_jobs=1)
    parallel = cross_validate(_pipe(), X, y, cv=2, scoring=scoring, n_jobs=2)
    for key in ("test_acc", "test_nc1", "test_nc4"):
        np.testing.assert_allclose(parallel[key], serial[key], rtol=1e-12)


def test_missing_linear_head_raises(digits):
    X, y = digits
    no_head = make_pipeline(StandardScaler(), PCA(5)).fit(X, y)
    assert get_scorer("neg_nc1")(no_head, X, y) == pytest.approx(-nc1(no_head.transform(X), y))
    for name in ("neg_nc3", "neg_nc4"):
        with pytest.raises(ValueError, match="needs a final linear classifier"):
            get_scorer(name)(no_head, X, y)
    knn = make_pipeline(PCA(5), KNeighborsClassifier()).fit(X, y)
    with pytest.raises(ValueError, match="KNeighborsClassifier without coef_"):
        get_scorer("neg_nc3")(knn, X, y)
    with pytest.raises(ValueError, match="needs a final linear classifier"):
        cross_validate(
            no_head, X, y, cv=2, scoring={"nc3": make_nc_scorer("nc3")}, error_score="raise"
        )


def test_feature_selection_options(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), TwoBlocks(), LogisticRegression(max_iter=300)).fit(X, y)
    F = pipe[:-1].transform(X)
    assert make_nc_scorer("nc1")(pipe, X, y) == pytest.approx(-nc1(F, y))
    assert make_nc_scorer("nc1", layer="high")(pipe, X, y) == pytest.approx(-nc1(F[:, 5:], y))
    assert make_nc_scorer("nc1", layer=0)(pipe, X, y) == pytest.approx(-nc1(F[:, :5], y))
    with pytest.raises(ValueError, match="not among the feature blocks"):
        make_nc_scorer("nc1", layer="middle")(pipe, X, y)
    scaled = pipe[:1].transform(X)
    got = make_nc_scorer("cdnv", features="standardscaler")(pipe, X, y)
    assert got == pytest.approx(-cdnv(scaled, y))
    with pytest.raises(ValueError, match="not a step"):
        make_nc_scorer("nc1", features="pca")(pipe, X, y)
    square = make_nc_scorer("nc2", features=lambda est, data: est[:-1].transform(data) ** 2)
    assert square(pipe, X, y) == pytest.approx(-nc2(F**2, y))
    with pytest.raises(ValueError, match="split_layers"):
        make_nc_scorer("nc1", layer="low", features=lambda est, data: data)(pipe, X, y)
    # bare transformer and bare classifier
    pca = PCA(4).fit(X)
    assert make_nc_scorer("nc1")(pca, X, y) == pytest.approx(-nc1(pca.transform(X), y))
    lr = LogisticRegression(max_iter=300).fit(X[:, :10], y)
    assert make_nc_scorer("nc3")(lr, X[:, :10], y) == pytest.approx(-nc3(X[:, :10], y, lr.coef_))
    # per-layer scorers share one extraction
    counting = Pipeline(
        [
            ("pca", CountingPCA(12)),
            ("blocks", TwoBlocks()),
            ("lr", LogisticRegression(max_iter=300)),
        ]
    )
    counting.fit(X, y)
    CountingPCA.calls = 0
    per_layer = {
        "low": make_nc_scorer("nc1", layer="low"),
        "high": make_nc_scorer("nc1", layer="high"),
    }
    multi = check_scoring(None, per_layer)
    multi(counting, X, y)
    assert CountingPCA.calls == 1


def test_fold_missing_a_class_aligns_coef_rows(digits):
    X, y = digits
    pipe = _pipe().fit(X, y)
    keep = y != 7
    F = pipe[:-1].transform(X[keep])
    clf = pipe[-1]
    rows = clf.classes_ != 7
    expected = -nc3(F, y[keep], clf.coef_[rows])
    assert make_nc_scorer("nc3")(pipe, X[keep], y[keep]) == pytest.approx(expected, rel=1e-12)
    pred = pipe.predict(X[keep])
    means = np.array([F[y[keep] == c].mean(0) for c in np.unique(y[keep])])
    ncc = np.unique(y[keep])[np.argmin(((F[:, None] - means) ** 2).sum(-1), axis=1)]
    assert make_nc_scorer("nc4")(pipe, X[keep], y[keep]) == pytest.approx(-np.mean(pred != ncc))


def test_get_scorer_and_validation():
    assert isinstance(get_scorer("neg_cdnv"), NCScorer)
    acc = get_scorer("accuracy")
    assert acc._score_func is accuracy_score
    assert get_scorer(acc) is acc
    with pytest.raises(ValueError, match="not a valid scoring value"):
        get_scorer("neg_nc9")
    assert {"neg_nc1", "neg_nc4", "accuracy"} <= set(get_scorer_names())
    with pytest.raises(ValueError, match="Unknown neural-collapse metric"):
        make_nc_scorer("nc7")
    with pytest.raises(ValueError, match="not valid for nc1"):
        make_nc_scorer("nc1", variant="asymmetric")
    with pytest.raises(ValueError, match="non-empty dict"):
        make_nc_multimetric_scorer({})
    scorer = make_nc_scorer("neg_cdnv", variant="asymmetric")
    assert repr(scorer) == "make_nc_scorer('neg_cdnv', variant='asymmetric')"
    clone = pickle.loads(pickle.dumps(copy.deepcopy(scorer)))
    assert clone.metric_kwargs == {"variant": "asymmetric"}
    assert isinstance(make_nc_multimetric_scorer({"nc1": "neg_nc1"}), NCMultiScorer)
    with pytest.raises(TypeError, match="no extra parameters"):
        scorer(None, None, None, sample_weight=1)


def test_scorer_options_reach_the_metric(digits):
    X, y = digits
    pipe = _pipe().fit(X, y)
    F = pipe[:-1].transform(X)
    got = make_nc_scorer("cdnv", variant="asymmetric")(pipe, X, y)
    assert got == pytest.approx(-cdnv(F, y, variant="asymmetric"))
    got = make_nc_scorer("nc1", center="class-means")(pipe, X, y)
    assert got == pytest.approx(-nc1(F, y, center="class-means"))
    got = make_nc_scorer("nc3", variant="zhu")(pipe, X, y)
    assert got == pytest.approx(-nc3(F, y, pipe[-1].coef_, variant="zhu"))


def test_one_vs_one_coefficients_are_refused():
    # SVC stores one row per pair of classes whatever decision_function_shape
    # says; with 3 classes that is 3 rows, the shape of a one-vs-rest coef_
    # (on main: neg_nc3 -1.443 and neg_nc4 -0.723 instead of an error)
    from sklearn.datasets import load_digits, load_iris
    from sklearn.svm import SVC, LinearSVC

    from sknc.metrics import get_scorer, nc4

    X, y = load_iris(return_X_y=True)
    for shape in ("ovr", "ovo"):
        clf = SVC(kernel="linear", decision_function_shape=shape).fit(X, y)
        for name in ("neg_nc3", "neg_nc4"):
            with pytest.raises(ValueError, match="one-vs-one"):
                get_scorer(name)(clf, X, y)
    assert get_scorer("neg_nc4")(LinearSVC().fit(X, y), X, y) <= 0
    # two classes: one-vs-one is one-vs-rest, the scorer works
    binary = y < 2
    clf = SVC(kernel="linear").fit(X[binary], y[binary])
    assert get_scorer("neg_nc4")(clf, X[binary], y[binary]) <= 0
    # K = 10: 45 rows; the shape error says why
    X, y = load_digits(return_X_y=True)
    clf = SVC(kernel="linear").fit(X[:400], y[:400])
    with pytest.raises(ValueError, match=r"45 = 10\*9/2 rows is the one-vs-one layout"):
        nc4(X[:400], y[:400], clf.coef_, clf.intercept_)


# ---------------------------------------------------------------------------
# the one private scikit-learn internal: isolated, version-bounded, loud
# ---------------------------------------------------------------------------


def test_scoring_round_internal_is_found_in_the_tested_sklearn():
    # the features of NC scorers in one scoring dict are shared through
    # sknc.utils._sklearn_compat; if scikit-learn changes the internal, fail here
    # (and in test_features_computed_once_per_fold), not with a silent cache miss
    from sknc.utils import _sklearn_compat

    assert _sklearn_compat._CALL_CODE is not None, (
        f"scikit-learn {sklearn.__version__} has no _MultimetricScorer.__call__: "
        "update sknc/utils/_sklearn_compat.py and the bound in pyproject.toml"
    )
    rounds = []

    class Probe:
        def __call__(self, estimator, X, y):
            rounds.append(_sklearn_compat.multimetric_round())
            return 0.0

    X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
    cross_validate(LogisticRegression(), X, y, cv=2, scoring={"a": Probe(), "b": Probe()})
    assert len(rounds) == 4 and all(r is not None for r in rounds), (
        f"scikit-learn {sklearn.__version__} changed _MultimetricScorer.__call__ "
        f"(local {_sklearn_compat._ROUND_LOCAL!r}): update sknc/utils/_sklearn_compat.py"
    )
    assert rounds[0] is rounds[1] and rounds[2] is rounds[3] and rounds[0] is not rounds[2]
    assert Probe()(None, None, None) == 0.0 and rounds[-1] is None  # outside a round


def test_sklearn_version_is_within_the_tested_bound():
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    low, high = re.search(r'"scikit-learn>=([\d.]+),<([\d.]+)"', text).groups()
    version = tuple(int(p) for p in re.findall(r"\d+", sklearn.__version__)[:2])
    as_tuple = lambda v: tuple(int(p) for p in v.split(".")[:2])  # noqa: E731
    assert as_tuple(low) <= version < as_tuple(high)


def test_changed_sklearn_internal_warns_and_scores_stay_right(digits, monkeypatch):
    from sknc.utils import _sklearn_compat

    X, y = digits
    pipe = make_pipeline(CountingPCA(8), LogisticRegression(max_iter=300))
    scoring = {k: get_scorer(v) for k, v in NC_SCORING.items()}
    ref = cross_validate(pipe, X, y, cv=3, scoring=scoring)
    monkeypatch.setattr(_sklearn_compat, "_ROUND_LOCAL", "renamed_in_a_new_release")
    monkeypatch.setattr(_sklearn_compat, "_warned", [])
    CountingPCA.calls = 0
    with pytest.warns(_sklearn_compat.SklearnInternalsWarning, match="tested with"):
        res = cross_validate(pipe, X, y, cv=3, scoring=scoring)
    assert CountingPCA.calls == 3 * len(NC_SCORING)  # no sharing, but no wrong number
    for name in NC_SCORING:
        np.testing.assert_allclose(res[f"test_{name}"], ref[f"test_{name}"], rtol=1e-12)


def test_deprecated_scorer_aliases_warn_and_work(digits):
    import sknc.metrics as metrics

    X, y = digits
    pipe = _pipe().fit(X, y)
    with pytest.warns(FutureWarning, match="nc_scorer was renamed sknc.metrics.make_nc_scorer"):
        old = metrics.nc_scorer("nc1")
    assert old(pipe, X, y) == make_nc_scorer("nc1")(pipe, X, y)
    with pytest.warns(FutureWarning, match="renamed sknc.metrics.make_nc_multimetric_scorer"):
        multi = metrics.make_nc_scoring({"nc1": "neg_nc1"})
    assert multi(pipe, X, y) == make_nc_multimetric_scorer({"nc1": "neg_nc1"})(pipe, X, y)
    assert "nc_scorer" not in metrics.__all__ and "make_nc_scoring" not in metrics.__all__


def test_get_scorer_extends_sklearn_without_changing_it():
    from sklearn.metrics import get_scorer as sk_get_scorer
    from sklearn.metrics import get_scorer_names as sk_names

    ours = set(get_scorer_names()) - set(sk_names())
    assert set(sk_names()) <= set(get_scorer_names())
    assert ours == {"neg_nc1", "neg_cdnv", "neg_nc2", "neg_nc3", "neg_nc4"} | {
        "logme", "hscore", "hscore_shrinkage", "nleep", "transrate", "gbc", "parc",
        "sfda", "pactran", "knn",
    }  # fmt: skip
    for name in sk_names():  # every scikit-learn name keeps its meaning
        assert repr(get_scorer(name)) == repr(sk_get_scorer(name)), name
    for name in ours:
        assert isinstance(get_scorer(name), NCScorer)

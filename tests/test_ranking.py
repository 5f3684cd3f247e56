"""Tests of sknc.model_selection.rank_backbones and rank_correlation."""

import doctest
import sys
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.random_projection import GaussianRandomProjection

from sknc.metrics import NCNotComparableWarning, cdnv, nc1
from sknc.model_selection import BackboneRanking, rank_backbones, rank_correlation
from sknc.utils import UndefinedScoreWarning

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


class NoisyFeatures(TransformerMixin, BaseEstimator):
    """Features = input + fixed noise of a given scale (counts transform calls)."""

    calls = 0

    def __init__(self, noise=1.0):
        self.noise = noise

    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        type(self).calls += 1
        rng = np.random.default_rng(len(X))
        return X + self.noise * rng.normal(size=X.shape)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    K, d, n_per = 5, 8, 60
    centers = rng.normal(scale=2.0, size=(K, d))
    y = np.repeat(np.arange(K), n_per)
    X = centers[y] + 0.5 * rng.normal(size=(len(y), d))
    perm = rng.permutation(len(y))
    return X[perm], y[perm]


def _noise_candidates():
    return {f"noise{s}": NoisyFeatures(noise=s) for s in (0.0, 0.5, 1.5, 3.0, 6.0)}


def test_more_collapse_ranks_higher_and_correlates_with_accuracy(data):
    X, y = data
    result = rank_backbones(_noise_candidates(), X, y, random_state=0)
    assert isinstance(result, BackboneRanking)
    assert result.ranking == ["noise0.0", "noise0.5", "noise1.5", "noise3.0", "noise6.0"]
    assert result.best == "noise0.0"
    table = result.table
    assert [row["rank"] for row in table] == [1, 2, 3, 4, 5]
    nc = np.array([row["nc1"] for row in table])
    acc = np.array([row["accuracy"] for row in table])
    assert np.all(np.diff(nc) > 0)
    rho, p_rho = stats.spearmanr(nc, acc)
    tau, p_tau = stats.kendalltau(nc, acc)
    corr = result.correlations["nc1"]
    assert corr["spearman"] == pytest.approx(rho)
    assert corr["spearman_pvalue"] == pytest.approx(p_rho)
    assert corr["kendall"] == pytest.approx(tau) and corr["kendall_pvalue"] == pytest.approx(p_tau)
    assert corr["spearman"] < -0.8
    cd = np.array([row["cdnv"] for row in table])
    assert result.correlations["cdnv"]["spearman"] == pytest.approx(stats.spearmanr(cd, acc)[0])


# the hand computation of the narrow 'pca3' warns like rank_backbones does
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
def test_table_values_match_hand_computation(data):
    X, y = data
    candidates = {
        "scaled": StandardScaler(),
        "pca3": PCA(3),
        "proj": GaussianRandomProjection(5, random_state=0),
        "identity": FunctionTransformer(),
    }
    with pytest.warns(NCNotComparableWarning, match=r"n_classes - 1 = 4: 'pca3' \(3\)\."):
        result = rank_backbones(candidates, X, y, random_state=3)
    # the hold-out split the helper uses, reproduced by hand
    seed = np.random.RandomState(3).randint(np.iinfo(np.int32).max)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=seed)
    for row in result.table:
        Z = clone(candidates[row["backbone"]]).fit_transform(X, y)
        assert row["nc1"] == pytest.approx(nc1(Z, y), rel=1e-12)
        assert row["cdnv"] == pytest.approx(cdnv(Z, y), rel=1e-12)
        assert row["n_features"] == Z.shape[1]
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        assert row["accuracy"] == pytest.approx(probe.fit(Z[tr], y[tr]).score(Z[te], y[te]))
    assert [r["nc1"] for r in result.table] == sorted(r["nc1"] for r in result.table)
    # candidates were cloned, not fitted in place
    assert not hasattr(candidates["pca3"], "components_")


def test_cross_validation_and_test_set(data):
    X, y = data
    cands = {"a": NoisyFeatures(0.2), "b": NoisyFeatures(2.0), "c": NoisyFeatures(4.0)}
    result = rank_backbones(cands, X, y, cv=3, random_state=1)
    seed = np.random.RandomState(1).randint(np.iinfo(np.int32).max)
    cv = StratifiedKFold(3, shuffle=True, random_state=seed)
    for row in result.table:
        Z = NoisyFeatures(cands[row["backbone"]].noise).fit_transform(X)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        scores = cross_val_score(probe, Z, y, cv=cv)
        assert row["accuracy"] == pytest.approx(scores.mean())
        assert row["accuracy_std"] == pytest.approx(scores.std())
    # with a test set the probe trains on all of X and scores on X_test
    X_test, y_test = X[:100] + 0.1, y[:100]
    custom = LogisticRegression(max_iter=500, C=0.5)
    result = rank_backbones(cands, X, y, X_test=X_test, y_test=y_test, probe=custom)
    for row in result.table:
        model = NoisyFeatures(cands[row["backbone"]].noise).fit(X)
        expected = clone(custom).fit(model.transform(X), y).score(model.transform(X_test), y_test)
        assert row["accuracy"] == pytest.approx(expected)


def test_each_candidate_transforms_once(data):
    X, y = data
    cands = {"a": NoisyFeatures(0.5), "b": NoisyFeatures(2.0)}
    for kwargs in ({}, {"cv": 3}, {"X_test": X[:50], "y_test": y[:50]}, {"accuracy": False}):
        NoisyFeatures.calls = 0
        rank_backbones(cands, X, y, random_state=0, **kwargs)
        per_candidate = 2 if "X_test" in kwargs else 1
        assert NoisyFeatures.calls == 2 * per_candidate


def test_reproducible_with_random_state(data):
    X, y = data
    cands = {"a": NoisyFeatures(1.0), "b": NoisyFeatures(3.0), "c": NoisyFeatures(5.0)}

    def without_time(result):
        return [{k: v for k, v in row.items() if k != "transform_time"} for row in result.table]

    assert without_time(rank_backbones(cands, X, y, random_state=7)) == without_time(
        rank_backbones(cands, X, y, random_state=7)
    )
    accs = {
        tuple(row["accuracy"] for row in rank_backbones(cands, X, y, random_state=s).table)
        for s in range(4)
    }
    assert len(accs) > 1  # the hold-out split depends on random_state


# the hand computation of the narrow 'pca' warns like rank_backbones does
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
def test_refit_false_uses_fitted_candidates(data):
    X, y = data
    pca = PCA(3).fit(X[:100])
    cands = {"pca": pca, "raw": FunctionTransformer().fit(X)}
    with pytest.warns(NCNotComparableWarning, match="'pca' \\(3\\)"):
        result = rank_backbones(cands, X, y, refit=False, accuracy=False)
    row = next(r for r in result.table if r["backbone"] == "pca")
    assert row["nc1"] == pytest.approx(nc1(pca.transform(X), y))
    assert result.correlations == {}
    assert "accuracy" not in row
    with pytest.raises(ValueError, match="No accuracy"):
        result.plot()


def test_records_pandas_plot_repr_verbose(data, capsys):
    X, y = data
    result = rank_backbones(_noise_candidates(), X, y, random_state=0, verbose=True)
    rec = result.to_records()
    fields = ("rank", "backbone", "n_features", "nc1", "cdnv", "accuracy", "transform_time")
    assert rec.dtype.names == fields
    assert rec["backbone"].tolist() == result.ranking
    np.testing.assert_allclose(rec["nc1"], [r["nc1"] for r in result.table])
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            result.to_frame()
    else:
        assert list(result.to_frame()["backbone"]) == result.ranking
    import matplotlib

    matplotlib.use("Agg")
    ax = result.plot()
    assert ax.get_xscale() == "log"
    assert len(ax.collections[0].get_offsets()) == 5
    assert "Spearman" in ax.get_title()
    text = repr(result)
    assert text.startswith("BackboneRanking(rank_by='nc1')") and "nc1 vs accuracy" in text
    assert "rank_backbones" in capsys.readouterr().err


def test_two_candidates_give_nan_correlations(data):
    X, y = data
    cands = {"a": NoisyFeatures(0.1), "b": NoisyFeatures(3.0)}
    result = rank_backbones(cands, X, y, random_state=0)
    assert np.isnan(result.correlations["nc1"]["spearman"])


def test_bad_arguments(data):
    X, y = data
    with pytest.raises(ValueError, match="non-empty dict"):
        rank_backbones({}, X, y)
    with pytest.raises(ValueError, match="no transform method"):
        rank_backbones({"lr": LogisticRegression()}, X, y)
    with pytest.raises(ValueError, match="rank_by"):
        rank_backbones({"a": PCA(2)}, X, y, rank_by="nc7")
    with pytest.raises(ValueError, match="both X_test and y_test"):
        rank_backbones({"a": PCA(2)}, X, y, X_test=X)
    with pytest.raises(ValueError, match="test_size"):
        rank_backbones({"a": PCA(2)}, X, y, test_size=1.5)
    with (
        pytest.raises(ValueError, match="metric must be"),
        pytest.warns(NCNotComparableWarning, match="'a'"),
    ):
        rank_backbones({"a": PCA(2)}, X, y).plot(metric="nc2")


def test_warns_about_candidates_with_fewer_than_k_minus_1_features(data):
    X, y = data  # 5 classes, 8 features
    cands = {"pca2": PCA(2), "pca5": PCA(5), "pca4": PCA(4), "raw": FunctionTransformer()}
    with pytest.warns(NCNotComparableWarning, match="not comparable") as record:
        result = rank_backbones(cands, X, y, random_state=0)
    narrow = [w for w in record if "n_classes - 1" in str(w.message)]
    assert len(narrow) == 1  # one warning naming every narrow candidate
    message = str(narrow[0].message)
    assert "n_classes - 1 = 4: 'pca2' (2), 'pca4' (4)." in message
    assert "'pca5'" not in message and "'raw'" not in message
    assert narrow[0].filename == __file__  # points at the caller
    # the table is complete all the same
    assert sorted(result.ranking) == sorted(cands)
    # candidates with at least K - 1 features: no warning
    for wide in ({"pca5": PCA(5), "raw": FunctionTransformer()}, {"pca5": PCA(5)}):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*n_classes - 1", category=UserWarning)
            rank_backbones(wide, X, y, accuracy=False)


# the example's 'pca9' has K - 1 features: rank_backbones warns, as documented
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
def test_docstring_example():
    from sknc.model_selection import _ranking

    assert doctest.testmod(_ranking).failed == 0


# ---------------------------------------------------------------------------
# rank_correlation: the one NaN / inf policy
# ---------------------------------------------------------------------------
_KEYS = {"spearman", "spearman_pvalue", "kendall", "kendall_pvalue", "n"}


def test_rank_correlation_equals_scipy_on_finite_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=12)
    y = -x + rng.normal(scale=0.5, size=12)
    r = rank_correlation(x, y)
    assert set(r) == _KEYS and r["n"] == 12
    rho, p_rho = stats.spearmanr(x, y)
    tau, p_tau = stats.kendalltau(x, y)
    assert r["spearman"] == rho and r["spearman_pvalue"] == p_rho
    assert r["kendall"] == tau and r["kendall_pvalue"] == p_tau
    assert r["spearman"] < -0.5
    assert all(type(r[k]) is float for k in _KEYS - {"n"}) and type(r["n"]) is int


def test_rank_correlation_drops_non_finite_pairs():
    x = [0.5, np.inf, 1.0, np.nan, 2.0, 4.0, 3.0, -np.inf, 5.0]
    y = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, np.nan, 0.5, 0.6]
    r = rank_correlation(x, y)
    keep = [0, 2, 4, 5, 8]  # both values finite
    xs, ys = np.array(x)[keep], np.array(y)[keep]
    assert r["n"] == 5
    assert r["spearman"] == pytest.approx(stats.spearmanr(xs, ys)[0])
    assert r["kendall"] == pytest.approx(stats.kendalltau(xs, ys)[0])
    assert r["kendall_pvalue"] == pytest.approx(stats.kendalltau(xs, ys)[1])
    # None (NaN after a JSON round trip) is a missing value too
    assert rank_correlation([None if v is np.nan else v for v in x], y) == r


@pytest.mark.parametrize(
    "x, y, n",
    [
        ([], [], 0),
        ([1.0, 2.0], [0.3, 0.1], 2),
        ([1.0, 2.0, np.inf, np.nan], [0.3, 0.1, 0.2, 0.4], 2),  # 2 finite pairs left
        ([1.0, 1.0, 1.0, 1.0], [0.3, 0.1, 0.2, 0.4], 4),  # constant x
        ([1.0, 2.0, 3.0, np.nan], [0.5, 0.5, 0.5, 0.1], 3),  # constant y among finite pairs
    ],
)
def test_rank_correlation_undefined_gives_nan_without_warning(x, y, n):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = rank_correlation(x, y)
    assert set(r) == _KEYS and r["n"] == n
    assert all(np.isnan(r[k]) for k in _KEYS - {"n"})


def test_rank_correlation_bad_input():
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        rank_correlation([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="x must be one-dimensional"):
        rank_correlation(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="y must be a sequence of numbers"):
        rank_correlation([1, 2, 3], ["a", "b", "c"])
    with pytest.raises(ValueError, match="x must be a sequence of numbers"):
        rank_correlation("abc", [1, 2, 3])


def test_ranking_correlations_use_rank_correlation(data):
    X, y = data
    result = rank_backbones(_noise_candidates(), X, y, random_state=0)
    acc = [row["accuracy"] for row in result.table]
    for metric in ("nc1", "cdnv"):
        expected = rank_correlation([row[metric] for row in result.table], acc)
        assert result.correlations[metric] == expected
        assert expected["n"] == 5


# ---------------------------------------------------------------------------
# transferability scores in rank_backbones; ranking statistics; evaluate_rankings
# ---------------------------------------------------------------------------

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from sknc.metrics import logme, minmax_combine, ncti_combine, ncti_parts, sfda  # noqa: E402
from sknc.model_selection import (  # noqa: E402
    evaluate_rankings,
    get_score_names,
    ranking_statistics,
)

SFDA_TABLE = json.loads((Path(__file__).parent / "data" / "sfda_group1_accuracy.json").read_text())


def test_imagenet_prior_reproduces_published_mean_weighted_tau():
    acc = SFDA_TABLE["finetune_accuracy"]
    top1 = SFDA_TABLE["imagenet_top1"]
    assert len(acc) == 11 and all(len(v) == 11 for v in acc.values())
    ev = evaluate_rankings({"imagenet_top1": {ds: top1 for ds in acc}}, acc)
    assert ev.mean["imagenet_top1"]["weighted_tau"] == pytest.approx(0.654, abs=5e-4)
    assert ev.mean["imagenet_top1"]["n_datasets"] == 11
    # per data set it is scipy's weightedtau with its defaults
    for ds, models in acc.items():
        names = list(models)
        expected = stats.weightedtau([top1[m] for m in names], [models[m] for m in names])[0]
        assert ev.per_dataset["imagenet_top1"][ds]["weighted_tau"] == pytest.approx(expected)
    # flowers: resnet152 has the best top-1 but densenet169 the best fine-tuned accuracy
    assert ev.per_dataset["imagenet_top1"]["flowers"]["top1_regret"] == pytest.approx(97.32 - 96.86)
    assert "imagenet_top1" in repr(ev)
    pytest.importorskip("pandas")
    df = ev.to_frame()
    assert set(df["dataset"]) == set(acc) | {"mean"}


def test_evaluation_to_pandas_without_pandas_says_what_to_use(monkeypatch):
    ev = evaluate_rankings(
        {"s": {"d": {"a": 3.0, "b": 1.0, "c": 2.0}}}, {"d": {"a": 0.9, "b": 0.5, "c": 0.7}}
    )
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(ImportError, match="needs pandas.*per_dataset"):
        ev.to_frame()


def test_ranking_statistics_orientation_and_nan():
    acc = [0.9, 0.7, 0.8, 0.6]
    good = ranking_statistics([4.0, 2.0, 3.0, 1.0], acc)
    assert good["weighted_tau"] == pytest.approx(1.0)
    assert good["kendall"] == good["spearman"] == pytest.approx(1.0)
    assert good["pearson"] == pytest.approx(stats.pearsonr([4, 2, 3, 1], acc)[0])
    assert good["top1_regret"] == 0.0
    lower = ranking_statistics([1.0, 3.0, 2.0, 4.0], acc, higher_is_better=False)
    assert lower["weighted_tau"] == pytest.approx(1.0) and lower["top1_regret"] == 0.0
    wrong = ranking_statistics([1.0, 3.0, 2.0, 4.0], acc)
    assert wrong["kendall"] == pytest.approx(-1.0)
    assert wrong["top1_regret"] == pytest.approx(0.3)
    with_nan = ranking_statistics([4.0, np.nan, 3.0, 1.0], acc)
    assert with_nan["n"] == 3
    const = ranking_statistics([1.0, 1.0, 1.0, 1.0], acc)
    assert np.isnan(const["weighted_tau"]) and const["top1_regret"] == pytest.approx(0.9 - 0.75)
    with pytest.raises(ValueError, match="same length"):
        ranking_statistics([1.0, 2.0], acc)


def test_evaluate_rankings_errors():
    acc = {"a": {"m1": 1.0, "m2": 2.0}}
    with pytest.raises(ValueError, match="data set"):
        evaluate_rankings({"s": {"b": {"m1": 1.0, "m2": 2.0}}}, acc)
    with pytest.raises(ValueError, match="lacks model"):
        evaluate_rankings({"s": {"a": {"m1": 1.0}}}, acc)
    # nc1 is lower-is-better by default
    ev = evaluate_rankings({"nc1": {"a": {"m1": 2.0, "m2": 1.0}}}, acc)
    assert ev.per_dataset["nc1"]["a"]["top1_regret"] == 0.0


def test_rank_backbones_every_score_from_one_extraction(data):
    X, y = data
    cands = {f"n{s}": NoisyFeatures(noise=s) for s in (0.2, 1.0, 3.0, 6.0)}
    NoisyFeatures.calls = 0
    prior = {"n0.2": 4.0, "n1.0": 3.0, "n3.0": 1.0, "n6.0": 2.0}
    # LEEP and NCE need the source classifier's outputs, which these candidates lack
    with pytest.warns(UndefinedScoreWarning, match="needs the candidate's pretrained classifier"):
        result = rank_backbones(
            cands,
            X,
            y,
            random_state=0,
            scores=get_score_names(),
            prior=prior,
            combiners={
                "logme+sfda": lambda v: minmax_combine(
                    {m: {"a": d["logme"], "b": d["sfda"]} for m, d in v.items()}
                )
            },
        )
    assert NoisyFeatures.calls == len(cands)
    assert set(result.evaluation) == set(get_score_names()) | {"prior", "logme+sfda"}
    parts = {}
    for row in result.table:
        Z = NoisyFeatures(cands[row["backbone"]].noise).fit_transform(X)
        assert row["logme"] == pytest.approx(logme(Z, y), rel=1e-12)
        assert row["sfda"] == pytest.approx(sfda(Z, y), rel=1e-12)
        assert row["prior"] == prior[row["backbone"]]
        parts[row["backbone"]] = ncti_parts(Z, y)
    ncti = ncti_combine(parts)
    for row in result.table:
        assert row["ncti"] == pytest.approx(ncti[row["backbone"]])
    assert result.parts["ncti"].keys() == set(cands)
    # every statistic is the one ranking_statistics gives against the probe accuracy
    acc = [row["accuracy"] for row in result.table]
    ev = ranking_statistics([row["logme"] for row in result.table], acc)
    assert result.evaluation["logme"] == ev
    ev = ranking_statistics([row["nc1"] for row in result.table], acc, higher_is_better=False)
    assert result.evaluation["nc1"] == ev
    assert result.evaluation["prior"]["n"] == 4
    assert set(result.score_time) >= set(get_score_names())
    assert "weighted tau" in repr(result)


def test_rank_backbones_rank_by_ground_truth_and_user_scores(data):
    X, y = data
    cands = {f"n{s}": NoisyFeatures(noise=s) for s in (0.2, 1.0, 3.0)}
    truth = {"n0.2": 0.5, "n1.0": 0.9, "n3.0": 0.7}
    result = rank_backbones(
        cands,
        X,
        y,
        accuracy=False,
        scores={"logme": "logme", "spread": lambda Z, y: -float(Z.std())},
        rank_by="logme",
        ground_truth=truth,
        random_state=0,
    )
    values = [row["logme"] for row in result.table]
    assert values == sorted(values, reverse=True)
    assert "accuracy" not in result.table[0]
    assert result.table[0]["ground_truth"] == truth[result.table[0]["backbone"]]
    truth_list = [row["ground_truth"] for row in result.table]
    assert result.evaluation["spread"] == ranking_statistics(
        [row["spread"] for row in result.table], truth_list
    )
    ax = result.plot(metric="logme")
    assert "weighted tau" in ax.get_title()


def test_rank_backbones_score_errors_and_undefined_scores(data):
    X, y = data
    cands = {"a": NoisyFeatures(0.5), "b": NoisyFeatures(2.0)}
    with pytest.raises(ValueError, match="Unknown score"):
        rank_backbones(cands, X, y, scores=["nc1", "bogus"])
    with pytest.raises(ValueError, match="rank_by"):
        rank_backbones(cands, X, y, scores=["logme"])
    with pytest.raises(ValueError, match="prior lacks"):
        rank_backbones(cands, X, y, prior={"a": 1.0})
    with pytest.raises(ValueError, match="callable"):
        rank_backbones(cands, X, y, scores={"x": 3})
    # a score undefined for a candidate is NaN with a warning naming both
    with pytest.warns(UndefinedScoreWarning, match="'knn' is undefined for candidate 'a'"):
        result = rank_backbones(
            {"a": FunctionTransformer()},
            X[:4],
            np.array([0, 0, 1, 1]),
            accuracy=False,
            scores=["nc1", "knn"],
        )
    assert np.isnan(result.table[0]["knn"])


def _constant_features(X):
    return np.zeros((len(X), 3))


def test_rank_backbones_set_level_score_undefined_for_one_candidate(data):
    """A candidate whose NCTI/ETran parts are undefined (constant features) is NaN with a
    warning; the others are normalised over the candidates where the parts exist."""
    X, y = data
    cands = {
        "a": NoisyFeatures(0.5),
        "b": NoisyFeatures(2.0),
        "dead": FunctionTransformer(_constant_features),
    }
    with pytest.warns(UndefinedScoreWarning, match="is undefined for candidate 'dead'") as rec:
        result = rank_backbones(
            cands, X, y, scores=["ncti", "etran"], rank_by="ncti", accuracy=False
        )
    assert {str(w.message).split("'")[1] for w in rec} == {"ncti", "etran"}
    rows = {row["backbone"]: row for row in result.table}
    assert np.isnan(rows["dead"]["ncti"]) and np.isnan(rows["dead"]["etran"])
    parts = {k: ncti_parts(NoisyFeatures(cands[k].noise).fit_transform(X), y) for k in "ab"}
    expected = ncti_combine(parts)
    for k in "ab":
        assert rows[k]["ncti"] == pytest.approx(expected[k])


# ---------------------------------------------------------------------------
# sknc rank
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("rank_images")
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"c{c}").mkdir()
        for i in range(6):
            base = np.zeros((16, 16, 3), np.uint8)
            base[..., c] = 150
            pixels = (base + rng.integers(0, 100, (16, 16, 3))).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sknc_rank_command(image_folder, tmp_path, capsys):
    from sknc.cli import main

    out = tmp_path / "out"
    argv = ["rank", "--model", "test_resnet", "--model", "test_efficientnet"]
    argv += ["--data", str(image_folder), "--input-size", "16", "--probe", "-q"]
    argv += ["--scores", "nc1,logme,sfda,ncti", "--out", str(out)]
    assert main(argv) in (0, None)
    printed = capsys.readouterr().out
    assert "sknc rank: report written" in printed and "logme: weighted tau" in printed
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json", "scores.png"]
    res = json.loads((out / "results.json").read_text())
    assert res["scores"] == ["nc1", "logme", "sfda", "ncti"]
    assert {row["backbone"] for row in res["table"]} == {"test_resnet", "test_efficientnet"}
    assert set(res["evaluation"]) == {"nc1", "logme", "sfda", "ncti"}
    assert all(0 <= row["accuracy"] <= 1 for row in res["table"])
    assert "| logme |" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "test_resnet"], "at least two models"),
        (["--model", "test_resnet", "--model", "test_resnet"], "distinct"),
        (["--model", "test_resnet", "--model", "test_vit=/nonexistent.pth"], "does not exist"),
        (["--model", "test_resnet", "--model", "test_vit", "--scores", "nc1,bogus"], "unknown"),
    ],
)
def test_sknc_rank_usage_errors(image_folder, tmp_path, capsys, extra, message):
    from sknc.cli import main

    argv = ["rank", *extra, "--data", str(image_folder), "--out", str(tmp_path / "o"), "-q"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

"""One style for sknc's result objects: as_dict, to_frame, plot(ax=None), repr."""

import json
import sys

import matplotlib
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from sknc.metrics import CollapseReport, collapse_report
from sknc.model_selection import (
    BackboneRanking,
    EpisodeSplit,
    FewShotResult,
    RankingEvaluation,
    evaluate_episodes,
    evaluate_rankings,
    rank_backbones,
)

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 15)
    X = rng.normal(size=(60, 6)) + 3 * rng.normal(size=(4, 6))[y]
    report = collapse_report(X, y)
    fewshot = evaluate_episodes(
        X, y, EpisodeSplit(n_way=3, n_shot=1, n_query=4, n_episodes=30, random_state=0)
    )
    ranking = rank_backbones(
        {"scaled": StandardScaler(), "pca": PCA(5, random_state=0)}, X, y, random_state=0
    )
    acc = {"a": {"m1": 90.0, "m2": 80.0, "m3": 85.0}, "b": {"m1": 70.0, "m2": 75.0, "m3": 60.0}}
    prior = {"m1": 76.1, "m2": 71.9, "m3": 73.3}
    evaluation = evaluate_rankings({"prior": {"a": prior, "b": prior}}, acc)
    return {
        CollapseReport: report,
        FewShotResult: fewshot,
        BackboneRanking: ranking,
        RankingEvaluation: evaluation,
    }


CLASSES = [CollapseReport, FewShotResult, BackboneRanking, RankingEvaluation]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_as_dict_is_plain_and_json_ready(results, cls):
    result = results[cls]
    assert isinstance(result, cls)
    out = result.as_dict()
    assert isinstance(out, dict) and out
    assert json.loads(json.dumps(out, allow_nan=True)).keys() == out.keys()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_to_frame_and_its_error_without_pandas(results, cls, monkeypatch):
    pd = pytest.importorskip("pandas")
    result = results[cls]
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) >= 1
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"to_frame\(\) needs pandas.*instead"):
        result.to_frame()


@pytest.mark.parametrize("cls", [BackboneRanking, RankingEvaluation], ids=lambda c: c.__name__)
def test_to_pandas_is_a_deprecated_alias(results, cls):
    pytest.importorskip("pandas")
    result = results[cls]
    with pytest.warns(FutureWarning, match=f"{cls.__name__}.to_pandas was renamed"):
        old = result.to_pandas()
    assert old.equals(result.to_frame())


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_plot_draws_on_the_given_axes_and_returns_them(results, cls):
    import matplotlib.pyplot as plt

    result = results[cls]
    fig, ax = plt.subplots()
    assert result.plot(ax=ax) is ax
    assert ax.has_data()
    new = result.plot()
    assert new is not ax and new.figure is not fig
    plt.close("all")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_repr_starts_with_the_class_name(results, cls):
    text = repr(results[cls])
    assert text.startswith(f"{cls.__name__}("), text
    assert text.split("\n")[0].endswith(")")


def test_values_survive_as_dict(results):
    report = results[CollapseReport]
    assert report.as_dict()["nc1"] == report.nc1
    fewshot = results[FewShotResult]
    assert fewshot.to_frame()["accuracy"].tolist() == fewshot.scores.tolist()
    assert "5-way" not in repr(fewshot) and "3-way 1-shot:" in repr(fewshot)
    ranking = results[BackboneRanking]
    assert ranking.as_dict()["ranking"] == ranking.ranking
    evaluation = results[RankingEvaluation]
    assert evaluation.as_dict()["mean"]["prior"]["weighted_tau"] == pytest.approx(
        evaluation.mean["prior"]["weighted_tau"]
    )
    with pytest.raises(ValueError, match="statistic must be one of"):
        evaluation.plot(statistic="tau")

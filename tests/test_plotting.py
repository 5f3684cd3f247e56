"""Tests of sknc.plotting."""

import doctest
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

import sknc.plotting
from sknc.plotting import (
    plot_cdnv_curves,
    plot_fewshot_vs_cdnv,
    plot_finetune_comparison,
    plot_layerwise_nc,
    plot_nc_vs_accuracy,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_docstring_examples():
    result = doctest.testmod(sknc.plotting, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_cdnv_curves_draws_one_line_per_curve_on_given_axes():
    fig = Figure()
    ax = fig.subplots()
    curves = {
        "source train": [2.0, 0.5, 0.2],
        "source test": [1.5, 0.6, 0.3],
        "novel classes": [2.5, 0.9, 0.5],
    }
    out = plot_cdnv_curves([0, 1, 2], curves, ax=ax)
    assert out is ax
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == list(curves)
    for line, values in zip(lines, curves.values()):
        np.testing.assert_allclose(line.get_ydata(), values)
        np.testing.assert_allclose(line.get_xdata(), [0, 1, 2])
    assert ax.get_yscale() == "log"  # positive values spanning more than 3x
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel().startswith("CDNV")


def test_cdnv_curves_linear_scale_and_gaps():
    ax = plot_cdnv_curves([1, 2, 3], {"a": [1.0, None, 1.2]}, ylabel="NC1")
    assert isinstance(ax, Axes)
    assert ax.get_yscale() == "linear"  # narrow range
    assert np.isnan(ax.get_lines()[0].get_ydata()[1])
    assert ax.get_ylabel().startswith("NC1")
    ax = plot_cdnv_curves([1, 2], {"a": [0.0, 10.0]})
    assert ax.get_yscale() == "linear"  # a zero: no log axis
    ax = plot_cdnv_curves([1, 2], {"a": [0.1, 10.0]}, log=False)
    assert ax.get_yscale() == "linear"


@pytest.mark.parametrize(
    "epochs, curves, match",
    [
        ([0, 1], {"a": [1.0, 2.0, 3.0]}, "has 3 values, expected 2"),
        ([0, 1], {}, "non-empty dict"),
        ([0, 1], [[1.0, 2.0]], "non-empty dict"),
        ([[0, 1]], {"a": [1.0, 2.0]}, "one-dimensional"),
        ([0, 1], {"a": ["x", "y"]}, "sequence of numbers"),
    ],
)
def test_cdnv_curves_bad_input(epochs, curves, match):
    with pytest.raises(ValueError, match=match):
        plot_cdnv_curves(epochs, curves)


def test_fewshot_vs_cdnv_plots_percent_with_error_bars():
    cdnv = [2.0, 1.0, 0.4]
    acc = {"5-way 1-shot": [0.3, 0.6, 0.9], "5-way 5-shot": [0.4, 0.8, 0.95]}
    ci = {"5-way 1-shot": [0.05, 0.04, 0.02], "5-way 5-shot": [0.03, 0.02, 0.01]}
    ax = plot_fewshot_vs_cdnv(cdnv, acc, ci95=ci, labels=["0", "1", "2"])
    containers = ax.containers
    assert len(containers) == 2
    for container, name in zip(containers, acc):
        line = container.lines[0]
        np.testing.assert_allclose(line.get_xdata(), cdnv)
        np.testing.assert_allclose(line.get_ydata(), 100 * np.array(acc[name]))
        assert container.has_yerr
        segments = container.lines[2][0].get_segments()
        half = [(s[1, 1] - s[0, 1]) / 2 for s in segments]
        np.testing.assert_allclose(half, 100 * np.array(ci[name]))
    assert sorted(t.get_text() for t in ax.texts) == ["0", "1", "2"]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(acc)


def test_fewshot_vs_cdnv_bad_input():
    with pytest.raises(ValueError, match="ci95 has no entry"):
        plot_fewshot_vs_cdnv([1, 2], {"a": [0.1, 0.2]}, ci95={"b": [0.0, 0.0]})
    with pytest.raises(ValueError, match="labels has 1 entries"):
        plot_fewshot_vs_cdnv([1, 2], {"a": [0.1, 0.2]}, labels=["x"])
    with pytest.raises(ValueError, match="expected 2"):
        plot_fewshot_vs_cdnv([1, 2], {"a": [0.1]})


def test_nc_vs_accuracy_title_has_rank_correlations():
    rng = np.random.default_rng(0)
    nc = rng.uniform(0.5, 5.0, size=8)
    acc = np.clip(1.0 - 0.1 * nc + rng.normal(0, 0.05, size=8), 0, 1)
    ax = plot_nc_vs_accuracy(nc, acc, labels=[f"ep {i}" for i in range(8)])
    rho = stats.spearmanr(nc, acc)[0]
    tau = stats.kendalltau(nc, acc)[0]
    assert ax.get_title() == f"Spearman ρ = {rho:.2f}, Kendall τ = {tau:.2f}"
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], nc)
    np.testing.assert_allclose(offsets[:, 1], 100 * acc)
    # labels of crowded points are left out; the first and last are always drawn
    texts = [t.get_text() for t in ax.texts]
    assert texts[:2] == ["ep 0", "ep 7"] and 2 <= len(texts) <= 8
    ax.figure.canvas.draw()
    where = np.array([ax.transData.transform(t.xy) for t in ax.texts])
    gaps = [np.hypot(*(a - b)) for i, a in enumerate(where) for b in where[i + 1 :]]
    assert min(gaps) >= 18
    assert ax.get_xscale() == "log"
    assert "NC1" in ax.get_xlabel()


def test_empty_labels_are_not_drawn_and_log_ticks_are_plain():
    ax = plot_nc_vs_accuracy([10.0, 3.0, 1.0], [0.3, 0.6, 0.9], labels=["ep 0", "", "ep 2"])
    assert [t.get_text() for t in ax.texts] == ["ep 0", "ep 2"]
    crowded = plot_nc_vs_accuracy(
        [1.0, 1.0001, 1.0002, 5.0], [0.9, 0.9, 0.9, 0.2], labels=["a", "b", "c", "d"]
    )
    assert [t.get_text() for t in crowded.texts] == ["a", "d"]
    ax.figure.canvas.draw()
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "10" in ticks and not any("times" in t or "^" in t for t in ticks)
    ax = plot_fewshot_vs_cdnv([2.0, 1.0, 0.4], {"a": [0.3, 0.6, 0.9]}, labels=[None, "x", ""])
    assert [t.get_text() for t in ax.texts] == ["x"]


def test_nc_vs_accuracy_too_few_points_gives_nan_title():
    ax = plot_nc_vs_accuracy([1.0, 2.0], [0.5, 0.4], metric="CDNV")
    assert ax.get_title() == "Spearman ρ = nan, Kendall τ = nan"
    assert "CDNV" in ax.get_xlabel()
    # a missing point is ignored by the correlation
    ax = plot_nc_vs_accuracy([3.0, 2.0, 1.0, None], [0.1, 0.2, 0.3, 0.9])
    assert ax.get_title() == "Spearman ρ = -1.00, Kendall τ = -1.00"
    # so is an infinite one (e.g. the CDNV of coinciding class means)
    ax = plot_nc_vs_accuracy([3.0, np.inf, 2.0, 1.0], [0.1, 0.9, 0.2, 0.3], metric="CDNV")
    assert ax.get_title() == "Spearman ρ = -1.00, Kendall τ = -1.00"


def test_nc_vs_accuracy_bad_input():
    with pytest.raises(ValueError, match="expected 3"):
        plot_nc_vs_accuracy([1.0, 2.0, 3.0], [0.5, 0.4])
    with pytest.raises(ValueError, match="labels has 2 entries"):
        plot_nc_vs_accuracy([1.0, 2.0, 3.0], [0.5, 0.4, 0.3], labels=["a", "b"])


def test_finetune_comparison_bars():
    methods = ["linear-probe", "layer-ft", "scl-ft", "full-ft"]
    acc = [0.7, 0.9, 0.92, 0.95]
    params = [5130, 924170, 973834, 4927618]
    secs = [1.2, 11.0, 8.2, 25.0]
    fig = plot_finetune_comparison(methods, acc, params, secs)
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 3
    for ax, values in zip(axes, (100 * np.array(acc), params, secs)):
        heights = [p.get_height() for p in ax.patches]
        np.testing.assert_allclose(heights, values)
        assert [t.get_text() for t in ax.get_xticklabels()] == methods
    assert axes[1].get_yscale() == "log"
    assert axes[1].texts[0].get_text() == "5,130"
    lo, hi = axes[0].get_ylim()
    assert lo <= 70 and hi >= 95


def test_finetune_comparison_on_given_axes_and_errors():
    fig = Figure()
    axes = fig.subplots(1, 3)
    assert plot_finetune_comparison(["a"], [0.5], [10], [1.0], axes=axes) is fig
    with pytest.raises(ValueError, match="3 Axes"):
        plot_finetune_comparison(["a"], [0.5], [10], [1.0], axes=axes[:2])
    with pytest.raises(ValueError, match="methods is empty"):
        plot_finetune_comparison([], [], [], [])
    with pytest.raises(ValueError, match="expected 2"):
        plot_finetune_comparison(["a", "b"], [0.5], [10, 20], [1.0, 2.0])


def test_layerwise_nc_one_panel_per_metric_with_highlight():
    layers = ["act1", "layer1", "layer2", "penultimate"]
    metrics = {
        "NC1": [50.0, 20.0, 5.0, 2.0],
        "CDNV": [3.0, 2.0, 1.0, 0.5],
        "NC2": [1.2, 1.1, 0.9, 0.8],
    }
    fig = plot_layerwise_nc(layers, metrics, highlight="layer1")
    assert len(fig.axes) == 3
    for ax, (name, values) in zip(fig.axes, metrics.items()):
        assert ax.get_title().startswith(name)
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), values)
        assert [t.get_text() for t in ax.get_xticklabels()] == layers
        star = ax.get_lines()[-1]
        assert star.get_marker() == "*"
        np.testing.assert_allclose(star.get_ydata(), [values[1]])
    assert fig.axes[0].get_yscale() == "log"
    assert fig.axes[2].get_yscale() == "linear"


def test_layerwise_nc_marks_values_that_are_not_comparable():
    layers = ["act1", "layer1", "layer2", "penultimate"]
    nc1 = [50.0, 20.0, 5.0, 2.0]
    fig = plot_layerwise_nc(
        layers, {"NC1": nc1, "CDNV": [3.0, 2.0, 1.0, 0.5]}, not_comparable={"NC1": ["act1"]}
    )
    ax_nc1, ax_cdnv = fig.axes
    line, hollow = ax_nc1.get_lines()[:2]
    np.testing.assert_allclose(line.get_ydata(), [np.nan, 20.0, 5.0, 2.0])
    np.testing.assert_allclose(hollow.get_xdata(), [0])
    np.testing.assert_allclose(hollow.get_ydata(), [50.0])
    assert hollow.get_markerfacecolor() == "white"
    assert "not comparable" in ax_nc1.get_legend().get_texts()[0].get_text()
    assert ax_cdnv.get_legend() is None
    np.testing.assert_allclose(ax_cdnv.get_lines()[0].get_ydata(), [3.0, 2.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="unknown layers"):
        plot_layerwise_nc(layers, {"NC1": nc1}, not_comparable={"NC1": ["nope"]})
    with pytest.raises(ValueError, match="not one of the metrics"):
        plot_layerwise_nc(layers, {"NC1": nc1}, not_comparable={"NC2": ["act1"]})


def test_layerwise_nc_errors():
    with pytest.raises(ValueError, match="not one of the layers"):
        plot_layerwise_nc(["a", "b"], {"NC1": [1.0, 2.0]}, highlight="c")
    with pytest.raises(ValueError, match="layers is empty"):
        plot_layerwise_nc([], {"NC1": []})
    fig = Figure()
    with pytest.raises(ValueError, match="2 Axes"):
        plot_layerwise_nc(["a"], {"NC1": [1.0], "NC2": [1.0]}, axes=[fig.subplots()])


def test_importing_plotting_does_not_import_pyplot():
    import subprocess
    import sys

    code = (
        "import sys, sknc.plotting; "
        "print('matplotlib.pyplot' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_ranking_plot_and_plot_nc_vs_accuracy_are_one_figure():
    """BackboneRanking.plot draws with plot_nc_vs_accuracy's scales and units."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import FunctionTransformer

    from sknc.model_selection import rank_backbones

    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    cands = {"raw": FunctionTransformer(), "pca32": PCA(32), "pca12": PCA(12), "pca10": PCA(10)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranking = rank_backbones(cands, X, y, random_state=0)
    a = ranking.plot()
    nc1 = [row["nc1"] for row in ranking.table]
    acc = [row["accuracy"] for row in ranking.table]
    b = plot_nc_vs_accuracy(nc1, acc, labels=ranking.ranking)
    np.testing.assert_allclose(a.collections[0].get_offsets(), b.collections[0].get_offsets())
    assert a.get_xscale() == b.get_xscale()
    assert a.get_ylabel() == b.get_ylabel() == "linear-probe accuracy (%)"
    assert a.get_xlabel() == b.get_xlabel()
    assert max(p[1] for p in a.collections[0].get_offsets()) > 1  # percent, not a fraction

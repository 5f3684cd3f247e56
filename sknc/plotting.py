"""Figures for neural-collapse experiments (matplotlib).

Every function draws on axes you give it (``ax=`` or ``axes=``) or, when you
give none, on a new figure made with :func:`matplotlib.pyplot.subplots`, and
returns what it drew on. Inputs are plain sequences (lists, numpy arrays), so
the functions work on the ``results.json`` written by ``sknc demo`` and
``sknc evaluate`` as well as on your own measurements.

- :func:`plot_cdnv_curves`: a collapse metric per epoch for several feature
  sets (Galanti et al.'s CDNV on source-train, source-test and novel-class
  features);
- :func:`plot_fewshot_vs_cdnv`: few-shot accuracy (with 95% confidence
  intervals) against CDNV;
- :func:`plot_nc_vs_accuracy`: collapse against linear-probe accuracy, with
  the rank correlation in the title (Li et al.'s "more collapse, better
  transfer");
- :func:`plot_finetune_comparison`: accuracy, trainable parameters and
  training time of fine-tuning methods;
- :func:`plot_layerwise_nc`: NC1, CDNV and NC2 of the features of every block
  of a network.

matplotlib is imported when a function is called, not with this module.
"""

import numpy as np

from .utils._plotting import _annotate_apart, _as_1d, _check_mapping, _log_if_positive, _new_axes

__all__ = [
    "plot_cdnv_curves",
    "plot_finetune_comparison",
    "plot_fewshot_vs_cdnv",
    "plot_layerwise_nc",
    "plot_nc_vs_accuracy",
]


def plot_cdnv_curves(epochs, curves, *, ylabel="CDNV", log=True, ax=None):
    """Plot a collapse metric per epoch, one line per feature set.

    Galanti et al. (ICLR 2022) show three curves for a network trained on
    source classes: the CDNV of its features on the source training samples,
    on held-out samples of the source classes and on samples of novel
    classes. All three fall during training when collapse generalises.

    Parameters
    ----------
    epochs : sequence of int of shape (n_epochs,)
        The x values (0 for the initial weights, if measured).
    curves : dict of str to sequence of float
        Label -> one value per epoch, e.g. ``{"source train": [...],
        "source test": [...], "novel classes": [...]}``. None or NaN values
        leave a gap.
    ylabel : str, default="CDNV"
        Label of the y axis (e.g. ``"NC1"`` to plot NC1 with this function).
    log : bool, default=True
        Use a logarithmic y axis when all values are positive and span more
        than a factor of three.
    ax : matplotlib Axes or None, default=None
        Where to draw; None creates a new figure.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sknc.plotting import plot_cdnv_curves
    >>> ax = plot_cdnv_curves([0, 1, 2], {"source train": [1.2, 0.5, 0.2],
    ...                                   "novel classes": [1.3, 0.8, 0.6]})
    >>> [line.get_label() for line in ax.get_lines()]
    ['source train', 'novel classes']
    """
    x = _as_1d(epochs, "epochs")
    curves = _check_mapping(curves, "curves")
    ax = _new_axes(ax)
    every = []
    for label, values in curves.items():
        y = _as_1d(values, f"curves[{label!r}]", length=x.shape[0])
        every.append(y)
        ax.plot(x, y, marker="o", markersize=3, label=str(label))
    if log:
        _log_if_positive(ax, np.concatenate(every))
    if np.all(np.isfinite(x)) and np.all(x == np.round(x)):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{ylabel} (lower = more collapse)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def plot_fewshot_vs_cdnv(cdnv, accuracies, *, ci95=None, labels=None, log=True, ax=None):
    """Plot few-shot accuracy against the CDNV of the same features.

    One line per protocol (e.g. 5-way 1-shot, 5-way 5-shot), points joined in
    the given order (e.g. epochs), with 95% confidence intervals as error
    bars. Galanti et al.'s claim: lower CDNV on the novel classes goes with
    higher nearest-class-centre few-shot accuracy.

    Parameters
    ----------
    cdnv : sequence of float of shape (n_points,)
        CDNV of the features the episodes are drawn from (x axis).
    accuracies : dict of str to sequence of float
        Protocol label -> mean accuracy (in [0, 1]) at each point; plotted in
        percent.
    ci95 : dict of str to sequence of float or None, default=None
        Same keys: half-width of the 95% confidence interval (in [0, 1]).
    labels : sequence of str or None, default=None
        Annotation of each point (e.g. the epoch), drawn next to the points
        of the first protocol; empty strings or None are not drawn, nor are
        labels whose point is too close to one already labelled.
    log : bool, default=True
        Logarithmic x axis when the CDNV values span more than a factor of
        three.
    ax : matplotlib Axes or None, default=None
        Where to draw; None creates a new figure.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sknc.plotting import plot_fewshot_vs_cdnv
    >>> ax = plot_fewshot_vs_cdnv([1.3, 0.8, 0.5], {"5-shot": [0.6, 0.8, 0.9]},
    ...                           ci95={"5-shot": [0.02, 0.02, 0.01]}, labels=["0", "1", "2"])
    >>> ax.get_ylabel()
    'few-shot accuracy (%)'
    """
    x = _as_1d(cdnv, "cdnv")
    accuracies = _check_mapping(accuracies, "accuracies")
    if ci95 is not None:
        ci95 = _check_mapping(ci95, "ci95")
        missing = sorted(set(accuracies) - set(ci95), key=str)
        if missing:
            raise ValueError(f"ci95 has no entry for {missing}.")
    if labels is not None and len(labels) != x.shape[0]:
        raise ValueError(f"labels has {len(labels)} entries, expected {x.shape[0]}.")
    ax = _new_axes(ax)
    for i, (name, values) in enumerate(accuracies.items()):
        y = 100 * _as_1d(values, f"accuracies[{name!r}]", length=x.shape[0])
        err = None
        if ci95 is not None:
            err = 100 * _as_1d(ci95[name], f"ci95[{name!r}]", length=x.shape[0])
        ax.errorbar(x, y, yerr=err, marker="o", markersize=4, capsize=3, label=str(name))
        if i == 0:
            first = y
    if log:
        _log_if_positive(ax, x, axis="x")
    if labels is not None:
        _annotate_apart(ax, x, first, labels, (4, -10), fontsize=7, color="0.35")
    ax.set_xlabel("CDNV (lower = more collapse)")
    ax.set_ylabel("few-shot accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def plot_nc_vs_accuracy(nc, accuracy, *, labels=None, metric="NC1", log=True, ax=None):
    """Scatter a collapse metric against accuracy, rank correlation in the title.

    Li et al. (TMLR 2024): the lower the NC1 of a backbone's frozen features
    on the downstream training data, the higher its linear-probe accuracy.
    The title gives Spearman's rho and Kendall's tau over the points
    (:func:`sknc.model_selection.rank_correlation`: points with a NaN or
    infinite value are left out, NaN with fewer than three points left);
    negative values agree with the claim.

    Parameters
    ----------
    nc : sequence of float of shape (n_points,)
        The collapse metric of each candidate (x axis).
    accuracy : sequence of float of shape (n_points,)
        Its accuracy in [0, 1] (y axis, plotted in percent).
    labels : sequence of str or None, default=None
        Name of each candidate, written next to its point; empty strings or
        None are not drawn, nor are labels whose point is too close to one
        already labelled.
    metric : str, default="NC1"
        Name of the metric for the axis label.
    log : bool, default=True
        Logarithmic x axis when the values span more than a factor of three.
    ax : matplotlib Axes or None, default=None
        Where to draw; None creates a new figure.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sknc.plotting import plot_nc_vs_accuracy
    >>> ax = plot_nc_vs_accuracy([3.0, 1.0, 0.5], [0.6, 0.8, 0.9], labels=["a", "b", "c"])
    >>> ax.get_title()
    'Spearman ρ = -1.00, Kendall τ = -1.00'
    """
    from .model_selection._plot import plot_score_vs_accuracy

    return plot_score_vs_accuracy(nc, accuracy, labels=labels, metric=metric, log=log, ax=ax)


def plot_finetune_comparison(methods, accuracy, trainable_params, seconds, *, axes=None):
    """Bar charts comparing fine-tuning methods: accuracy, trainable parameters, time.

    Parameters
    ----------
    methods : sequence of str of shape (n_methods,)
        Method names (e.g. ``"linear-probe"``, ``"layer-ft"``, ``"scl-ft"``,
        ``"full-ft"``).
    accuracy : sequence of float
        Test accuracy of each method in [0, 1] (plotted in percent).
    trainable_params : sequence of int
        Number of trained parameters of each method (log scale).
    seconds : sequence of float
        Training time of each method.
    axes : sequence of three matplotlib Axes or None, default=None
        Where to draw the three panels; None creates a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure of the axes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sknc.plotting import plot_finetune_comparison
    >>> fig = plot_finetune_comparison(["linear-probe", "full-ft"], [0.8, 0.9],
    ...                                [5130, 4900000], [1.5, 20.0])
    >>> len(fig.axes)
    3
    """
    names = [str(m) for m in methods]
    if not names:
        raise ValueError("methods is empty.")
    n = len(names)
    acc = 100 * _as_1d(accuracy, "accuracy", length=n)
    params = _as_1d(trainable_params, "trainable_params", length=n)
    secs = _as_1d(seconds, "seconds", length=n)
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 3, figsize=(11, 3.6), layout="constrained")
    axes = list(np.ravel(axes))
    if len(axes) != 3:
        raise ValueError(f"axes must hold 3 Axes, got {len(axes)}.")
    colors = [f"C{i}" for i in range(n)]
    pos = np.arange(n)
    panels = [
        (acc, "test accuracy (%)", "{:.1f}", False),
        (params, "trainable parameters", "{:,.0f}", True),
        (secs, "training time (s)", "{:.1f}", False),
    ]
    for ax, (values, title, fmt, log) in zip(axes, panels):
        bars = ax.bar(pos, np.nan_to_num(values), color=colors)
        ax.set_xticks(pos, names, rotation=20, ha="right")
        ax.set_title(title)
        if log and np.all(values[np.isfinite(values)] > 0):
            ax.set_yscale("log")
        ax.bar_label(
            bars,
            labels=[fmt.format(v) if np.isfinite(v) else "n/a" for v in values],
            fontsize=7,
            padding=2,
        )
        ax.margins(y=0.15)
        ax.grid(True, axis="y", alpha=0.3)
    finite = acc[np.isfinite(acc)]
    if finite.size:
        low = max(0.0, finite.min() - 10)
        axes[0].set_ylim(low, min(100.0, finite.max() + 5) if finite.max() < 100 else 102)
    return axes[0].figure


def plot_layerwise_nc(layers, metrics, *, highlight=None, not_comparable=None, axes=None):
    """Plot neural-collapse metrics of every block of a network, one panel each.

    Parameters
    ----------
    layers : sequence of str of shape (n_layers,)
        Layer names in forward order (x axis).
    metrics : dict of str to sequence of float
        Metric name -> one value per layer, e.g. ``{"NC1": [...], "CDNV":
        [...], "NC2": [...]}``; one panel per entry.
    highlight : str or None, default=None
        A layer to mark in every panel (e.g. the suggested ``tuned_block``).
    not_comparable : dict of str to sequence of str, or None, default=None
        Metric name -> layers whose value of that metric is not comparable
        with the others (e.g. ``{"NC1": [...]}`` for blocks with at most
        ``K - 1`` features); drawn as open grey markers, with a legend entry.
    axes : sequence of matplotlib Axes or None, default=None
        One Axes per metric; None creates a new figure.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sknc.plotting import plot_layerwise_nc
    >>> fig = plot_layerwise_nc(["layer1", "layer2", "penultimate"],
    ...                         {"NC1": [9.0, 4.0, 2.0], "NC2": [0.9, 0.7, 0.6]},
    ...                         highlight="layer2")
    >>> len(fig.axes)
    2
    """
    names = [str(layer) for layer in layers]
    if not names:
        raise ValueError("layers is empty.")
    metrics = _check_mapping(metrics, "metrics")
    if highlight is not None and highlight not in names:
        raise ValueError(f"highlight={highlight!r} is not one of the layers {names}.")
    not_comparable = {} if not_comparable is None else dict(not_comparable)
    for name, flagged in not_comparable.items():
        if name not in metrics:
            raise ValueError(f"not_comparable names {name!r}, which is not one of the metrics.")
        unknown = [str(layer) for layer in flagged if str(layer) not in names]
        if unknown:
            raise ValueError(f"not_comparable[{name!r}] names unknown layers {unknown}.")
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(
            1, len(metrics), figsize=(4.2 * len(metrics), 3.8), layout="constrained", squeeze=False
        )
    axes = list(np.ravel(axes))
    if len(axes) != len(metrics):
        raise ValueError(f"axes must hold {len(metrics)} Axes (one per metric), got {len(axes)}.")
    pos = np.arange(len(names))
    for ax, (name, values) in zip(axes, metrics.items()):
        y = _as_1d(values, f"metrics[{name!r}]", length=len(names))
        flagged = np.isin(names, [str(layer) for layer in not_comparable.get(name, ())])
        if flagged.any():
            ok = np.where(flagged, np.nan, y)
            ax.plot(pos, ok, marker="o")
            ax.plot(
                pos[flagged],
                y[flagged],
                linestyle="none",
                marker="o",
                markerfacecolor="white",
                color="0.5",
                label="not comparable (too few features)",
            )
            ax.legend(fontsize=7, loc="best")
        else:
            ax.plot(pos, y, marker="o")
        _log_if_positive(ax, y)
        if highlight is not None:
            k = names.index(highlight)
            ax.axvline(k, color="C3", linestyle="--", alpha=0.6)
            if np.isfinite(y[k]):
                ax.plot([k], [y[k]], marker="*", markersize=14, color="C3", zorder=4)
        ax.set_xticks(pos, names, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{name} (lower = more collapse)")
        ax.grid(True, alpha=0.3)
    return axes[0].figure

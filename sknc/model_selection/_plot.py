"""The one scatter of a transferability score against accuracy.

:func:`sknc.plotting.plot_nc_vs_accuracy` and
:meth:`sknc.model_selection.BackboneRanking.plot` both draw it. It lives
here, beside :func:`~sknc.model_selection.rank_correlation`, because
``model_selection`` sits below ``plotting`` in the layering: the ranking
object can call it, and ``plotting`` re-exports it under its public name.
Same axes everywhere: accuracy in percent, the score on a logarithmic axis
when its positive values span more than a factor of three.
"""

import numpy as np

from ..utils._plotting import _annotate_apart, _as_1d, _log_if_positive, _new_axes


def plot_score_vs_accuracy(
    score,
    accuracy,
    *,
    labels=None,
    metric="NC1",
    lower_is_better=True,
    ylabel="linear-probe accuracy (%)",
    percent=True,
    title=None,
    log=True,
    ax=None,
):
    """Scatter ``score`` (x) against ``accuracy`` (y, in percent), rank correlation in the title.

    Parameters
    ----------
    score, accuracy : sequence of float of shape (n_points,)
        One value per candidate; accuracy in [0, 1].
    labels : sequence of str or None
        Written next to the points (overlapping labels are skipped).
    metric : str
        Name of the score for the axis label.
    lower_is_better : bool
        The direction of the score, said in the axis label.
    ylabel : str
    percent : bool
        Accuracy given as a fraction and drawn in percent (False: drawn as given).
    title : str or None
        None: Spearman's rho and Kendall's tau of the points.
    log : bool
        Logarithmic x axis when the positive values span more than a factor of three.
    ax : matplotlib Axes or None

    Returns
    -------
    matplotlib.axes.Axes
    """
    from ._ranking import rank_correlation

    x = _as_1d(score, "nc")
    y = _as_1d(accuracy, "accuracy", length=x.shape[0])
    if labels is not None and len(labels) != x.shape[0]:
        raise ValueError(f"labels has {len(labels)} entries, expected {x.shape[0]}.")
    ax = _new_axes(ax)
    shown = 100 * y if percent else y
    order = np.arange(x.shape[0])
    points = ax.scatter(x, shown, c=order, cmap="viridis", zorder=3)
    if x.shape[0] > 1:
        points.set_clim(0, x.shape[0] - 1)
    if log:
        _log_if_positive(ax, x, axis="x")
    if labels is not None:
        _annotate_apart(ax, x, shown, [str(v) for v in labels], (4, 4), fontsize=7)
    if title is None:
        corr = rank_correlation(x, y)
        title = f"Spearman ρ = {corr['spearman']:.2f}, Kendall τ = {corr['kendall']:.2f}"
    ax.set_title(title)
    direction = "lower = more collapse" if lower_is_better else "higher = better predicted"
    ax.set_xlabel(f"{metric} on downstream training data ({direction})")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return ax

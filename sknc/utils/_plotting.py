"""Small matplotlib helpers shared by every figure of sknc (no matplotlib import at load).

The figures live in :mod:`sknc.plotting` and, for the one figure that
:class:`sknc.model_selection.BackboneRanking` draws itself, in
``sknc.model_selection._plot``; both use these helpers, which sit at the
lowest level so that both can reach them.
"""

import numpy as np


def _as_1d(values, name, length=None):
    """A finite-or-NaN float array of one dimension (None entries become NaN)."""
    try:
        arr = np.array(
            [np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))],
            dtype=float,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}.") from exc
    if np.ndim(values) != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {np.shape(values)}.")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} has {arr.shape[0]} values, expected {length}.")
    return arr


def _check_mapping(values, name):
    if not isinstance(values, dict) or not values:
        raise ValueError(f"{name} must be a non-empty dict of label -> sequence, got {values!r}.")
    return values


def _new_axes(ax, figsize=(5.5, 4.0)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _plain_log_ticks(axis):
    """Tick labels such as 0.2, 0.5, 1, 2 on a log axis instead of 2 x 10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    axis.set_minor_formatter(fmt)


def _log_if_positive(ax, values, axis="y"):
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size and np.all(values > 0) and values.max() / values.min() > 3:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        _plain_log_ticks(ax.yaxis if axis == "y" else ax.xaxis)


def _annotate_apart(ax, x, y, labels, offset, min_pixels=18, **kwargs):
    """Write ``labels`` next to the points, skipping those that would overlap a label.

    Labels are considered first and last point first, then in order; one is
    drawn only if its point is at least ``min_pixels`` away (on screen, with
    the axes' final scales) from every point already labelled. Empty strings
    and None are not drawn.
    """
    ax.autoscale_view()
    xy = np.column_stack([x, y])
    finite = np.isfinite(xy).all(axis=1)
    screen = np.full(xy.shape, np.nan)
    if finite.any():
        screen[finite] = ax.transData.transform(xy[finite])
    kept = []
    n = len(labels)
    for i in dict.fromkeys([0, n - 1, *range(n)]) if n else []:
        text = labels[i]
        if text in (None, "") or not finite[i]:
            continue
        if any(np.hypot(*(screen[i] - screen[j])) < min_pixels for j in kept):
            continue
        kept.append(i)
        ax.annotate(str(text), (x[i], y[i]), textcoords="offset points", xytext=offset, **kwargs)

"""Helpers shared by sknc's result objects (one style for all of them).

The result objects (:class:`sknc.metrics.CollapseReport`,
:class:`sknc.model_selection.FewShotResult`,
:class:`sknc.model_selection.BackboneRanking`,
:class:`sknc.model_selection.RankingEvaluation`) follow one convention:

* ``as_dict()``: plain Python values only (lists, floats, ints, str, None),
  ready for ``json.dumps``;
* ``to_frame()``: the result's table as a ``pandas.DataFrame`` (pandas is
  optional: without it, an ImportError says what to use instead);
* ``plot(ax=None, ...)``: draws on ``ax`` (a new figure when None) and
  returns the matplotlib Axes;
* ``repr``: a first line ``ClassName(key facts)``, then indented lines.

plain(value)
    numpy scalars and arrays (nested in dicts, lists, tuples) -> Python values.
import_pandas(alternative)
    pandas, or an ImportError naming ``to_frame()`` and what to use without it.
"""

import numpy as np

__all__ = ["import_pandas", "plain"]


def plain(value):
    """``value`` with numpy scalars and arrays turned into Python values, recursively.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.utils._results import plain
    >>> plain({"a": np.float64(0.5), "b": np.arange(2), "c": (np.int64(3), None)})
    {'a': 0.5, 'b': [0, 1], 'c': [3, None]}
    """
    if isinstance(value, dict):
        return {(k.item() if isinstance(k, np.generic) else k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def import_pandas(alternative):
    """pandas, or an ImportError that says what to use without it."""
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(
            f"to_frame() needs pandas, which is not installed; {alternative}."
        ) from exc
    return pandas

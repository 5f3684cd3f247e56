"""Rank candidate backbones for a downstream task by the collapse of their features.

Li et al. (TMLR 2024) observe that the more the frozen features of a
pretrained model collapse on the *downstream training data* (lower NC1), the
better its linear-probe transfer accuracy. :func:`rank_backbones` measures NC1
and CDNV of each candidate's features on the training data, optionally the
linear-probe accuracy, and the rank correlation between the two.
"""

import numbers
import time
import warnings

import numpy as np
from scipy import stats
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import check_cv, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from ..metrics import collapse_report
from ..utils import to_numpy
from ..utils._warnings import warn_external

_NC_COLUMNS = ("nc1", "cdnv")


class BackboneRanking:
    """Result of :func:`rank_backbones`.

    Attributes
    ----------
    table : list of dict
        One row per candidate, sorted by ``rank_by`` (most collapsed first),
        with keys ``rank``, ``backbone``, ``n_features``, ``nc1``, ``cdnv``,
        ``transform_time`` and, when measured, ``accuracy`` (plus
        ``accuracy_std`` with cross-validation).
    correlations : dict
        For each of ``"nc1"`` and ``"cdnv"``: the :func:`rank_correlation`
        of that score and the accuracy over the candidates (``spearman``,
        ``spearman_pvalue``, ``kendall``, ``kendall_pvalue`` and ``n``, the
        number of candidates with finite values; negative values mean that
        more collapse goes with higher accuracy). Empty when accuracy was
        not measured.
    rank_by : str
        The metric the rows are sorted by.
    ranking : list of str
        Candidate names, most collapsed first.
    """

    def __init__(self, table, correlations, rank_by):
        self.table = table
        self.correlations = correlations
        self.rank_by = rank_by

    @property
    def ranking(self):
        return [row["backbone"] for row in self.table]

    @property
    def best(self):
        """Name of the most collapsed candidate (the predicted best)."""
        return self.table[0]["backbone"]

    def _columns(self):
        return list(self.table[0])

    def to_records(self):
        """The table as a numpy structured array.

        Returns
        -------
        ndarray
            One record per candidate, fields as in ``table``.
        """
        cols = self._columns()
        width = max(len(row["backbone"]) for row in self.table)
        dtype = []
        for col in cols:
            if col == "backbone":
                dtype.append((col, f"U{max(width, 1)}"))
            elif col in ("rank", "n_features"):
                dtype.append((col, np.int64))
            else:
                dtype.append((col, np.float64))
        return np.array([tuple(row[c] for c in cols) for row in self.table], dtype=dtype)

    def to_pandas(self):
        """The table as a ``pandas.DataFrame`` (pandas must be installed).

        Returns
        -------
        pandas.DataFrame
            One row per candidate.
        """
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(
                "to_pandas() needs pandas, which is not installed; use .table or "
                ".to_records() instead."
            ) from exc
        return pd.DataFrame(self.table, columns=self._columns())

    def plot(self, ax=None, metric=None):
        """Scatter plot of a collapse metric (log scale) against accuracy.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; None creates a new figure.
        metric : {"nc1", "cdnv"} or None, default=None
            The x-axis metric; None means ``rank_by``.

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.
        """
        metric = self.rank_by if metric is None else metric
        if metric not in _NC_COLUMNS:
            raise ValueError(f"metric must be one of {_NC_COLUMNS}, got {metric!r}.")
        if "accuracy" not in self.table[0]:
            raise ValueError("No accuracy was measured (accuracy=False); nothing to plot against.")
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 4))
        x = np.array([row[metric] for row in self.table])
        acc = np.array([row["accuracy"] for row in self.table])
        ax.scatter(x, acc)
        for row, xi, ai in zip(self.table, x, acc):
            ax.annotate(
                row["backbone"], (xi, ai), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
        if np.all(x > 0):
            ax.set_xscale("log")
        ax.set_xlabel(f"{metric.upper()} on downstream training data (lower = more collapse)")
        ax.set_ylabel("linear-probe accuracy")
        corr = self.correlations.get(metric)
        if corr is not None and np.isfinite(corr["spearman"]):
            ax.set_title(f"Spearman {corr['spearman']:.2f}, Kendall {corr['kendall']:.2f}")
        return ax

    def __repr__(self):
        cols = self._columns()
        rows = [cols]
        for row in self.table:
            cells = []
            for col in cols:
                value = row[col]
                if isinstance(value, float):
                    cells.append(f"{value:.4g}")
                else:
                    cells.append(str(value))
            rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = [f"BackboneRanking(rank_by={self.rank_by!r})"]
        for r in rows:
            lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)))
        for metric, corr in self.correlations.items():
            lines.append(
                f"  {metric} vs accuracy: Spearman {corr['spearman']:.3f} "
                f"(p={corr['spearman_pvalue']:.3g}), Kendall {corr['kendall']:.3f} "
                f"(p={corr['kendall_pvalue']:.3g})"
            )
        return "\n".join(lines)


def _default_probe():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def rank_correlation(x, y):
    """Spearman's and Kendall's rank correlations, with their p-values, over finite pairs.

    The one place where sknc correlates a collapse score with an accuracy
    (:func:`rank_backbones`, :func:`sknc.plotting.plot_nc_vs_accuracy`, the
    ``sknc demo`` report and the real-data reproductions all call it), so
    they share one policy for values that cannot be ranked:

    - a pair ``(x[i], y[i])`` is used only if both values are finite: NaN,
      ``+inf``, ``-inf`` and None (NaN after a JSON round trip) drop the
      pair. An infinite score (e.g. the CDNV of coinciding class means) is a
      failed measurement, not the largest value;
    - with fewer than 3 finite pairs, or when the ``x`` or the ``y`` values
      of the finite pairs are all equal, every statistic is NaN (no warning);
    - ``n`` is the number of finite pairs used.

    Parameters
    ----------
    x, y : array-like of shape (n_points,)
        Paired values, e.g. NC1 of each candidate backbone and its
        linear-probe accuracy.

    Returns
    -------
    dict
        ``spearman``, ``spearman_pvalue``, ``kendall``, ``kendall_pvalue``
        (floats, as from :func:`scipy.stats.spearmanr` and
        :func:`scipy.stats.kendalltau` on the finite pairs) and ``n`` (int).
        Negative correlations mean that a lower score (more collapse) goes
        with a higher accuracy.

    Raises
    ------
    ValueError
        If ``x`` or ``y`` is not one-dimensional, holds something other than
        numbers, or they differ in length.

    Examples
    --------
    >>> from sknc.model_selection import rank_correlation
    >>> nc1 = [0.5, 1.0, float("nan"), 2.0, 4.0]
    >>> accuracy = [0.9, 0.85, 0.99, 0.7, 0.75]
    >>> r = rank_correlation(nc1, accuracy)
    >>> round(r["spearman"], 2), round(r["kendall"], 2), r["n"]
    (-0.8, -0.67, 4)
    """
    x, y = _as_paired(x, "x"), _as_paired(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}.")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.shape[0])
    nan = float("nan")
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {
            "spearman": nan,
            "spearman_pvalue": nan,
            "kendall": nan,
            "kendall_pvalue": nan,
            "n": n,
        }
    rho, p_rho = stats.spearmanr(x, y)
    tau, p_tau = stats.kendalltau(x, y)
    return {
        "spearman": float(rho),
        "spearman_pvalue": float(p_rho),
        "kendall": float(tau),
        "kendall_pvalue": float(p_tau),
        "n": n,
    }


def _as_paired(values, name):
    """``values`` as a 1-D float64 array (None entries become NaN)."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of numbers, got a string.")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}.")
    return arr


def _correlations(table):
    acc = [row["accuracy"] for row in table]
    return {metric: rank_correlation([row[metric] for row in table], acc) for metric in _NC_COLUMNS}


def _warn_narrow(table, n_classes):
    """Warn about candidates whose NC1 is not comparable (at most K - 1 features)."""
    narrow = [row for row in table if row["n_features"] <= n_classes - 1]
    if not narrow:
        return
    names = ", ".join(f"{row['backbone']!r} ({row['n_features']})" for row in narrow)
    warn_external(
        f"Candidate(s) with no more features than n_classes - 1 = {n_classes - 1}: {names}. "
        "Their class means span every feature direction, so their NC1 divides all "
        "within-class variance by the between-class spread (it explodes as the width "
        "approaches K - 1) and is not comparable with the NC1 of candidates with more "
        "than K - 1 features; rank them separately or with rank_by='cdnv'.",
        UserWarning,
    )


def rank_backbones(
    candidates,
    X,
    y,
    *,
    X_test=None,
    y_test=None,
    accuracy=True,
    probe=None,
    cv=None,
    test_size=0.25,
    rank_by="nc1",
    refit=True,
    random_state=None,
    verbose=False,
):
    """Rank backbones by the collapse of their frozen features on downstream data.

    Each candidate transforms the downstream training data once; NC1 and
    CDNV of those features (over all of ``X``) predict transferability (lower
    is better). Optionally a linear probe measures the actual accuracy on the
    same frozen features, and the rank correlations (Spearman, Kendall) between
    each collapse score and the accuracy are reported.

    Parameters
    ----------
    candidates : dict of str to transformer
        Name -> scikit-learn transformer producing features (e.g.
        ``sknc.features.BackboneFeatures("resnet18", pretrained=True)``, a
        ``PCA``, a random projection, a pipeline of transformers).
    X : array-like
        Downstream training inputs (whatever the candidates accept).
    y : array-like of shape (n_samples,)
        Downstream training labels.
    X_test, y_test : array-like, default=None
        Optional downstream test set. When given, the probe is trained on all
        of ``(X, y)`` and its accuracy measured on the test set (each
        candidate then also transforms ``X_test`` once); ``cv`` and
        ``test_size`` are ignored.
    accuracy : bool, default=True
        Measure linear-probe accuracy (and the correlations).
    probe : classifier or None, default=None
        The linear probe, cloned for every fit. None means
        ``make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))``.
    cv : None, int or CV splitter, default=None
        None: one stratified hold-out split of the features (``test_size``),
        probe trained on the rest. An int or splitter: cross-validated mean
        accuracy (ints give a shuffled ``StratifiedKFold`` seeded by
        ``random_state``); ``accuracy_std`` is added to the table.
    test_size : float, default=0.25
        Share of samples held out when ``cv=None``.
    rank_by : {"nc1", "cdnv"}, default="nc1"
        The score the table is sorted by (ascending).
    refit : bool, default=True
        Fit a clone of each candidate on ``(X, y)`` before transforming.
        False uses the candidates as given (already fitted) and only calls
        ``transform``.
    random_state : int, RandomState instance or None, default=None
        Seeds the hold-out split or the CV shuffling (and the probe, if it has
        a ``random_state`` parameter left at None).
    verbose : bool, default=False
        Show a progress bar over the candidates.

    Returns
    -------
    BackboneRanking
        The table (``.table``, ``.to_records()``, ``.to_pandas()``), the
        correlations, and ``.plot()``.

    Warns
    -----
    UserWarning
        When a candidate has fewer features than ``n_classes - 1``; the
        message names every such candidate (see Notes).

    Notes
    -----
    Compare NC1 only between candidates with at least ``n_classes - 1``
    features. With ``d < K - 1`` features the class means span at most
    ``d`` of the ``K - 1`` between-class directions and NC1 measures the
    within-class variance along those only, so its value depends on how the
    few directions happen to be spread and is not comparable with the NC1 of
    wider candidates (a narrow candidate can look well collapsed while its
    classes overlap). Rank such candidates separately, or by CDNV
    (``rank_by="cdnv"``), which has no such restriction.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sknc.model_selection import rank_backbones
    >>> X, y = load_digits(return_X_y=True)
    >>> X, y = X[:500], y[:500]
    >>> candidates = {"raw": FunctionTransformer(), "pca16": PCA(16), "pca9": PCA(9)}
    >>> result = rank_backbones(candidates, X, y, random_state=0)
    >>> result.ranking
    ['raw', 'pca16', 'pca9']
    >>> sorted(result.table[0])
    ['accuracy', 'backbone', 'cdnv', 'n_features', 'nc1', 'rank', 'transform_time']
    """
    if not isinstance(candidates, dict) or not candidates:
        raise ValueError("candidates must be a non-empty dict of name -> transformer.")
    for name, cand in candidates.items():
        if not isinstance(name, str):
            raise ValueError(f"Candidate names must be strings, got {name!r}.")
        if not hasattr(cand, "transform"):
            raise ValueError(
                f"Candidate {name!r} ({type(cand).__name__}) has no transform method; "
                "candidates must be scikit-learn transformers."
            )
    if rank_by not in _NC_COLUMNS:
        raise ValueError(f"rank_by must be one of {_NC_COLUMNS}, got {rank_by!r}.")
    if (X_test is None) != (y_test is None):
        raise ValueError("Pass both X_test and y_test, or neither.")
    if cv is None and X_test is None and accuracy:
        if not isinstance(test_size, numbers.Real) or not 0 < test_size < 1:
            raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}.")
    y = np.asarray(to_numpy(y))
    rng = check_random_state(random_state)
    seed = int(rng.randint(np.iinfo(np.int32).max))

    probe_template = _default_probe() if probe is None else probe
    if probe_template.get_params().get("random_state", False) is None:
        probe_template = clone(probe_template).set_params(random_state=seed)

    split = None
    cv_obj = None
    if accuracy and X_test is None:
        if cv is None:
            idx = np.arange(len(y))
            split = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
        else:
            if isinstance(cv, numbers.Integral):
                from sklearn.model_selection import StratifiedKFold

                cv_obj = StratifiedKFold(int(cv), shuffle=True, random_state=seed)
            else:
                cv_obj = check_cv(cv, y, classifier=True)

    items = list(candidates.items())
    if verbose:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="rank_backbones", unit="backbone")
    table = []
    for name, cand in items:
        t0 = time.perf_counter()
        if refit:
            model = clone(cand)
            Z = model.fit_transform(X, y)
        else:
            model = cand
            Z = model.transform(X)
        elapsed = time.perf_counter() - t0
        Z = np.asarray(to_numpy(Z))
        if Z.ndim != 2:
            raise ValueError(
                f"Candidate {name!r} returned features of shape {Z.shape}; expected "
                "(n_samples, n_features)."
            )
        with warnings.catch_warnings():
            # one warning for all narrow candidates below (_warn_narrow)
            warnings.filterwarnings("ignore", message="NC1 of .* not comparable")
            rep = collapse_report(Z, y)
        row = {
            "backbone": name,
            "n_features": int(Z.shape[1]),
            "nc1": float(rep.nc1),
            "cdnv": float(rep.cdnv),
        }
        if accuracy:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*failed to converge.*")
                if X_test is not None:
                    t1 = time.perf_counter()
                    Z_test = np.asarray(to_numpy(model.transform(X_test)))
                    elapsed += time.perf_counter() - t1
                    fitted = clone(probe_template).fit(Z, y)
                    row["accuracy"] = float(fitted.score(Z_test, np.asarray(to_numpy(y_test))))
                elif cv_obj is None:
                    tr, te = split
                    fitted = clone(probe_template).fit(Z[tr], y[tr])
                    row["accuracy"] = float(fitted.score(Z[te], y[te]))
                else:
                    scores = cross_val_score(clone(probe_template), Z, y, cv=cv_obj)
                    row["accuracy"] = float(scores.mean())
                    row["accuracy_std"] = float(scores.std())
        row["transform_time"] = elapsed
        table.append(row)
    _warn_narrow(table, len(np.unique(y)))

    table.sort(key=lambda r: r[rank_by])
    for i, row in enumerate(table, start=1):
        table[i - 1] = {"rank": i, **row}
    correlations = _correlations(table) if accuracy else {}
    return BackboneRanking(table, correlations, rank_by)

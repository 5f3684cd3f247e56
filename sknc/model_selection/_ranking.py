"""Rank candidate backbones for a downstream task by the collapse of their features.

Li et al. (TMLR 2024) observe that the more the frozen features of a
pretrained model collapse on the *downstream training data* (lower NC1), the
better its linear-probe transfer accuracy. :func:`rank_backbones` measures NC1
and CDNV of each candidate's features on the training data, optionally the
linear-probe accuracy, and the rank correlation between the two. Beside NC1
it computes any of the field's transferability scores (LogME, SFDA, ...,
NCTI and ETran across the pool) from the same single extraction, takes a
prior per model (e.g. ImageNet top-1) as a baseline, and judges every score
by the protocol of the field (:func:`ranking_statistics`: weighted Kendall
tau, Kendall tau, Spearman, Pearson, top-1 regret);
:func:`evaluate_rankings` does the same over a models x data sets table.
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

from ..metrics import NCNotComparableWarning, collapse_report
from ..utils import to_numpy
from ..utils._warnings import UndefinedScoreWarning, warn_external

_NC_COLUMNS = ("nc1", "cdnv")
# scores whose lower values predict better transfer
_LOWER_IS_BETTER = frozenset(_NC_COLUMNS)
_SET_LEVEL = ("ncti", "etran")


def _feature_scores():
    """Score name -> (function(Z, y, random_state), greater is better)."""
    from ..metrics import (
        cdnv,
        gbc,
        hscore,
        knn_accuracy,
        logme,
        nc1,
        nleep,
        pactran,
        parc,
        sfda,
        transrate,
    )

    return {
        "nc1": (lambda Z, y, rs: nc1(Z, y), False),
        "cdnv": (lambda Z, y, rs: cdnv(Z, y), False),
        "logme": (lambda Z, y, rs: logme(Z, y), True),
        "hscore": (lambda Z, y, rs: hscore(Z, y), True),
        "hscore_shrinkage": (lambda Z, y, rs: hscore(Z, y, shrinkage=True), True),
        "nleep": (lambda Z, y, rs: nleep(Z, y, random_state=rs), True),
        "transrate": (lambda Z, y, rs: transrate(Z, y), True),
        "gbc": (lambda Z, y, rs: gbc(Z, y), True),
        "parc": (lambda Z, y, rs: parc(Z, y, random_state=rs), True),
        "sfda": (lambda Z, y, rs: sfda(Z, y), True),
        "pactran": (lambda Z, y, rs: pactran(Z, y, random_state=rs), True),
        "knn": (lambda Z, y, rs: knn_accuracy(Z, y), True),
    }


_SCORE_NAMES = (
    "nc1",
    "cdnv",
    "logme",
    "hscore",
    "hscore_shrinkage",
    "nleep",
    "transrate",
    "gbc",
    "parc",
    "sfda",
    "pactran",
    "knn",
    "ncti",
    "etran",
    "leep",
    "nce",
)
_HEAD_SCORES = ("leep", "nce")


def get_score_names():
    """Names of every score :func:`rank_backbones` accepts in ``scores``.

    Returns
    -------
    list of str
        NC1 and CDNV (lower is better), the feature transferability scores,
        the set-level ``"ncti"`` and ``"etran"``, and ``"leep"`` and
        ``"nce"``, which need candidates that also return their pretrained
        classifier's outputs (``BackboneFeatures(head="proba")``); higher is
        better for all but NC1 and CDNV.

    Examples
    --------
    >>> from sknc.model_selection import get_score_names
    >>> get_score_names()[:4]
    ['nc1', 'cdnv', 'logme', 'hscore']
    """
    return list(_SCORE_NAMES)


class BackboneRanking:
    """Result of :func:`rank_backbones`.

    Attributes
    ----------
    table : list of dict
        One row per candidate, sorted by ``rank_by`` (most collapsed first),
        with keys ``rank``, ``backbone``, ``n_features``, ``nc1``, ``cdnv``,
        ``transform_time`` and, when measured, ``accuracy`` (plus
        ``accuracy_std`` with cross-validation). ``transform_time`` is the
        wall time this call spent getting the features (fit and transform of
        ``X``, and of ``X_test``): with a feature cache (e.g.
        ``BackboneFeatures(memory=...)``) that hits, it is the time to load
        the cached features, not to extract them.
    correlations : dict
        For each of ``"nc1"`` and ``"cdnv"``: the :func:`rank_correlation`
        of that score and the accuracy over the candidates (``spearman``,
        ``spearman_pvalue``, ``kendall``, ``kendall_pvalue`` and ``n``, the
        number of candidates with finite values; negative values mean that
        more collapse goes with higher accuracy). Empty when accuracy was
        not measured.
    rank_by : str
        The score the rows are sorted by (best predicted first).
    ranking : list of str
        Candidate names, best predicted first.
    evaluation : dict
        For every score (and ``"prior"``): :func:`ranking_statistics` of that
        score against the ground truth (``ground_truth`` if given, else the
        measured accuracy), oriented so that positive values mean the score
        ranks well. Empty without a ground truth.
    higher_is_better : dict
        Score name -> whether higher values predict better transfer.
    parts : dict
        For the set-level scores (``"ncti"``, ``"etran"``): model -> parts.
    score_time : dict
        Score name -> seconds spent computing it over all candidates.
    """

    def __init__(
        self,
        table,
        correlations,
        rank_by,
        evaluation=None,
        higher_is_better=None,
        parts=None,
        score_time=None,
    ):
        self.table = table
        self.correlations = correlations
        self.rank_by = rank_by
        self.evaluation = {} if evaluation is None else evaluation
        self.higher_is_better = {} if higher_is_better is None else higher_is_better
        self.parts = {} if parts is None else parts
        self.score_time = {} if score_time is None else score_time

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
            elif col in ("rank", "n_features") or isinstance(self.table[0][col], (int, np.integer)):
                dtype.append((col, np.int64))
            else:
                dtype.append((col, np.float64))
        return np.array([tuple(row[c] for c in cols) for row in self.table], dtype=dtype)

    def as_dict(self):
        """The result as plain Python values (JSON-ready).

        Returns
        -------
        dict
            Keys ``rank_by``, ``ranking``, ``table``, ``correlations``,
            ``evaluation``, ``higher_is_better``, ``parts`` and
            ``score_time``, as the attributes.
        """
        from ..utils._results import plain

        return plain(
            {
                "rank_by": self.rank_by,
                "ranking": self.ranking,
                "table": self.table,
                "correlations": self.correlations,
                "evaluation": self.evaluation,
                "higher_is_better": self.higher_is_better,
                "parts": self.parts,
                "score_time": self.score_time,
            }
        )

    def to_frame(self):
        """The table as a ``pandas.DataFrame`` (pandas must be installed).

        Returns
        -------
        pandas.DataFrame
            One row per candidate.
        """
        from ..utils._results import import_pandas

        pd = import_pandas("use .table or .to_records() instead")
        return pd.DataFrame(self.table, columns=self._columns())

    def to_pandas(self):
        """Deprecated alias of :meth:`to_frame` (since sknc 0.2)."""
        from ..utils._deprecation import warn_renamed

        warn_renamed("BackboneRanking.to_pandas", "BackboneRanking.to_frame")
        return self.to_frame()

    def plot(self, ax=None, metric=None):
        """Scatter plot of a score against accuracy (in percent), as :func:`sknc.plotting.plot_nc_vs_accuracy`.

        One implementation draws both (``sknc.model_selection._plot``): NC
        scores on a log axis when they span more than a factor of three.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; None creates a new figure.
        metric : str or None, default=None
            The x-axis score (any column of the table); None means ``rank_by``.

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.
        """
        metric = self.rank_by if metric is None else metric
        scores = [c for c in self.table[0] if c in self.higher_is_better or c in _NC_COLUMNS]
        if metric not in scores:
            raise ValueError(f"metric must be one of {scores}, got {metric!r}.")
        target = "ground_truth" if "ground_truth" in self.table[0] else "accuracy"
        if target not in self.table[0]:
            raise ValueError("No accuracy was measured (accuracy=False); nothing to plot against.")
        from ._plot import plot_score_vs_accuracy  # the one scatter (plotting uses it too)

        ev = self.evaluation.get(metric)
        title = None
        if ev is not None and np.isfinite(ev["weighted_tau"]):
            title = (
                f"weighted tau {ev['weighted_tau']:.2f}, Spearman {ev['spearman']:.2f}, "
                f"top-1 regret {ev['top1_regret']:.3g}"
            )
        lower = metric in _NC_COLUMNS
        return plot_score_vs_accuracy(
            [row[metric] for row in self.table],
            [row[target] for row in self.table],
            labels=[row["backbone"] for row in self.table],
            metric=metric.upper() if lower else metric,
            lower_is_better=lower,
            ylabel="linear-probe accuracy (%)" if target == "accuracy" else "ground truth",
            percent=target == "accuracy",
            title=title,
            log=lower,
            ax=ax,
        )

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
        for name, ev in self.evaluation.items():
            lines.append(
                f"  {name}: weighted tau {ev['weighted_tau']:.3f}, Kendall {ev['kendall']:.3f}, "
                f"Spearman {ev['spearman']:.3f}, Pearson {ev['pearson']:.3f}, "
                f"top-1 regret {ev['top1_regret']:.4g}"
            )
        for metric, corr in self.correlations.items():
            if metric not in _NC_COLUMNS:
                continue
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


def _correlations(table, columns=_NC_COLUMNS):
    acc = [row["accuracy"] for row in table]
    return {metric: rank_correlation([row[metric] for row in table], acc) for metric in columns}


def ranking_statistics(scores, accuracy, *, higher_is_better=True):
    """How well a score ranks models: the transferability-estimation protocol.

    Parameters
    ----------
    scores : array-like of shape (n_models,)
        A score per model (e.g. LogME of each model's features).
    accuracy : array-like of shape (n_models,)
        The ground truth per model (fine-tuned or linear-probe accuracy).
    higher_is_better : bool, default=True
        Whether higher scores predict better models (False for NC1, CDNV):
        the scores are negated first, so positive statistics always mean a
        good ranking.

    Returns
    -------
    dict
        ``weighted_tau``: :func:`scipy.stats.weightedtau` with its defaults
        (hyperbolic weights, averaged over the rankings by score and by
        accuracy), the field's headline statistic since SFDA (ECCV 2022);
        ``kendall``, ``spearman``, ``pearson``: the usual correlations;
        ``top1_regret``: best accuracy minus the accuracy of the top-scored
        model (the mean accuracy of the models tied at the top), in the
        units of ``accuracy``; ``n``: models with finite score and accuracy.
        Pairs with a non-finite value are dropped; with fewer than 2 models
        left, or constant scores or accuracies, the correlations are NaN
        (the regret is still defined with at least one model).

    Examples
    --------
    >>> from sknc.model_selection import ranking_statistics
    >>> stats = ranking_statistics([0.1, 0.5, 0.3], [70.0, 80.0, 75.0])
    >>> stats["weighted_tau"], stats["top1_regret"]
    (1.0, 0.0)
    >>> ranking_statistics([2.0, 1.0, 3.0], [70.0, 80.0, 75.0], higher_is_better=False)["top1_regret"]
    0.0
    """
    x, acc = _as_paired(scores, "scores"), _as_paired(accuracy, "accuracy")
    if x.shape != acc.shape:
        raise ValueError(
            f"scores and accuracy must have the same length, got {x.shape[0]} and {acc.shape[0]}."
        )
    if not higher_is_better:
        x = -x
    keep = np.isfinite(x) & np.isfinite(acc)
    x, acc = x[keep], acc[keep]
    n = int(x.size)
    nan = float("nan")
    out = {"weighted_tau": nan, "kendall": nan, "spearman": nan, "pearson": nan}
    if n >= 2 and np.ptp(x) > 0 and np.ptp(acc) > 0:
        out["weighted_tau"] = float(stats.weightedtau(x, acc)[0])
        out["kendall"] = float(stats.kendalltau(x, acc)[0])
        out["spearman"] = float(stats.spearmanr(x, acc)[0])
        out["pearson"] = float(stats.pearsonr(x, acc)[0])
    out["top1_regret"] = float(acc.max() - acc[x == x.max()].mean()) if n else nan
    out["n"] = n
    return out


class RankingEvaluation:
    """Result of :func:`evaluate_rankings`.

    Attributes
    ----------
    per_dataset : dict
        Score name -> data set -> :func:`ranking_statistics`.
    mean : dict
        Score name -> statistic -> mean over the data sets (NaN values are
        left out of the mean; ``n_datasets`` counts those used for weighted tau).
    """

    _STATS = ("weighted_tau", "kendall", "spearman", "pearson", "top1_regret")

    def __init__(self, per_dataset, mean):
        self.per_dataset = per_dataset
        self.mean = mean

    def as_dict(self):
        """The result as plain Python values (JSON-ready): ``per_dataset`` and ``mean``.

        Returns
        -------
        dict
        """
        from ..utils._results import plain

        return plain({"per_dataset": self.per_dataset, "mean": self.mean})

    def to_pandas(self):
        """Deprecated alias of :meth:`to_frame` (since sknc 0.2)."""
        from ..utils._deprecation import warn_renamed

        warn_renamed("RankingEvaluation.to_pandas", "RankingEvaluation.to_frame")
        return self.to_frame()

    def plot(self, ax=None, statistic="weighted_tau"):
        """Bar chart of one statistic per score: the mean over data sets, and each data set.

        Parameters
        ----------
        ax : matplotlib Axes or None, default=None
            Where to draw; None creates a new figure.
        statistic : {"weighted_tau", "kendall", "spearman", "pearson", "top1_regret"}, \
                default="weighted_tau"

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.

        Examples
        --------
        >>> from sknc.model_selection import evaluate_rankings
        >>> acc = {"a": {"m1": 90.0, "m2": 80.0, "m3": 85.0},
        ...        "b": {"m1": 70.0, "m2": 75.0, "m3": 60.0}}
        >>> prior = {"m1": 76.1, "m2": 71.9, "m3": 73.3}
        >>> ax = evaluate_rankings({"prior": {"a": prior, "b": prior}}, acc).plot()
        >>> ax.get_ylabel()
        'weighted_tau'
        """
        from ..utils._plotting import _new_axes

        if statistic not in self._STATS:
            raise ValueError(f"statistic must be one of {self._STATS}, got {statistic!r}.")
        ax = _new_axes(ax)
        names = list(self.mean)
        ax.bar(range(len(names)), [self.mean[n][statistic] for n in names], color="C0", alpha=0.6)
        for i, name in enumerate(names):
            values = [st[statistic] for st in self.per_dataset[name].values()]
            ax.plot([i] * len(values), values, "o", color="C1", ms=4)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_ylabel(statistic)
        ax.set_title("mean over data sets (bars) and each data set (points)")
        return ax

    def to_frame(self):
        """Long table: one row per (score, data set) plus a ``"mean"`` row per score.

        Returns
        -------
        pandas.DataFrame
        """
        from ..utils._results import import_pandas

        pd = import_pandas("use .per_dataset and .mean instead")
        rows = []
        for score, per in self.per_dataset.items():
            for ds, st in per.items():
                rows.append({"score": score, "dataset": ds, **st})
            rows.append({"score": score, "dataset": "mean", **self.mean[score]})
        return pd.DataFrame(rows)

    def __repr__(self):
        width = max(len(s) for s in self.mean)
        n_datasets = len(next(iter(self.per_dataset.values()), {}))
        lines = [f"RankingEvaluation(n_scores={len(self.mean)}, n_datasets={n_datasets})"]
        lines.append("  mean over data sets:")
        lines.append(
            "  " + "score".ljust(width) + "  " + "  ".join(f"{k:>12}" for k in self._STATS)
        )
        for score, st in self.mean.items():
            cells = "  ".join(f"{st[k]:12.3f}" for k in self._STATS)
            lines.append("  " + score.ljust(width) + "  " + cells)
        return "\n".join(lines)


def evaluate_rankings(scores, accuracy, *, higher_is_better=None):
    """Judge scores by how well they rank models, per data set and on average.

    Parameters
    ----------
    scores : dict
        Score name -> data set -> model -> value, e.g.
        ``{"logme": {"cifar10": {"resnet50": 1.2, ...}, ...}, ...}``. A prior
        per model (e.g. ImageNet top-1) is a score like any other.
    accuracy : dict
        Data set -> model -> ground-truth accuracy.
    higher_is_better : dict of str to bool or None, default=None
        Per score; by default True except for ``"nc1"`` and ``"cdnv"``.

    Returns
    -------
    RankingEvaluation
        :func:`ranking_statistics` per score and data set, and their means.

    Raises
    ------
    ValueError
        If a score lacks a data set of ``accuracy`` or a model of that data
        set (models are matched by name).

    Examples
    --------
    >>> from sknc.model_selection import evaluate_rankings
    >>> acc = {"a": {"m1": 90.0, "m2": 80.0, "m3": 85.0},
    ...        "b": {"m1": 70.0, "m2": 75.0, "m3": 60.0}}
    >>> prior = {"m1": 76.1, "m2": 71.9, "m3": 73.3}
    >>> ev = evaluate_rankings({"prior": {"a": prior, "b": prior}}, acc)
    >>> round(ev.per_dataset["prior"]["a"]["weighted_tau"], 3)
    1.0
    >>> round(ev.mean["prior"]["top1_regret"], 1)
    2.5
    """
    if not isinstance(scores, dict) or not scores:
        raise ValueError("scores must be a non-empty dict: score -> data set -> model -> value.")
    if not isinstance(accuracy, dict) or not accuracy:
        raise ValueError("accuracy must be a non-empty dict: data set -> model -> accuracy.")
    higher_is_better = dict(higher_is_better or {})
    per_dataset, mean = {}, {}
    for name, per_ds in scores.items():
        hib = higher_is_better.get(name, name not in _LOWER_IS_BETTER)
        missing = [ds for ds in accuracy if ds not in per_ds]
        if missing:
            raise ValueError(f"Score {name!r} has no values for data set(s) {missing}.")
        per_dataset[name] = {}
        for ds, acc in accuracy.items():
            models = list(acc)
            lacking = [m for m in models if m not in per_ds[ds]]
            if lacking:
                raise ValueError(f"Score {name!r} on {ds!r} lacks model(s) {lacking}.")
            per_dataset[name][ds] = ranking_statistics(
                [per_ds[ds][m] for m in models],
                [acc[m] for m in models],
                higher_is_better=hib,
            )
        mean[name] = {}
        for key in RankingEvaluation._STATS:
            vals = np.array([st[key] for st in per_dataset[name].values()], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            mean[name][key] = float(vals.mean()) if vals.size else float("nan")
        mean[name]["n_datasets"] = int(
            np.isfinite([st["weighted_tau"] for st in per_dataset[name].values()]).sum()
        )
    return RankingEvaluation(per_dataset, mean)


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
        NCNotComparableWarning,
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
    scores=("nc1", "cdnv"),
    combiners=None,
    prior=None,
    ground_truth=None,
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
    rank_by : str, default="nc1"
        The score the table is sorted by, best predicted first (ascending for
        NC1 and CDNV, descending for the others); any of ``scores``, a
        combiner or ``"prior"``.
    refit : bool, default=True
        Fit a clone of each candidate on ``(X, y)`` before transforming.
        False uses the candidates as given (already fitted) and only calls
        ``transform``.
    random_state : int, RandomState instance or None, default=None
        Seeds the hold-out split or the CV shuffling (and the probe, if it has
        a ``random_state`` parameter left at None).
    verbose : bool, default=False
        Show a progress bar over the candidates.
    scores : sequence of str, or dict of str to callable, default=("nc1", "cdnv")
        The scores to compute, all from the one extraction of each candidate:
        names from :func:`get_score_names` (``"nc1"``, ``"cdnv"``, ``"logme"``,
        ``"hscore"``, ``"hscore_shrinkage"``, ``"nleep"``, ``"transrate"``,
        ``"gbc"``, ``"parc"``, ``"sfda"``, ``"pactran"``, ``"knn"``, and the
        set-level ``"ncti"`` and ``"etran"``, whose parts are computed per
        candidate and min-max normalised across the pool), or a dict mixing
        such names and ``name -> callable(Z, y)`` user scores (higher is
        better). Seeded scores (NLEEP, PARC, PACTran) use ``random_state``.
    combiners : dict of str to callable or None, default=None
        Set-level scores of your own: ``name -> f(values)`` where ``values``
        maps each candidate to the dict of its computed scores and returns
        candidate -> combined score (higher is better), e.g.
        ``lambda v: sknc.metrics.minmax_combine({m: {"a": d["logme"],
        "b": d["sfda"]} for m, d in v.items()})``.
    prior : dict of str to float or None, default=None
        A prior per candidate (e.g. its ImageNet top-1 accuracy), reported as
        the column ``"prior"`` and judged like a score: the baseline any
        score has to beat.
    ground_truth : dict of str to float or None, default=None
        The accuracy each candidate actually reaches (e.g. after fine-tuning),
        column ``"ground_truth"``; when given, ``evaluation`` judges the
        scores against it instead of the linear-probe accuracy.

    Returns
    -------
    BackboneRanking
        The table (``.table``, ``.to_records()``, ``.to_pandas()``), the
        correlations, ``.evaluation`` (weighted Kendall tau, Kendall,
        Spearman, Pearson and top-1 regret of every score against the
        ground truth) and ``.plot()``.

    Warns
    -----
    NCNotComparableWarning
        When a candidate has no more features than ``n_classes - 1``; the
        message names every such candidate (see Notes).
    UndefinedScoreWarning
        When a score is undefined for a candidate (it is NaN in the table).
        For the set-level scores (NCTI, ETran) such a candidate is also left
        out of the pool over which the others are normalised.

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

    Every score of the field from the same extraction, with a prior:

    >>> result = rank_backbones(candidates, X, y, random_state=0,
    ...                         scores=["nc1", "logme", "sfda", "ncti"],
    ...                         prior={"raw": 0.7, "pca16": 0.6, "pca9": 0.5})
    >>> sorted(result.evaluation)
    ['logme', 'nc1', 'ncti', 'prior', 'sfda']
    >>> sorted(result.evaluation["logme"])
    ['kendall', 'n', 'pearson', 'spearman', 'top1_regret', 'weighted_tau']
    """
    checked = _check_rank_args(
        candidates, scores, combiners, prior, ground_truth, rank_by, X_test, y_test
    )
    feature_scores, set_level, user_scores, combiners, prior, ground_truth, columns = checked
    if cv is None and X_test is None and accuracy:
        if not isinstance(test_size, numbers.Real) or not 0 < test_size < 1:
            raise ValueError(f"test_size must be a float in (0, 1), got {test_size!r}.")
    y = np.asarray(to_numpy(y))
    rng = check_random_state(random_state)
    seed = int(rng.randint(np.iinfo(np.int32).max))

    probe_template = _default_probe() if probe is None else probe
    if probe_template.get_params().get("random_state", False) is None:
        probe_template = clone(probe_template).set_params(random_state=seed)
    if accuracy:
        measure = _AccuracyProbe(probe_template, X_test, y_test, cv, test_size, y, seed)

    items = list(candidates.items())
    if verbose:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="rank_backbones", unit="backbone")
    table = []
    parts, score_time = {}, {}
    for name, cand in items:
        model, Z, proba, elapsed = _candidate_features(name, cand, X, y, refit)
        row = {"backbone": name, "n_features": int(Z.shape[1])}
        _compute_scores(
            row, name, Z, y, feature_scores, set_level, user_scores, seed, parts, score_time, proba
        )
        if accuracy:
            elapsed += measure(row, model, Z)
        row["transform_time"] = elapsed
        table.append(row)
    if "nc1" in feature_scores:
        _warn_narrow(table, len(np.unique(y)))

    higher = {c: c not in _LOWER_IS_BETTER for c in columns}
    _add_set_level_columns(table, set_level, parts, score_time, combiners, higher, candidates)
    for row in table:
        if prior is not None:
            row["prior"] = float(prior[row["backbone"]])
        if ground_truth is not None:
            row["ground_truth"] = float(ground_truth[row["backbone"]])

    table = _sorted_table(table, rank_by, higher)
    nc_cols = [c for c in _NC_COLUMNS if c in columns]
    correlations = _correlations(table, nc_cols) if accuracy else {}
    target = "ground_truth" if ground_truth is not None else ("accuracy" if accuracy else None)
    evaluation = {}
    if target is not None:
        truth = [row[target] for row in table]
        for col in columns:
            evaluation[col] = ranking_statistics(
                [row[col] for row in table], truth, higher_is_better=higher[col]
            )
    return BackboneRanking(
        table,
        correlations,
        rank_by,
        evaluation=evaluation,
        higher_is_better=higher,
        parts={k: parts[k] for k in set_level},
        score_time=score_time,
    )


def _check_rank_args(candidates, scores, combiners, prior, ground_truth, rank_by, X_test, y_test):
    """``rank_backbones``' arguments checked; returns ``(feature_scores, set_level,
    user_scores, combiners, prior, ground_truth, columns)``."""
    _check_candidates(candidates)
    feature_scores, set_level, user_scores = _check_scores(scores)
    combiners = _check_named_callables(combiners, "combiners")
    prior = _check_per_model(prior, "prior", candidates)
    ground_truth = _check_per_model(ground_truth, "ground_truth", candidates)
    columns = [*feature_scores, *user_scores, *set_level, *combiners]
    if prior is not None:
        columns.append("prior")
    if len(set(columns)) != len(columns):
        raise ValueError(f"Score names must be unique, got {columns}.")
    if rank_by not in columns:
        raise ValueError(f"rank_by must be one of the computed scores {columns}, got {rank_by!r}.")
    if (X_test is None) != (y_test is None):
        raise ValueError("Pass both X_test and y_test, or neither.")
    return feature_scores, set_level, user_scores, combiners, prior, ground_truth, columns


def _sorted_table(table, rank_by, higher):
    """The rows best predicted first (non-finite values last), each with its ``rank``."""
    sign = 1.0 if higher[rank_by] else -1.0
    table = sorted(table, key=lambda r: (not np.isfinite(r[rank_by]), -sign * r[rank_by]))
    return [{"rank": i, **row} for i, row in enumerate(table, start=1)]


def _check_candidates(candidates):
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


def _candidate_features(name, cand, X, y, refit):
    """``(model, Z, head proba or None, seconds)``: one candidate's features of ``X``."""
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
    Z, proba = _split_head(model, Z)
    return model, Z, proba, elapsed


class _AccuracyProbe:
    """Linear-probe accuracy of a candidate's features, the same protocol for every one.

    With a test set: the probe is trained on all of ``(X, y)`` and scored on
    ``X_test`` (transformed by the candidate); else one stratified hold-out
    split (``cv=None``) or cross-validation, both seeded by ``seed``.
    """

    def __init__(self, probe, X_test, y_test, cv, test_size, y, seed):
        self.probe, self.X_test, self.y_test, self.y = probe, X_test, y_test, y
        self.split = self.cv = None
        if X_test is not None:
            return
        if cv is None:
            idx = np.arange(len(y))
            self.split = train_test_split(idx, test_size=test_size, stratify=y, random_state=seed)
        elif isinstance(cv, numbers.Integral):
            from sklearn.model_selection import StratifiedKFold

            self.cv = StratifiedKFold(int(cv), shuffle=True, random_state=seed)
        else:
            self.cv = check_cv(cv, y, classifier=True)

    def __call__(self, row, model, Z):
        """Put the accuracy into ``row``; returns the seconds spent transforming ``X_test``."""
        y = self.y
        elapsed = 0.0
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*failed to converge.*")
            if self.X_test is not None:
                t1 = time.perf_counter()
                Z_test = _split_head(model, np.asarray(to_numpy(model.transform(self.X_test))))[0]
                elapsed += time.perf_counter() - t1
                fitted = clone(self.probe).fit(Z, y)
                row["accuracy"] = float(fitted.score(Z_test, np.asarray(to_numpy(self.y_test))))
            elif self.cv is None:
                tr, te = self.split
                fitted = clone(self.probe).fit(Z[tr], y[tr])
                row["accuracy"] = float(fitted.score(Z[te], y[te]))
            else:
                scores = cross_val_score(clone(self.probe), Z, y, cv=self.cv)
                row["accuracy"] = float(scores.mean())
                row["accuracy_std"] = float(scores.std())
        return elapsed


def _add_set_level_columns(table, set_level, parts, score_time, combiners, higher, candidates):
    """The set-level scores (NCTI, ETran) and the user's combiners, across the pool."""
    for key in set_level:
        defined = {
            row["backbone"]: parts[key][row["backbone"]]
            for row in table
            if parts[key][row["backbone"]] is not None
        }
        t0 = time.perf_counter()
        combined = set_level[key][1](defined) if defined else {}
        score_time[key] += time.perf_counter() - t0
        for row in table:
            row[key] = float(combined.get(row["backbone"], np.nan))
    for key, func in combiners.items():
        values = {row["backbone"]: {c: row[c] for c in row if c in higher} for row in table}
        t0 = time.perf_counter()
        combined = func(values)
        score_time[key] = time.perf_counter() - t0
        _check_per_model(combined, f"combiner {key!r}'s result", candidates)
        for row in table:
            row[key] = float(combined[row["backbone"]])


def _check_named_callables(mapping, what):
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise ValueError(
            f"{what} must be a dict of name -> callable, got {type(mapping).__name__}."
        )
    for key, func in mapping.items():
        if not isinstance(key, str) or not callable(func):
            raise ValueError(f"{what} must map names (str) to callables; {key!r} does not.")
    return dict(mapping)


def _check_scores(scores):
    """Split ``scores`` into built-in feature scores, set-level ones and user callables."""
    from ..metrics import etran_combine, etran_parts, ncti_combine, ncti_parts

    if isinstance(scores, str):
        scores = [scores]
    if isinstance(scores, dict):
        items = list(scores.items())
    else:
        try:
            items = [(s, None) for s in scores]
        except TypeError:
            raise ValueError(
                f"scores must be a sequence of score names or a dict, got {scores!r}."
            ) from None
    if not items:
        raise ValueError("scores must name at least one score.")
    registry = _feature_scores()
    set_funcs = {"ncti": (ncti_parts, ncti_combine), "etran": (etran_parts, etran_combine)}
    feature, set_level, user = {}, {}, {}
    for key, func in items:
        if not isinstance(key, str):
            raise ValueError(f"Score names must be strings, got {key!r}.")
        if func is not None and not isinstance(func, str):
            if not callable(func):
                raise ValueError(f"Score {key!r} must map to a callable(Z, y), got {func!r}.")
            user[key] = func
            continue
        ref = key if func is None else func
        if ref in registry:
            feature[key] = registry[ref]
        elif ref in set_funcs:
            set_level[key] = set_funcs[ref]
        elif ref in _HEAD_SCORES:
            feature[key] = (ref, True)
        else:
            raise ValueError(f"Unknown score {ref!r}; choose from {list(_SCORE_NAMES)}.")
    return feature, set_level, user


def _check_per_model(values, what, candidates):
    if values is None:
        return None
    if not isinstance(values, dict):
        raise ValueError(f"{what} must be a dict of candidate name -> number.")
    missing = [name for name in candidates if name not in values]
    if missing:
        raise ValueError(f"{what} lacks candidate(s) {missing}.")
    for name in candidates:
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
            raise ValueError(f"{what} must give a number for {name!r}, got {v!r}.")
    return values


def _split_head(model, Z):
    """Features and source-class probabilities of a candidate with ``head=...``.

    A candidate whose ``split_layers`` has a ``"head"`` block (e.g.
    ``BackboneFeatures(head="proba")``) gives its classifier's outputs there;
    they are scored by LEEP/NCE only, the other blocks by everything else.
    """
    if not hasattr(model, "split_layers"):
        return Z, None
    try:
        blocks = model.split_layers(Z)
    except (ValueError, TypeError, AttributeError):
        return Z, None
    if "head" not in blocks:
        return Z, None
    P = np.asarray(to_numpy(blocks["head"]), dtype=np.float64)
    if getattr(model, "head", None) != "proba":
        from scipy.special import softmax

        P = softmax(P, axis=1)
    rest = [np.asarray(to_numpy(v)) for k, v in blocks.items() if k != "head"]
    return (rest[0] if len(rest) == 1 else np.hstack(rest)), P


def _head_score(key, proba, y):
    from ..metrics import leep, nce

    if proba is None:
        raise ValueError(
            f"{key.upper()} needs the candidate's pretrained classifier outputs; build it "
            "as BackboneFeatures(..., head='proba')."
        )
    return leep(proba, y) if key == "leep" else nce(proba, y)


def _compute_scores(
    row, name, Z, y, feature_scores, set_level, user_scores, seed, parts, timing, proba=None
):
    """Fill ``row`` with every per-candidate score of features ``Z``."""
    if "nc1" in feature_scores and "cdnv" in feature_scores:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # one warning for all narrow candidates (_warn_narrow)
            warnings.filterwarnings("ignore", message="NC1 of .* not comparable")
            rep = collapse_report(Z, y)
        half = (time.perf_counter() - t0) / 2
        row["nc1"], row["cdnv"] = float(rep.nc1), float(rep.cdnv)
        timing["nc1"] = timing.get("nc1", 0.0) + half
        timing["cdnv"] = timing.get("cdnv", 0.0) + half
    todo = [
        (k, f if f not in _HEAD_SCORES else (lambda Z, y, rs, f=f: _head_score(f, proba, y)))
        for k, (f, _) in feature_scores.items()
        if k not in row
    ]
    todo += [(k, lambda Z, y, rs, f=f: f(Z, y)) for k, f in user_scores.items()]
    for key, func in todo:
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NC1 of .* not comparable")
            row[key] = _score_or_nan(func, Z, y, seed, name, key)
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - t0
    for key, (part_func, _) in set_level.items():
        t0 = time.perf_counter()
        parts.setdefault(key, {})[name] = _parts_or_none(part_func, Z, y, name, key)
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - t0


def _parts_or_none(part_func, Z, y, name, key):
    """A candidate's set-level parts, or None (with a warning) where they are undefined."""
    try:
        return part_func(Z, y)
    except ValueError as exc:
        warn_external(
            f"Score {key!r} is undefined for candidate {name!r}: {exc} It is NaN in the "
            "table, left out of the pool it is normalised over and of the rank statistics.",
            UndefinedScoreWarning,
        )
        return None


def _score_or_nan(func, Z, y, seed, name, key):
    try:
        return float(func(Z, y, seed))
    except ValueError as exc:
        warn_external(
            f"Score {key!r} is undefined for candidate {name!r}: {exc} It is NaN in the "
            "table and left out of the rank statistics.",
            UndefinedScoreWarning,
        )
        return float("nan")

"""The papers' measurement protocols as library functions.

Contents
--------
measure_checkpoints(extractors, X, y, split, ...)
    Galanti et al.'s checkpoint protocol: for each feature extractor (e.g.
    one per epoch of source training), CDNV and NC1 of its frozen features
    on the source training samples, on unseen samples of the source classes
    and on novel classes, nearest-class-centre accuracy on the unseen source
    samples, and N-way K-shot NCC episodes on the novel classes.
compare_finetuning(estimator, X, y, X_test, y_test, ...)
    Fine-tuning methods x data regimes x training seeds: one row per run
    (accuracy, trainable parameters, seconds per epoch, training NC1) and a
    summary per method and regime (mean, standard deviation and standard
    error over the seeds), with an optional on-disk cache of finished runs.

``sknc demo``, the example on few-shot transfer and the reproduction scripts
in ``benchmarks/`` call these functions, so the protocols are written once.
Both return plain, JSON-ready dicts (the schema is in each docstring).
"""

import hashlib
import json
import os
import re
import time
import warnings

import numpy as np
from sklearn.base import clone

from ..utils._options import PAPER_METHODS
from ._common import single_threaded_blas, to_jsonable, write_text

__all__ = ["compare_finetuning", "measure_checkpoints"]

_PARTS = ("source_train", "source_test", "novel")
_CONFIDENCE = 95  # FewShotResult.ci95 is the half-width of the 95% interval


# ----------------------------------------------------------------------------
# Galanti et al.'s checkpoint protocol
# ----------------------------------------------------------------------------
def measure_checkpoints(
    extractors,
    X,
    y,
    split,
    *,
    n_way=5,
    shots=(1, 5),
    n_query=10,
    n_episodes=600,
    small_classes="raise",
    refit=True,
    random_state=None,
    n_jobs=None,
    verbose=False,
):
    """Collapse and few-shot transfer of frozen features, one extractor per checkpoint.

    The protocol of Galanti, György and Hutter (ICLR 2022). For each
    extractor (e.g. a :class:`~sknc.features.BackboneFeatures` per epoch of
    source training), ``X`` is transformed once, then:

    1. CDNV, NC1 and bias-corrected CDNV of the features of the source
       training samples, of unseen samples of the source classes and of the
       novel classes (:func:`sknc.metrics.collapse_report`,
       :func:`sknc.metrics.cdnv`); classes with a single sample in a part
       are left out of that part (their variance is undefined), and
       ``n_classes`` says how many classes were measured;
    2. the accuracy of a :class:`~sknc.neighbors.NearestClassCenter` fitted
       on the source training features, on the unseen source samples;
    3. ``n_way``-way K-shot episodes on the novel classes for every K in
       ``shots`` (:class:`~sknc.model_selection.EpisodeSplit`,
       :func:`~sknc.model_selection.evaluate_episodes`): mean accuracy,
       standard deviation and the half-width of the 95% confidence interval.
       The same ``random_state`` gives every extractor the same episodes.

    Parameters
    ----------
    extractors : sequence or dict of transformers
        One feature extractor per checkpoint (a dict: name -> extractor; a
        sequence: named 0, 1, ...), e.g. ``BackboneFeatures(model,
        weights=path)``; anything with ``fit``/``transform``.
    X : array-like
        Every sample that ``split`` indexes (whatever the extractors accept).
    y : array-like of shape (n_samples,)
        Class labels (any hashable type).
    split : SourceNovelSplit or mapping
        Index arrays into ``X`` under ``"source_train"``, ``"source_test"``
        and ``"novel"`` (:func:`sknc.model_selection.source_novel_split` returns
        one). The novel indices keep their order, which the episodes follow.
        Only ``"novel"`` is required: without the source parts (e.g. for a
        baseline such as raw pixels or a pretrained backbone, with
        ``refit=False``) only the novel classes are measured.
    n_way : int, default=5
        Classes per episode (at most the number of novel classes).
    shots : sequence of int or dict of int to int, default=(1, 5)
        The K of the K-shot episodes; a dict gives each K its own number of
        query samples per class.
    n_query : int, default=10
        Query samples per class, for the shots given as a sequence.
    n_episodes : int, default=600
        Episodes per shot count.
    small_classes : {"raise", "skip"}, default="raise"
        Novel classes with fewer than ``K + n_query`` samples: an error, or
        left out of that shot count's episodes (see
        :class:`~sknc.model_selection.EpisodeSplit`).
    refit : bool, default=True
        Fit a clone of each extractor on the source training samples before
        transforming; False uses the extractors as given (already fitted).
    random_state : int, RandomState instance or None, default=None
        Seeds the episodes (an int gives every extractor the same ones).
    n_jobs : int or None, default=None
        Threads of :func:`~sknc.model_selection.evaluate_episodes`.
    verbose : bool, default=False
        A progress bar over the checkpoints.

    Returns
    -------
    dict
        JSON-ready, one entry per checkpoint in each list::

            {"checkpoints": [name, ...],
             "collapse": {part: {"cdnv": [...], "nc1": [...],
                                 "cdnv_corrected": [...], "n_classes": int}},
             "n_features": [...],
             "ncc_accuracy": [...],   # NCC on source_test, fitted on source_train
             "few_shot": {"n_way": int, "n_episodes": int, "confidence_level": 95,
                          "small_classes": str,
                          "shots": {"K": {"n_shot": K, "n_query": int, "mean": [...],
                                          "std": [...], "ci95": [...], "n_classes": int}}}}

        with ``part`` in ``"source_train"``, ``"source_test"``, ``"novel"``
        (those given); ``ncc_accuracy`` is None without both source parts.
        A bias-corrected CDNV that is undefined is NaN (a class with one
        sample) or inf (class means too close for their sample sizes).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.decomposition import PCA
    >>> from sknc.model_selection import source_novel_split
    >>> from sknc.experiments import measure_checkpoints
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(12), 12)
    >>> X = rng.normal(size=(len(y), 20)) + 0.7 * rng.normal(size=(12, 20))[y]
    >>> groups = np.tile(np.arange(12), 12)  # e.g. the typeface of each sample
    >>> split = source_novel_split(y, groups, n_novel=6, test_size=0.25, random_state=0)
    >>> res = measure_checkpoints({"pca6": PCA(6), "pca20": PCA(20)}, X, y, split,
    ...                           shots=(1, 5), n_query=5, n_episodes=50, random_state=0)
    >>> res["checkpoints"]
    ['pca6', 'pca20']
    >>> sorted(res["collapse"])
    ['novel', 'source_test', 'source_train']
    >>> cdnv = res["collapse"]["novel"]["cdnv"]
    >>> bool(cdnv[1] < cdnv[0])  # every direction separates the novel classes better
    True
    >>> acc = res["few_shot"]["shots"]["5"]["mean"]
    >>> bool(acc[1] > acc[0])
    True
    """
    from ..metrics import collapse_report
    from ..neighbors import NearestClassCenter
    from ..utils import to_numpy

    names, extractors = _named(extractors, "extractors")
    y = np.asarray(to_numpy(y))
    parts = {part: _indices(split, part, len(y)) for part in _PARTS if _has(split, part)}
    if "novel" not in parts:
        raise ValueError("split must give the novel classes' indices under 'novel'.")
    if refit and "source_train" not in parts:
        raise ValueError(
            "refit=True fits the extractors on the source training samples: give them in "
            "split['source_train'], or pass fitted extractors with refit=False."
        )
    shots = _check_shots(shots, n_query)
    seed = _episode_seed(random_state)
    y_novel = y[parts["novel"]]
    n_novel = len(np.unique(y_novel))
    if n_novel < 2:
        raise ValueError(f"few-shot episodes need at least 2 novel classes, got {n_novel}.")
    n_way = min(int(n_way), n_novel)
    # CDNV and NC1 need two samples of a class: singleton classes leave a part
    measured = {part: _with_pairs(idx, y) for part, idx in parts.items()}
    res = _empty_result(names, measured, y, n_way, n_episodes, small_classes, shots)
    source_train = parts.get("source_train")
    test = parts.get("source_test")
    items = list(zip(names, extractors))
    if verbose:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="checkpoints", unit="ckpt")
    for _, extractor in items:
        if refit:
            extractor = clone(extractor).fit(_take(X, source_train), y[source_train])
        Z = np.asarray(to_numpy(extractor.transform(X)))
        if Z.ndim != 2 or len(Z) != len(y):
            raise ValueError(
                f"an extractor returned features of shape {Z.shape}; expected "
                f"({len(y)}, n_features)."
            )
        res["n_features"].append(int(Z.shape[1]))
        with single_threaded_blas():  # small problems: see single_threaded_blas
            for part, idx in measured.items():
                rep = collapse_report(Z[idx], y[idx])
                col = res["collapse"][part]
                col["cdnv"].append(float(rep.cdnv))
                col["nc1"].append(float(rep.nc1))
                col["cdnv_corrected"].append(_corrected_cdnv(Z[idx], y[idx]))
            accuracy = None
            if source_train is not None and test is not None and len(test):
                ncc = NearestClassCenter().fit(Z[source_train], y[source_train])
                accuracy = float(ncc.score(Z[test], y[test]))
            res["ncc_accuracy"].append(accuracy)
        _episodes(res["few_shot"], Z[parts["novel"]], y_novel, seed, n_jobs)
    return res


def _empty_result(names, measured, y, n_way, n_episodes, small_classes, shots):
    """``measure_checkpoints``' result with its lists still empty."""
    return {
        "checkpoints": names,
        "collapse": {
            part: {
                "cdnv": [],
                "nc1": [],
                "cdnv_corrected": [],
                "n_classes": int(len(np.unique(y[idx]))),
            }
            for part, idx in measured.items()
        },
        "n_features": [],
        "ncc_accuracy": [],
        "few_shot": {
            "n_way": n_way,
            "n_episodes": int(n_episodes),
            "confidence_level": _CONFIDENCE,
            "small_classes": small_classes,
            "shots": {
                str(k): {"n_shot": k, "n_query": q, "mean": [], "std": [], "ci95": []}
                for k, q in shots.items()
            },
        },
    }


def _episodes(few, Z, y, seed, n_jobs):
    """Append one checkpoint's episode results to ``few["shots"]``."""
    from ..model_selection import EpisodeSplit, evaluate_episodes

    for shot in few["shots"].values():
        cv = EpisodeSplit(
            n_way=few["n_way"],
            n_shot=shot["n_shot"],
            n_query=shot["n_query"],
            n_episodes=few["n_episodes"],
            small_classes=few["small_classes"],
            random_state=seed,
        )
        res = evaluate_episodes(Z, y, cv, return_cdnv=False, n_jobs=n_jobs)
        shot["mean"].append(float(res.mean))
        shot["std"].append(float(res.std))
        shot["ci95"].append(float(res.ci95))
        shot["n_classes"] = int(len(res.classes))


def _named(items, what):
    """(names, values) of a dict, or of a sequence named 0, 1, ..."""
    if isinstance(items, dict):
        names, values = list(items), list(items.values())
    else:
        values = list(items)
        names = list(range(len(values)))
    if not values:
        raise ValueError(f"{what} must not be empty.")
    return names, values


def _has(split, part):
    try:
        split[part]
    except (KeyError, TypeError, IndexError, AttributeError):
        return False
    return True


def _indices(split, part, n):
    try:
        idx = split[part]
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(
            f"split must give index arrays under 'source_train', 'source_test' and "
            f"'novel' (e.g. a SourceNovelSplit); {part!r} is missing."
        ) from exc
    idx = np.asarray(idx)
    if idx.dtype == bool:
        raise ValueError(f"split[{part!r}] must be integer indices, not a boolean mask.")
    if idx.size and (idx.dtype.kind not in "iu" or idx.min() < -n or idx.max() >= n):
        raise ValueError(f"split[{part!r}] has indices outside the {n} samples.")
    return idx.astype(np.intp)


def _check_shots(shots, n_query):
    if isinstance(shots, dict):
        out = {int(k): int(q) for k, q in shots.items()}
    else:
        out = {int(k): int(n_query) for k in shots}
    if not out or min(out) < 1 or min(out.values()) < 1:
        raise ValueError(f"shots and query counts must be positive integers, got {shots!r}.")
    return out


def _episode_seed(random_state):
    """An int seed for every checkpoint's episodes (the same episodes for all)."""
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return random_state
    from sklearn.utils import check_random_state

    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _take(X, idx):
    return X[idx] if hasattr(X, "__getitem__") and hasattr(X, "shape") else [X[i] for i in idx]


def _with_pairs(idx, y):
    """The indices in ``idx`` whose class has at least two samples in ``idx``."""
    classes, counts = np.unique(y[idx], return_counts=True)
    return idx[np.isin(y[idx], classes[counts >= 2])]


def _corrected_cdnv(Z, y):
    """Bias-corrected CDNV (comparable across sets of different sizes), NaN if undefined."""
    from ..metrics import NCDegenerateWarning, cdnv

    try:
        with warnings.catch_warnings():  # infinite when classes are too close for their size
            warnings.simplefilter("ignore", NCDegenerateWarning)
            return float(cdnv(Z, y, bias="corrected"))
    except ValueError:  # a class with a single sample: no unbiased variance
        return float("nan")


# ----------------------------------------------------------------------------
# fine-tuning methods compared
# ----------------------------------------------------------------------------
def compare_finetuning(
    estimator,
    X,
    y,
    X_test,
    y_test,
    *,
    methods=PAPER_METHODS,
    regimes=None,
    seeds=(0,),
    random_state=None,
    cache=None,
    verbose=False,
):
    """Fine-tuning methods x data regimes x training seeds, on the same data.

    Every run fits a clone of ``estimator`` with the method's parameters,
    the regime's parameters and ``random_state=seed`` on the regime's
    training samples and scores it on ``(X_test, y_test)``.

    Parameters
    ----------
    estimator : FineTuningClassifier
        The settings every run shares (backbone, weights, input size,
        epochs, learning rate, ...); cloned for every run. Any classifier
        works; the fitted attributes of
        :class:`~sknc.finetune.FineTuningClassifier` (``n_trainable_params_``,
        ``train_nc1_``, ...) are recorded where it has them (None otherwise).
    X, y : array-like
        Training inputs and labels.
    X_test, y_test : array-like
        Test inputs and labels.
    methods : sequence of str or dict of str to dict, default=("linear-probe", \
"layer-ft", "scl-ft", "full-ft")
        Method names (``method=...`` of the estimator), or row name ->
        estimator parameters, e.g. ``{"lora-r4": {"method": "lora",
        "lora_rank": 4}}``.
    regimes : dict or None, default=None
        Regime name -> the fraction of the training set it uses (a float in
        (0, 1]; smaller fractions are stratified subsamples,
        :func:`sknc.model_selection.subsample_per_class` seeded by
        ``random_state``), or a dict with ``"fraction"`` (default 1.0),
        ``"params"`` (estimator parameters of the regime, e.g. more epochs
        on scarce data) and ``"score_train"`` (also record the training
        accuracy, to show overfitting). None: ``{"full": 1.0}``.
    seeds : sequence of int, default=(0,)
        Training seeds (``random_state`` of each run).
    random_state : int, RandomState instance or None, default=None
        Seeds the subsamples of the regimes.
    cache : str, path-like or None, default=None
        A JSON file keeping every finished run (written atomically after
        each), keyed by everything that determines the run: the estimator's
        parameters (torch modules by their weights), the run's parameters,
        the seed and the data. A run found there is not repeated, so an
        interrupted comparison resumes where it stopped. The file holds
        only numbers and text: reading it runs no code.
    verbose : bool, default=False
        A progress bar over the runs.

    Returns
    -------
    dict
        ``{"runs": [row, ...], "summary": [row, ...], "cache": {"computed_runs":
        int, "reused_runs": int}}``. A run row: ``method`` (the row name),
        ``regime``, ``seed``, ``params``, ``n_train``, ``epochs``,
        ``accuracy``, ``train_accuracy`` (None unless ``score_train``),
        ``tuned_block``, ``block_nc``, ``n_trainable_params``, ``n_params``,
        ``trainable_fraction``, ``seconds_per_epoch``, ``fit_seconds``,
        ``score_seconds``, ``train_nc1``, ``prefix_cached``,
        ``final_train_loss``. A summary row per (regime, method) over the
        seeds: the fields that do not depend on the seed, ``n_seeds``,
        ``seeds``, ``accuracy`` (mean), ``accuracy_std`` (``ddof=1``; None
        for one seed), ``accuracy_sem``, ``accuracy_runs``,
        ``train_accuracy``, ``fit_seconds``, ``seconds_per_epoch``,
        ``train_nc1`` (None unless finite for every seed),
        ``train_nc1_std`` and ``trainable_vs_full`` (trainable parameters
        over those of the regime's ``"full-ft"`` method; None without one).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sknc.experiments import compare_finetuning
    >>> X, y = load_digits(return_X_y=True)
    >>> methods = {"C=0.01": {"C": 0.01}, "C=1": {"C": 1.0}}
    >>> res = compare_finetuning(LogisticRegression(max_iter=200), X[:600], y[:600],
    ...                          X[600:], y[600:], methods=methods,
    ...                          regimes={"full": 1.0, "scarce": 0.2}, seeds=(0, 1),
    ...                          random_state=0)
    >>> [(r["regime"], r["method"], r["n_seeds"]) for r in res["summary"]]
    [('full', 'C=0.01', 2), ('full', 'C=1', 2), ('scarce', 'C=0.01', 2), ('scarce', 'C=1', 2)]
    >>> full = res["summary"][0]
    >>> full["n_train"], bool(0.8 < full["accuracy"] <= 1.0)
    (600, True)
    """
    methods = _check_methods(methods)
    regimes = _check_regimes(regimes)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty.")
    y, y_test = np.asarray(y), np.asarray(y_test)
    if len(y) == 0 or len(y_test) == 0:
        raise ValueError("the training and test sets must not be empty.")
    store = _RunStore(cache, estimator, (X, y, X_test, y_test))
    plan = []
    for regime, spec in regimes.items():
        idx = _regime_indices(y, spec["fraction"], random_state)
        for label, params in methods.items():
            plan += [(regime, spec, idx, label, params, seed) for seed in seeds]
    runs = []
    steps = plan
    if verbose:
        from tqdm.auto import tqdm

        steps = tqdm(plan, desc="fine-tuning", unit="run")
    for regime, spec, idx, label, params, seed in steps:
        key = store.key(regime, label, {**spec["params"], **params}, seed, idx, spec)
        row = store.get(key)
        if row is None:
            row = _finetune_run(
                estimator, X, y, X_test, y_test, idx, {**spec["params"], **params}, seed, spec
            )
            row = to_jsonable({"method": label, "regime": regime, "seed": seed, **row})
            store.put(key, row)
        runs.append(dict(row, method=label, regime=regime, seed=seed))
    return {"runs": runs, "summary": _summarise(runs), "cache": store.counts()}


def _check_methods(methods):
    if isinstance(methods, str):
        raise ValueError(f"methods must be a sequence of names or a dict, got {methods!r}.")
    if isinstance(methods, dict):
        out = {}
        for label, params in methods.items():
            if not isinstance(params, dict):
                raise ValueError(
                    f"methods[{label!r}] must be a dict of estimator parameters, got {params!r}."
                )
            out[str(label)] = dict(params)
    else:
        out = {str(m): {"method": m} for m in methods}
    if not out:
        raise ValueError("methods must not be empty.")
    return out


def _check_regimes(regimes):
    if regimes is None:
        regimes = {"full": 1.0}
    if not isinstance(regimes, dict) or not regimes:
        raise ValueError(f"regimes must be a non-empty dict, got {regimes!r}.")
    out = {}
    for name, spec in regimes.items():
        if not isinstance(spec, dict):
            spec = {"fraction": spec}
        unknown = set(spec) - {"fraction", "params", "score_train"}
        if unknown:
            raise ValueError(
                f"regimes[{name!r}] has unknown keys {sorted(unknown)}; expected "
                "'fraction', 'params', 'score_train'."
            )
        fraction = spec.get("fraction", 1.0)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number)):
            raise ValueError(f"regimes[{name!r}]: the fraction must be a number, got {fraction!r}.")
        if not 0 < fraction <= 1:
            raise ValueError(f"regimes[{name!r}]: the fraction must be in (0, 1], got {fraction}.")
        out[str(name)] = {
            "fraction": float(fraction),
            "params": dict(spec.get("params") or {}),
            "score_train": bool(spec.get("score_train", False)),
        }
    return out


def _regime_indices(y, fraction, random_state):
    if fraction == 1.0:
        return np.arange(len(y))
    from ..model_selection import subsample_per_class

    return np.asarray(subsample_per_class(y, fraction=fraction, random_state=random_state))


def _finetune_run(estimator, X, y, X_test, y_test, idx, params, seed, spec):
    """One fit and its row (without the names)."""
    clf = clone(estimator).set_params(**params, random_state=seed)
    X_train, y_train = _take(X, idx), y[idx]
    t0 = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    accuracy = float(clf.score(X_test, y_test))
    score_seconds = time.perf_counter() - t1
    history = getattr(clf, "history_", None)
    try:
        final_loss = float(history[-1, "train_loss"])
    except Exception:  # not a skorch history
        final_loss = None
    return {
        "params": {k: v for k, v in params.items() if k != "callbacks"},
        "n_train": int(len(idx)),
        "epochs": clf.get_params().get("max_epochs"),
        "accuracy": accuracy,
        "train_accuracy": float(clf.score(X_train, y_train)) if spec["score_train"] else None,
        "tuned_block": getattr(clf, "tuned_block_", None),
        "block_nc": getattr(clf, "block_nc_", None),
        "n_trainable_params": _int_or_none(getattr(clf, "n_trainable_params_", None)),
        "n_params": _int_or_none(getattr(clf, "n_params_", None)),
        "trainable_fraction": _float_or_none(getattr(clf, "trainable_fraction_", None)),
        "seconds_per_epoch": _float_or_none(getattr(clf, "seconds_per_epoch_", None)),
        "fit_seconds": float(getattr(clf, "fit_time_", fit_seconds)),
        "score_seconds": score_seconds,
        "train_nc1": _float_or_none(getattr(clf, "train_nc1_", None)),
        "prefix_cached": getattr(clf, "prefix_cached_", None),
        "final_train_loss": final_loss,
    }


def _int_or_none(v):
    return None if v is None else int(v)


def _float_or_none(v):
    return None if v is None else float(v)


def _finite(v):
    return v is not None and bool(np.isfinite(v))


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _summarise(runs):
    """One row per (regime, method) over the seeds, in the order of the runs."""
    groups = {}
    for r in runs:
        groups.setdefault((r["regime"], r["method"]), []).append(r)
    summary = []
    for rows in groups.values():
        first = rows[0]
        acc = [r["accuracy"] for r in rows]
        nc1 = [r["train_nc1"] for r in rows]
        n = len(rows)
        std = float(np.std(acc, ddof=1)) if n > 1 else None
        nc1_ok = all(_finite(v) for v in nc1)
        out = {
            k: first[k]
            for k in (
                "regime",
                "method",
                "params",
                "n_train",
                "epochs",
                "tuned_block",
                "block_nc",
                "n_trainable_params",
                "n_params",
                "trainable_fraction",
            )
        }
        out.update(
            n_seeds=n,
            seeds=[r["seed"] for r in rows],
            accuracy=float(np.mean(acc)),
            accuracy_std=std,
            accuracy_sem=None if std is None else std / np.sqrt(n),
            accuracy_runs=acc,
            train_accuracy=_mean([r["train_accuracy"] for r in rows]),
            fit_seconds=_mean([r["fit_seconds"] for r in rows]),
            seconds_per_epoch=_mean([r["seconds_per_epoch"] for r in rows]),
            train_nc1=float(np.mean(nc1)) if nc1_ok else None,
            train_nc1_std=float(np.std(nc1, ddof=1)) if n > 1 and nc1_ok else None,
        )
        summary.append(out)
    for row in summary:
        full = next(
            (
                r
                for r in summary
                if r["regime"] == row["regime"] and r["params"].get("method") == "full-ft"
            ),
            None,
        )
        ok = full is not None and row["n_trainable_params"] is not None
        row["trainable_vs_full"] = (
            row["n_trainable_params"] / full["n_trainable_params"] if ok else None
        )
    return summary


class _RunStore:
    """Finished runs in a JSON file (or nowhere), keyed by what determines them."""

    def __init__(self, path, estimator, data):
        self.path = None if path is None else os.fspath(path)
        self.runs = {}
        self.computed = self.reused = 0
        if self.path is None:
            return
        if os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as fh:
                    self.runs = json.load(fh)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read the run cache {self.path!r}: {exc}") from exc
            if not isinstance(self.runs, dict):
                raise ValueError(f"{self.path!r} is not a run cache (a JSON object).")
        self.base = _fingerprint(estimator)
        self.data = _fingerprint(data)

    def key(self, regime, label, params, seed, idx, spec):
        if self.path is None:
            return None
        src = [
            self.base,
            self.data,
            regime,
            label,
            _fingerprint(params),
            seed,
            _fingerprint(idx),
            spec["score_train"],
        ]
        return hashlib.sha1(json.dumps(src).encode()).hexdigest()[:20]

    def get(self, key):
        row = None if key is None else self.runs.get(key)
        self.reused += row is not None
        return row

    def put(self, key, row):
        self.computed += 1
        if key is None:
            return
        self.runs[key] = row
        write_text(self.path, json.dumps(self.runs, indent=1, ensure_ascii=False) + "\n")

    def counts(self):
        return {"computed_runs": self.computed, "reused_runs": self.reused}


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _fingerprint(obj):
    """A JSON-able digest of ``obj``: arrays and torch weights by their bytes."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return ["array", repr(obj.tolist())]
        h = hashlib.sha1(np.ascontiguousarray(obj).tobytes()).hexdigest()
        return ["array", str(obj.dtype), list(obj.shape), h]
    if isinstance(obj, dict):
        return {str(k): _fingerprint(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_fingerprint(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return _fingerprint(os.fspath(obj))
    torch_digest = _torch_fingerprint(obj)
    if torch_digest is not None:
        return torch_digest
    if hasattr(obj, "get_params"):
        try:
            params = obj.get_params(deep=False)
        except TypeError:
            params = obj.get_params()
        return [type(obj).__qualname__, _fingerprint(params)]
    return _ADDRESS.sub("", repr(obj))


def _torch_fingerprint(obj):
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if isinstance(obj, torch.Tensor):
        return _fingerprint(obj.detach().cpu().numpy())
    if isinstance(obj, torch.nn.Module):
        h = hashlib.sha1(type(obj).__qualname__.encode())
        for name, value in obj.state_dict().items():
            h.update(name.encode())
            h.update(str(value.dtype).encode())
            h.update(
                value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
            )
        return ["module", type(obj).__qualname__, h.hexdigest()]
    return None

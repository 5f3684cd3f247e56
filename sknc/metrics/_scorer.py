"""Neural-collapse scorers for scikit-learn's model selection tools.

Scorers follow scikit-learn's "greater is better" rule: they return the
*negated* metric (``neg_nc1`` etc.). The transferability scores (``logme``,
``hscore``, ``hscore_shrinkage``, ``nleep``, ``transrate``, ``gbc``,
``parc``, ``sfda``, ``pactran``, ``knn``) are greater-is-better already and
are returned as they are, under their own names.

Which features are scored
-------------------------
On a fitted ``estimator`` and a fold ``(X, y)``:

* a :class:`~sklearn.pipeline.Pipeline` whose last step is a predictor:
  ``estimator[:-1].transform(X)`` (the inputs of the final classifier);
* a pure transformer, or a Pipeline that ends in one: ``estimator.transform(X)``;
* a bare classifier: ``X`` itself, unless its ``transform`` returns the
  inputs of its own linear head (it says so with the class attribute
  ``_sknc_transform_is_head_input = True``, as
  :class:`sknc.finetune.FineTuningClassifier` does): then
  ``estimator.transform(X)`` (after the earlier steps, in a Pipeline);
* ``features="step_name"``: the output of the Pipeline up to that step;
* ``features=callable``: ``callable(estimator, X)``;
* ``layer=...``: one block of a multi-layer feature transformer (any step with
  a ``split_layers(Z)`` method returning a dict, such as
  ``sknc.features.BackboneFeatures(layers=[...])``).

NC3 and NC4 use ``coef_``, ``intercept_`` and ``classes_`` of the final
linear classifier.

Feature reuse
-------------
scikit-learn evaluates a ``scoring`` dict by calling each scorer in turn
inside one multi-metric scoring round. NC scorers of the same round share
their features: the first one computes them and stores them in a cache whose
key is the round object of that call (held weakly, so the cache dies with the
round) plus the identities of the estimator, of ``X`` and of the feature
specification. A later round, another estimator or another ``X`` never see
them. Outside such a round (a scorer called on its own) nothing is cached.
Workers of ``n_jobs`` each keep their own cache. scikit-learn has no public
hook for this: the round is recognised in one small module,
``sknc.utils._sklearn_compat``, tested against the scikit-learn versions
``pyproject.toml`` allows.

Accuracy and other scikit-learn scorers in the same dict still run the whole
pipeline (scikit-learn calls ``predict`` itself); either give the backbone a
feature cache (e.g. ``BackboneFeatures(memory=...)``) or use
:func:`make_nc_multimetric_scorer`, one callable that computes the features
once and evaluates every requested metric, accuracy included, from them.

Scorer names
------------
:func:`get_scorer` and :func:`get_scorer_names` extend scikit-learn's
functions of the same names and never change their meaning: every name
scikit-learn knows gives scikit-learn's own scorer, and sknc adds the names
``neg_nc1``, ``neg_cdnv``, ``neg_nc2``, ``neg_nc3``, ``neg_nc4`` and the
transferability scores, none of which scikit-learn defines.
"""

import threading
import weakref

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring
from sklearn.metrics import get_scorer as _sk_get_scorer
from sklearn.metrics import get_scorer_names as _sk_get_scorer_names
from sklearn.pipeline import Pipeline

from ..utils._deprecation import deprecated_alias
from ..utils._sklearn_compat import multimetric_round
from ._collapse import cdnv, equiangularity, equinorm, nc1, nc2, nc3, nc4
from ._transferability import (
    gbc,
    hscore,
    knn_accuracy,
    logme,
    nleep,
    pactran,
    parc,
    sfda,
    transrate,
)
from ._validation import check_not_one_vs_one

# metric name -> (function, allowed keyword options, needs the linear head)
_METRICS = {
    "nc1": (nc1, {"center", "chunk_size"}, False),
    "cdnv": (cdnv, {"variant", "bias", "chunk_size"}, False),
    "nc2": (nc2, {"center", "chunk_size"}, False),
    "nc3": (nc3, {"center", "variant", "chunk_size"}, True),
    "nc4": (nc4, {"chunk_size"}, True),
    "equinorm": (equinorm, {"center", "chunk_size"}, False),
    "equiangularity": (equiangularity, {"center", "kind", "chunk_size"}, False),
}


def _hscore_shrinkage(X, y):
    return hscore(X, y, shrinkage=True)


# transferability scores (greater is better: the scorers return them unchanged)
_TRANSFER_METRICS = {
    "logme": (logme, {"method", "tol", "max_iter"}, False),
    "hscore": (hscore, {"shrinkage"}, False),
    "hscore_shrinkage": (_hscore_shrinkage, set(), False),
    "nleep": (
        nleep,
        {"n_components_per_class", "variance", "log", "max_iter", "random_state"},
        False,
    ),
    "transrate": (transrate, {"eps"}, False),
    "gbc": (gbc, {"gaussian", "n_components"}, False),
    "parc": (parc, {"n_components", "max_samples", "random_state"}, False),
    "sfda": (sfda, {"log"}, False),
    "pactran": (pactran, {"lda_factor", "max_iter", "random_state"}, False),
    "knn": (knn_accuracy, {"n_neighbors", "metric", "max_samples", "random_state"}, False),
}
_METRICS.update(_TRANSFER_METRICS)

_NAMED_SCORERS = ("neg_nc1", "neg_cdnv", "neg_nc2", "neg_nc3", "neg_nc4", *_TRANSFER_METRICS)


# ---------------------------------------------------------------------------
# features of a fitted estimator
# ---------------------------------------------------------------------------


def _is_predictor(obj):
    return is_classifier(obj) or (hasattr(obj, "predict") and not hasattr(obj, "transform"))


def _final_predictor(estimator):
    """The final predictor of a Pipeline (or the estimator itself), or None."""
    if isinstance(estimator, Pipeline):
        final = estimator.steps[-1][1]
        return final if final not in (None, "passthrough") and _is_predictor(final) else None
    return estimator if _is_predictor(estimator) else None


def _feature_spec_key(features):
    if features is None:
        return ("default",)
    if isinstance(features, str):
        return ("step", features)
    return ("callable", id(features))


def _extract_features(estimator, X, features):
    """Features of ``X`` for the scorers, and the step that produced them.

    Returns ``(F, producer, head)``: ``producer`` is the step whose output is
    F (for ``layer`` splitting; None if unknown) and ``head`` is True when F
    is exactly the input of the final predictor.
    """
    clf = _final_predictor(estimator)
    if features is None:
        if clf is not None and getattr(clf, "_sknc_transform_is_head_input", False):
            if isinstance(estimator, Pipeline) and len(estimator.steps) > 1:
                X = estimator[:-1].transform(X)
            return clf.transform(X), clf, True
        if isinstance(estimator, Pipeline):
            if clf is not None:
                if len(estimator.steps) == 1:
                    return X, None, True
                body = estimator[:-1]
                return body.transform(X), body.steps[-1][1], True
            final = estimator.steps[-1][1]
            if final in (None, "passthrough") or hasattr(final, "transform"):
                return estimator.transform(X), final, False
        elif clf is not None:
            return X, None, True
        elif hasattr(estimator, "transform"):
            return estimator.transform(X), estimator, False
        raise ValueError(
            f"Cannot tell which features to score on {type(estimator).__name__}: it "
            "is neither a transformer nor a classifier (or a Pipeline ending in "
            "one). Pass features='step name' or features=callable."
        )
    if isinstance(features, str):
        if not isinstance(estimator, Pipeline):
            raise ValueError(
                f"features={features!r} names a Pipeline step, but the estimator is a "
                f"{type(estimator).__name__}."
            )
        names = [name for name, _ in estimator.steps]
        if features not in names:
            raise ValueError(
                f"features={features!r} is not a step of the Pipeline; steps are {names}."
            )
        idx = names.index(features)
        body = estimator[: idx + 1]
        is_head = clf is not None and idx == len(names) - 2
        return body.transform(X), body.steps[-1][1], is_head
    if callable(features):
        return features(estimator, X), None, False
    raise ValueError(
        f"features must be None, a Pipeline step name or a callable, got {features!r}."
    )


def _select_layer(F, producer, layer):
    if layer is None:
        return F
    if producer is None or not hasattr(producer, "split_layers"):
        source = type(producer).__name__ if producer is not None else "an unknown source"
        raise ValueError(
            f"layer={layer!r} needs features produced by a step with a "
            "split_layers() method (e.g. BackboneFeatures(layers=[...])); the "
            f"features come from {source}."
        )
    blocks = producer.split_layers(F)
    if layer in blocks:
        return blocks[layer]
    keys = list(blocks)
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if -len(keys) <= layer < len(keys):
            return blocks[keys[layer]]
    raise ValueError(f"layer={layer!r} is not among the feature blocks {keys}.")


# ---------------------------------------------------------------------------
# round-scoped feature cache
# ---------------------------------------------------------------------------

_ROUND_CACHE = weakref.WeakKeyDictionary()
_ROUND_LOCK = threading.Lock()


def _features_for(estimator, X, features, round_cache):
    """Extract features, reusing ``round_cache`` (a dict or None)."""
    if round_cache is None:
        return _extract_features(estimator, X, features)
    key = (id(estimator), id(X), _feature_spec_key(features))
    hit = round_cache.get(key)
    if hit is not None and hit[0] is estimator and hit[1] is X:
        return hit[2]
    value = _extract_features(estimator, X, features)
    round_cache[key] = (estimator, X, value)
    return value


# ---------------------------------------------------------------------------
# scorers
# ---------------------------------------------------------------------------


def _check_metric(metric):
    if not isinstance(metric, str):
        raise ValueError(f"metric must be a string such as 'nc1', got {metric!r}.")
    name = (
        metric[4:] if metric.startswith("neg_") and metric[4:] not in _TRANSFER_METRICS else metric
    )
    if name not in _METRICS:
        raise ValueError(
            f"Unknown neural-collapse metric {metric!r}; choose from {sorted(_METRICS)}."
        )
    return name


class NCScorer:
    """A scikit-learn scorer returning a negated neural-collapse metric.

    Create it with :func:`make_nc_scorer` (or :func:`get_scorer` for the
    ``neg_nc*`` names). ``scorer(estimator, X, y)`` scores the features the
    fitted estimator gives ``X`` (see the module notes); several NC scorers
    used together in a ``scoring`` dict compute the features once.

    Parameters
    ----------
    metric : str
        One of ``"nc1"``, ``"cdnv"``, ``"nc2"``, ``"nc3"``, ``"nc4"``,
        ``"equinorm"``, ``"equiangularity"`` (a ``"neg_"`` prefix is allowed).
    features : None, str or callable, default=None
        Which features: None for the default rule, a Pipeline step name, or
        ``callable(estimator, X)``.
    layer : str, int or None, default=None
        Block of a multi-layer feature transformer to score.
    metric_kwargs : dict or None, default=None
        Options of the metric function (e.g. ``{"variant": "asymmetric"}``).
    """

    def __init__(self, metric, features=None, layer=None, metric_kwargs=None):
        self.metric = metric
        self.features = features
        self.layer = layer
        self.metric_kwargs = metric_kwargs

    def _validate(self):
        name = _check_metric(self.metric)
        kwargs = dict(self.metric_kwargs or {})
        allowed = _METRICS[name][1]
        unknown = set(kwargs) - allowed
        if unknown:
            raise ValueError(
                f"Options {sorted(unknown)} are not valid for {name}; valid options "
                f"are {sorted(allowed)}."
            )
        return name, kwargs

    def _score_features(self, F, producer, estimator, y):
        name, kwargs = self._validate()
        func, _, needs_head = _METRICS[name]
        F = _select_layer(F, producer, self.layer)
        if name in _TRANSFER_METRICS:  # greater is better already
            return float(func(F, y, **kwargs))
        if not needs_head:
            return -float(func(F, y, **kwargs))
        clf = _final_predictor(estimator)
        coef = getattr(clf, "coef_", None) if clf is not None else None
        if coef is None:
            what = type(clf).__name__ if clf is not None else "no final classifier"
            raise ValueError(
                f"{name.upper()} needs a final linear classifier with coef_ (e.g. "
                f"LogisticRegression, LinearSVC, RidgeClassifier); the estimator has "
                f"{what}{' without coef_' if clf is not None else ''}."
            )
        check_not_one_vs_one(clf, name)
        classes = getattr(clf, "classes_", None)
        if name == "nc3":
            return -float(func(F, y, coef, classes=classes, **kwargs))
        intercept = getattr(clf, "intercept_", None)
        return -float(func(F, y, coef, intercept, classes=classes, **kwargs))

    def __call__(self, estimator, X, y, **kwargs):
        """Score a fitted estimator on ``(X, y)``; returns ``-metric``.

        Parameters
        ----------
        estimator : fitted estimator
            A Pipeline, transformer or classifier.
        X : array-like
            Inputs of the estimator.
        y : array-like of shape (n_samples,)
            Class labels.
        **kwargs : dict
            Not supported (raises TypeError if given).

        Returns
        -------
        float
            The negated metric (greater is better).
        """
        if kwargs:
            raise TypeError(f"NC scorers take no extra parameters, got {sorted(kwargs)}.")
        self._validate()
        token = multimetric_round()  # scikit-learn's scoring round, or None
        round_cache = None
        if token is not None:
            with _ROUND_LOCK:
                round_cache = _ROUND_CACHE.setdefault(token, {})
        F, producer, _ = _features_for(estimator, X, self.features, round_cache)
        return self._score_features(F, producer, estimator, y)

    def _accept_sample_weight(self):
        # scikit-learn asks scorers whether they take sample weights: they do not
        return False

    def __repr__(self):
        args = [repr(self.metric)]
        if self.features is not None:
            args.append(f"features={self.features!r}")
        if self.layer is not None:
            args.append(f"layer={self.layer!r}")
        args += [f"{k}={v!r}" for k, v in (self.metric_kwargs or {}).items()]
        return f"make_nc_scorer({', '.join(args)})"


def make_nc_scorer(metric, *, features=None, layer=None, **metric_kwargs):
    """Make a scorer for a neural-collapse metric (negated: greater is better).

    Parameters
    ----------
    metric : str
        A neural-collapse metric, ``{"nc1", "cdnv", "nc2", "nc3", "nc4",
        "equinorm", "equiangularity"}`` (negated; a ``"neg_"`` prefix is
        accepted too), or a transferability score, ``{"logme", "hscore",
        "hscore_shrinkage", "nleep", "transrate", "gbc", "parc", "sfda",
        "pactran", "knn"}`` (returned as is: greater is better).
    features : None, str or callable, default=None
        Which features to score. None: the inputs of the final classifier of a
        Pipeline (``estimator[:-1].transform(X)``), the output of a transformer
        or of a Pipeline ending in one, or X itself for a bare classifier.
        A string: the output of the Pipeline up to that named step.
        A callable: ``features(estimator, X)`` returns them.
    layer : str, int or None, default=None
        With a multi-layer feature transformer (a step with ``split_layers``,
        e.g. ``BackboneFeatures(layers=["layer3", "layer4"])``), score this
        block only (its key, or its position). Scorers for different layers
        still share one extraction.
    **metric_kwargs
        Options of the metric function: ``center`` (nc1, nc2, nc3,
        equinorm, equiangularity), ``variant`` (cdnv: "symmetric" or
        "asymmetric"; nc3: "papyan" or "zhu"), ``kind`` (equiangularity),
        ``chunk_size``; for the transferability scores, the options of
        their functions (e.g. ``random_state`` of ``nleep``).

    Returns
    -------
    NCScorer
        Callable ``scorer(estimator, X, y) -> -metric``.

    See Also
    --------
    get_scorer : The ``neg_nc*`` scorers by name.
    make_nc_multimetric_scorer : One callable computing several metrics (and
        accuracy) from one feature extraction.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.decomposition import PCA
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import cross_validate
    >>> from sklearn.pipeline import make_pipeline
    >>> from sknc.metrics import make_nc_scorer
    >>> X, y = load_iris(return_X_y=True)
    >>> pipe = make_pipeline(PCA(2), LogisticRegression())
    >>> scoring = {"acc": "accuracy", "nc1": make_nc_scorer("nc1"),
    ...            "cdnv": make_nc_scorer("cdnv", variant="asymmetric")}
    >>> res = cross_validate(pipe, X, y, scoring=scoring, cv=3)
    >>> bool((res["test_nc1"] < 0).all())
    True
    """
    scorer = NCScorer(metric, features=features, layer=layer, metric_kwargs=metric_kwargs)
    scorer._validate()
    return scorer


nc_scorer = deprecated_alias(
    make_nc_scorer, "sknc.metrics.nc_scorer", "sknc.metrics.make_nc_scorer"
)


def get_scorer(scoring):
    """Get a scorer by name: ``neg_nc*``, a transferability score, or any scikit-learn one.

    Extends :func:`sklearn.metrics.get_scorer` without changing it: every
    name or callable it accepts gives exactly its result (a name sknc adds
    is not one of scikit-learn's), and the names below give NC scorers.

    Parameters
    ----------
    scoring : str or callable
        ``"neg_nc1"``, ``"neg_cdnv"``, ``"neg_nc2"``, ``"neg_nc3"``,
        ``"neg_nc4"``, the transferability scores ``"logme"``, ``"hscore"``,
        ``"hscore_shrinkage"``, ``"nleep"``, ``"transrate"``, ``"gbc"``,
        ``"parc"``, ``"sfda"``, ``"pactran"``, ``"knn"``, or anything
        :func:`sklearn.metrics.get_scorer` accepts
        (callables are returned as they are).

    Returns
    -------
    callable
        A new scorer object.

    Examples
    --------
    >>> from sknc.metrics import get_scorer
    >>> get_scorer("neg_nc1")
    make_nc_scorer('nc1')
    >>> get_scorer("accuracy")
    make_scorer(accuracy_score, response_method='predict')
    """
    if isinstance(scoring, str) and scoring in _TRANSFER_METRICS:
        return make_nc_scorer(scoring)
    if isinstance(scoring, str) and scoring in _NAMED_SCORERS:
        return make_nc_scorer(scoring[4:])
    return _sk_get_scorer(scoring)


def get_scorer_names():
    """Names accepted by :func:`get_scorer`: scikit-learn's, ``neg_nc*`` and the transferability scores.

    Extends :func:`sklearn.metrics.get_scorer_names`: all of its names, plus
    sknc's.

    Returns
    -------
    list of str
        Sorted scorer names.

    Examples
    --------
    >>> from sklearn.metrics import get_scorer_names as sklearn_names
    >>> from sknc.metrics import get_scorer_names
    >>> set(sklearn_names()) < set(get_scorer_names())
    True
    >>> sorted(set(get_scorer_names()) - set(sklearn_names()))[:3]
    ['gbc', 'hscore', 'hscore_shrinkage']
    """
    return sorted(set(_sk_get_scorer_names()) | set(_NAMED_SCORERS))


class NCMultiScorer:
    """One scoring callable that returns a dict of metrics from one extraction.

    Made by :func:`make_nc_multimetric_scorer`.

    Parameters
    ----------
    scoring : dict of str to (str or callable)
        Metric names mapped to scorers (NC scorers, ``neg_nc*`` names, or
        any scikit-learn scorer or scorer name).
    """

    def __init__(self, scoring):
        self.scoring = scoring

    def _scorers(self):
        if not isinstance(self.scoring, dict) or not self.scoring:
            raise ValueError("scoring must be a non-empty dict of name -> scorer.")
        return {name: get_scorer(s) for name, s in self.scoring.items()}

    def __call__(self, estimator, X, y, **kwargs):
        """Score a fitted estimator; returns a dict name -> score.

        Parameters
        ----------
        estimator : fitted estimator
            A Pipeline, transformer or classifier.
        X : array-like
            Inputs of the estimator.
        y : array-like of shape (n_samples,)
            Class labels.
        **kwargs : dict
            Passed on to the non-NC scorers.

        Returns
        -------
        dict
            One score per entry of ``scoring``, in its order.
        """
        scorers = self._scorers()
        cache = {}
        out = {}
        others = {}
        for name, scorer in scorers.items():
            if isinstance(scorer, NCScorer):
                F, producer, _ = _features_for(estimator, X, scorer.features, cache)
                out[name] = scorer._score_features(F, producer, estimator, y)
            else:
                others[name] = scorer
        if others:
            clf = _final_predictor(estimator)
            if isinstance(estimator, Pipeline) and clf is not None and len(estimator.steps) > 1:
                # the pipeline's predictions are the final step's on the shared features
                F, _, _ = _features_for(estimator, X, None, cache)
                target, target_X = clf, F
            else:
                target, target_X = estimator, X
            multi = check_scoring(target, scoring=others)
            out.update(multi(target, target_X, y, **kwargs))
        return {name: out[name] for name in scorers}

    def _accept_sample_weight(self):
        return False

    def __repr__(self):
        return f"make_nc_multimetric_scorer({self.scoring!r})"


def make_nc_multimetric_scorer(scoring):
    """A single scoring callable computing several metrics from one extraction.

    scikit-learn accepts a callable returning a dict wherever it accepts
    multi-metric scoring (``cross_validate``, ``GridSearchCV(refit=name)``).
    This one runs the feature part of the estimator once per (estimator,
    fold) and computes every NC metric from it; for a Pipeline whose last step
    is a predictor, the other scorers (accuracy, f1, ...) are evaluated on
    that last step with the same features, which equals scoring the whole
    pipeline for scorers based on ``predict``, ``predict_proba`` or
    ``decision_function``. The backbone thus runs once per fold in all.

    Parameters
    ----------
    scoring : dict of str to (str or callable)
        E.g. ``{"acc": "accuracy", "nc1": "neg_nc1",
        "cdnv": make_nc_scorer("cdnv", variant="asymmetric")}``.

    Returns
    -------
    NCMultiScorer
        Callable ``(estimator, X, y) -> dict``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.model_selection import GridSearchCV
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sknc.metrics import make_nc_multimetric_scorer
    >>> X, y = load_iris(return_X_y=True)
    >>> pipe = make_pipeline(StandardScaler(), LogisticRegression())
    >>> scoring = make_nc_multimetric_scorer({"acc": "accuracy", "nc1": "neg_nc1", "nc3": "neg_nc3"})
    >>> search = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]},
    ...                       scoring=scoring, refit="acc", cv=3).fit(X, y)
    >>> sorted(k for k in search.cv_results_ if k.startswith("mean_test"))
    ['mean_test_acc', 'mean_test_nc1', 'mean_test_nc3']
    """
    multi = NCMultiScorer(scoring)
    multi._scorers()
    return multi


make_nc_scoring = deprecated_alias(
    make_nc_multimetric_scorer,
    "sknc.metrics.make_nc_scoring",
    "sknc.metrics.make_nc_multimetric_scorer",
)

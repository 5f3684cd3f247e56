"""The one place where sknc relies on a private internal of scikit-learn.

multimetric_round()
    The per-call object of the enclosing multi-metric scoring round of
    scikit-learn, or None outside one.

Why
---
scikit-learn evaluates a ``scoring`` dict (``cross_validate``,
``GridSearchCV(scoring={...})``) with its private ``_MultimetricScorer``,
which calls each scorer in turn on the same fitted estimator and the same
``X``. sknc's NC scorers of one such round share the features of that
``(estimator, X)`` so that the backbone runs once, not once per scorer.
scikit-learn offers no public hook that tells a scorer "these calls belong
together" (its own prediction cache is reserved to its ``_BaseScorer``
subclasses, itself private). The public alternative is
:func:`sknc.metrics.make_nc_multimetric_scorer`, one callable that scores
every metric from one extraction.

How
---
``_MultimetricScorer.__call__`` creates a fresh ``cached_call`` object
(a ``functools.partial``) for every call and calls the scorers from that
frame. :func:`multimetric_round` finds that frame among its callers (by the
identity of the method's code object) and returns the ``cached_call``
object, which identifies the round and lives exactly as long as it.

When scikit-learn changes
-------------------------
The versions tested are those allowed by ``pyproject.toml``
(``scikit-learn>=1.6,<1.10``). If the class, the method or its local are
gone, :func:`multimetric_round` returns None (every NC scorer then computes
its own features: correct, only slower) and warns once with
:class:`SklearnInternalsWarning`; ``tests/test_scorer.py`` fails loudly
(``test_scorers_share_features_within_a_scoring_round``), since it counts
the feature extractions of ``cross_validate`` with two NC scorers.
"""

import sys
import weakref

import sklearn

from ._warnings import SkncWarning, warn_external

__all__ = ["SklearnInternalsWarning", "multimetric_round"]

try:
    from sklearn.metrics._scorer import _MultimetricScorer
except ImportError:  # pragma: no cover - only with an untested scikit-learn
    _MultimetricScorer = None

_CALL_CODE = (
    None
    if _MultimetricScorer is None
    else getattr(vars(_MultimetricScorer).get("__call__"), "__code__", None)
)
_ROUND_LOCAL = "cached_call"
_MAX_DEPTH = 6  # frames between _MultimetricScorer.__call__ and this function
_warned = []


class SklearnInternalsWarning(SkncWarning):
    """scikit-learn's internals no longer match what sknc expects (features not shared)."""


def _warn_once(why):
    if _warned:
        return
    _warned.append(why)
    warn_external(
        f"scikit-learn {sklearn.__version__}: {why}, so NC scorers in one scoring dict "
        "each compute their features (the scores are right, only slower). sknc is "
        "tested with scikit-learn>=1.6,<1.10; use sknc.metrics.make_nc_multimetric_scorer "
        "for one extraction per fold.",
        SklearnInternalsWarning,
    )


def multimetric_round():
    """The per-call round object of the enclosing ``_MultimetricScorer`` call, or None.

    Call it from a scorer's ``__call__`` (directly, or through at most a few
    helper frames). The object can be held weakly: it dies with the round.

    Returns
    -------
    object or None
    """
    if _CALL_CODE is None:
        _warn_once("sklearn.metrics._scorer._MultimetricScorer.__call__ is gone")
        return None
    frame = sys._getframe(1)
    for _ in range(_MAX_DEPTH):
        if frame is None:
            return None
        if frame.f_code is _CALL_CODE:
            token = frame.f_locals.get(_ROUND_LOCAL)
            try:
                weakref.ref(token)
            except TypeError:
                _warn_once(
                    f"_MultimetricScorer.__call__ has no weak-referenceable {_ROUND_LOCAL!r}"
                )
                return None
            return token
        frame = frame.f_back
    return None

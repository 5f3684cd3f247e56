"""Warnings that point at the user's code, not at sknc's internals.

Contents
--------
SkncWarning
    Base class of sknc's own warnings (a ``UserWarning``).
RandomWeightsWarning, CacheWarning, IgnoredOptionWarning, UndefinedScoreWarning, SkncFutureWarning
    Its subclasses for one kind of warning each, so that a script (or a
    test) can silence one kind without silencing the others. Each also
    derives from the built-in category a user would filter for it
    (``RuntimeWarning`` for undefined values, ``FutureWarning`` for
    deprecations).
warn_external(message, category=SkncWarning)
    ``warnings.warn`` with the stack level of the first frame outside the
    sknc package, so that the warning names the line of the caller (the
    user's script, test or notebook cell) however deep inside sknc it was
    raised and whatever wrappers are in between.

``warnings.warn(..., skip_file_prefixes=...)`` does the same from Python 3.12
on; sknc supports 3.10, so the stack level is computed here for every version.
"""

import os
import sys
import warnings

__all__ = [
    "CacheWarning",
    "IgnoredOptionWarning",
    "RandomWeightsWarning",
    "SkncFutureWarning",
    "SkncWarning",
    "UndefinedScoreWarning",
    "warn_external",
]

_PACKAGE_DIR = os.path.normcase(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PREFIX = _PACKAGE_DIR + os.sep


class SkncWarning(UserWarning):
    """Base class of the warnings sknc itself issues.

    Filter them as a group (``warnings.filterwarnings("ignore",
    category=SkncWarning)``); the test suite turns them into errors unless a
    test expects them.
    """


class RandomWeightsWarning(SkncWarning):
    """A backbone with random weights that makes frozen features uninformative.

    E.g. timm's ``zero_init_last=True`` leaves residual branches switched
    off until trained.
    """


class CacheWarning(SkncWarning):
    """A cache (of features, of a frozen prefix) could not be used.

    The results are computed without it and are the same; only time is lost.
    """


class IgnoredOptionWarning(SkncWarning):
    """An option given by the user has no effect here (e.g. ``amp`` off CUDA)."""


class UndefinedScoreWarning(SkncWarning, RuntimeWarning):
    """A score is undefined on these data and is reported as NaN."""


class SkncFutureWarning(SkncWarning, FutureWarning):
    """A deprecated sknc name or behaviour, removed in a later release."""


def _in_package(frame):
    filename = frame.f_code.co_filename
    return os.path.normcase(os.path.abspath(filename)).startswith(_PREFIX)


def external_stacklevel():
    """The ``stacklevel`` naming the first frame outside sknc, seen from the caller.

    For a function ``f`` inside sknc, ``warnings.warn(msg, stacklevel=
    external_stacklevel())`` written in ``f`` points at the first frame,
    going up from ``f``, whose file is not in the sknc package (``f``
    itself counts as level 1). When every frame is inside sknc (e.g.
    ``python -m sknc``) it names the outermost one.
    """
    frame = sys._getframe(1)  # the caller: stack level 1 for its warnings.warn
    level = 1
    while frame.f_back is not None and _in_package(frame):
        frame = frame.f_back
        level += 1
    return level


def warn_external(message, category=SkncWarning):
    """Issue a warning attributed to the first caller outside the sknc package.

    Parameters
    ----------
    message : str
        The warning message.
    category : Warning subclass, default=SkncWarning
        The warning category (a :class:`SkncWarning` subclass for sknc's own
        warnings).

    Examples
    --------
    >>> import warnings
    >>> from sknc.utils._warnings import warn_external
    >>> with warnings.catch_warnings(record=True) as record:
    ...     warnings.simplefilter("always")
    ...     warn_external("careful")
    >>> str(record[0].message), record[0].category.__name__
    ('careful', 'SkncWarning')
    """
    # level 1 of external_stacklevel() is this function; warnings.warn in
    # here sees the same stack
    warnings.warn(message, category, stacklevel=external_stacklevel())

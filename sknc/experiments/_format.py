"""The one set of number formatters of every report: ``report.md``, the docs' results page, verdicts.

Each returns ``"n/a"`` for a missing value (None, as NaN and inf become in
``results.json``, or a non-finite float). Every number a report prints is
one of these applied to a number of its results (the tests check it), so a
number is never written two ways.

num(x, digits=3)
    Ints as they are, floats to ``digits`` significant digits.
pct(x, digits=1)
    A fraction in [0, 1] as a percentage, without the ``%`` sign.
percent(x)
    ``pct(x) + "%"`` (``"n/a"`` without the sign).
secs(x, digits=1)
    Seconds with ``digits`` decimals.
pval(x)
    A p-value or a correlation, two significant digits.
p_equals(x)
    ``"= 0.012"`` or ``"< 1e-4"``, to follow a "p".
count(x)
    An integer with thousands separators.
ratio(x)
    ``"2.5x"``.
"""

import math
import numbers

__all__ = [
    "FORMATTERS",
    "count",
    "finite",
    "num",
    "p_equals",
    "pct",
    "percent",
    "pval",
    "ratio",
    "secs",
]


def finite(x):
    """False for None (NaN or inf after a JSON round trip) and non-finite numbers."""
    if x is None or isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x, digits=3):
    """Ints as they are, floats to ``digits`` significant digits."""
    if not finite(x):
        return "n/a"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    return f"{float(x):.{digits}g}"


def pct(x, digits=1):
    """A fraction in [0, 1] as a percentage with ``digits`` decimals (no ``%`` sign)."""
    return "n/a" if not finite(x) else f"{100 * float(x):.{digits}f}"


def percent(x, digits=1):
    """A fraction as a percentage with the sign: ``"12.3%"`` (``"n/a"`` when missing)."""
    return "n/a" if not finite(x) else pct(x, digits) + "%"


def secs(x, digits=1):
    """Seconds with ``digits`` decimals."""
    return "n/a" if not finite(x) else f"{float(x):.{digits}f}"


def pval(x):
    """A p-value or a correlation, two significant digits."""
    return "n/a" if not finite(x) else f"{float(x):.2g}"


def p_equals(x):
    """``"= 0.012"`` or ``"< 1e-4"`` (to follow a "p")."""
    if not finite(x):
        return "= n/a"
    return f"= {float(x):.2g}" if x >= 1e-4 else "< 1e-4"


def count(x):
    """An integer count with thousands separators."""
    return "n/a" if not finite(x) else f"{int(x):,}"


def ratio(x):
    """A ratio with one decimal and an ``x``: ``"2.5x"``."""
    return "n/a" if not finite(x) else f"{float(x):.1f}x"


#: Every formatter the reports use (the tests match report numbers against these).
FORMATTERS = (num, pct, secs, pval, count)


#: Display names of the transferability scores (the keys of
#: :func:`sknc.model_selection.get_score_names`), for reports and results pages.
SCORE_LABELS = {
    "nc1": "NC1",
    "cdnv": "CDNV",
    "logme": "LogME",
    "hscore": "H-score",
    "hscore_shrinkage": "H-score (shrinkage)",
    "nleep": "NLEEP",
    "transrate": "TransRate",
    "gbc": "GBC",
    "parc": "PARC",
    "sfda": "SFDA",
    "pactran": "PACTran",
    "knn": "k-NN (LOO)",
    "ncti": "NCTI",
    "etran": "ETran",
    "leep": "LEEP",
    "nce": "NCE",
}

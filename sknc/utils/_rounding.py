"""Rounding-error bounds of the exact fast paths: one derivation, one set of constants.

sknc's fast paths ("compute fast, bound the rounding, re-check in float64
what the bound cannot decide") must pick the same class as the textbook
computation, although they round differently. They share these constants.

Derivation
----------
Let ``u`` be the unit roundoff (``2**-53`` in float64, ``2**-24`` in
float32). A dot product of ``n`` terms computed in floating point, in any
summation order (blocked, pairwise, fused), satisfies (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., eq. 3.5)::

    |fl(a.b) - a.b| <= gamma_n sum_i |a_i b_i| <= gamma_n ||a|| ||b||,
    gamma_n = n u / (1 - n u).

:func:`dot_error32` is ``gamma_{n+2}`` in float32: the two extra terms cover
rounding one operand to float32 first. :func:`gamma64` is a deliberately
generous float64 factor, ``16 (n + 16) eps64 = 32 (n + 16) u64``: more than
``gamma_n`` plus the handful of extra roundings (a shift by a reference
point, a norm, a division) each path adds, so the same factor serves
several formulas.

Decisions: let every score (a distance, or a negated similarity) be within
``E`` of its exact value, in each of two implementations. If the computed
best and second-best scores of one implementation differ by more than
``4 E``, the exact margin exceeds ``2 E`` and the other implementation,
also within ``E``, must rank the same class first. :func:`safe_margin`
doubles that: ``8 E`` (and ``4 E32`` for an extra float32 error ``E32``
that only one of the two implementations has, doubled in the same way).
A margin not above it (a NaN margin included) is "undecided": the caller
recomputes in float64, or runs the textbook computation itself.

The metrics' near-tie checks (NC4 in ``sknc.metrics``) decide in the compute
dtype of ``X`` (float32 for float32 features, else float64) what the
exact scores decide, and leave the rest to a float64 check (``x W^T + b``,
direct distances to the class means; ties go to the first class). Their
score errors are bounded by :func:`dot_error` in the compute dtype
(residuals ``E``, one rounding of ``x - hi`` included, times ``||E||`` and
the norms of the table rows) plus :func:`gamma64` of the float64 tables,
and the margin is ``safe_margin(err64 + err_c)``: generous (one
implementation only, not two, carries these errors), so a decided row
equals the exact decision. Per row the margin is linear in ``||E||``,
:func:`row_margin`. A product through two matrices (``(E P) C`` with
``P C = 2 Mc^T``) costs ``dot_error`` of both lengths times ``||Mc||_F``:
the scaling by the singular values cancels entry by entry.
"""

import numpy as np

EPS64 = 2.0**-52  # float64 machine epsilon (2 u64)
U32 = 2.0**-24  # float32 unit roundoff
TINY32 = 2.0**-126  # smallest normal float32


def gamma64(n_terms):
    """Generous relative error factor of float64 sums and dot products of ``n_terms``.

    Examples
    --------
    >>> from sknc.utils._rounding import gamma64
    >>> gamma64(512) < 1e-11
    True
    """
    return 16.0 * (n_terms + 16) * EPS64


def dot_error32(n_terms):
    """Rigorous relative error factor of a float32 dot product of ``n_terms``.

    ``gamma_{n+2}`` in float32: any summation order, one operand rounded
    from float64 to float32 first. Multiply by ``||a|| ||b||``.
    """
    k = (n_terms + 2) * U32
    return k / (1.0 - k)


def unit_roundoff(dtype):
    """Unit roundoff ``u`` of a floating dtype (numpy dtype, type or name).

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.utils._rounding import U32, unit_roundoff
    >>> unit_roundoff(np.float32) == U32
    True
    """
    return float(np.finfo(np.dtype(dtype)).eps) / 2.0


def dot_error(n_terms, dtype):
    """Rigorous relative error factor of a dot product of ``n_terms`` in ``dtype``.

    ``gamma_{n+2}`` with the unit roundoff of ``dtype``: any summation order,
    one operand rounded to ``dtype`` first. Multiply by ``||a|| ||b||``.
    ``dot_error(n, np.float32) == dot_error32(n)``.
    """
    k = (n_terms + 2) * unit_roundoff(dtype)
    return k / (1.0 - k)


def safe_margin(err64, err32=0.0):
    """Margin above which two implementations surely pick the same best score.

    ``err64`` bounds the error of each score in either implementation;
    ``err32`` the extra error of a float32 first pass (see the module note).
    Works on floats, numpy arrays and torch tensors alike.
    """
    return 8.0 * err64 + 4.0 * err32


def row_margin(coeffs, norm):
    """Per-row margin ``c0 + c1 ||E||`` from ``coeffs = (c0, c1)``.

    ``norm`` holds the rows' ``||E||`` (numpy array or torch tensor); see the
    module note.

    Examples
    --------
    >>> from sknc.utils._rounding import row_margin
    >>> row_margin((1.0, 2.0), 3.0)
    7.0
    """
    c0, c1 = coeffs
    return c1 * norm + c0

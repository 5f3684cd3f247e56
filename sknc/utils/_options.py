"""The options sknc's estimators accept, and their validation, defined once.

Contents
--------
METHODS, PAPER_METHODS, TUNED_METHODS, PEFT_METHODS, CACHEABLE_METHODS
    Fine-tuning method names (all of them; Li et al.'s four; those that tune
    blocks; the parameter-efficient baselines; those whose frozen prefix can
    be cached).
OPTIMIZERS, INTERPOLATIONS, POOLS, FEATURE_POOLS, COMBINES, PROJECTIONS
    The other option tuples (optimizer names; resize interpolations; pooling
    of a block's output; pooling of feature outputs, which adds
    ``"flatten"``; SCL-FT's skip-branch choices).
AMP, check_amp(amp, caller), amp_dtype(amp, device, what=None)
    The one meaning of ``amp`` (mixed precision) for every estimator:
    ``True`` is float16 (``torch.autocast``'s own CUDA default), strings
    name a dtype, and off CUDA it is ignored with the same warning.
Interval, Options, Check, InvalidParameterError, validate_params(...)
    A scikit-learn-style parameter-constraint vocabulary: an estimator
    declares ``_parameter_constraints = {name: [constraint, ...]}`` once and
    ``validate_params`` checks a dict of values against it, raising
    ``InvalidParameterError`` (a ``ValueError`` and a ``TypeError``) whose
    message names the parameter, what it must be and what it got.

Why not scikit-learn's own validator: in scikit-learn (1.6 to 1.9) the
constraint classes and ``validate_parameter_constraints`` live in the private
module ``sklearn.utils._param_validation``, and its ``Interval`` accepts
booleans as numbers (``lr=True`` would train with a learning rate of 1).
This module follows the same shape (a dict of lists of constraints, a value
is valid when one constraint accepts it) with sknc's stricter rules, so
nothing depends on scikit-learn's private internals.

Depends on numpy only (torch is not imported here).
"""

import numbers

import numpy as np

from ._warnings import IgnoredOptionWarning, warn_external

__all__ = [
    "AMP",
    "CACHEABLE_METHODS",
    "COMBINES",
    "FEATURE_POOLS",
    "INTERPOLATIONS",
    "METHODS",
    "OPTIMIZERS",
    "PAPER_METHODS",
    "PEFT_METHODS",
    "POOLS",
    "PROJECTIONS",
    "TUNED_METHODS",
    "AmpWarning",
    "Check",
    "InvalidParameterError",
    "Interval",
    "Options",
    "amp_dtype",
    "check_amp",
    "validate_params",
]

# ----------------------------------------------------------------------------
# option tuples
# ----------------------------------------------------------------------------
#: Every fine-tuning method of ``FineTuningClassifier(method=...)``.
METHODS = ("linear-probe", "layer-ft", "scl-ft", "full-ft", "lora", "bitfit", "norm")
#: The four methods compared by Li et al. (TMLR 2024).
PAPER_METHODS = ("linear-probe", "layer-ft", "scl-ft", "full-ft")
#: Methods that tune chosen blocks (``tuned_block``, ``last_k``).
TUNED_METHODS = ("layer-ft", "scl-ft")
#: Parameter-efficient baselines: trainable parameters throughout the backbone.
PEFT_METHODS = ("lora", "bitfit", "norm")
#: Methods whose frozen prefix is a fixed function (prefix caching applies).
CACHEABLE_METHODS = ("linear-probe", "layer-ft", "scl-ft")
#: Optimizer names (any ``torch.optim.Optimizer`` subclass is accepted too).
OPTIMIZERS = ("adamw", "adam", "sgd")
#: Resize interpolations of the image preprocessing.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
#: Pooling of a block's output (SCL-FT's ``skip_pool``, layer-wise NC).
POOLS = ("auto", "avg", "token", "max")
#: Pooling of extracted features (``BackboneFeatures.pool``): also ``"flatten"``.
FEATURE_POOLS = (*POOLS, "flatten")
#: SCL-FT: how the skip branch meets the penultimate features.
COMBINES = ("add", "concat")
#: SCL-FT: the skip branch's projection.
PROJECTIONS = ("auto", "linear", "identity")

#: ``amp`` values and the autocast dtype each means on CUDA (None: off).
AMP = {
    False: None,
    None: None,
    True: "float16",
    "float16": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


class AmpWarning(IgnoredOptionWarning):
    """``amp`` was asked for where it does not apply (off CUDA): float32 is used.

    Issued at ``fit`` by every sknc estimator with an ``amp`` parameter
    (``BackboneFeatures``, ``TextFeatures``, ``FineTuningClassifier``); a
    ``UserWarning``.
    """


def check_amp(amp, caller):
    """Raise :class:`InvalidParameterError` unless ``amp`` is one of :data:`AMP`."""
    validate_params({"amp": [Options(*AMP)]}, {"amp": amp}, caller)


def amp_dtype(amp, device, what=None):
    """The autocast dtype name that ``amp`` means on ``device``, or None.

    The one meaning of ``amp`` in sknc: ``False``/``None`` is off, ``True``
    and ``"float16"``/``"fp16"`` are float16 (``torch.autocast``'s default
    on CUDA; training adds gradient scaling), ``"bfloat16"``/``"bf16"`` is
    bfloat16. Mixed precision applies on CUDA only: on any other device
    ``amp`` means float32, and with ``what`` given an :class:`AmpWarning`
    (a ``UserWarning``) says so.

    Parameters
    ----------
    amp : bool, None or {"float16", "fp16", "bfloat16", "bf16"}
    device : torch.device or str
    what : str or None, default=None
        Warn off CUDA: ``"amp=... only applies on CUDA; on 'cpu' {what} in
        float32."`` (None: no warning, for repeated look-ups).

    Returns
    -------
    {"float16", "bfloat16"} or None

    Raises
    ------
    InvalidParameterError
        For any other value of ``amp``.

    Examples
    --------
    >>> from sknc.utils._options import amp_dtype
    >>> amp_dtype(True, "cuda"), amp_dtype("bf16", "cuda:0"), amp_dtype(False, "cpu")
    ('float16', 'bfloat16', None)
    >>> amp_dtype(True, "cpu") is None
    True
    """
    check_amp(amp, "amp_dtype")
    dtype = AMP[_option_key(amp)]
    device_type = getattr(device, "type", str(device).split(":", 1)[0])
    if dtype is None:
        return None
    if device_type != "cuda":
        if what is not None:
            warn_external(
                f"amp={amp!r} only applies on CUDA; on {device_type!r} {what} in float32.",
                AmpWarning,
            )
        return None
    return dtype


def _option_key(value):
    """``value`` as a key of an options dict (numpy booleans as Python ones)."""
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# ----------------------------------------------------------------------------
# parameter constraints
# ----------------------------------------------------------------------------
class InvalidParameterError(ValueError, TypeError):
    """A parameter has a value its constraints do not allow.

    Both a ``ValueError`` and a ``TypeError`` (like scikit-learn's), so code
    catching either keeps working.
    """


def _is_bool(value):
    return isinstance(value, (bool, np.bool_))


def _is_int(value):
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def _is_real(value):
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _fmt(x):
    return f"{x:g}" if isinstance(x, float) else str(x)


class Interval:
    """Numbers of one kind in a range; booleans are never numbers here.

    Parameters
    ----------
    kind : {"int", "real"}
        ``"int"``: integers (numpy integers included); ``"real"``: any real
        number, integers included.
    low, high : number or None
        Bounds (None: unbounded).
    closed : {"both", "left", "right", "neither"}, default="both"
        Which bounds belong to the interval.
    """

    def __init__(self, kind, low=None, high=None, closed="both"):
        if kind not in ("int", "real"):
            raise ValueError(f"kind must be 'int' or 'real', got {kind!r}.")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed must be both/left/right/neither, got {closed!r}.")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def is_satisfied_by(self, value):
        if not (_is_int(value) if self.kind == "int" else _is_real(value)):
            return False
        if value != value:  # NaN
            return False
        lo_ok = self.low is None or (
            value >= self.low if self.closed in ("both", "left") else value > self.low
        )
        hi_ok = self.high is None or (
            value <= self.high if self.closed in ("both", "right") else value < self.high
        )
        return bool(lo_ok and hi_ok)

    def __str__(self):
        noun = "an int" if self.kind == "int" else "a number"
        left_closed = self.closed in ("both", "left")
        right_closed = self.closed in ("both", "right")
        if self.low is None and self.high is None:
            return noun
        if self.high is None:
            return f"{noun} {'>=' if left_closed else '>'} {_fmt(self.low)}"
        if self.low is None:
            return f"{noun} {'<=' if right_closed else '<'} {_fmt(self.high)}"
        return (
            f"{noun} in {'[' if left_closed else '('}{_fmt(self.low)}, "
            f"{_fmt(self.high)}{']' if right_closed else ')'}"
        )


class Options:
    """One of the given values; ``True``/``False``/``None`` match only themselves.

    ``1 == True`` in Python, but ``amp=1`` is not ``amp=True``: booleans
    (numpy ones included) match boolean options only, strings string options
    only.
    """

    def __init__(self, *values):
        self.values = values

    def is_satisfied_by(self, value):
        for option in self.values:
            if option is None or _is_bool(option):
                if (option is None and value is None) or (
                    option is not None and _is_bool(value) and bool(value) is bool(option)
                ):
                    return True
            elif isinstance(option, str):
                if isinstance(value, str) and value == option:
                    return True
            elif type(value) is type(option) and value == option:
                return True
        return False

    def __str__(self):
        if len(self.values) == 1:
            return repr(self.values[0])
        return f"one of {self.values!r}"


class Check:
    """A value for which ``predicate(value)`` is true, described in words."""

    def __init__(self, predicate, description):
        self.predicate = predicate
        self.description = description

    def is_satisfied_by(self, value):
        try:
            return bool(self.predicate(value))
        except Exception:  # a predicate that cannot handle the value rejects it
            return False

    def __str__(self):
        return self.description


def _satisfies(constraint, value):
    if constraint is None:
        return value is None
    if constraint == "boolean":
        return _is_bool(value)
    if constraint == "callable":
        return callable(value)
    if constraint == "random_state":
        return value is None or _is_int(value) or isinstance(value, np.random.RandomState)
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    return constraint.is_satisfied_by(value)


def _describe(constraint):
    if constraint is None:
        return "None"
    if constraint == "boolean":
        return "a bool"
    if constraint == "callable":
        return "a callable"
    if constraint == "random_state":
        return "an int, a numpy RandomState or None"
    if isinstance(constraint, type):
        return f"an instance of {constraint.__name__}"
    return str(constraint)


def validate_params(constraints, params, caller):
    """Check ``params`` against ``constraints``; the first violation raises.

    Parameters
    ----------
    constraints : dict {str: list of constraints or "no_validation"}
        A value is valid when one of its constraints accepts it. A
        constraint is an :class:`Interval`, :class:`Options` or
        :class:`Check`, a type (``isinstance``), None (the value None),
        ``"boolean"`` (``bool`` or ``numpy.bool_``), ``"callable"`` or
        ``"random_state"``. Parameters without an entry are not checked.
    params : dict {str: value}
    caller : str
        Named in the error message.

    Raises
    ------
    InvalidParameterError
        ``"{caller}: {name} must be {what}, got {value!r}."``

    Examples
    --------
    >>> from sknc.utils._options import Interval, validate_params
    >>> table = {"lr": [Interval("real", 0, None, closed="neither")]}
    >>> validate_params(table, {"lr": 0.1}, "demo")
    >>> validate_params(table, {"lr": True}, "demo")
    Traceback (most recent call last):
    ...
    sknc.utils._options.InvalidParameterError: demo: lr must be a number > 0, got True.
    """
    for name, value in params.items():
        options = constraints.get(name, "no_validation")
        if isinstance(options, str) and options == "no_validation":
            continue
        if any(_satisfies(c, value) for c in options):
            continue
        # None reads best last: "a number in (0, 1] or None"
        described = [_describe(c) for c in options if c is not None]
        described += ["None"] * (None in options)
        what = (
            described[0]
            if len(described) == 1
            else f"{', '.join(described[:-1])} or {described[-1]}"
        )
        raise InvalidParameterError(f"{caller}: {name} must be {what}, got {value!r}.")

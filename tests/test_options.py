"""sknc.utils._options: the option tuples, ``amp`` and the parameter-constraint vocabulary."""

import ast
from pathlib import Path

import numpy as np
import pytest

from sknc.utils import _options
from sknc.utils._options import (
    AMP,
    FEATURE_POOLS,
    INTERPOLATIONS,
    METHODS,
    PAPER_METHODS,
    POOLS,
    AmpWarning,
    Check,
    Interval,
    InvalidParameterError,
    Options,
    amp_dtype,
    validate_params,
)

PACKAGE = Path(__file__).resolve().parents[1] / "sknc"


# ---------------------------------------------------------------------------
# one definition of each option tuple
# ---------------------------------------------------------------------------
def _tuple_literals(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple) and node.elts:
            if all(isinstance(e, ast.Constant) for e in node.elts):
                yield node.lineno, tuple(e.value for e in node.elts)


def test_option_tuples_are_defined_once():
    """No module of sknc spells an option tuple out again: it imports it."""
    tuples = {
        name: value
        for name, value in vars(_options).items()
        if name.isupper() and isinstance(value, tuple) and len(value) > 2
    }
    assert {"METHODS", "PAPER_METHODS", "INTERPOLATIONS", "POOLS", "OPTIMIZERS"} <= set(tuples)
    repeated = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_options.py" and path.parent.name == "utils":
            continue
        for lineno, value in _tuple_literals(path):
            for name, option in tuples.items():
                if value == option or (len(value) > 2 and set(value) == set(option)):
                    repeated.append(f"{path.relative_to(PACKAGE)}:{lineno} repeats {name}")
    assert not repeated, "\n".join(repeated)


def test_option_tuples_relate():
    assert set(PAPER_METHODS) <= set(METHODS)
    assert FEATURE_POOLS[: len(POOLS)] == POOLS and "flatten" in FEATURE_POOLS
    assert INTERPOLATIONS == ("bilinear", "bicubic", "nearest")


# ---------------------------------------------------------------------------
# amp
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "amp, dtype",
    [
        (False, None),
        (None, None),
        (True, "float16"),
        ("float16", "float16"),
        ("fp16", "float16"),
        ("bfloat16", "bfloat16"),
        ("bf16", "bfloat16"),
        (np.True_, "float16"),
    ],
)
def test_amp_dtype_on_cuda(amp, dtype):
    assert amp_dtype(amp, "cuda") == dtype
    assert amp_dtype(amp, "cuda:1") == dtype


def test_amp_off_cuda_is_float32_with_one_warning():
    assert amp_dtype("bf16", "cpu") is None  # no warning without ``what``
    with pytest.warns(AmpWarning, match=r"amp='bf16' only applies on CUDA; on 'cpu' x run in"):
        assert amp_dtype("bf16", "cpu", what="x run") is None
    with pytest.warns(UserWarning):  # AmpWarning is a UserWarning
        amp_dtype(True, "mps", what="x run")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert amp_dtype(False, "cpu", what="x run") is None  # off: nothing to say


@pytest.mark.parametrize("bad", [1, 0, "fp8", "half", 16, "True"])
def test_amp_rejects_other_values(bad):
    with pytest.raises(InvalidParameterError, match="amp must be one of"):
        amp_dtype(bad, "cuda")
    assert set(AMP) == {False, None, True, "float16", "fp16", "bfloat16", "bf16"}


# ---------------------------------------------------------------------------
# the constraint vocabulary
# ---------------------------------------------------------------------------
def test_interval_rejects_booleans_nan_and_other_kinds():
    positive = Interval("real", 0, closed="neither")
    assert positive.is_satisfied_by(1e-3) and positive.is_satisfied_by(np.float32(2))
    assert positive.is_satisfied_by(3)  # ints are reals
    for bad in (True, np.True_, 0, -1.0, float("nan"), "1", None):
        assert not positive.is_satisfied_by(bad), bad
    count = Interval("int", 1)
    assert count.is_satisfied_by(np.int64(4)) and count.is_satisfied_by(1)
    for bad in (True, 0, 1.0, 2.5):
        assert not count.is_satisfied_by(bad), bad
    unit = Interval("real", 0, 1, closed="right")
    assert unit.is_satisfied_by(1) and not unit.is_satisfied_by(0)
    assert str(unit) == "a number in (0, 1]"
    assert str(count) == "an int >= 1"
    assert str(positive) == "a number > 0"
    assert str(Interval("real", 0, 1, closed="left")) == "a number in [0, 1)"


def test_options_match_booleans_and_strings_strictly():
    opts = Options("auto", True, False)
    assert opts.is_satisfied_by("auto") and opts.is_satisfied_by(np.False_)
    for bad in (1, 0, "True", None, 1.0):
        assert not opts.is_satisfied_by(bad), bad
    assert Options(None).is_satisfied_by(None) and not Options(None).is_satisfied_by(False)


def test_validate_params_names_the_parameter_and_the_value():
    table = {
        "lr": [Interval("real", 0, closed="neither")],
        "pool": [None, Options("avg", "max")],
        "hook": [None, "callable"],
        "flag": ["boolean"],
        "seed": ["random_state"],
        "blocks": [Check(lambda v: len(v) > 0, "a non-empty list")],
        "free": "no_validation",
    }
    validate_params(
        table,
        {"lr": 0.1, "pool": None, "hook": print, "flag": np.False_, "seed": 3, "free": object()},
        "demo",
    )
    validate_params(table, {"unknown": 1}, "demo")  # parameters without an entry pass
    cases = [
        ({"lr": 0}, "demo: lr must be a number > 0, got 0."),
        ({"pool": "sum"}, "demo: pool must be one of ('avg', 'max') or None, got 'sum'."),
        ({"hook": 3}, "demo: hook must be a callable or None, got 3."),
        ({"flag": 1}, "demo: flag must be a bool, got 1."),
        ({"seed": "x"}, "demo: seed must be an int, a numpy RandomState or None, got 'x'."),
        ({"blocks": 5}, "demo: blocks must be a non-empty list, got 5."),
    ]
    for params, message in cases:
        with pytest.raises(InvalidParameterError) as info:
            validate_params(table, params, "demo")
        assert str(info.value) == message
        assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)

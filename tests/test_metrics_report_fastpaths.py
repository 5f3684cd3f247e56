"""The fast paths of ``collapse_report`` equal their exact forms (issue 19).

Each shortcut of the two passes keeps a test here that fails if it is wrong:
the class sums in row order, the unshifted class sums of data without
an offset, the padded GEMM width and the float32 table of the linear NC4
scores (its rounding is part of the near-tie margin).
"""

import numpy as np
import pytest
import torch

from sknc.metrics import _collapse, collapse_report, nc4
from sknc.metrics._backend import _NumpyOps, _TorchOps, class_sums64


def _textbook_nc4(X, y, W, b):
    """Share of rows where ``argmax(W x + b) != argmin ||x - mu||``, float64, ties to the first."""
    X = np.asarray(X, dtype=np.float64)
    classes = np.unique(y)
    means = np.array([X[y == c].mean(0) for c in classes])
    lin = np.argmax(X @ np.asarray(W, dtype=np.float64).T + b, axis=1)
    dist = ((X[:, None, :] - means[None]) ** 2).sum(-1)
    return float(np.mean(lin != np.argmin(dist, axis=1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_sums_add_rows_in_order(dtype):
    # each row is added to its class's sum in row order: the same sums, bit
    # for bit, as the plain loop; empty classes stay zero; strided input too
    rng = np.random.default_rng(0)
    Y = (rng.normal(size=(700, 33)) * np.exp(rng.normal(size=33) * 3)).astype(dtype)
    codes = rng.integers(0, 9, 700)
    codes[:9] = np.arange(9)

    def loop(Y, codes):
        out = np.zeros((11, Y.shape[1]), dtype=Y.dtype)
        for row, c in zip(Y, codes):
            out[c] += row
        return out

    ops = _NumpyOps()
    fast = ops.class_sums(Y, codes, 11)
    assert fast.dtype == dtype and fast.shape == (11, 33)
    np.testing.assert_array_equal(fast, loop(Y, codes))
    assert not fast[9:].any()
    np.testing.assert_array_equal(ops.class_sums(Y[::2], codes[::2], 11), loop(Y[::2], codes[::2]))


def test_torch_shifted64_leaves_float64_input_alone():
    # a float64 tensor on the torch path (a GPU's) must not be shifted in place
    ops = _TorchOps("cpu")
    X = torch.ones((2, 3), dtype=torch.float64)
    Y = ops.shifted64(X, torch.full((3,), 0.25, dtype=torch.float64))
    assert torch.equal(X, torch.ones((2, 3), dtype=torch.float64))
    assert torch.equal(Y, torch.full((2, 3), 0.75, dtype=torch.float64))
    assert ops.shifted64(X, None) is not X


@pytest.mark.parametrize("offset", [0.0, 0.3, 1e3])
def test_unshifted_class_sums_only_without_offset(offset):
    rng = np.random.default_rng(2)
    sample = rng.normal(size=(1000, 6)) + offset
    ref = sample.mean(0).astype(np.float32).astype(np.float64)
    # the mean absolute deviation of N(0, 1) is 0.8: an offset of 0.3 is negligible
    assert _collapse._offset_negligible(sample, ref) == (offset < 0.8)
    # one constant (zero-spread) column needs the shift, whatever the others
    sample[:, 3] = 5.0
    assert not _collapse._offset_negligible(sample, np.r_[ref[:3], 5.0, ref[4:]])
    sample[0, 0] = np.nan
    assert not _collapse._offset_negligible(sample, np.zeros(6))


def test_unshifted_class_sums_are_exact_to_float64_rounding():
    # float64 data unshifted: the sums are the rows themselves summed (no copy)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 5))
    codes = rng.integers(0, 4, 3000)
    ops = _NumpyOps()
    buf = np.empty((1024, 5))
    sums = class_sums64(ops, X, codes, 4, None, 0, buf)
    exact = np.array([np.sum(X[codes == k].astype(np.longdouble), axis=0) for k in range(4)])
    bound = (
        3000 * np.finfo(np.float64).eps * np.array([np.abs(X[codes == k]).sum(0) for k in range(4)])
    )
    assert np.all(np.abs(sums - exact) <= bound)
    # float32 rows, converted (exactly) and summed: the same float64 sums
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(
        class_sums64(ops, X32, codes, 4, None, 0, buf),
        class_sums64(ops, X32.astype(np.float64), codes, 4, None, 0, buf),
    )
    # the report on data without an offset: means as accurate as the textbook's
    y = codes
    rep = collapse_report(X32 * 3 + 0.01, y)
    rep64 = collapse_report((X32 * 3 + 0.01).astype(np.float64), y)
    assert rep.nc1 == pytest.approx(rep64.nc1, rel=1e-5)


@pytest.mark.parametrize("K", [3, 4, 5, 7])
def test_padded_gemm_width_keeps_the_linear_scores(K):
    # span + K columns padded to a multiple of 4: the linear block is read at its place
    rng = np.random.default_rng(K)
    d = 9
    y = np.repeat(np.arange(K), 40)
    X = (rng.normal(size=(K, d)) * 3)[y] + rng.normal(size=(len(y), d))
    W, b = rng.normal(size=(K, d)), rng.normal(size=K)
    assert nc4(X, y, W, b) == _textbook_nc4(X, y, W, b)
    assert nc4(X.astype(np.float32), y, W, b) == _textbook_nc4(X.astype(np.float32), y, W, b)


def _tie_data(kind, n=4000, seed=0):
    """Linear scores ``(B + a, B + x1 - a)``: ``B`` large, the gap ``x1 - 2a`` tiny.

    ``B`` is 1e4 (plus noise) from a feature offset (``kind="features"``,
    through ``W x``) or from the intercepts (``kind="intercept"``). In
    float32, ``B + a`` and ``B - a`` (``a`` = 0.44 of a float32 unit in the
    last place of ``B``) both round to ``B``, so adding the rounded table to
    the products misorders rows with gaps below one unit, unless the margin
    sends them to the float64 check. Every value is a multiple of
    ``2**-30``, so the float64 textbook scores are exact, and some rows tie
    exactly (``x1 = 2a``: the first class wins). The two classes are far
    apart along the third feature (no nearest-mean near ties).
    """
    rng = np.random.default_rng(seed)
    ulp = 2.0**-10  # float32 spacing in [8192, 16384)
    a = 7 * 2.0**-14  # 0.4375 ulp
    y = rng.integers(0, 2, n)
    x1 = rng.uniform(-2, 2, n) * ulp
    x1[: n // 4] = rng.choice([-1.0, 1.0], n // 4) * 10.0 ** rng.uniform(-9, -1, n // 4)
    x1 = np.round(x1 * 2.0**30) / 2.0**30
    x1[rng.random(n) < 0.05] = 2 * a  # exact ties
    x1[rng.random(n) < 0.05] = 0.0
    x0 = np.round(rng.normal(size=n) * 2.0**10) / 2.0**10
    if kind == "features":
        x0 += 1e4
        W, b = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]), np.array([a, -a])
    else:
        W, b = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), np.array([1e4 + a, 1e4 - a])
    X = np.stack([x0, x1, np.where(y == 1, 5.0, -5.0) + 0.5 * rng.normal(size=n)], 1)
    return X.astype(np.float32), y, W, b


@pytest.mark.parametrize("kind", ["features", "intercept"])
def test_nc4_float32_table_near_ties_follow_textbook(kind):
    X, y, W, b = _tie_data(kind)
    expected = _textbook_nc4(X, y, W, b)
    assert 0.05 < expected < 0.95  # the x1 signs do not follow the classes
    assert nc4(X, y, W, b) == expected
    assert collapse_report(X, y, W, b).nc4 == expected
    assert collapse_report(X, y, W, b, chunk_size=256).nc4 == expected


@pytest.mark.parametrize("kind", ["features", "intercept"])
def test_nc4_table_rounding_margin_is_needed(kind, monkeypatch):
    # without the table's rounding in the margin the float32 decisions go wrong:
    # the test above would catch a margin that misses it
    X, y, W, b = _tie_data(kind)
    real = _collapse._NC4Part._tolerances

    def without_table_rounding(self, res, geometry, W, b, Dt, T):
        return real(self, res, geometry, W, b, Dt, np.zeros_like(T))

    monkeypatch.setattr(_collapse._NC4Part, "_tolerances", without_table_rounding)
    assert nc4(X, y, W, b) != _textbook_nc4(X, y, W, b)


def test_chunk_runs_do_not_wait_for_a_slow_first_run():
    # the first run waits until every other run is done: with a bounded
    # number of runs in flight, the other worker would idle (and this wait
    # would time out), since results are consumed in order
    import threading

    from sknc.metrics._core import run_chunk_groups

    chunks = [(i, i + 1) for i in range(16)]
    done, others = threading.Event(), []

    def work(run):
        if run[0] == chunks[0]:
            assert done.wait(timeout=5), "the other runs did not proceed"
        else:
            others.extend(run)
            if len(others) == len(chunks) - 1:
                done.set()
        return len(run)

    out = run_chunk_groups(_NumpyOps(), chunks, work, n_workers=2, runs_per_worker=8)
    assert sum(out) == 16 and len(out) == 16

"""The one-pass update of ``NCStatistics`` (issue 19) equals the exact statistics.

A batch whose classes are all known is centred on the class means so far
(rounded to X's dtype) and its class sums, sums of squares and Gram products
are read in one pass; the batch's own means follow from the float64 class
sums, and the parallel-axis correction ``- n delta delta^T`` gives the
scatter about them. These tests compare it, batch by batch, with float64
statistics of the same float32 values and with the two-pass update
(``_FUSED_MIN_ROWS`` raised out of reach): a missing, mis-signed or
mis-rounded correction shows. Each test also checks which path ran.
"""

import pickle

import numpy as np
import pytest

from sknc.metrics import NCStatistics, _statistics

D = 12


@pytest.fixture
def paths(monkeypatch):
    """Counts of one-pass updates tried and taken."""
    seen = {"tried": 0, "taken": 0}
    fused = _statistics._Batch.fused

    def spy(self, counts, centre):
        seen["tried"] += 1
        out = fused(self, counts, centre)
        seen["taken"] += out is not None
        return out

    monkeypatch.setattr(_statistics._Batch, "fused", spy)
    return seen


def _exact(X, y):
    """Float64 means, class variances and within-class covariance of the values."""
    X64 = np.asarray(X, dtype=np.float64)
    classes = np.unique(y)
    means = np.stack([X64[y == c].mean(0) for c in classes])
    E = X64 - means[np.searchsorted(classes, y)]
    var = np.array([np.mean(np.sum(E[y == c] ** 2, 1)) for c in classes])
    return means, var, E.T @ E / len(y)


def _check(stats, X, y, rtol=2e-6):
    means, var, cov = _exact(X, y)
    # the class means are float64 sums of exact differences
    np.testing.assert_allclose(stats.means_, means, rtol=1e-12, atol=1e-12 * np.abs(means).max())
    # sums of squares and products: float32 products over a few hundred rows
    np.testing.assert_allclose(stats.class_variances_, var, rtol=rtol, atol=0)
    scale = np.sqrt(np.outer(np.diagonal(cov), np.diagonal(cov)))
    assert np.all(np.abs(stats.within_class_covariance_ - cov) <= rtol * scale)


def _drifting(rng, n_batches, rows, K, drift, offset=0.0):
    """Batches whose class means move by ``drift`` (in units of the spread) each batch."""
    centers = rng.normal(scale=3.0, size=(K, D))
    step = rng.normal(size=(K, D))
    step *= drift / np.linalg.norm(step, axis=1, keepdims=True) * np.sqrt(D)
    Xs, ys = [], []
    for t in range(n_batches):
        y = np.repeat(np.arange(K), rows)
        X = centers[y] + t * step[y] + rng.normal(size=(K * rows, D)) + offset
        Xs.append(X.astype(np.float32))
        ys.append(y)
    return Xs, ys


def _feed(Xs, ys, stats=None):
    stats = NCStatistics() if stats is None else stats
    for X, y in zip(Xs, ys):
        stats.update(X, y)
    return stats


@pytest.mark.parametrize("offset", [0.0, 3e4])
def test_one_pass_with_drifting_means_equals_the_exact_statistics(paths, offset):
    # class means move by 0.04 spread per batch: small enough for one pass,
    # large enough that a missing or wrong correction (0.2-1% of the
    # scatter) shows; the offset makes x - hi round in float32 and hi differ
    # from the float64 centre by u * 3e4 (a correction using the unrounded
    # centre is off by about 1e-5 of the scatter)
    rng = np.random.default_rng(0)
    Xs, ys = _drifting(rng, 4, 400, 3, drift=0.04, offset=offset)
    stats = _feed(Xs, ys)
    assert paths == {"tried": 3, "taken": 3}
    _check(stats, np.vstack(Xs), np.concatenate(ys))


def test_one_pass_equals_two_passes(paths, monkeypatch):
    rng = np.random.default_rng(1)
    Xs, ys = _drifting(rng, 4, 400, 4, drift=0.04, offset=-500.0)
    one = _feed(Xs, ys)
    assert paths["taken"] == 3
    monkeypatch.setattr(_statistics, "_FUSED_MIN_ROWS", 10**9)
    two = _feed(Xs, ys)
    assert paths["taken"] == 3
    np.testing.assert_allclose(one.means_, two.means_, rtol=1e-13, atol=0)
    np.testing.assert_allclose(one.class_variances_, two.class_variances_, rtol=1e-6, atol=0)
    S1, S2 = one.within_class_covariance_, two.within_class_covariance_
    np.testing.assert_allclose(S1, S2, rtol=0, atol=1e-6 * np.abs(S2).max())
    np.testing.assert_allclose(S1, S1.T, rtol=0, atol=1e-14 * np.abs(S1).max())
    assert one.nc1() == pytest.approx(two.nc1(), rel=1e-6)


def test_large_drift_falls_back_to_two_passes(paths):
    # the class means jump by 3 spreads: centred on the old means the float32
    # products would lose digits to the shift; the update declines and
    # reruns the second pass about the batch's own means
    rng = np.random.default_rng(2)
    Xs, ys = _drifting(rng, 3, 400, 3, drift=3.0, offset=1e3)
    stats = _feed(Xs, ys)
    assert paths == {"tried": 2, "taken": 0}
    _check(stats, np.vstack(Xs), np.concatenate(ys))


def test_classes_that_appear_late(paths):
    # batch 1 holds classes 0-1, batch 2 adds class 2 (two passes: no centre
    # for it), batches 3-4 hold all three (one pass), batch 5 only class 2
    rng = np.random.default_rng(3)
    Xs, ys = _drifting(rng, 5, 400, 3, drift=0.02, offset=20.0)
    Xs[0], ys[0] = Xs[0][ys[0] < 2], ys[0][ys[0] < 2]
    Xs[4], ys[4] = Xs[4][ys[4] == 2], ys[4][ys[4] == 2]
    stats = _feed(Xs, ys)
    assert paths == {"tried": 3, "taken": 3}
    _check(stats, np.vstack(Xs), np.concatenate(ys))


def test_small_classes_take_two_passes(paths):
    rng = np.random.default_rng(4)
    Xs, ys = _drifting(rng, 3, 40, 3, drift=0.05)
    stats = _feed(Xs, ys)
    assert paths == {"tried": 2, "taken": 0}
    _check(stats, np.vstack(Xs), np.concatenate(ys))


def test_merge_of_statistics_built_on_different_centres(paths):
    # two streams of the same classes in different orders and offsets: each
    # has its own reference point and its own one-pass centres
    rng = np.random.default_rng(5)
    Xs, ys = _drifting(rng, 6, 400, 3, drift=0.03, offset=7e3)
    a = _feed(Xs[:3], ys[:3])
    b = _feed(Xs[3:][::-1], ys[3:][::-1])
    assert paths["taken"] == 4
    merged = pickle.loads(pickle.dumps(a)).merge(b)
    _check(merged, np.vstack(Xs), np.concatenate(ys))
    whole = _feed(Xs, ys)
    assert merged.nc1() == pytest.approx(whole.nc1(), rel=1e-6)
    assert merged.cdnv() == pytest.approx(whole.cdnv(), rel=1e-6)


def test_one_pass_on_float64_and_torch_inputs(paths):
    import torch

    rng = np.random.default_rng(6)
    Xs, ys = _drifting(rng, 3, 400, 3, drift=0.04, offset=1e6)
    X64 = [X.astype(np.float64) + rng.normal(scale=1e-3, size=X.shape) for X in Xs]
    stats = _feed(X64, ys)
    assert paths == {"tried": 2, "taken": 2}
    _check(stats, np.vstack(X64), np.concatenate(ys), rtol=1e-12)
    # CPU tensors run the numpy code on views; half precision runs torch operations
    bf = [torch.from_numpy(X).to(torch.bfloat16) for X in Xs]
    tstats = _feed(bf, [torch.from_numpy(y) for y in ys])
    assert paths["taken"] == 4
    Xb = np.vstack([X.to(torch.float64).numpy() for X in bf])
    _check(tstats, Xb, np.concatenate(ys))

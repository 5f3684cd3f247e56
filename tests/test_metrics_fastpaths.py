"""The fast paths of the metrics equal their exact forms, and follow the thread policy.

Each optimisation of ``sknc.metrics`` (issue 19) keeps a test here that
compares it with the straightforward computation it replaces: the float64
conversion of the class sums, the ``syrk`` Gram of the within-class
scatter (BLAS through ctypes, numpy's where that is unavailable), the
one-pass update centred on the class means so far, and the number of
worker threads on a busy machine.
"""

import numpy as np
import pytest
import torch

from sknc.metrics import NCStatistics, _backend, _statistics
from sknc.metrics._backend import _NumpyOps
from sknc.metrics._core import run_chunk_groups
from sknc.utils import _threads, available_cores, blas_threads, idle_cores, thread_budget


def _loadavg(tmp_path, monkeypatch, running, own=1):
    """A /proc/loadavg with ``running`` threads, ``own`` of them this process's."""
    path = tmp_path / f"loadavg-{running}"
    path.write_text(f"3.10 2.50 1.20 {running}/200 4242\n")
    monkeypatch.setattr(_threads, "_LOADAVG", str(path))
    tasks = tmp_path / f"task-{running}-{own}"
    for i in range(max(own, 3)):
        (tasks / str(100 + i)).mkdir(parents=True, exist_ok=True)
        state = "R" if i < own else "S"
        (tasks / str(100 + i) / "stat").write_text(f"{100 + i} (py (x) y) {state} 1 2 3\n")
    monkeypatch.setattr(_threads, "_TASKS", str(tasks))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shifted64_equals_the_direct_float64_subtraction(dtype):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(300, 37)) * 1e3 + 5e4).astype(dtype)
    ref = rng.normal(size=37) * 1e4
    expected = np.subtract(X, ref, dtype=np.float64)
    ops = _NumpyOps()
    np.testing.assert_array_equal(ops.shifted64(X, ref), expected)
    buf = np.empty((300, 37))
    out = ops.shifted64(X, ref, out=buf)
    assert out is buf
    np.testing.assert_array_equal(out, expected)


def _library_gram(E, blas):
    """``E.T @ E`` as the library that :class:`_GramSum` calls computes it."""
    if not blas:
        return E.T @ E
    from scipy.linalg import blas as scipy_blas

    syrk = scipy_blas.ssyrk if E.dtype == np.float32 else scipy_blas.dsyrk
    G = syrk(1.0, E.T, lower=1)  # E.T is Fortran-ordered: the ctypes call's layout
    return np.tril(G) + np.tril(G, -1).T


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("blas", [True, False])
@pytest.mark.parametrize("blocks", [1, 2, 5])
def test_gram_sum_is_the_gram_within_its_rounding_bound(dtype, blas, blocks, monkeypatch):
    # BLAS syrk through ctypes (two products packed in one scratch matrix),
    # or numpy's E.T @ E where that is unavailable; odd and even numbers of
    # products (one left alone in the scratch matrix at the end)
    if not blas:
        monkeypatch.setattr(_backend._GramSum, "_add_blas", _backend._GramSum._add_numpy)
    rng = np.random.default_rng(1)
    d = 40
    Es = [
        (rng.normal(size=(512 - 37 * i, d)) * np.exp(rng.normal(size=d))).astype(dtype)
        for i in range(blocks)
    ]
    ops = _NumpyOps()
    acc = ops.gram_sum(d, dtype)
    for E in Es:
        acc.add(E)
    G = ops.gram_full(acc.total())
    np.testing.assert_array_equal(G, G.T)
    E64 = [E.astype(np.float64) for E in Es]
    exact = sum(E.T @ E for E in E64)
    # |fl(e_i . e_j) - e_i . e_j| <= gamma_n |e_i| . |e_j| (n = 512 terms),
    # each product summed in float64
    u = np.finfo(dtype).eps / 2
    bound = 512 * u / (1 - 512 * u) * sum(np.abs(E).T @ np.abs(E) for E in E64)
    assert np.all(np.abs(G - exact) <= bound * (1 + 1e-12))
    # the same products as the library's own syrk (scipy's BLAS for the
    # ctypes path, numpy's E.T @ E for the fallback: two OpenBLAS builds may
    # round differently), summed in float64 (in another order: to float64
    # rounding of the sum of |products|)
    products = [_library_gram(E, blas).astype(np.float64) for E in Es]
    scale = 8 * np.finfo(np.float64).eps * sum(np.abs(P) for P in products)
    assert np.all(np.abs(G - sum(products)) <= scale)
    # a reused accumulator keeps adding
    acc.add(Es[0])
    G2 = ops.gram_full(acc.total())
    assert np.all(np.abs(G2 - sum(products) - products[0]) <= 2 * scale)


def test_gram_sum_strided_rows_and_wrong_dtype_use_numpy():
    rng = np.random.default_rng(7)
    E = rng.normal(size=(300, 24)).astype(np.float32)
    acc = _NumpyOps().gram_sum(12, np.float32)
    acc.add(E[:, ::2])  # not unit-strided along the features
    acc.add(E[:, :12].astype(np.float64))  # another dtype
    acc.add(np.ascontiguousarray(E[:, :12])[::-1])  # rows backwards
    G = _NumpyOps().gram_full(acc.total())
    F = E[:, ::2].astype(np.float64)
    H = E[:, :12].astype(np.float64)
    np.testing.assert_allclose(G, F.T @ F + 2 * H.T @ H, rtol=1e-5, atol=1e-4)


def test_statistics_scatter_is_symmetric_and_the_same_on_one_or_two_workers(monkeypatch):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 7, 9000)
    X = (rng.normal(size=(7, 300))[y] + rng.normal(size=(9000, 300)) + 100).astype(np.float32)
    results = {}
    for workers in (1, 2):
        monkeypatch.setattr(_statistics, "thread_budget", lambda idle=False, w=workers: w)
        stats = NCStatistics(chunk_size=1000)
        for part in np.array_split(np.arange(9000), 3):
            stats.update(X[part], y[part])
        results[workers] = stats
    S1 = results[1].within_class_covariance_
    S2 = results[2].within_class_covariance_
    # both triangles come from the one accumulated triangle (the float64
    # corrections added after it are symmetric up to their own rounding)
    for S in (S1, S2):
        np.testing.assert_allclose(S, S.T, rtol=0, atol=1e-14 * np.abs(S).max())
    np.testing.assert_allclose(S2, S1, rtol=1e-12, atol=1e-12 * np.abs(S1).max())
    # and both equal the float64 scatter of the same values
    X64 = X.astype(np.float64)
    means = np.stack([X64[y == k].mean(0) for k in range(7)])
    E = X64 - means[y]
    np.testing.assert_allclose(S1, E.T @ E / len(y), rtol=0, atol=1e-6 * np.abs(S1).max())


def test_idle_cores_reads_the_running_threads(tmp_path, monkeypatch):
    cores = available_cores()
    _loadavg(tmp_path, monkeypatch, running=1)  # only the caller runs
    assert idle_cores() == cores
    _loadavg(tmp_path, monkeypatch, running=cores + 5)  # every core busy
    assert idle_cores() == 1
    _loadavg(tmp_path, monkeypatch, running=2)  # one other thread
    assert idle_cores() == max(1, cores - 1)
    # this process's own running threads (a BLAS thread still spinning after
    # its last product) are not other work: a quiet machine keeps every core
    _loadavg(tmp_path, monkeypatch, running=cores + 5, own=cores + 5)
    assert idle_cores() == cores
    _loadavg(tmp_path, monkeypatch, running=3, own=2)
    assert idle_cores() == max(1, cores - 1)
    monkeypatch.setattr(_threads, "_LOADAVG", str(tmp_path / "missing"))
    assert idle_cores() == cores  # not Linux: every usable core counts as idle


def _fake_loadavg(monkeypatch, running):
    """Make ``idle_cores`` read ``running()`` as the running-thread count at each open."""

    class Snapshot:
        def __init__(self, *args):
            self.text = f"1.0 1.0 1.0 {running()}/100 1\n".encode()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.text

    monkeypatch.setattr(_threads, "open", Snapshot, raising=False)


def test_idle_cores_takes_the_busiest_instant(monkeypatch):
    # a process running in bursts shows at one instant and not the next
    counts = iter([1, 1 + available_cores(), 1])
    _fake_loadavg(monkeypatch, lambda: next(counts))
    monkeypatch.setattr(_threads, "_own_running_threads", lambda: 1)
    assert idle_cores() == 1


def test_idle_cores_counts_an_own_thread_that_stops_between_the_reads(monkeypatch):
    # right after the caller's last product one of its OpenMP/BLAS threads is
    # still spinning when /proc/loadavg is read and asleep a moment later
    reads = []

    def running():  # the caller and its spinning thread, then the caller alone
        reads.append(1)
        return 2 if len(reads) == 1 else 1

    _fake_loadavg(monkeypatch, running)
    # this process's running threads: two until the first count, then one
    monkeypatch.setattr(_threads, "_own_running_threads", lambda: 1 if reads else 2)
    assert idle_cores() == available_cores()  # no other process: every core is idle


def _count_sleeps(monkeypatch):
    sleeps = []
    monkeypatch.setattr(_threads.time, "sleep", sleeps.append)
    return sleeps


def test_idle_cores_stops_sampling_once_every_core_is_taken(tmp_path, monkeypatch):
    if available_cores() == 1:
        pytest.skip("one usable core: nothing to sample")
    sleeps = _count_sleeps(monkeypatch)
    _loadavg(tmp_path, monkeypatch, running=available_cores() + 5)
    assert idle_cores() == 1
    assert sleeps == []  # the first instant already decides: no waiting
    _loadavg(tmp_path, monkeypatch, running=1)
    assert idle_cores() == available_cores()
    assert len(sleeps) == _threads._IDLE_SAMPLES - 1  # quiet: every instant is read


def test_idle_cores_reuses_a_fresh_answer(tmp_path, monkeypatch):
    if available_cores() == 1:
        pytest.skip("one usable core: nothing to sample")
    sleeps = _count_sleeps(monkeypatch)
    _loadavg(tmp_path, monkeypatch, running=1)
    assert idle_cores() == available_cores()
    sampled = len(sleeps)
    for _ in range(20):  # calls in a loop: no new samples within the time to live
        assert idle_cores() == available_cores()
    assert len(sleeps) == sampled
    # a busy machine shows once the answer is older than its time to live
    (tmp_path / "loadavg-1").write_text(f"3.1 2.5 1.2 {available_cores() + 5}/200 4242\n")
    assert idle_cores() == available_cores()  # still the fresh answer
    stamp, *rest = _threads._IDLE_LAST[0]
    _threads._IDLE_LAST[0] = (stamp - 2 * _threads._IDLE_TTL, *rest)
    assert idle_cores() == 1
    # another source (another /proc) is never answered from the cache
    _loadavg(tmp_path, monkeypatch, running=1, own=1)
    monkeypatch.setattr(_threads, "_LOADAVG", str(tmp_path / "missing"))
    assert idle_cores() == available_cores()


def test_own_running_threads_reads_this_process():
    # the calling thread is running while it reads
    assert _threads._own_running_threads() >= 1


def test_budget_with_idle_leaves_out_busy_cores(tmp_path, monkeypatch):
    _loadavg(tmp_path, monkeypatch, running=available_cores() + 5)
    assert thread_budget(-1, idle=True) == 1
    assert thread_budget(-1) == available_cores()  # the plain budget is unchanged
    _loadavg(tmp_path, monkeypatch, running=1)
    assert thread_budget(-1, idle=True) == available_cores()


def test_one_worker_runs_single_threaded(two_threads, tmp_path, monkeypatch):
    # the budget falls to one worker on a busy machine: that worker (the
    # calling thread) must not run BLAS on two threads, which stall there
    _loadavg(tmp_path, monkeypatch, running=available_cores() + 5)
    seen = []

    def work(chunks):
        seen.append((blas_threads(), torch.get_num_threads()))
        return len(chunks)

    assert run_chunk_groups(_NumpyOps(), [(0, 1), (1, 2), (2, 3)], work) == [3]
    assert seen == [(1, 1)]
    assert blas_threads() == 2 and torch.get_num_threads() == 2


def test_statistics_small_algebra_runs_single_threaded(two_threads, monkeypatch):
    seen = []
    full = _NumpyOps.gram_full
    scatter = _statistics.nc1_from_scatter

    def spy_full(self, a):
        seen.append(("update", blas_threads()))
        return full(self, a)

    def spy_scatter(*args):
        seen.append(("nc1", blas_threads()))
        return scatter(*args)

    monkeypatch.setattr(_NumpyOps, "gram_full", spy_full)
    monkeypatch.setattr(_statistics, "nc1_from_scatter", spy_scatter)
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 500)
    X = rng.normal(size=(4, 20))[y] + rng.normal(size=(500, 20))
    NCStatistics().update(X, y).nc1()
    assert seen == [("update", 1), ("nc1", 1)]
    assert blas_threads() == 2


def test_nc4_counter_products_run_on_idle_cores_only(two_threads, tmp_path, monkeypatch):
    seen = []
    count = _statistics.NC4Counter._count

    def spy(self, X, ops):
        seen.append(blas_threads())
        return count(self, X, ops)

    monkeypatch.setattr(_statistics.NC4Counter, "_count", spy)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    X = rng.normal(size=(3, 6))[y] * 4 + rng.normal(size=(300, 6))
    W = rng.normal(size=(3, 6))
    stats = NCStatistics().update(X, y)
    _loadavg(tmp_path, monkeypatch, running=available_cores() + 5)  # busy
    busy = stats.nc4_counter(W).update(X).value
    _loadavg(tmp_path, monkeypatch, running=1)  # idle
    idle = stats.nc4_counter(W).update(X).value
    assert seen == [1, min(2, available_cores())]
    assert busy == idle
    assert blas_threads() == 2


def test_statistics_torch_ops_path_reads_the_lower_triangle():
    # half-precision tensors are computed with torch operations (float32):
    # their Gram is the whole matrix, of which the lower triangle is kept
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 3000)
    X = rng.normal(size=(4, 40))[y] * 3 + rng.normal(size=(3000, 40))
    Xh = torch.from_numpy(X).to(torch.bfloat16)
    stats = NCStatistics(chunk_size=700)
    for part in np.array_split(np.arange(3000), 3):
        stats.update(Xh[part], torch.from_numpy(y[part]))
    assert stats._ops.is_torch
    X64 = Xh.to(torch.float64).numpy()
    means = np.stack([X64[y == k].mean(0) for k in range(4)])
    E = X64 - means[y]
    S = stats.within_class_covariance_
    np.testing.assert_allclose(S, E.T @ E / len(y), rtol=0, atol=1e-6 * np.abs(S).max())
    np.testing.assert_allclose(S, S.T, rtol=0, atol=1e-14 * np.abs(S).max())


def test_stream_reference_is_zero_only_for_offsets_within_the_spread():
    # no subtraction pass when the offsets are small; a large common offset
    # keeps its reference point (the float64 sums then cost it no digits)
    rng = np.random.default_rng(8)
    y = rng.integers(0, 3, 3000)
    X = (rng.normal(size=(3, 16))[y] * 0.3 + rng.normal(size=(3000, 16))).astype(np.float32)
    small = NCStatistics().update(X + np.float32(0.05), y)
    assert not small._ref.any()
    big = NCStatistics().update(X + np.float32(1e4), y)
    assert np.all(np.abs(big._ref - 1e4) < 1)
    for stats, shift in ((small, 0.05), (big, 1e4)):
        Xs = (X + np.float32(shift)).astype(np.float64)
        exact = np.stack([Xs[y == k].mean(0) for k in range(3)])
        np.testing.assert_allclose(stats.means_, exact, rtol=1e-13, atol=0)


def test_scratch_arrays_are_reused_and_change_nothing(monkeypatch):
    import pickle

    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 7500)
    X = (rng.normal(size=(3, 40))[y] + rng.normal(size=(7500, 40))).astype(np.float32)

    def feed():
        stats = NCStatistics(chunk_size=1000)
        for part in np.array_split(np.arange(7500), 3):
            stats.update(X[part], y[part])
        return stats

    kept = feed()
    sets = kept._scratch._free
    assert sets and all(a.size for arrays in sets for a in arrays.values())
    before = {id(a) for arrays in sets for a in arrays.values()}
    kept.update(X[:2500], y[:2500])
    assert {id(a) for arrays in kept._scratch._free for a in arrays.values()} == before
    assert pickle.loads(pickle.dumps(kept))._scratch is None
    assert kept.copy()._scratch is None

    class Fresh(_statistics._Scratch):
        def arrays(self):
            self._free.clear()  # never hand back a used set
            return super().arrays()

    monkeypatch.setattr(_statistics, "_Scratch", Fresh)
    fresh = feed()
    monkeypatch.undo()
    kept = feed()  # 5 products per batch: one alone in the reused scratch at the end
    np.testing.assert_array_equal(kept.means_, fresh.means_)
    np.testing.assert_array_equal(kept.within_class_covariance_, fresh.within_class_covariance_)
    np.testing.assert_array_equal(kept.class_variances_, fresh.class_variances_)

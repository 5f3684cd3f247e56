"""Tests of the thread policy in sknc.utils (torch intra-op threads and BLAS)."""

import doctest
import threading

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from sknc.utils import (
    _threads,
    available_cores,
    blas_threads,
    map_threads,
    single_thread,
    thread_budget,
    thread_limits,
)


def test_doctests():
    result = doctest.testmod(_threads, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_available_cores_is_the_affinity():
    assert 1 <= available_cores() <= (len(__import__("os").sched_getaffinity(0)))


def test_budget_follows_the_users_torch_setting(two_threads):
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert thread_budget() == 1
        torch.set_num_threads(64)  # capped at the usable cores
        assert thread_budget() == available_cores()
    finally:
        torch.set_num_threads(old)


def test_budget_explicit_values():
    cores = available_cores()
    assert thread_budget(1) == 1
    assert thread_budget(-1) == cores
    assert thread_budget(-cores - 5) == 1
    assert thread_budget(10_000) == cores
    assert thread_budget(np.int64(1)) == 1


@pytest.mark.parametrize("bad", [0, 1.5, True, "2", [1]])
def test_budget_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="n_jobs must be None, -1 or an integer"):
        thread_budget(bad)
    with pytest.raises(ValueError, match="n must be None"):
        with thread_limits(bad):
            pass


def test_blas_threads_respects_threadpoolctl():
    with threadpool_limits(1, user_api="blas"):
        assert blas_threads() == 1


def test_thread_limits_sets_and_restores_both(two_threads):
    before = (torch.get_num_threads(), blas_threads())
    with thread_limits(1) as n:
        assert n == 1
        assert torch.get_num_threads() == 1
        assert blas_threads() == 1
        with single_thread():  # nested, already in force
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert (torch.get_num_threads(), blas_threads()) == before


def test_thread_limits_restores_on_error_and_interrupt(two_threads):
    before = (torch.get_num_threads(), blas_threads())
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with thread_limits(1):
                raise exc()
        assert (torch.get_num_threads(), blas_threads()) == before


def test_thread_limits_as_decorator_is_reentrant(two_threads):
    seen = []

    @thread_limits(1)
    def f(depth):
        seen.append((torch.get_num_threads(), blas_threads()))
        if depth:
            f(depth - 1)

    f(2)
    assert seen == [(1, 1)] * 3
    assert torch.get_num_threads() == 2 and blas_threads() == 2


def test_thread_limits_only_what_is_asked(two_threads):
    with thread_limits(1, torch=False):
        assert torch.get_num_threads() == 2
        assert blas_threads() == 1
    with thread_limits(1, blas=False):
        assert torch.get_num_threads() == 1
        assert blas_threads() == 2


def test_map_threads_order_workers_single_threaded(two_threads):
    def work(i):
        return i, torch.get_num_threads(), blas_threads(), threading.get_ident()

    out = list(map_threads(work, range(20), n_jobs=2))
    assert [o[0] for o in out] == list(range(20))
    assert {o[1] for o in out} == {1}
    assert {o[2] for o in out} == {1}
    assert torch.get_num_threads() == 2 and blas_threads() == 2


def test_map_threads_inline_when_one_job(two_threads):
    main = threading.get_ident()
    out = list(map_threads(lambda i: (threading.get_ident(), torch.get_num_threads()), [0, 1], 1))
    assert out == [(main, 1), (main, 1)]
    assert torch.get_num_threads() == 2


def test_map_threads_propagates_errors_and_bounds_work(two_threads):
    started = []

    def work(i):
        started.append(i)
        if i == 3:
            raise ValueError("bad item 3")
        return i

    with pytest.raises(ValueError, match="bad item 3"):
        for _ in map_threads(work, range(1000), n_jobs=2, prefetch=2):
            pass
    # only a bounded number of items were started ahead of the failure
    assert len(started) < 20
    assert torch.get_num_threads() == 2 and blas_threads() == 2


def test_map_threads_closed_early_restores(two_threads):
    gen = map_threads(lambda i: i, range(100), n_jobs=2)
    assert next(gen) == 0
    gen.close()
    assert torch.get_num_threads() == 2 and blas_threads() == 2


# --------------------------------------------------------------------------
# priming OpenBLAS' float32 GEMM (sknc.utils._blas, issue 19)
# --------------------------------------------------------------------------


def test_prime_float32_gemm_runs_once_and_only_before_large_work(monkeypatch):
    import time

    from sknc.utils import _blas

    monkeypatch.setitem(_blas._STATE, "primed", 0)
    calls = []
    real = np.matmul

    def matmul(a, b, *args, **kwargs):
        t0 = time.monotonic()
        time.sleep(0.02)  # long enough for concurrent products to overlap
        out = real(a, b, *args, **kwargs)
        calls.append((threading.get_ident(), t0, time.monotonic(), a.shape, b.shape, a.dtype))
        return out

    monkeypatch.setattr(_blas.np, "matmul", matmul)
    assert _blas.prime_float32_gemm(_blas._MIN_FLOPS / 2) == 0  # too small to matter
    assert calls == [] and _blas._STATE["primed"] == 0
    assert _blas.prime_float32_gemm(_blas._MIN_FLOPS) == 1
    m, k, n = _blas._PRIME_SHAPE
    # float32 products wider than two 320-row blocks, on one BLAS thread
    assert [c[3:] for c in calls] == [((m, k), (k, n), np.float32)] * _blas._PRIME_ROUNDS
    assert n > 2 * 320
    assert _blas.prime_float32_gemm(1e12) == 0  # once per process
    assert len(calls) == _blas._PRIME_ROUNDS
    # two workers need two primed buffers: products in two threads at once
    calls.clear()
    assert _blas.prime_float32_gemm(1e12, n_threads=2) == 2
    assert len({c[0] for c in calls}) == 2 and len(calls) == 2 * _blas._PRIME_ROUNDS
    first = {}
    for ident, t0, t1, *_ in calls:
        first.setdefault(ident, (t0, t1))
    (a0, a1), (b0, b1) = first.values()
    assert a0 < b1 and b0 < a1  # the first products overlapped
    assert _blas.prime_float32_gemm(1e12, n_threads=2) == 0
    assert _blas.prime_float32_gemm(1e12, n_threads=1) == 0
    assert _blas._STATE["primed"] == 2


def test_prime_float32_gemm_holds_one_blas_thread(monkeypatch):
    from sknc.utils import _blas

    monkeypatch.setitem(_blas._STATE, "primed", 0)
    seen = []
    real = np.matmul

    def matmul(a, b, *args, **kwargs):
        seen.append(blas_threads())
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(_blas.np, "matmul", matmul)
    with threadpool_limits(2, user_api="blas"):
        _blas.prime_float32_gemm(1e12, n_threads=2)
        assert blas_threads() == 2  # restored
    assert seen == [1] * (2 * _blas._PRIME_ROUNDS)


def test_collapse_report_primes_before_float32_numpy_products(monkeypatch):
    from sknc.metrics import _collapse, collapse_report

    seen = []
    monkeypatch.setattr(_collapse, "prime_float32_gemm", lambda flops, n: seen.append(flops))
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 40)
    X = (rng.standard_normal((200, 16)) + y[:, None]).astype(np.float32)
    W = rng.standard_normal((5, 16)).astype(np.float32)
    rep = collapse_report(X, y, W)
    # 2 N d (K - 1 + K, padded to a multiple of 4) flops of pass 2's product;
    # CPU tensors take the same NumPy path
    rept = collapse_report(torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(W))
    assert seen == [2.0 * 200 * 16 * 12] * 2
    seen.clear()
    rep64 = collapse_report(X.astype(np.float64), y, W)  # dgemm: not affected
    assert seen == []
    assert rep.nc1 == pytest.approx(rep64.nc1, rel=1e-6) and rept.nc1 == rep.nc1


def test_nc4_counter_primes_before_float32_numpy_products(monkeypatch):
    from sknc.metrics import NC4Counter, _statistics

    seen = []
    monkeypatch.setattr(_statistics, "prime_float32_gemm", seen.append)
    rng = np.random.default_rng(0)
    means = rng.standard_normal((5, 16))
    counter = NC4Counter(means, coef=rng.standard_normal((5, 16)))
    X = rng.standard_normal((300, 16))
    counter.update(X.astype(np.float32))
    assert seen == [2.0 * 300 * 16 * 10]  # Z = Y @ A, A of 2 K columns
    seen.clear()
    counter.update(X)  # float64: dgemm, not affected
    assert seen == []

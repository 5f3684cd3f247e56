"""benchmarks/bench_metrics.py: the first-call workers (what a fresh process meets)."""

import argparse

import numpy as np
import pytest
from _helpers import load_benchmark


@pytest.fixture
def bench():
    return load_benchmark("bench_metrics.py")


@pytest.mark.parametrize(
    ("name", "primes"), [("report_np", True), ("report_np_unprimed", False), ("floor", False)]
)
@pytest.mark.parametrize("threads", [1, 2])
def test_first_call_worker_primes_only_where_it_should(
    bench, name, primes, threads, monkeypatch, capsys
):
    from sknc.metrics import _collapse
    from sknc.utils import _blas

    # as many workers as threads, whatever the load (3 chunks of 65,536 rows)
    monkeypatch.setattr(_collapse, "thread_budget", lambda *a, **k: threads)
    monkeypatch.setitem(_blas._STATE, "primed", 0)
    monkeypatch.setattr(_blas, "_MIN_FLOPS", 0)  # the small case primes too
    shapes = []
    real = np.matmul

    def matmul(a, b, *args, **kwargs):
        shapes.append((*a.shape, b.shape[1]))
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(_blas.np, "matmul", matmul)
    args = argparse.Namespace(
        n=140_000, d=16, k=5, batch=50_000, threads=[threads], first_call_worker=name
    )
    bench.first_call_worker(args)
    assert float(capsys.readouterr().out.split("FIRST ")[-1]) > 0
    primed = [s for s in shapes if s == _blas._PRIME_SHAPE]
    if primes:  # one buffer per worker
        assert len(primed) == threads * _blas._PRIME_ROUNDS
    else:
        assert primed == []

"""benchmarks/_isolate.py: each timed contender call in a fresh worker process."""

import os
import textwrap

import numpy as np
import pytest
from _helpers import load_benchmark

BENCH = textwrap.dedent(
    """
    import os
    import time

    import numpy as np

    WARM = []


    def contender(name, arrays, params):
        def warm_up():
            WARM.append(name)

        def run():
            out = {
                "pid": os.getpid(),
                "omp": os.environ.get("OMP_NUM_THREADS"),
                "warm": list(WARM),
                "twice": arrays["X"] * params["factor"],
                "labels": arrays["y"],
            }
            if name == "inner":
                out["seconds"] = 0.25
            else:
                time.sleep(0.01)
            return out

        return warm_up, run
    """
)


@pytest.fixture
def isolate():
    return load_benchmark("_isolate.py")


@pytest.mark.parametrize("in_worker", [True, False])
def test_contenders_run_warm_up_then_timed_call(isolate, tmp_path, monkeypatch, in_worker):
    monkeypatch.setattr(isolate, "SETTLE", 0.0)
    bench = tmp_path / "bench_tiny.py"
    bench.write_text(BENCH)
    X = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    y = np.arange(7)
    arrays = {"X": X, "y": y}
    with isolate.Contenders(str(bench), arrays, {"factor": 1}, isolate=in_worker) as c:
        first = c.run("plain", 2, factor=2)
        inner = c.run("inner", 1)
    np.testing.assert_array_equal(first.out["twice"], 2 * X)  # the arrays travel exactly
    assert first.out["twice"].dtype == np.float32
    np.testing.assert_array_equal(first.out["labels"], y)
    assert first.wall >= 0.01 and first.cpu >= 0
    assert inner.wall == 0.25  # a contender's own inner time replaces the wall time
    if in_worker:
        # a fresh process per call, started at its thread count, warm-up first
        assert first.out["pid"] != os.getpid() != inner.out["pid"] != first.out["pid"]
        assert (first.out["omp"], inner.out["omp"]) == ("2", "1")
        assert first.out["warm"] == ["plain"] and inner.out["warm"] == ["inner"]
    else:
        assert first.out["pid"] == os.getpid()
        assert inner.out["warm"] == ["plain", "inner"]
    assert "worker process" in isolate.describe(True)
    assert "one process" in isolate.describe(False)


def test_a_failing_contender_reports_its_error(isolate, tmp_path, monkeypatch):
    monkeypatch.setattr(isolate, "SETTLE", 0.0)
    bench = tmp_path / "bench_broken.py"
    bench.write_text("def contender(name, arrays, params):\n    raise KeyError(name)\n")
    with isolate.Contenders(str(bench), {"X": np.zeros(2)}, {}) as c:
        with pytest.raises(RuntimeError, match="KeyError: 'nope'"):
            c.run("nope", 1)

"""Time each contender of a benchmark in a fresh worker process.

Why: a contender run at 2 threads leaves its OpenMP threads (torch, MKL) and
OpenBLAS threads spinning for tens to hundreds of milliseconds after its last
operation. In one process they compete for the cores with whatever runs next,
so the next contender's time depends on who ran before it (issue 19: in one
process ``evaluate_episodes`` took 1.05-1.09x its 1-thread time at 2 threads,
0.58x with ``OMP_WAIT_POLICY=PASSIVE``).

How: every timed call runs in its own ``python`` process, started with
``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` set to its
thread count (and torch and BLAS limited to it again inside), that exits after
the call: nothing it starts outlives it. In the worker the contender is called
once untimed (warm-up: lazy imports, first-touch pages, kernel selection),
then, after a pause that lets the warm-up's own threads go to sleep
(``SETTLE`` seconds), once timed: wall time (``perf_counter``) and the
process's CPU time. The benchmark's arrays travel through ``np.save`` /
``np.load(allow_pickle=False)`` files in a temporary folder (no pickle), its
parameters as JSON; results come back the same way.

A benchmark module using this defines ``contender(name, arrays, params)``
returning ``(warm_up, run)``: two callables without arguments; ``run()``
returns a dict of NumPy arrays and JSON values (a ``"seconds"`` entry, if
present, replaces the measured wall time: for contenders that time an inner
part themselves). ``Contenders(module_file, arrays, params, isolate=False)``
runs the same calls in the calling process instead (the old way, to compare).
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

# seconds between a worker's warm-up call and its timed call (spinning
# OpenMP/OpenBLAS threads go to sleep after at most a few hundred ms)
SETTLE = 0.5
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def describe(isolate):
    """One line for a benchmark's output: how its contenders were run."""
    if isolate:
        return (
            "each timed call in a fresh worker process (OMP/MKL/OPENBLAS_NUM_THREADS = its "
            f"thread count; one untimed warm-up call, {SETTLE:g} s pause, one timed call; "
            "no thread of an earlier contender is left spinning)"
        )
    return (
        "every contender in this one process (--in-process: threads an earlier contender "
        "left spinning compete with the next one)"
    )


def loadavg():
    """The 1-minute load average (the machines are shared), or '?'."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


@dataclass
class Timing:
    """One timed call: wall and CPU seconds, the load average at its start, its results."""

    wall: float
    cpu: float
    load: str
    out: dict = field(default_factory=dict)


def _load_module(path):
    name = "_bench_" + os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _limits(threads):
    from sknc.utils import thread_limits

    return thread_limits(threads, torch=True)


def _timed_call(module, name, threads, arrays, params, settle):
    with _limits(threads):
        warm_up, run = module.contender(name, arrays, params)
        warm_up()
        if settle:
            time.sleep(settle)
        load = loadavg()
        c0, t0 = time.process_time(), time.perf_counter()
        out = run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = dict(out or {})
    return Timing(float(out.pop("seconds", wall)), cpu, load, out)


class Contenders:
    """Run a benchmark module's contenders, each timed call in its own process.

    Parameters
    ----------
    module_file : str
        The benchmark's file (it defines ``contender``).
    arrays : dict of str to ndarray
        The data, saved once to a temporary folder.
    params : dict
        JSON parameters passed to every call.
    isolate : bool, default=True
        False: run in this process (for comparison).
    """

    def __init__(self, module_file, arrays, params, isolate=True):
        self.module_file = os.path.abspath(module_file)
        self.arrays = arrays
        self.params = params
        self.isolate = isolate
        self._calls = 0

    def __enter__(self):
        if self.isolate:
            self._tmp = tempfile.TemporaryDirectory(prefix="sknc-bench-")
            self.folder = self._tmp.name
            for key, value in self.arrays.items():
                np.save(os.path.join(self.folder, f"in-{key}.npy"), value, allow_pickle=False)
        return self

    def __exit__(self, *exc):
        if self.isolate:
            self._tmp.cleanup()
        return False

    def run(self, name, threads, **extra):
        """Time contender ``name`` at ``threads`` threads (``extra`` joins the params)."""
        params = {**self.params, **extra}
        if not self.isolate:
            module = _load_module(self.module_file)
            return _timed_call(module, name, threads, self.arrays, params, SETTLE)
        self._calls += 1
        tag = f"{self._calls}"
        with open(os.path.join(self.folder, f"params-{tag}.json"), "w") as f:
            json.dump(params, f)
        env = dict(os.environ)
        env.update({var: str(threads) for var in _THREAD_VARS})
        cmd = [sys.executable, os.path.abspath(__file__), self.module_file, name]
        cmd += [str(threads), self.folder, tag]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"contender {name!r} at {threads} thread(s) failed:\n{proc.stderr[-4000:]}"
            )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        out = dict(result["values"])
        for key in result["arrays"]:
            path = os.path.join(self.folder, f"out-{tag}-{key}.npy")
            out[key] = np.load(path, allow_pickle=False)
            os.remove(path)
        return Timing(result["wall"], result["cpu"], result["load"], out)


def _worker(module_file, name, threads, folder, tag):
    arrays = {}
    for entry in sorted(os.listdir(folder)):
        if entry.startswith("in-") and entry.endswith(".npy"):
            arrays[entry[3:-4]] = np.load(os.path.join(folder, entry), allow_pickle=False)
    with open(os.path.join(folder, f"params-{tag}.json")) as f:
        params = json.load(f)
    module = _load_module(module_file)
    timing = _timed_call(module, name, int(threads), arrays, params, SETTLE)
    values, saved = {}, []
    for key, value in timing.out.items():
        if isinstance(value, np.ndarray):
            np.save(os.path.join(folder, f"out-{tag}-{key}.npy"), value, allow_pickle=False)
            saved.append(key)
        else:
            values[key] = value
    result = {"wall": timing.wall, "cpu": timing.cpu, "load": timing.load}
    print(json.dumps({**result, "values": values, "arrays": saved}))


def spin_probe(threads=2, windows=8, width=0.05):
    """Print the CPU time this process uses while idle after two-thread products.

    ``python benchmarks/_isolate.py --spin-probe``: after 20 torch and then
    20 numpy 600 x 600 products at ``threads`` threads, the main thread
    sleeps; the process CPU time in each ``width``-second window is what the
    library's threads spend spinning (why a pause, or a fresh process, is
    needed between contenders).
    """
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    m = np.random.default_rng(0).random((600, 600))
    t = torch.from_numpy(m)
    for label, product in (("torch", lambda: t @ t), ("numpy", lambda: m @ m)):
        with threadpool_limits(threads, user_api="blas"):
            for _ in range(20):
                product()
            marks = [time.process_time()]
            for _ in range(windows):
                time.sleep(width)
                marks.append(time.process_time())
        busy = ", ".join(f"{1e3 * (b - a):.0f}" for a, b in zip(marks, marks[1:]))
        print(f"{label} at {threads} threads, then idle: CPU ms per {1e3 * width:.0f} ms: {busy}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--spin-probe"]:
        spin_probe()
    else:
        _worker(*sys.argv[1:6])

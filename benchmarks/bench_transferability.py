"""Benchmark of the transferability scores in sknc.metrics.

Case (default): float32 class-structured features, N=10,000, D=1,024,
C=100, a decaying spectrum like real backbone features; ``--n 50000 --d
2048`` is the issue's full size (about 10x longer, and several GB of memory
for the float64 copies). NLEEP's mixture (5 C full-covariance Gaussians)
and the quadratic k-NN are timed on class-stratified subsamples
(NLEEP: ``--n-nleep`` samples of the first 20 classes; k-NN: ``--n-knn``)
and say so.

Printed, all measured in this run, on the CPU:

* floor: one ``X.T @ X`` (the D x D Gram) of the float32 features in
  float64 -- the cost of reading the data once at Gram-matrix speed;
* for every score, the median wall time over ``--repeat`` runs, interleaved
  with the floor, at 1 and at 2 BLAS threads, and its ratio to the floor
  measured at the same thread count;
* the peak memory each score allocates (tracemalloc; numpy and scipy
  report their buffers to it), next to the size of X;
* with ``--reference-dir DIR`` (a checkout of github.com/TencentARC/SFDA;
  nothing of it is shipped with sknc): the reference LogME, SFDA and PARC
  on the same inputs, their ratio to sknc and the relative difference of
  the values; with ``--pactran-dir`` (github.com/google-research/
  pactran_metrics) its PACTran-Gaussian, and with ``--ncti-dir``
  (github.com/BUserName/NCTI) its NCTI parts, likewise. The reference PARC
  builds N x N matrices, so it is run on ``--n-parc-ref`` samples only;
  the reference PACTran and NCTI run on ``--n-ref`` samples (all by
  default; at the full size they take many minutes), sknc on the same.

``--repeat 1`` at the full size keeps the run to about half an hour on
two busy cores; with one repeat the memory is measured in the timing run
itself (tracemalloc on, at the first thread count), else in a separate run.

Timings on a shared machine are noisy; compare ratios from one run.

Run: ``python benchmarks/bench_transferability.py`` (``--help`` for sizes).
"""

import argparse
import gc
import os
import re
import statistics
import sys
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_limits

from sknc.metrics import (
    etran_parts,
    gbc,
    hscore,
    knn_accuracy,
    logme,
    nc1,
    ncti_parts,
    nleep,
    pactran,
    parc,
    sfda,
    transrate,
)
from sknc.metrics._transferability import _stratified_subsample


def make_data(rng, n, d, c):
    """Features with class structure and a power-law spectrum, float32."""
    scale = (np.arange(1, d + 1) ** -0.5).astype(np.float32)
    centers = rng.standard_normal((c, d), dtype=np.float32) * scale * 2.0
    y = np.arange(n) % c
    rng.shuffle(y)
    X = centers[y]
    X += rng.standard_normal((n, d), dtype=np.float32) * scale
    X += np.float32(1.0)  # a common offset, as after a ReLU
    return X, y


def gram(X):
    X64 = X.astype(np.float64)
    return X64.T @ X64


def timed(func):
    gc.collect()
    t0 = time.perf_counter()
    out = func()
    return time.perf_counter() - t0, out


def timed_cpu(func):
    """Wall time, CPU time of this thread (all the work at one BLAS thread) and result."""
    gc.collect()
    c0, t0 = time.thread_time(), time.perf_counter()
    out = func()
    return time.perf_counter() - t0, time.thread_time() - c0, out


def peak_memory(func, result=False):
    """Peak bytes ``func`` allocates (tracemalloc); with ``result`` also its return value."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        out = func()
        peak = tracemalloc.get_traced_memory()[1]
        return (peak, out) if result else peak
    finally:
        tracemalloc.stop()


def load_reference(path):
    """The SFDA repository's metrics.py functions, loaded from a local checkout."""
    import scipy
    import sklearn
    import sklearn.decomposition
    import sklearn.mixture
    import sklearn.preprocessing

    src = open(os.path.join(path, "metrics.py")).read()
    utils = open(os.path.join(path, "utils.py")).read()
    m = re.search(r"def iterative_A\(.*?\n(?=\n\ndef )", utils, re.S)
    ns = {"np": np}
    exec(m.group(0), ns)
    mod = {"np": np, "sklearn": sklearn, "scipy": scipy, "iterative_A": ns["iterative_A"]}
    exec(src.replace("from utils import iterative_A", ""), mod)
    return mod


def load_pactran(path):
    """``calculate_pac_gauss`` of a pactran_metrics checkout (compute_metrics.py)."""
    import time as _time

    import scipy.optimize
    import scipy.special

    src = open(os.path.join(path, "compute_metrics.py")).read()
    ns = {"np": np, "scipy": scipy, "time": _time}
    for name in ("one_hot", "calculate_pac_gauss"):
        m = re.search(rf"def {name}\(.*?\n(?=\n\ndef )", src, re.S)
        exec(m.group(0), ns)
    return ns["calculate_pac_gauss"]


def load_ncti(path):
    """``NCTI_Score`` of an NCTI checkout (metrics.py), its PCA made exact."""
    import sklearn.decomposition
    import sklearn.discriminant_analysis

    src = open(os.path.join(path, "metrics.py")).read()
    m = re.search(r"def NCTI_Score\(.*?\n(?=\n\S|\Z)", src + "\n\nEND", re.S)
    code = m.group(0).replace("PCA(n_components=64)", "PCA(n_components=64, svd_solver='full')")
    ns = {
        "np": np,
        "PCA": sklearn.decomposition.PCA,
        "LinearDiscriminantAnalysis": sklearn.discriminant_analysis.LinearDiscriminantAnalysis,
    }
    exec(code, ns)
    return ns["NCTI_Score"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--c", type=int, default=100)
    parser.add_argument("--n-nleep", type=int, default=2_000)
    parser.add_argument("--n-knn", type=int, default=5_000)
    parser.add_argument("--n-parc-ref", type=int, default=5_000)
    parser.add_argument("--n-ref", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--reference-dir", default=None)
    parser.add_argument("--pactran-dir", default=None)
    parser.add_argument("--ncti-dir", default=None)
    parser.add_argument(
        "--skip", default="", help="comma-separated scores to leave out (references too)"
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X, y = make_data(rng, args.n, args.d, args.c)
    # NLEEP fits 5 C full-covariance Gaussians: on the first 20 classes only
    few = np.flatnonzero(y < min(20, args.c))
    sub_nleep = few[_stratified_subsample(y[few], min(args.n_nleep, few.size), 0)]
    sub_knn = _stratified_subsample(y, min(args.n_knn, args.n), 0)
    print(
        f"X: {args.n} x {args.d} float32 ({X.nbytes / 2**20:.0f} MiB), {args.c} classes; "
        f"NLEEP on {sub_nleep.size} samples of 20 classes, k-NN on {sub_knn.size}"
    )
    scores = {
        "nc1 (sknc NC)": lambda: nc1(X, y),
        "logme": lambda: logme(X, y),
        "logme icml": lambda: logme(X, y, method="icml"),
        "hscore": lambda: hscore(X, y),
        "hscore shrinkage": lambda: hscore(X, y, shrinkage=True),
        "transrate": lambda: transrate(X, y),
        "gbc": lambda: gbc(X, y),
        "parc (5,000 subsample)": lambda: parc(X, y, random_state=0),
        "sfda": lambda: sfda(X, y),
        "pactran": lambda: pactran(X, y, random_state=0),
        "ncti parts": lambda: ncti_parts(X, y),
        "etran parts": lambda: etran_parts(X, y),
        f"knn (on {sub_knn.size})": lambda: knn_accuracy(X[sub_knn], y[sub_knn]),
        f"nleep ({sub_nleep.size}, 20 cl.)": lambda: nleep(
            X[sub_nleep], y[sub_nleep], random_state=0
        ),
    }
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    scores = {k: v for k, v in scores.items() if k.split(" ")[0] not in skip}
    threads = [int(t) for t in args.threads.split(",")]

    times = {t: {name: [] for name in ["gram", *scores]} for t in threads}
    peaks = {}
    values = {}
    inline_memory = args.repeat == 1
    for rep in range(args.repeat):
        for t in threads:
            with threadpool_limits(limits=t):
                for name, func in [("gram", lambda: gram(X)), *scores.items()]:
                    if inline_memory and t == threads[0]:
                        peak, (sec, out) = peak_memory(lambda f=func: timed(f), result=True)
                        peaks[name] = peak
                    else:
                        sec, out = timed(func)
                    times[t][name].append(sec)
                    values[name] = out
                    print(
                        f"  [{rep + 1}/{args.repeat}, {t} thr] {name}: {sec:.2f} s", file=sys.stderr
                    )

    print("\nmedian wall time (s) and ratio to one X.T @ X at the same thread count")
    header = "score".ljust(28) + "".join(f"{f'{t} thr':>10}{'/gram':>8}" for t in threads)
    print(header + f"{'peak MiB':>10}")
    for name in ["gram", *scores]:
        cells = ""
        for t in threads:
            med = statistics.median(times[t][name])
            floor = statistics.median(times[t]["gram"])
            cells += f"{med:10.2f}{med / floor:8.1f}"
        if name not in peaks:
            with threadpool_limits(limits=1):
                func = (lambda: gram(X)) if name == "gram" else scores[name]
                peaks[name] = peak_memory(func)
        print(name.ljust(28) + cells + f"{peaks[name] / 2**20:10.0f}")

    yi = y.astype(np.int64)
    sub = _stratified_subsample(y, min(args.n_ref or args.n, args.n), 0)
    n_dims = 32
    cases = []
    if args.reference_dir:
        ref = load_reference(args.reference_dir)
        sub_parc = _stratified_subsample(y, min(args.n_parc_ref, args.n), 0)
        cases += [
            ("logme", lambda: logme(X, y), lambda: ref["LogME_Score"](X.copy(), yi)),
            ("sfda", lambda: sfda(X, y), lambda: ref["SFDA_Score"](X.astype(np.float64), yi)),
            (
                f"parc on {sub_parc.size}",
                lambda: parc(X[sub_parc], y[sub_parc], n_components=n_dims),
                lambda: ref["PARC"](n_dims=n_dims)(
                    features=X[sub_parc].astype(np.float64), y=yi[sub_parc]
                ),
            ),
        ]
    if args.pactran_dir:
        pac_ref = load_pactran(args.pactran_dir)

        def pactran_ref():
            np.random.seed(0)  # noqa: NPY002 (the reference draws its start from the global generator)
            out, _ = pac_ref(X[sub].astype(np.float64), yi[sub], 1.0)
            return -out[0][1]

        cases.append(
            (f"pactran on {sub.size}", lambda: pactran(X[sub], y[sub], random_state=0), pactran_ref)
        )
    if args.ncti_dir:
        ncti_ref = load_ncti(args.ncti_dir)
        cases.append(
            (
                f"ncti on {sub.size}",
                lambda: np.array([*ncti_parts(X[sub], y[sub]).values()]),
                lambda: np.array(ncti_ref(X[sub].astype(np.float64), yi[sub])),
            )
        )
    cases = [case for case in cases if case[0].split(" ")[0] not in skip]
    if cases:
        print("\nagainst the reference implementations (1 thread, median of --repeat)")
        import contextlib
        import io

        for name, ours, theirs in cases:
            t_ours, t_ref, cpu_ours, cpu_ref = [], [], [], []
            with threadpool_limits(limits=1):
                for _ in range(args.repeat):
                    s, c, v_ours = timed_cpu(ours)
                    t_ours.append(s)
                    cpu_ours.append(c)
                    with contextlib.redirect_stdout(io.StringIO()):
                        s, c, v_ref = timed_cpu(theirs)
                    t_ref.append(s)
                    cpu_ref.append(c)
                    print(
                        f"  {name}: sknc {t_ours[-1]:.2f} s, reference {s:.2f} s "
                        f"(CPU of this thread {cpu_ours[-1]:.2f} s, {cpu_ref[-1]:.2f} s; pair "
                        f"{s / t_ours[-1]:.1f}x)",
                        file=sys.stderr,
                    )
                mem_ours = peak_memory(ours) / 2**20
                with contextlib.redirect_stdout(io.StringIO()):
                    mem_ref = peak_memory(theirs) / 2**20
            a, b = statistics.median(t_ours), statistics.median(t_ref)
            cpu = statistics.median(cpu_ref) / statistics.median(cpu_ours)
            rel = float(np.max(np.abs(np.asarray(v_ours) - v_ref) / np.abs(v_ref)))
            print(
                f"{name:16s} sknc {a:7.2f} s ({mem_ours:6.0f} MiB)  reference {b:7.2f} s "
                f"({mem_ref:6.0f} MiB)  reference/sknc {b / a:5.1f}x (thread CPU time {cpu:.1f}x)  "
                f"rel. diff {rel:.1e}"
            )
    if args.n > args.n_parc_ref:
        with threadpool_limits(limits=1):
            mem = peak_memory(lambda: parc(X, y, random_state=0)) / 2**20
        n_ref = args.n
        print(
            f"\nPARC on N={args.n}: peak {mem:.0f} MiB (5,000-sample subsample); the reference "
            f"forms two {n_ref} x {n_ref} float64 matrices: {2 * n_ref**2 * 8 / 2**30:.1f} GiB"
        )


if __name__ == "__main__":
    main()

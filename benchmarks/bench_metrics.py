"""Benchmark of sknc.metrics (collapse_report, NCStatistics) against its baselines.

Case: N=200,000 float32 Gaussian-mixture features, d=512, K=100 classes, with
a linear classifier (NC1, CDNV, NC2 + components, NC3 and NC4), on the CPU,
at 1 and at 2 threads (torch intra-op threads and BLAS threads both set).
Every figure is the median of ``--repeat`` interleaved runs (the machines are
shared and timings are noisy: compare ratios, measured in the same run), each
timed call after a ``--settle`` pause (0.5 s) in which the threads the previous
call left spinning go to sleep.
Printed per thread count:

* floor: one ``X @ R`` product with R of shape (512, 200) (NumPy), the cost
  of a single pass over the data;
* sknc ``collapse_report`` on NumPy arrays and on torch CPU tensors, their
  ratio (target: torch within 1.1x of NumPy) and their ratio to the floor
  (target: within 2x);
* sknc ``NCStatistics`` fed the same data in batches of ``--batch`` rows
  (NumPy and torch; NC1, CDNV, NC2 read at the end);
* rhubarbwu/neural-collapse, the peer: its three accumulator passes (class
  means; within-class covariance + variance norms; NCC/linear decisions)
  and its measures (``covariance_ratio``, ``variability_cdnv``,
  ``simplex_etf_error``, ``self_duality_error``, ``clf_ncc_agreement``) on
  the same torch tensors in the same batches. The package is imported from
  ``--rhubarbwu PATH`` (a checkout) or the environment; without it, a
  faithful re-implementation of its three-pass algorithm below is timed
  instead (said in the output). Target: sknc at least 3x faster.

``--first-call R`` adds what a user meets in a fresh process: the *first*
call of the floor, of ``collapse_report`` (NumPy in, and the same with
sknc's priming of OpenBLAS' float32 GEMM switched off, see
``sknc/utils/_blas.py``) and of ``NCStatistics``, each in its own new
``python`` process, R interleaved rounds, medians. The timed blocks above
run in one warmed-up process and cannot show a first-use slowdown.

A first block checks that the numbers agree (sknc NumPy vs torch vs
NCStatistics vs the peer). ``--textbook`` adds a straightforward float64
NumPy implementation (explicit Sigma_W, ``scipy.linalg.pinv``) and the
largest relative difference to it; ``--memory`` the peak memory that
``NCStatistics.update`` allocates beyond the batch over ``--stream-n`` rows.

Run: ``python benchmarks/bench_metrics.py [--rhubarbwu /path/to/neural-collapse]``
(``--help`` for sizes; ``--quick`` for a small case).
"""

import argparse
import statistics
import sys
import time
import tracemalloc

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from sknc.metrics import NCStatistics, collapse_report


def make_data(rng, n, d, k):
    centers = rng.standard_normal((k, d), dtype=np.float32) * 0.5
    y = rng.integers(0, k, n)
    X = centers[y]
    X += rng.standard_normal((n, d), dtype=np.float32)
    W = (centers + 0.5 * rng.standard_normal(centers.shape)).astype(np.float32)
    b = (0.1 * rng.standard_normal(k)).astype(np.float32)
    return X, y, W, b


# ---------------------------------------------------------------------------
# the peer: rhubarbwu/neural-collapse
# ---------------------------------------------------------------------------


def load_rhubarbwu(path):
    """The rhubarbwu package (module objects), or None."""
    if path:
        sys.path.insert(0, path)
    try:
        from neural_collapse import accumulate, measure
    except ImportError:
        return None
    return accumulate, measure


def rhubarbwu_package(mods, X, y, W, b, batch):
    """The peer's documented three-pass recipe (README / examples/mnist.py)."""
    acc, meas = mods
    K, d = W.shape
    batches = [(X[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    mean_accum = acc.MeanAccumulator(K, d, "cpu")
    for xb, yb in batches:
        mean_accum.accumulate(xb, yb)
    means, mG = mean_accum.compute()
    var_accum = acc.VarNormAccumulator(K, d, "cpu", M=means)
    cov_accum = acc.CovarAccumulator(K, d, "cpu", M=means)
    for xb, yb in batches:
        var_accum.accumulate(xb, yb, means)
        cov_accum.accumulate(xb, yb, means)
    var_norms, _ = var_accum.compute()
    covar_within = cov_accum.compute()
    dec_accum = acc.DecAccumulator(K, d, "cpu", M=means, W=W)
    for xb, yb in batches:
        dec_accum.accumulate(xb, yb, W, means)
    return {
        "nc1": meas.covariance_ratio(covar_within, means, mG),
        "cdnv": meas.variability_cdnv(var_norms, means),
        "nc2": meas.simplex_etf_error(means, mG),
        "nc3": meas.self_duality_error(W, means, mG),
        "nc4_agree": meas.clf_ncc_agreement(dec_accum),
    }


def rhubarbwu_reimplementation(X, y, W, b, batch):
    """The peer's recipe written out (timed when the package is absent).

    Written from reading the package (rhubarbwu/neural-collapse at c05a0b8,
    ``accumulate.py``, ``measure.py``, ``kernels.py``, ``util.py``), not
    copied; it does the work the package does, step for step, in float32:

    * every ``accumulate`` call of every accumulator builds the (B, K)
      boolean class-indicator matrix and adds its column sums to that
      accumulator's counts (four accumulators: four indicator matrices per
      batch over the three passes, one per accumulator);
    * the accumulators bound to the means (and the weights) hash them with
      SHA-256 on every call, to check they did not change;
    * pass 1: indicator^T (K, B) times the batch for the class totals;
    * pass 2: the variance-norm accumulator and the covariance accumulator
      each form ``X - M[y]`` themselves (twice per batch): the first sums
      the squares per class through the indicator product, the second adds
      the (d, d) Gram ``diff^T diff``;
    * pass 3: nearest-mean decisions from ``||x||^2 + ||m||^2 - 2 x.m``
      (``torch.norm`` squared) and linear decisions ``argmax(x W^T)``;
      per-class agreement counts by ``scatter_add_``;
    * the measures: NC1 as the trace of ``pinv(Sigma_B) @ Sigma_W`` (a (d, d)
      pseudo-inverse and a (d, d) product), the CDNV grid from the (K, K, d)
      broadcast of mean differences and its upper triangle folded row by
      row, the two ETF errors (NC2 and NC3) and the count-weighted agreement.
    """
    import hashlib

    K, d = W.shape
    batches = [(X[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    labels = torch.arange(K, dtype=torch.int32)

    def indicator(yb, counts):
        hits = yb[:, None] == labels
        counts += hits.sum(0, dtype=torch.int32)
        return hits

    def digest(t):
        return hashlib.sha256(t.cpu().numpy().tobytes()).hexdigest()

    n_mean = torch.zeros(K, dtype=torch.int32)
    totals = torch.zeros(K, d)
    for xb, yb in batches:
        totals += indicator(yb, n_mean).mT.float() @ xb
    eps = torch.finfo(torch.float32).eps
    means = totals / (n_mean[:, None] + eps)
    mG = means.mean(0)
    n_var, n_cov = torch.zeros(K, dtype=torch.int32), torch.zeros(K, dtype=torch.int32)
    vn = torch.zeros(K)
    cov = torch.zeros(d, d)
    for xb, yb in batches:
        digest(means)
        hits = indicator(yb, n_var).mT.float()
        vn += (hits @ (xb - means[yb]) ** 2).sum(-1)
        digest(means)
        indicator(yb, n_cov)
        diff = xb - means[yb]
        cov += diff.mT @ diff
    n_dec = torch.zeros(K, dtype=torch.int32)
    agree = torch.zeros(K, dtype=torch.int32)
    for xb, yb in batches:
        digest(W)
        digest(means)
        dots = torch.inner(xb, means)
        dist = torch.norm(xb, dim=-1)[:, None] ** 2 + torch.norm(means, dim=-1)[None] ** 2
        y_ncc = (dist - 2 * dots).argmin(-1)
        y_lin = (xb @ W.mT).argmax(-1)
        indicator(yb, n_dec)
        agree.scatter_add_(0, yb.to(torch.int64), (y_lin == y_ncc).to(torch.int32))
    # the measures
    Mc = means - mG
    sigma_w = cov / (n_cov.sum() + eps)
    nc1 = torch.trace(torch.linalg.pinv(Mc.mT @ Mc / K) @ sigma_w).item() / K
    var = vn / (n_var + eps)
    grid = ((var[:, None] + var[None]) / 2) / ((means[:, None] - means[None]) ** 2).sum(-1)
    total = 0.0
    for i in range((K - 1) // 2):
        total += torch.cat((grid[i][i + 1 :], grid[K - i - 2][K - i - 1 :])).sum()
    if K % 2 == 0:
        total += grid[K // 2 - 1][K // 2 :].sum()
    cdnv = float(total / (K * (K - 1) / 2))

    def etf_error(A, B):
        G = B @ A.mT
        G = G / torch.linalg.matrix_norm(G) + 1 / K / (K - 1) ** 0.5
        G.diagonal().sub_(1 / (K - 1) ** 0.5)
        return torch.linalg.matrix_norm(G).item()

    rates = agree / (n_dec + eps)
    return {
        "nc1": nc1,
        "cdnv": cdnv,
        "nc2": etf_error(Mc, Mc),
        "nc3": etf_error(Mc, W),
        "nc4_agree": (n_dec.float() @ rates / (n_dec.sum() + eps)).item(),
    }


# ---------------------------------------------------------------------------
# optional checks: a textbook float64 implementation, streaming memory
# ---------------------------------------------------------------------------


def textbook_numpy(X, y, W, b):
    """The formulas written down directly (float64, explicit matrices)."""
    X = X.astype(np.float64)
    classes = np.unique(y)
    K = len(classes)
    N, d = X.shape
    means = np.stack([X[y == c].mean(axis=0) for c in classes])
    mu_g = X.mean(axis=0)
    sigma_w = np.zeros((d, d))
    var = np.empty(K)
    for k, c in enumerate(classes):
        E = X[y == c] - means[k]
        sigma_w += E.T @ E
        var[k] = np.mean(np.sum(E * E, axis=1))
    sigma_w /= N
    Mc = means - mu_g
    sigma_b = Mc.T @ Mc / K
    nc1 = np.trace(sigma_w @ scipy.linalg.pinv(sigma_b)) / K
    pairs = [
        (var[i] + var[j]) / (2 * np.sum((means[i] - means[j]) ** 2))
        for i in range(K)
        for j in range(i + 1, K)
    ]
    cdnv = float(np.mean(pairs))
    G = Mc @ Mc.T
    etf = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)
    nc2 = np.linalg.norm(G / np.linalg.norm(G) - etf)
    norms = np.linalg.norm(Mc, axis=1)
    cos = G / np.outer(norms, norms)
    off = cos[~np.eye(K, dtype=bool)]
    nc3 = np.linalg.norm(W / np.linalg.norm(W) - Mc / np.linalg.norm(Mc))
    dist = (X**2).sum(1)[:, None] - 2 * X @ means.T + (means**2).sum(1)
    nc4 = np.mean(np.argmax(X @ W.T + b, axis=1) != np.argmin(dist, axis=1))
    return {
        "nc1": nc1,
        "cdnv": cdnv,
        "nc2": nc2,
        "equinorm": norms.std() / norms.mean(),
        "equiangularity": off.std(),
        "max_angle": np.mean(np.abs(off + 1 / (K - 1))),
        "nc3": nc3,
        "nc4": nc4,
    }


def stream_memory(args, rng, centers):
    stats = NCStatistics()
    d = centers.shape[1]
    peak_extra = 0
    t_update = 0.0
    tracemalloc.start()
    for start in range(0, args.stream_n, args.batch):
        n = min(args.batch, args.stream_n - start)
        y = rng.integers(0, len(centers), n)
        X = centers[y]
        X += rng.standard_normal((n, d), dtype=np.float32)
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        t0 = time.perf_counter()
        stats.update(X, y)
        t_update += time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        peak_extra = max(peak_extra, peak - base)
        del X, y
    tracemalloc.stop()
    return stats, t_update, peak_extra


# ---------------------------------------------------------------------------
# sknc
# ---------------------------------------------------------------------------


def sknc_stream(X, y, batch):
    stats = NCStatistics()
    for i in range(0, len(y), batch):
        stats.update(X[i : i + batch], y[i : i + batch])
    return {"nc1": stats.nc1(), "cdnv": stats.cdnv(), "nc2": stats.nc2()}


def set_threads(n):
    """torch intra-op threads and BLAS threads (numpy, scipy) both to ``n``."""
    torch.set_num_threads(n)
    return threadpool_limits(n, user_api="blas")


def median_times(funcs, repeat, thread_counts, settle=0.0):
    """Median wall time of each function at each thread count.

    Every round runs every function at every thread count in turn, so the
    thread counts are interleaved too: their ratio (the thread policy) is
    measured under the same load. Before each timed call the process sleeps
    ``settle`` seconds, so that threads the previous call left spinning
    (OpenBLAS spins about 0.1 s after a product, torch's OpenMP threads a
    few ms) have gone to sleep and do not slow the next call down. Returns
    the medians of the wall times and of the process CPU times (all
    threads; on a shared machine the CPU time shows the work done, the wall
    time also the waiting for a core).
    """
    times = {(n, name): [] for n in thread_counts for name in funcs}
    cpu = {key: [] for key in times}
    for n in thread_counts:  # warm-up at each thread count
        with set_threads(n):
            funcs["report_np"]()
    for _ in range(repeat):
        for n in thread_counts:
            with set_threads(n):
                for name, func in funcs.items():
                    if settle:
                        time.sleep(settle)
                    c0, t0 = time.process_time(), time.perf_counter()
                    func()
                    times[n, name].append(time.perf_counter() - t0)
                    cpu[n, name].append(time.process_time() - c0)
    wall = {key: statistics.median(t) for key, t in times.items()}
    return wall, {key: statistics.median(t) for key, t in cpu.items()}


def load_average():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


FIRST_CALLS = ("floor", "report_np", "report_np_unprimed", "stats_np")


def first_call_worker(args):
    """In a fresh process: time the first call of ``args.first_call_worker``."""
    rng = np.random.default_rng(0)
    X, y, W, b = make_data(rng, args.n, args.d, args.k)
    R = rng.standard_normal((args.d, 200), dtype=np.float32)
    name = args.first_call_worker
    if name == "report_np_unprimed":
        from sknc.utils import _blas

        _blas._STATE["primed"] = sys.maxsize  # as if primed: the unprimed first call
    func = {
        "floor": lambda: X @ R,
        "report_np": lambda: collapse_report(X, y, W, b),
        "report_np_unprimed": lambda: collapse_report(X, y, W, b),
        "stats_np": lambda: sknc_stream(X, y, args.batch),
    }[name]
    with set_threads(args.threads[0]):
        t0 = time.perf_counter()
        func()
        print(f"FIRST {time.perf_counter() - t0:.6f}")


def first_calls(args):
    """Median first-call seconds per (threads, contender), each in a new process."""
    import subprocess

    times = {}
    for _ in range(args.first_call):
        for n_threads in args.threads:
            for name in FIRST_CALLS:
                cmd = [sys.executable, __file__, "--first-call-worker", name]
                cmd += ["--n", str(args.n), "--d", str(args.d), "--k", str(args.k)]
                cmd += ["--batch", str(args.batch), "--threads", str(n_threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                sec = float(out.split("FIRST ")[-1])
                times.setdefault((n_threads, name), []).append(sec)
                print(f"  [first call, {n_threads} thr] {name}: {sec:.3f} s", file=sys.stderr)
    return {key: statistics.median(v) for key, v in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rhubarbwu", default=None, help="path of a neural-collapse checkout")
    parser.add_argument("--quick", action="store_true", help="N=40,000 (a first look)")
    parser.add_argument(
        "--textbook", action="store_true", help="also time a textbook float64 implementation"
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also measure NCStatistics' peak memory over --stream-n rows (tracemalloc)",
    )
    parser.add_argument("--stream-n", type=int, default=2_000_000)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds of pause before each timed call (threads the previous call left "
        "spinning go to sleep; 0: none, the old way)",
    )
    parser.add_argument(
        "--first-call",
        type=int,
        default=0,
        metavar="R",
        help="also time each contender's first call in a fresh process, R rounds",
    )
    parser.add_argument("--first-call-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n = 40_000
    if args.first_call_worker:
        return first_call_worker(args)

    rng = np.random.default_rng(0)
    X, y, W, b = make_data(rng, args.n, args.d, args.k)
    Xt, yt, Wt, bt = (torch.from_numpy(a) for a in (X, y, W, b))
    R = rng.standard_normal((args.d, 200), dtype=np.float32)
    mods = load_rhubarbwu(args.rhubarbwu)

    def peer_reimpl():
        return rhubarbwu_reimplementation(Xt, yt, Wt, bt, args.batch)

    if mods is None:
        peer_name = "rhubarbwu re-implementation (package not importable)"
        peer = peer_reimpl
    else:
        peer_name = f"rhubarbwu/neural-collapse ({mods[0].__file__.rsplit('/', 2)[0]})"

        def peer():
            return rhubarbwu_package(mods, Xt, yt, Wt, bt, args.batch)

    print(
        f"case: N={args.n}, d={args.d}, K={args.k}, float32, CPU, batches of {args.batch}; "
        f"X is {X.nbytes / 2**20:.0f} MiB; medians of {args.repeat} interleaved runs"
    )
    print(f"peer: {peer_name}")

    # agreement of the numbers
    rep = collapse_report(X, y, W, b)
    rep_t = collapse_report(Xt, yt, Wt, bt)
    stream = sknc_stream(X, y, args.batch)
    ref = peer()
    print(
        f"values: nc1 sknc {rep.nc1:.8g} (torch {rep_t.nc1:.8g}, stream {stream['nc1']:.8g}, "
        f"peer {ref['nc1']:.8g}); cdnv sknc {rep.cdnv:.8g} (stream {stream['cdnv']:.8g}, "
        f"peer {ref['cdnv']:.8g}); nc4 sknc {rep.nc4:.6g} vs peer 1 - agreement "
        f"{1 - ref['nc4_agree']:.6g}"
    )
    if mods is not None:
        mine = peer_reimpl()
        worst = max(abs(mine[k] - ref[k]) / max(abs(ref[k]), 1e-300) for k in mine)
        print(
            "peer re-implementation vs the package: largest relative difference "
            f"{worst:.1e} over {', '.join(mine)}"
        )

    if args.textbook:
        t0 = time.perf_counter()
        ref64 = textbook_numpy(X, y, W.astype(np.float64), b.astype(np.float64))
        t_text = time.perf_counter() - t0
        worst = max(
            abs(getattr(rep, key) - value) / max(abs(value), 1e-300) for key, value in ref64.items()
        )
        print(
            f"textbook float64 NumPy (explicit Sigma_W, pinv): {t_text:.2f} s; max relative "
            f"difference sknc vs textbook {worst:.2e}"
        )
    if args.memory:
        centers = np.stack([X[y == c].mean(0) for c in range(args.k)])
        stats, t_stream, peak = stream_memory(args, rng, centers)
        print(
            f"stream  NCStatistics.update, N={args.stream_n} in batches of {args.batch} "
            f"({args.batch * args.d * 4 / 2**20:.0f} MiB each): {t_stream:.2f} s, peak memory "
            f"beyond the batch {peak / 2**20:.1f} MiB (state "
            f"{(args.d * args.d + args.k * args.d) * 8 / 2**20:.1f} MiB)"
        )

    funcs = {
        "floor": lambda: X @ R,
        "report_np": lambda: collapse_report(X, y, W, b),
        "report_torch": lambda: collapse_report(Xt, yt, Wt, bt),
        "stats_np": lambda: sknc_stream(X, y, args.batch),
        "stats_torch": lambda: sknc_stream(Xt, yt, args.batch),
        "peer": peer,
    }
    if mods is not None:
        funcs["peer_reimpl"] = peer_reimpl
    print(f"load average before the timed runs: {load_average()}")
    print(
        f"contenders: all in this process, {args.settle:g} s pause before each timed call "
        "(threads the previous call left spinning have gone to sleep)"
    )
    t, cpu = median_times(funcs, args.repeat, args.threads, args.settle)
    for n_threads in args.threads:
        print(f"\n--- {n_threads} thread(s) ---")
        _print_block({name: t[n_threads, name] for name in funcs})
        print(
            "cpu     process CPU seconds (medians): "
            + ", ".join(f"{name} {cpu[n_threads, name]:.3f}" for name in funcs)
        )
    if len(args.threads) > 1:
        one = min(args.threads)
        print(
            f"\nthread policy (target: no call slower than at {one} thread): time at n "
            f"threads / time at {one}, same rounds"
        )
        for n_threads in args.threads:
            if n_threads != one:
                ratios = ", ".join(
                    f"{name} {t[n_threads, name] / t[one, name]:.2f}"
                    for name in ("report_np", "report_torch", "stats_np", "stats_torch")
                )
                print(
                    f"{n_threads} threads: {ratios} (floor GEMM {t[n_threads, 'floor'] / t[one, 'floor']:.2f})"
                )
    if args.first_call:
        first = first_calls(args)
        print(
            f"\nfirst call in a fresh process (medians of {args.first_call}; what a user "
            "meets: no warm-up) against the steady time above"
        )
        for n_threads in args.threads:
            f = {name: first[n_threads, name] for name in FIRST_CALLS}
            steady = {name: t[n_threads, name] for name in ("floor", "report_np", "stats_np")}
            print(
                f"{n_threads} thr: floor {f['floor']:.3f} s ({f['floor'] / steady['floor']:.2f}x "
                f"steady); collapse_report {f['report_np']:.3f} s "
                f"({f['report_np'] / steady['report_np']:.2f}x steady, "
                f"{f['report_np'] / steady['floor']:.2f}x the steady floor), without priming "
                f"{f['report_np_unprimed']:.3f} s "
                f"({f['report_np_unprimed'] / f['report_np']:.2f}x primed); NCStatistics "
                f"{f['stats_np']:.3f} s ({f['stats_np'] / steady['stats_np']:.2f}x steady)"
            )
    print(f"load average after: {load_average()}")


def _print_block(t):
    print(f"floor   X @ R (d x 200)                    {t['floor']:7.3f} s")
    for key, label in (
        ("report_np", "collapse_report, NumPy in"),
        ("report_torch", "collapse_report, torch in"),
        ("stats_np", "NCStatistics,   NumPy in"),
        ("stats_torch", "NCStatistics,   torch in"),
    ):
        print(
            f"sknc    {label:<34} {t[key]:7.3f} s = {t[key] / t['floor']:5.2f} x floor, "
            f"peer / sknc = {t['peer'] / t[key]:5.2f} x"
        )
    print(f"peer    {'three passes + measures':<34} {t['peer']:7.3f} s")
    if "peer_reimpl" in t:
        print(
            f"peer    re-implementation in this file   {t['peer_reimpl']:7.3f} s "
            f"= {t['peer_reimpl'] / t['peer']:.2f} x the package"
        )
    print(
        f"ratios  torch / NumPy: collapse_report {t['report_torch'] / t['report_np']:.3f}, "
        f"NCStatistics {t['stats_torch'] / t['stats_np']:.3f} (target <= 1.1); "
        f"/ floor: collapse_report {t['report_np'] / t['floor']:.2f}, NCStatistics "
        f"{t['stats_np'] / t['floor']:.2f} (target <= 2)"
    )


if __name__ == "__main__":
    main()

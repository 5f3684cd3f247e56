"""Benchmark of sknc.metrics.collapse_report against its baselines.

Case: N=200,000 float32 Gaussian-mixture features, d=512, K=100 classes, with
a linear classifier (so NC1, CDNV, NC2 + components, NC3 and NC4 are all
computed), on the CPU. Printed, all measured in this run:

* floor: one ``X @ R`` product with R of shape (512, 200), the cost of a
  single pass over the data;
* sknc ``collapse_report`` (best of ``--repeat``, interleaved with the
  floor), and its ratio to the floor, in wall time and in CPU time;
* a straightforward NumPy implementation of the same formulas (float64,
  explicit Sigma_W and ``scipy.linalg.pinv``), its time, its ratio to sknc,
  and the largest relative difference between the two sets of numbers;
* the streaming path: ``NCStatistics.update`` fed N=2,000,000 rows in
  batches, with its time and the peak memory it allocates beyond the batch
  it is given (tracemalloc), next to the batch size.

Run: ``python benchmarks/bench_metrics.py`` (``--help`` for sizes).
"""

import argparse
import time
import tracemalloc

import numpy as np
import scipy.linalg

from sknc.metrics import NCStatistics, collapse_report


def make_data(rng, n, d, k, offset=0.0):
    centers = rng.standard_normal((k, d), dtype=np.float32) * 0.5
    y = rng.integers(0, k, n)
    X = centers[y]
    X += rng.standard_normal((n, d), dtype=np.float32)
    if offset:
        X += np.float32(offset)
    return X, y, centers


def best_time(func, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - t0)
    return best, out


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


def stream(args, rng, centers):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stream-n", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--skip-textbook", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X, y, centers = make_data(rng, args.n, args.d, args.k)
    W = (centers + 0.5 * rng.standard_normal(centers.shape)).astype(np.float64)
    b = 0.1 * rng.standard_normal(args.k)
    R = rng.standard_normal((args.d, 200), dtype=np.float32)
    print(
        f"case: N={args.n}, d={args.d}, K={args.k}, float32, CPU; X is {X.nbytes / 2**20:.0f} MiB"
    )

    collapse_report(X[:2000], y[:2000], W, b)  # warm-up (imports, BLAS threads)
    # interleaved, best of `repeat` each: the machines are shared, so both
    # figures should see the same conditions
    t_floor = t_sknc = c_floor = c_sknc = np.inf
    for _ in range(args.repeat):
        c0 = time.process_time()
        t, _ = best_time(lambda: X @ R, 1)
        c_floor = min(c_floor, time.process_time() - c0)
        t_floor = min(t_floor, t)
        c0 = time.process_time()
        t, rep = best_time(lambda: collapse_report(X, y, W, b), 1)
        c_sknc = min(c_sknc, time.process_time() - c0)
        t_sknc = min(t_sknc, t)
    print(f"floor   X @ R (512x200)            {t_floor:8.3f} s")
    print(f"sknc    collapse_report (NC1-4...)  {t_sknc:8.3f} s   = {t_sknc / t_floor:.2f} x floor")
    print(
        f"        CPU time (all threads): floor {c_floor:.3f} s, sknc {c_sknc:.3f} s "
        f"= {c_sknc / c_floor:.2f} x (less sensitive to other jobs on the machine)"
    )
    if not args.skip_textbook:
        t_text, ref = best_time(lambda: textbook_numpy(X, y, W, b), 1)
        worst = max(
            abs(getattr(rep, key) - value) / max(abs(value), 1e-300) for key, value in ref.items()
        )
        print(
            f"numpy   textbook (float64, pinv)     {t_text:8.3f} s   "
            f"= {t_text / t_sknc:.1f} x sknc, {t_text / t_floor:.2f} x floor"
        )
        print(f"        max relative difference sknc vs textbook: {worst:.2e}")
    print(rep)

    if not args.skip_stream:
        del X
        stats, t_stream, peak = stream(args, rng, centers)
        batch_mib = args.batch * args.d * 4 / 2**20
        print(
            f"stream  NCStatistics.update, N={args.stream_n} in batches of "
            f"{args.batch} ({batch_mib:.0f} MiB each): {t_stream:.2f} s, "
            f"peak memory beyond the batch {peak / 2**20:.1f} MiB "
            f"(state {(args.d * args.d + args.k * args.d) * 8 / 2**20:.1f} MiB)"
        )
        print(f"        NC1 = {stats.nc1():.6g}, CDNV = {stats.cdnv():.6g}")


if __name__ == "__main__":
    main()

"""Benchmark of sknc.metrics (collapse_report, NCStatistics) against its baselines.

Case: N=200,000 float32 Gaussian-mixture features, d=512, K=100 classes, with
a linear classifier (NC1, CDNV, NC2 + components, NC3 and NC4), on the CPU,
at 1 and at 2 threads (torch intra-op threads and BLAS threads both set).
Every figure is the median of ``--repeat`` interleaved runs (the machines are
shared and timings are noisy: compare ratios, measured in the same run).
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
    """The same three passes written out (used when the package is absent).

    Pass 1: one-hot (B, K) times X per batch for the class sums. Pass 2:
    ``diff = X - M[y]``, the (d, d) Gram ``diff^T diff`` and the one-hot
    product of ``diff**2`` for the variance norms. Pass 3: NCC decisions from
    ``||x||^2 + ||m||^2 - 2 x.m`` and linear decisions ``argmax(x W^T)``.
    Then ``pinv`` of the (d, d) between-class covariance, the CDNV grid and
    the ETF errors, all in float32 as the package does by default.
    """
    K, d = W.shape
    batches = [(X[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    rng_k = torch.arange(K)
    counts = torch.zeros(K, dtype=torch.int32)
    totals = torch.zeros(K, d)
    for xb, yb in batches:
        idx = yb[:, None] == rng_k
        counts += idx.sum(0, dtype=torch.int32)
        totals += idx.mT.float() @ xb
    means = totals / counts[:, None].float()
    mG = means.mean(0)
    cov = torch.zeros(d, d)
    vn = torch.zeros(K)
    for xb, yb in batches:
        idx = (yb[:, None] == rng_k).mT.float()
        diff = xb - means[yb]
        cov += diff.mT @ diff
        vn += (idx @ diff**2).sum(-1)
    cov /= counts.sum()
    vn /= counts
    agree = torch.zeros(K, dtype=torch.int32)
    for xb, yb in batches:
        dots = torch.inner(xb, means)
        dists = xb.norm(dim=-1)[:, None] ** 2 + means.norm(dim=-1)[None] ** 2 - 2 * dots
        matches = ((xb @ W.mT).argmax(-1) == dists.argmin(-1)).to(torch.int32)
        agree.scatter_add_(0, yb, matches)
    Mc = means - mG
    nc1 = torch.trace(torch.linalg.pinv(Mc.mT @ Mc / K) @ cov).item() / K
    dist2 = torch.cdist(means, means) ** 2
    grid = (vn[:, None] + vn[None]) / (2 * dist2)
    cdnv = grid[torch.triu(torch.ones(K, K, dtype=torch.bool), 1)].mean().item()
    return {"nc1": nc1, "cdnv": cdnv, "nc4_agree": (agree.sum() / counts.sum()).item()}


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


def median_times(funcs, repeat):
    """Median wall time of each function over ``repeat`` interleaved rounds."""
    times = {name: [] for name in funcs}
    for _ in range(repeat):
        for name, func in funcs.items():
            t0 = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


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
    args = parser.parse_args()
    if args.quick:
        args.n = 40_000

    rng = np.random.default_rng(0)
    X, y, W, b = make_data(rng, args.n, args.d, args.k)
    Xt, yt, Wt, bt = (torch.from_numpy(a) for a in (X, y, W, b))
    R = rng.standard_normal((args.d, 200), dtype=np.float32)
    mods = load_rhubarbwu(args.rhubarbwu)
    if mods is None:
        peer_name = "rhubarbwu re-implementation (package not importable)"

        def peer():
            return rhubarbwu_reimplementation(Xt, yt, Wt, bt, args.batch)
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
    for n_threads in args.threads:
        torch.set_num_threads(n_threads)
        with threadpool_limits(n_threads, user_api="blas"):
            funcs["report_np"]()  # warm-up at this thread count
            t = median_times(funcs, args.repeat)
        print(f"\n--- {n_threads} thread(s) ---")
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
        print(
            f"ratios  torch / NumPy: collapse_report {t['report_torch'] / t['report_np']:.3f}, "
            f"NCStatistics {t['stats_torch'] / t['stats_np']:.3f} (target <= 1.1); "
            f"collapse_report / floor {t['report_np'] / t['floor']:.2f} (target <= 2)"
        )


if __name__ == "__main__":
    main()

"""Benchmark: ``evaluate_episodes`` against plain few-shot evaluation loops.

5-way 5-shot 15-query episodes on cached 512-d float32 features of 100
classes (600 samples each, a Gaussian mixture whose few-shot accuracy is far
from 100%, made non-negative and offset like pooled ReLU features). At each
thread count (``--threads``, default ``1,2``: torch and BLAS limited to that
many threads for every contender), timed in rounds interleaved over the
contenders and the thread counts (medians; the development machines are
shared, timings are noisy; the load average at each round's start is
printed), each timed call in a fresh worker process (``_isolate.py``: one
untimed warm-up call, a pause, one timed call, so threads a contender leaves
spinning cannot slow the next one; ``--in-process`` runs them all in this
process instead, the old way):

1. ``evaluate_episodes(X, y, cv)``, the fast path, with its CDNV (episode
   sampling included);
2. the plain batched torch rule: episodes sampled by ``cv``, then per batch
   of episodes gather the rows, class means, ``torch.cdist``, argmin
   (its batch size tuned: the best of a few is kept);
3. an easyfsl-style loop (``PrototypicalNetworks`` on identity features):
   per episode, prototypes as the mean support row of each label,
   ``-torch.cdist(query, prototypes)``, argmax;
4. ``cross_val_score(NearestClassCenter(), X, y, cv=cv)``, the
   scikit-learn loop (on ``--loop-episodes`` episodes, its time scaled).

The per-episode accuracies of 1 and 4 are checked to be identical, those of
2 and 3 to agree (they round differently). Targets: 1 at least 2x faster
than 2, and at least 25x faster than 4, at every thread count.

Floor: the bytes of the support and query rows of every episode (what any
method must read once), over the memory bandwidth measured in the same run
(a 256 MB copy with ``torch`` at the same thread count, read + write bytes
per second). Rows scattered over ``X`` cannot be read at the speed of one
sequential copy, so a second floor times gathering exactly those rows
(``torch.index_select`` of every episode's support and query rows into a
reused buffer, nothing computed), the least any method that reads them pays.

Run::

    .venv/bin/python benchmarks/bench_fewshot.py
    .venv/bin/python benchmarks/bench_fewshot.py --episodes 2000 --repeat 3  # quicker
"""

import argparse
import statistics
import time

import numpy as np


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _bandwidth(torch, n_bytes=1 << 28, repeat=3):
    """Read + write bytes per second of a large copy (current torch threads)."""
    src = torch.ones(n_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    best = min(_timed(lambda: dst.copy_(src))[0] for _ in range(repeat))
    return 2 * n_bytes / best


def gather_floor(torch, X, y, cv, batch_size=16):
    """Seconds to gather every episode's support and query rows, nothing else."""
    support, query = cv.sample_episodes(y)
    Xt = torch.from_numpy(X)
    rows = torch.from_numpy(
        np.concatenate([support.reshape(len(support), -1), query.reshape(len(query), -1)], axis=1)
    )
    buf = torch.empty(batch_size * rows.shape[1], X.shape[1], dtype=Xt.dtype)
    start = time.perf_counter()
    for b in range(0, rows.shape[0], batch_size):
        idx = rows[b : b + batch_size].reshape(-1)
        torch.index_select(Xt, 0, idx, out=buf[: idx.numel()])
    return time.perf_counter() - start


def plain_batched_rule(torch, X, y, cv, batch_size):
    """The plain batched torch rule: gather, class means, cdist, argmin."""
    support, query = cv.sample_episodes(y)
    Xt = torch.from_numpy(X)
    n_way, n_query = query.shape[1], query.shape[2]
    truth = torch.arange(n_way).repeat_interleave(n_query)
    out = []
    with torch.inference_mode():
        for b in range(0, support.shape[0], batch_size):
            s = torch.from_numpy(support[b : b + batch_size])
            q = torch.from_numpy(query[b : b + batch_size])
            centres = Xt[s].mean(dim=2)  # (B, W, d)
            queries = Xt[q].reshape(s.shape[0], n_way * n_query, -1)
            pred = torch.cdist(queries, centres).argmin(dim=2)
            out.append((pred == truth).double().mean(dim=1))
    return torch.cat(out).numpy()


def easyfsl_style(torch, X, y, cv):
    """easyfsl's PrototypicalNetworks, episode by episode, on identity features."""
    Xt = torch.from_numpy(X)
    scores = []
    with torch.inference_mode():
        for train, test in cv.split(X, y):
            # labels 0..W-1 in sorted label order, as easyfsl's TaskSampler
            _, support_labels = np.unique(y[train], return_inverse=True)
            _, query_labels = np.unique(y[test], return_inverse=True)
            support_labels = torch.from_numpy(support_labels)
            support_features = Xt[torch.from_numpy(train)]
            query_features = Xt[torch.from_numpy(test)]
            n_way = len(torch.unique(support_labels))
            prototypes = torch.cat(
                [
                    support_features[torch.nonzero(support_labels == label)].mean(0)
                    for label in range(n_way)
                ]
            )
            logits = -torch.cdist(query_features, prototypes)
            pred = logits.argmax(dim=1).numpy()
            scores.append(float((pred == query_labels).mean()))
    return np.asarray(scores)


def _splits(params, n_episodes=None):
    from sknc.model_selection import EpisodeSplit

    n = params["episodes"] if n_episodes is None else n_episodes
    return EpisodeSplit(*params["shape"], n_episodes=n, random_state=0)


def contender(name, arrays, params):
    """``(warm_up, run)`` of one contender (called by ``_isolate``, in a worker).

    ``run()`` returns what the checks need: per-episode accuracies, or a
    ``"seconds"`` entry for the floors that time their inner part.
    """
    import torch
    from sklearn.model_selection import cross_val_score

    from sknc.model_selection import evaluate_episodes
    from sknc.neighbors import NearestClassCenter

    X, y = arrays["X"], arrays["y"]
    cv, cv_loop = _splits(params), _splits(params, params["loop_episodes"])
    cv_small = _splits(params, 20)
    if name == "fast":

        def run():
            from sknc.utils import _threads

            idle_cores, seen = _threads.idle_cores, []
            # the thread policy's reading of the idle cores (how many workers ran)
            _threads.idle_cores = lambda: seen.append(idle_cores()) or seen[-1]
            try:
                res = evaluate_episodes(X, y, cv)
            finally:
                _threads.idle_cores = idle_cores
            idle = "".join(map(str, seen)) or "-"
            return {
                "scores": res.scores,
                "repr": repr(res),
                "n_exact": int(res.n_exact),
                "idle": idle,
            }

        return (lambda: evaluate_episodes(X, y, cv)), run
    if name == "plain":
        batch = params["batch"]

        def run():
            return {"scores": plain_batched_rule(torch, X, y, cv, batch)}

        return (lambda: plain_batched_rule(torch, X, y, cv_loop, batch)), run
    if name == "easyfsl":
        return (lambda: easyfsl_style(torch, X, y, cv_small)), (
            lambda: {"scores": easyfsl_style(torch, X, y, cv_loop)}
        )
    if name == "loop":

        def loop(split):
            return cross_val_score(NearestClassCenter(), X, y, cv=split)

        return (lambda: loop(cv_small)), (lambda: {"scores": loop(cv_loop)})
    if name == "gather":
        return (lambda: gather_floor(torch, X, y, cv_small)), (
            lambda: {"seconds": gather_floor(torch, X, y, cv)}
        )
    if name == "bandwidth":
        return (lambda: None), (lambda: {"bandwidth": _bandwidth(torch)})
    if name == "tune":  # the plain rule's best batch size (to be fair to it)

        def run():
            sizes = {
                bs: _timed(lambda bs=bs: plain_batched_rule(torch, X, y, cv_loop, bs))[0]
                for bs in (16, 64, 256)
            }
            return {"batch": min(sizes, key=sizes.get)}

        return (lambda: plain_batched_rule(torch, X, y, cv_small, 16)), run
    raise ValueError(f"unknown contender {name!r}")


def after_others(X, y, params, threads, repeat):
    """In one process: ``evaluate_episodes`` after a pause vs right after other work.

    What a user meets who calls it right after two-thread torch or numpy work
    (their threads still spinning); printed, not part of the ratios above.
    """
    import torch
    from _isolate import loadavg

    from sknc.model_selection import evaluate_episodes
    from sknc.utils import thread_limits

    cv, cv_loop = _splits(params), _splits(params, params["loop_episodes"])
    A = np.random.default_rng(1).standard_normal((1000, 1000))
    before = {
        "a 0.5 s pause": lambda: None,
        "the plain torch rule": lambda: plain_batched_rule(torch, X, y, cv_loop, 256),
        "torch index_select gather": lambda: gather_floor(torch, X, y, cv_loop),
        "numpy A @ A (1000 x 1000)": lambda: [A @ A for _ in range(3)],
    }
    from sknc.utils import _threads

    idle_cores, seen = _threads.idle_cores, []

    def recorded():  # the thread policy's reading of the idle cores, per call
        seen.append(idle_cores())
        return seen[-1]

    _threads.idle_cores = recorded
    print("\nin one process, evaluate_episodes right after (medians of --repeat):")
    try:
        for n in threads:
            times = {key: [] for key in before}
            idle = {key: [] for key in before}
            with thread_limits(n, torch=True):
                evaluate_episodes(X, y, cv)
                for _ in range(repeat):
                    for key, work in before.items():
                        time.sleep(0.5)
                        work()
                        seen.clear()
                        times[key].append(_timed(lambda: evaluate_episodes(X, y, cv))[0])
                        idle[key].append("".join(map(str, seen)) or "-")
            print(
                f"  {n} thread(s), load {loadavg()}: "
                + "; ".join(
                    f"{key} {statistics.median(t):.3f} s (idle cores read: {' '.join(idle[key])})"
                    for key, t in times.items()
                )
            )
    finally:
        _threads.idle_cores = idle_cores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument("--loop-episodes", type=int, default=1000, help="for the two loops")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every contender in this process (the old way; default: each timed "
        "call in a fresh worker process, benchmarks/_isolate.py)",
    )
    parser.add_argument(
        "--after-others",
        action="store_true",
        help="only: in this process, evaluate_episodes after a pause vs right after "
        "other torch / numpy work (what spinning threads cost a user)",
    )
    args = parser.parse_args(argv)

    from _isolate import Contenders, describe, loadavg

    rng = np.random.default_rng(0)
    n_way, n_shot, n_query = 5, 5, 15
    y = np.repeat(np.arange(args.classes), args.per_class)
    means = rng.normal(size=(args.classes, args.dim)).astype(np.float32)
    X = means[y] + 5.0 * rng.standard_normal((y.size, args.dim), dtype=np.float32)
    X = np.maximum(X + 2.0, 0.0)
    n_loop = min(args.loop_episodes, args.episodes)
    scale = args.episodes / n_loop
    episode_bytes = n_way * (n_shot + n_query) * args.dim * X.itemsize
    print(
        f"features: {X.shape[0]} x {X.shape[1]} float32, {args.classes} classes; "
        f"{args.episodes} episodes {n_way}-way {n_shot}-shot {n_query}-query; "
        f"loops on {n_loop} episodes (x{scale:g}); medians of {args.repeat} interleaved rounds"
    )
    isolate = not args.in_process
    threads = [int(t) for t in args.threads.split(",")]
    params = {"shape": [n_way, n_shot, n_query], "episodes": args.episodes}
    params["loop_episodes"] = n_loop
    if args.after_others:
        after_others(X, y, params, threads, args.repeat)
        return
    print(f"contenders: {describe(isolate)}")

    batch, times, last, loads, bandwidth, idle = {}, {}, {}, {}, {}, {}
    keys = ("fast", "plain", "easyfsl", "loop", "gather")
    with Contenders(__file__, {"X": X, "y": y}, params, isolate=isolate) as bench:
        for n in threads:
            batch[n] = bench.run("tune", n).out["batch"]
            times[n] = {k: [] for k in keys}
            last[n], loads[n], idle[n] = {}, [], []
        # rounds interleaved over the contenders and the thread counts: the 1-
        # and 2-thread figures see the same (shared) machine
        for r in range(args.repeat):
            for n in threads:
                loads[n].append(loadavg())
                for key in keys if r < 2 else keys[:2] + keys[4:]:
                    timing = bench.run(key, n, batch=batch[n])
                    scaled = scale if key in ("easyfsl", "loop") else 1.0
                    times[n][key].append(timing.wall * scaled)
                    last[n][key] = timing.out
                    if key == "fast":
                        idle[n].append(timing.out["idle"])
        for n in threads:
            bandwidth[n] = bench.run("bandwidth", n).out["bandwidth"]
    fast = {n: statistics.median(times[n]["fast"]) for n in threads}

    for n_threads in threads:
        res = last[n_threads]["fast"]
        plain_scores = last[n_threads]["plain"]["scores"]
        easy_scores = last[n_threads]["easyfsl"]["scores"]
        loop_scores = last[n_threads]["loop"]["scores"]
        times_n, bandwidth_n, batch_n = times[n_threads], bandwidth[n_threads], batch[n_threads]
        med = {k: statistics.median(v) for k, v in times_n.items()}
        floor = args.episodes * episode_bytes / bandwidth_n
        if not np.array_equal(res["scores"][:n_loop], loop_scores):
            raise SystemExit("evaluate_episodes differs from cross_val_score")
        agree_plain = np.mean(plain_scores == res["scores"])
        agree_easy = np.mean(easy_scores == loop_scores)
        print(
            f"\n--- {n_threads} thread(s) (torch and BLAS); load average at the rounds' "
            f"starts: {', '.join(loads[n_threads])} ---"
        )
        print(
            f"evaluate_episodes (with CDNV)        {med['fast']:8.3f} s  "
            f"({1e6 * med['fast'] / args.episodes:.0f} us/episode; {res['repr']}; "
            f"near-tie episodes re-checked: {res['n_exact']}; idle cores read by the "
            f"thread policy in each round: {', '.join(idle[n_threads])})"
        )
        print(
            f"plain batched torch rule (batch {batch_n:3d}) {med['plain']:8.3f} s  "
            f"-> {med['plain'] / med['fast']:5.2f}x  (target >= 2x; same accuracy in "
            f"{100 * agree_plain:.2f}% of episodes)"
        )
        print(
            f"easyfsl-style episode loop           {med['easyfsl']:8.3f} s  "
            f"-> {med['easyfsl'] / med['fast']:5.1f}x  (same accuracy in "
            f"{100 * agree_easy:.2f}% of episodes)"
        )
        print(
            f"cross_val_score(NearestClassCenter)  {med['loop']:8.3f} s  "
            f"-> {med['loop'] / med['fast']:5.1f}x  (target >= 25x; accuracies identical)"
        )
        print(
            f"gather-bandwidth floor               {floor:8.3f} s  "
            f"({episode_bytes / 1e3:.0f} kB of rows per episode at "
            f"{bandwidth_n / 1e9:.1f} GB/s) -> evaluate_episodes at "
            f"{med['fast'] / floor:.1f}x the floor"
        )
        print(
            f"gather floor (index_select of the rows) {med['gather']:8.3f} s  "
            f"-> evaluate_episodes at {med['fast'] / med['gather']:.1f}x, the plain rule at "
            f"{med['plain'] / med['gather']:.1f}x"
        )

    if len(threads) > 1:
        one = fast[threads[0]]
        print(
            "\nevaluate_episodes, time at each thread count / time at "
            f"{threads[0]}: "
            + ", ".join(f"{n}: {fast[n] / one:.2f}" for n in threads)
            + "  (the rounds interleaved; target: never above 1)"
        )


if __name__ == "__main__":
    main()

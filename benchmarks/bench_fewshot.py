"""Benchmark: vectorised few-shot evaluation against the per-episode loop.

10,000 5-way 5-shot 15-query episodes on cached 512-d features of 100
classes (600 samples each, float32, a Gaussian mixture whose few-shot accuracy
is far from 100%). Timed in the same run:

1. ``evaluate_episodes(X, y, cv)`` (the fast path, episode sampling included);
2. ``cross_val_score(NearestClassCenter(), X, y, cv=cv)`` (the loop);
3. ``cross_val_score(NearestCentroid(), X, y, cv=cv)`` (scikit-learn's NCC,
   same loop);
4. a backbone forward pass, for scale: a random-init timm ``resnet18``
   (``pretrained=False``: only the time matters) on a batch of images at the
   stated resolution (84 x 84, the usual few-shot resolution, by default),
   as time per image x the 750,000 query images of the 10,000 episodes.

The fast path's per-episode accuracies are checked to equal the loop's. Both
wall-clock and process CPU time are printed: on a machine shared with other
jobs, CPU time is the steadier measure of the work done.
Everything runs with the same thread limit (``--threads``, default 1: the
loops are single-threaded, and the shared development machines have 2 cores);
``evaluate_episodes`` then uses that many threads too (its ``n_jobs`` default
follows ``torch.get_num_threads()``).

Run::

    .venv/bin/python benchmarks/bench_fewshot.py
    .venv/bin/python benchmarks/bench_fewshot.py --loop-episodes 2000  # quicker

With ``--loop-episodes`` below ``--episodes`` the loops run on the first
episodes only and their time is scaled up (stated in the output).
"""

import argparse
import os
import time

import numpy as np


def _best_of(fn, repeat):
    """Best wall-clock and best process CPU time over ``repeat`` runs, and the result."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=10_000)
    parser.add_argument(
        "--loop-episodes", type=int, default=None, help="episodes for the two loops (default: all)"
    )
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=600)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=84)
    parser.add_argument("--image-batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-nearest-centroid", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import NearestCentroid
    from threadpoolctl import threadpool_limits

    from sknc.model_selection import EpisodeSplit, evaluate_episodes
    from sknc.neighbors import NearestClassCenter

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)

    rng = np.random.default_rng(0)
    n_way, n_shot, n_query = 5, 5, 15
    y = np.repeat(np.arange(args.classes), args.per_class)
    means = rng.normal(size=(args.classes, args.dim)).astype(np.float32)
    X = means[y] + 5.0 * rng.standard_normal((y.size, args.dim), dtype=np.float32)
    X = np.maximum(X + 2.0, 0.0)  # non-negative, offset, like pooled ReLU features
    cv = EpisodeSplit(n_way, n_shot, n_query, n_episodes=args.episodes, random_state=0)
    n_queries = args.episodes * n_way * n_query
    print(
        f"features: {X.shape[0]} x {X.shape[1]} float32, {args.classes} classes; "
        f"{args.episodes} episodes {n_way}-way {n_shot}-shot {n_query}-query; "
        f"threads={args.threads}"
    )

    # 1. fast path (sampling included); warm-up call first
    evaluate_episodes(
        X, y, EpisodeSplit(n_way, n_shot, n_query, n_episodes=20, random_state=1), return_cdnv=False
    )
    t_fast, c_fast, res = _best_of(
        lambda: evaluate_episodes(X, y, cv, return_cdnv=False), args.repeat
    )
    t_sample, _, _ = _best_of(lambda: cv.sample_episodes(y), args.repeat)
    t_cdnv, _, res_cdnv = _best_of(lambda: evaluate_episodes(X, y, cv), 1)
    print(
        f"fast path  evaluate_episodes        wall {t_fast:8.3f} s  cpu {c_fast:8.3f} s  "
        f"({1e6 * t_fast / args.episodes:.0f} us/episode; sampling {t_sample:.3f} s; "
        f"near-tie episodes re-checked: {res.n_exact})"
    )
    print(f"           with CDNV                wall {t_cdnv:8.3f} s  -> {res_cdnv!r}")

    # 2./3. the per-episode loops
    n_loop = args.episodes if args.loop_episodes is None else min(args.loop_episodes, args.episodes)
    cv_loop = EpisodeSplit(n_way, n_shot, n_query, n_episodes=n_loop, random_state=0)
    scale = args.episodes / n_loop
    note = "" if n_loop == args.episodes else f"  (measured on {n_loop} episodes, x{scale:g})"
    t_loop, c_loop, loop_scores = _best_of(
        lambda: cross_val_score(NearestClassCenter(), X, y, cv=cv_loop), 1
    )
    t_loop, c_loop = t_loop * scale, c_loop * scale
    same = np.array_equal(loop_scores, res.scores[:n_loop])
    print(f"loop       cross_val_score(NCC)     wall {t_loop:8.3f} s  cpu {c_loop:8.3f} s{note}")
    print(f"           fast path = loop, episode by episode: {same}")
    if not same:
        raise SystemExit("per-episode accuracies differ")
    print(
        f"  speed-up vs cross_val_score(NearestClassCenter): wall {t_loop / t_fast:6.1f}x, "
        f"cpu {c_loop / c_fast:6.1f}x  (target >= 20x)"
    )
    n_cores = os.cpu_count() or 1
    if n_cores > args.threads:
        t_par, _, _ = _best_of(
            lambda: evaluate_episodes(X, y, cv, return_cdnv=False, n_jobs=n_cores), args.repeat
        )
        print(
            f"           fast path with n_jobs={n_cores} (all cores): wall {t_par:8.3f} s  "
            f"-> wall speed-up {t_loop / t_par:6.1f}x over the single-threaded loop"
        )
    if not args.skip_nearest_centroid:
        t_nc, c_nc, nc_scores = _best_of(
            lambda: cross_val_score(NearestCentroid(), X, y, cv=cv_loop), 1
        )
        t_nc, c_nc = t_nc * scale, c_nc * scale
        agree = np.mean(nc_scores == loop_scores)
        print(
            f"loop       cross_val_score(NearestCentroid) wall {t_nc:8.3f} s  cpu {c_nc:8.3f} s"
            f"{note}  (same accuracy in {100 * agree:.1f}% of episodes)"
        )
        print(
            f"  speed-up vs cross_val_score(NearestCentroid):    wall {t_nc / t_fast:6.1f}x, "
            f"cpu {c_nc / c_fast:6.1f}x"
        )

    # 4. one backbone forward over the query images, for scale
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    imgs = torch.randn(args.image_batch, 3, args.resolution, args.resolution)
    with torch.inference_mode():
        model(imgs[:4])
        t_batch, _, _ = _best_of(lambda: model(imgs), args.repeat)
    per_image = t_batch / args.image_batch
    t_forward = per_image * n_queries
    print(
        f"backbone   timm resnet18 forward at {args.resolution}x{args.resolution}: "
        f"{1e3 * per_image:.2f} ms/image (batch {args.image_batch}) x {n_queries} query "
        f"images = {t_forward:,.0f} s"
    )
    print(
        f"  fast path / backbone forward over the query images: {t_fast / t_forward:.2e} "
        f"(1/{t_forward / t_fast:,.0f})"
    )


if __name__ == "__main__":
    main()

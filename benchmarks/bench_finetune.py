"""Seconds per epoch of full FT, Layer FT and SCL-FT, with and without prefix caching.

Run by hand::

    .venv/bin/python benchmarks/bench_finetune.py            # CPU (and CUDA if present)
    .venv/bin/python benchmarks/bench_finetune.py --device cuda --model resnet50 --size 224
    .venv/bin/python benchmarks/bench_finetune.py --peft-only --model vit_tiny_patch16_224 \
        --model-kwargs '{"img_size": 32, "patch_size": 4, "depth": 6, "embed_dim": 128,
        "num_heads": 2}' --size 32   # the ViT of reproduce_peft.py (LoRA on qkv)

Data: scikit-learn's digits (8 x 8 greyscale) upscaled once to the input size,
so per-image preprocessing costs the same for every method. Weights are
random (timing does not depend on them; no network needed). Every method
trains ``--epochs`` epochs; the per-epoch time is the median of skorch's epoch
durations after the first epoch (the first one includes warm-up). With
caching, building the cache (one no-grad pass over the data) happens before
the first epoch; it is reported separately in the "fit s" column, which is the
whole ``fit`` call. The target is SCL-FT with caching at least 3x faster per
epoch than full FT, measured in the same run.

The second table compares the parameter-efficient methods (LoRA at rank 8,
BitFit, norm tuning; SCL-FT with caching and the linear probe for reference)
with full FT on the same data. Peak memory is the peak resident set size
during ``fit`` (``/proc/self/statm``, Linux, sampled every 5 ms by a thread)
above the resident size just before it, after freed heap memory was handed
back to the OS (glibc ``malloc_trim``): the network, activations kept for the
backward pass, gradients, optimizer state and caches. Methods are interleaved over ``--repeats`` rounds at each of
``--peft-threads`` torch thread counts; medians are reported with ratios to
full FT measured in the same rounds. ``--no-peft`` skips this table.

``--overhead`` measures instead the whole-``fit`` time of
``FineTuningClassifier`` (full FT) with its defaults (the preprocessed
training images cached, ``cache_inputs="auto"``; the training-NC1 pass,
``compute_train_nc1=True``), without the training-NC1 pass, and without the
input cache, against a plain PyTorch loop on the same model, data, batch size,
optimizer and epochs (its images normalised once, inside the timed call, as a
plain loop without augmentation does), as medians of interleaved repeats at 1
and 2 torch threads on the CPU (target: <= 1.05x with the defaults); also the
ratio of process CPU times, which other processes disturb less. The plain
loop preprocesses the images as the estimator does, once. With
``--source-size`` the images are stored at that size and resized to
``--size`` by both sides (the plain loop once, the estimator once with its
input cache and at every epoch without it).
Timings on a shared machine are noisy: compare ratios from one run only::

    .venv/bin/python benchmarks/bench_finetune.py --overhead --model resnet10t \
        --size 32 --n-samples 128 --epochs 10 --batch-size 32 --repeats 3
"""

import argparse
import json
import os
import statistics
import time
import warnings

# Random weights are fine for timing: silence sknc's warning about them
# (timm's zero_init_last), which is about the features' quality.
warnings.filterwarnings("ignore", message="The backbone has random weights")


def load_data(n_samples, size):
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.from_numpy(digits.images[:n_samples] / 16.0).float()[:, None]
    X = F.interpolate(X, size=(size, size), mode="bilinear", align_corners=False)
    X = (X.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()  # (N, H, W) uint8
    return X, digits.target[:n_samples]


def run(args, device):
    from sknc.finetune import FineTuningClassifier

    X, y = load_data(args.n_samples, args.size)
    configs = [
        ("full-ft", False),
        ("layer-ft", False),
        ("layer-ft", True),
        ("scl-ft", False),
        ("scl-ft", True),
        ("linear-probe", True),
    ]
    rows = []
    for method, cache in configs:
        est = FineTuningClassifier(
            args.model,
            model_kwargs=args.model_kwargs,
            method=method,
            tuned_block=args.tuned_block,
            input_size=args.size,
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            lr=1e-3,
            cache_prefix=cache,
            compute_train_nc1=False,
            device=device,
            amp=args.amp,
            random_state=0,
        )
        start = time.perf_counter()
        est.fit(X, y)
        fit_s = time.perf_counter() - start
        durations = [row["dur"] for row in est.history_]
        per_epoch = statistics.median(durations[1:] if len(durations) > 1 else durations)
        rows.append(
            dict(
                method=method,
                cache=est.prefix_cached_,
                per_epoch=per_epoch,
                fit=fit_s,
                trainable=est.n_trainable_params_,
                total=est.n_params_,
                block=est.tuned_block_ or "-",
            )
        )
    base = rows[0]["per_epoch"]
    print(
        f"\n{args.model} @ {args.size}px, {len(X)} images, batch {args.batch_size}, "
        f"{args.epochs} epochs, device={device}, amp={args.amp}"
    )
    print(
        f"{'method':<13}{'block':<10}{'cache':<7}{'s/epoch':>9}{'fit s':>8}"
        f"{'speed-up':>10}{'trainable':>12}{'fraction':>10}"
    )
    for r in rows:
        print(
            f"{r['method']:<13}{r['block']:<10}{str(r['cache']):<7}{r['per_epoch']:>9.3f}"
            f"{r['fit']:>8.2f}{base / r['per_epoch']:>9.1f}x{r['trainable']:>12,}"
            f"{r['trainable'] / r['total']:>10.1%}"
        )
    scl = next(r for r in rows if r["method"] == "scl-ft" and r["cache"])
    ratio = base / scl["per_epoch"]
    verdict = "MET" if ratio >= 3 else "NOT MET"
    print(
        f"SCL-FT with caching vs full FT: {ratio:.1f}x faster per epoch (target >= 3x: {verdict})"
    )
    return ratio


def _plain_fit(model_name, X, y, size, epochs, batch_size, seed):
    """The baseline: a plain PyTorch loop over pre-normalised tensors, same model and data.

    What a plain loop does without augmentation: the images are preprocessed
    once, before the first epoch (inside the timed call), exactly as the
    estimator preprocesses them (:func:`sknc.features.resolve_data_config`
    of the model at ``size``, then one ``preprocess_batch`` call: resizing
    when the images are not at ``size``, conversion, normalisation), then
    ``epochs`` shuffled passes of AdamW (lr 1e-3, no weight decay, the
    estimator's defaults) at ``batch_size`` over a ``TensorDataset``.
    """
    import numpy as np
    import timm
    import torch

    from sknc.features import resolve_data_config
    from sknc.features._images import preprocess_batch

    torch.manual_seed(seed)
    model = timm.create_model(model_name, num_classes=len(np.unique(y)))
    cfg = resolve_data_config(model, input_size=size)
    x = preprocess_batch(torch.from_numpy(X)[:, None], cfg)
    data = torch.utils.data.TensorDataset(x, torch.from_numpy(y).long())
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
    return model


OVERHEAD_VARIANTS = (
    ("sknc", {}),  # the defaults: cache_inputs="auto", compute_train_nc1=True
    ("no-NC1", {"compute_train_nc1": False}),
    ("no-cache", {"cache_inputs": False}),  # every image preprocessed every epoch
)


def overhead(args):
    """Whole-fit time of FineTuningClassifier (defaults) over a plain PyTorch loop, CPU.

    One untimed warm-up round, then ``--repeats`` interleaved rounds at 1 and 2
    torch threads; medians of wall time, and of process CPU time (less
    sensitive to other processes on a shared machine). The same model, data,
    batch size, optimizer and epochs on both sides. Variants: the defaults
    (input cache on, ``compute_train_nc1=True``: one extra no-grad pass for
    ``train_nc1_``), without the training-NC1 pass, and without the input
    cache (``cache_inputs=False``: images preprocessed at every epoch).
    """
    import torch

    from sknc.finetune import FineTuningClassifier

    X, y = load_data(args.n_samples, args.source_size or args.size)

    def sknc_fit(params):
        FineTuningClassifier(
            args.model,
            method="full-ft",
            input_size=args.size,
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            device="cpu",
            random_state=0,
            **params,
        ).fit(X, y)

    runs = {
        "plain": lambda: _plain_fit(args.model, X, y, args.size, args.epochs, args.batch_size, 0)
    }
    for name, params in OVERHEAD_VARIANTS:
        runs[name] = lambda params=params: sknc_fit(params)
    print(
        f"\nwhole-fit overhead, full FT, {args.model} @ {args.size}px (images "
        f"{X.shape[1]}px), {len(X)} images, "
        f"batch {args.batch_size}, {args.epochs} epochs, CPU, {args.repeats} interleaved "
        "repeats; plain loop: images preprocessed once, inside its timed call; "
        "ratio = sknc / plain (medians)"
    )
    head = f"{'threads':<8}{'plain s':>8}"
    for name, _ in OVERHEAD_VARIANTS:
        head += f"{name + ' s':>12}{'ratio':>7}"
    print(head + f"{'CPU ratio':>10}{'load':>6}")
    worst = 0.0
    for threads in args.overhead_threads:
        torch.set_num_threads(threads)
        for fn in runs.values():  # warm-up: lazy imports, allocator
            fn()
        wall = {k: [] for k in runs}
        cpu = {k: [] for k in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
                if args.verbose_times:  # as they come: a run cut short still reports
                    print(
                        f"  {threads} thread(s) {name}: wall {wall[name][-1]:.2f} s, "
                        f"CPU {cpu[name][-1]:.2f} s, load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        ratio = med["sknc"] / med["plain"]
        worst = max(worst, ratio)
        line = f"{threads:<8}{med['plain']:>8.2f}"
        for name, _ in OVERHEAD_VARIANTS:
            line += f"{med[name]:>12.2f}{med[name] / med['plain']:>6.3f}x"
        line += f"{med_cpu['sknc'] / med_cpu['plain']:>9.3f}x{os.getloadavg()[0]:>6.1f}"
        print(line, flush=True)
    verdict = "MET" if worst <= 1.05 else "NOT MET"
    print(f"worst whole-fit ratio with the defaults: {worst:.3f}x (target <= 1.05x: {verdict})")
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument(
        "--tuned-block",
        default=None,
        help="module path or index (default: the estimator's default)",
    )
    parser.add_argument(
        "--model-kwargs",
        type=json.loads,
        default=None,
        help="timm keywords of the model, as JSON (e.g. a small ViT: "
        '\'{"img_size": 32, "patch_size": 4, "depth": 6, "embed_dim": 128, "num_heads": 2}\')',
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n-samples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, ... (default: cpu, and cuda when available)"
    )
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    parser.add_argument("--no-peft", action="store_true", help="skip the PEFT vs full FT table")
    parser.add_argument("--peft-only", action="store_true", help="only the PEFT vs full FT table")
    parser.add_argument(
        "--peft-threads", type=int, nargs="+", default=[1, 2], help="thread counts (PEFT table)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds (PEFT table, --overhead)"
    )
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="only the whole-fit overhead against a plain PyTorch loop (CPU, 1 and 2 threads)",
    )
    parser.add_argument(
        "--overhead-threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="torch thread counts (--overhead)",
    )
    parser.add_argument(
        "--source-size",
        type=int,
        default=None,
        help="--overhead: image size before preprocessing (default: --size, no resizing)",
    )
    parser.add_argument(
        "--verbose-times",
        action="store_true",
        help="--overhead: print every run's times as it ends",
    )
    args = parser.parse_args()
    if args.overhead:
        overhead(args)
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    devices = (
        [args.device]
        if args.device
        else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    )
    for device in devices if not args.peft_only else ():
        run(args, device)
    if not args.no_peft:
        run_peft(args)


# ----------------------------------------------------------------------------
# parameter-efficient methods against full FT: s/epoch and peak memory
# ----------------------------------------------------------------------------
PEFT_CONFIGS = (
    ("full-ft", dict(method="full-ft")),
    ("lora-r8", dict(method="lora", lora_rank=8)),
    ("bitfit", dict(method="bitfit")),
    ("norm", dict(method="norm")),
    ("scl-ft cached", dict(method="scl-ft", cache_prefix=True)),
    ("linear-probe", dict(method="linear-probe", cache_prefix=True)),
)


def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_memory():
    """Return freed heap memory to the OS (glibc), so RSS starts low for each fit."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover - not glibc
        pass


def _peak_rss_during(fn, interval=0.005):
    """``(result, peak RSS above the start in bytes)`` of ``fn()``, sampled by a thread."""
    import threading

    _release_memory()
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], _rss_bytes())
    return result, peak[0] - base


def run_peft(args):
    import torch

    from sknc.finetune import FineTuningClassifier

    X, y = load_data(args.n_samples, args.size)
    results = {}
    print(
        f"\nPEFT vs full FT: {args.model} @ {args.size}px, {args.n_samples} images, batch "
        f"{args.batch_size}, {args.epochs} epochs, CPU; rows as measured:",
        flush=True,
    )
    for threads in args.peft_threads:
        torch.set_num_threads(threads)
        for rnd in range(args.repeats):
            for label, params in PEFT_CONFIGS:  # interleaved rounds
                est = FineTuningClassifier(
                    args.model,
                    model_kwargs=args.model_kwargs,
                    max_epochs=args.epochs,
                    input_size=args.size,
                    batch_size=args.batch_size,
                    lr=1e-3,
                    compute_train_nc1=False,
                    device="cpu",
                    random_state=0,
                    **params,
                )
                est, extra = _peak_rss_during(lambda est=est: est.fit(X, y))
                durations = [row["dur"] for row in est.history_]
                row = dict(
                    per_epoch=statistics.median(durations[1:] if len(durations) > 1 else durations),
                    extra_mib=extra / 1024**2,
                    trainable=est.n_trainable_params_,
                    total=est.n_params_,
                )
                print(
                    f"  threads={threads} round={rnd} {label}: {row['per_epoch']:.3f} s/epoch, "
                    f"+{row['extra_mib']:.0f} MiB",
                    flush=True,
                )
                results.setdefault((threads, label), []).append(row)
    print(
        f"\nPEFT vs full FT: {args.model} @ {args.size}px, {args.n_samples} images, batch "
        f"{args.batch_size}, {args.epochs} epochs, CPU, median of {args.repeats} interleaved "
        "rounds (timings on a shared machine are noisy); peak MiB = peak RSS during fit "
        "above the RSS before it"
    )
    print(
        f"{'threads':<8}{'method':<15}{'s/epoch':>9}{'vs full':>9}{'peak MiB':>10}"
        f"{'vs full':>9}{'trainable':>12}{'fraction':>10}"
    )
    for threads in args.peft_threads:
        full = results[(threads, "full-ft")]
        base_t = statistics.median(r["per_epoch"] for r in full)
        base_m = statistics.median(r["extra_mib"] for r in full)
        for label, _ in PEFT_CONFIGS:
            rows = results[(threads, label)]
            t = statistics.median(r["per_epoch"] for r in rows)
            m = statistics.median(r["extra_mib"] for r in rows)
            print(
                f"{threads:<8}{label:<15}{t:>9.3f}{t / base_t:>8.2f}x{m:>10.0f}"
                f"{m / base_m if base_m > 0 else float('nan'):>8.2f}x"
                f"{rows[0]['trainable']:>12,}{rows[0]['trainable'] / rows[0]['total']:>10.1%}"
            )
    return results


if __name__ == "__main__":
    main()

"""Seconds per epoch of full FT, Layer FT and SCL-FT, with and without prefix caching.

Run by hand::

    .venv/bin/python benchmarks/bench_finetune.py            # CPU (and CUDA if present)
    .venv/bin/python benchmarks/bench_finetune.py --device cuda --model resnet50 --size 224

Data: scikit-learn's digits (8 x 8 greyscale) upscaled once to the input size,
so per-image preprocessing costs the same for every method. Weights are
random (timing does not depend on them; no network needed). Every method
trains ``--epochs`` epochs; the per-epoch time is the median of skorch's epoch
durations after the first epoch (the first one includes warm-up). With
caching, building the cache (one no-grad pass over the data) happens before
the first epoch; it is reported separately in the "fit s" column, which is the
whole ``fit`` call. The target is SCL-FT with caching at least 3x faster per
epoch than full FT, measured in the same run.
"""

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument(
        "--tuned-block",
        default=None,
        help="module path or index (default: the estimator's default)",
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
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    devices = (
        [args.device]
        if args.device
        else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    )
    for device in devices:
        run(args, device)


if __name__ == "__main__":
    main()

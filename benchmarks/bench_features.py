"""Throughput of BackboneFeatures against a bare ``model(x)`` loop.

Both sides run the same stripped backbone (``est.model_``) with the same batch
size in the same process. The transformer starts from uint8 images (N, H, W, 3)
already at the model's input size and does everything itself (slicing, host to
device transfer of the bytes, conversion and normalisation on the device,
forward, copy of the features back to numpy). The baseline loops
``model(x)`` over the *same images already preprocessed* into normalised
float32 tensors, which on CUDA are resident on the GPU before the clock starts
(so the baseline pays no input transfer at all), and copies the features to the
host once at the end. Overhead = time(transformer) / time(baseline) - 1;
target: at most 5% on CPU and on CUDA (with and without mixed precision).
On the CPU this is measured at each of ``--threads`` (default 1 and 2; torch
and BLAS limited to that many threads for both sides), in interleaved runs;
the overhead is printed from the best and from the median wall times, and
from the median process CPU times (the development machines are shared and
timings are noisy; at one thread the CPU time, which includes the
transformer's background preprocessing thread, is the least disturbed by
other processes), with the 1-minute load average.

On CUDA it also reports the throughput of the input path alone (uint8 host
array -> normalised batches on the device), which must be far above the
model's, i.e. decoding/normalisation is not the bottleneck.

Run (CPU, and CUDA when available)::

    python benchmarks/bench_features.py
    python benchmarks/bench_features.py --model resnet50 --size 224 --n-images 2048 \
        --batch-size 128 --devices cuda

Random weights are used (pretrained=False): speed does not depend on values.
"""

import argparse
import itertools
import os
import statistics
import time
import warnings

import numpy as np
import torch

from sknc.features import BackboneFeatures
from sknc.features._images import iter_batches, preprocess_batch
from sknc.utils import thread_limits

# Random weights are fine for timing: silence sknc's warning about them
# (timm's zero_init_last), which is about the features' quality.
warnings.filterwarnings("ignore", message="The backbone has random weights")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats, cpu_times=None):
    """Wall times of ``repeats`` calls; their process CPU times go to ``cpu_times``."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - start_cpu)
    return times


def bench(model, device, X, batch_size, amp, channels_last, repeats):
    est = BackboneFeatures(
        model,
        input_size=X.shape[1],
        batch_size=batch_size,
        device=device,
        amp=amp,
        channels_last=channels_last,
        random_state=0,
    ).fit()
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # the same preprocessed tensors for the baseline, resident where the model runs
    batches = [
        preprocess_batch(
            torch.from_numpy(X[s : s + batch_size]).permute(0, 3, 1, 2),
            est.data_config_,
            device=dev,
            memory_format=fmt,
        )
        for s in range(0, len(X), batch_size)
    ]
    model_ = est.model_
    amp_dtype = est._amp_dtype(dev)

    def baseline():
        outs = []
        ctx = (
            torch.autocast(device_type=dev.type, dtype=amp_dtype)
            if amp_dtype
            else torch.autocast(device_type=dev.type, enabled=False)
        )
        with torch.inference_mode(), ctx:
            for xb in batches:
                outs.append(model_(xb).float())
        return torch.cat(outs).cpu().numpy()

    def transformer():
        return est.transform(X)

    def input_only():
        for _ in iter_batches(
            X,
            est.data_config_,
            batch_size=batch_size,
            device=dev,
            memory_format=fmt if channels_last else None,
        ):
            pass

    # warm-up (cudnn autotuning, allocator), and a correctness check
    Zb, Zt = baseline(), transformer()
    err = float(np.abs(Zb - Zt).max() / (np.abs(Zb).max() + 1e-12))
    tb, tt, cb, ct = [], [], [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        tb += _time(baseline, dev, 1, cb)
        tt += _time(transformer, dev, 1, ct)
    best_b, best_t = min(tb), min(tt)
    med_b, med_t = statistics.median(tb), statistics.median(tt)
    row = {
        "device": device,
        "amp": amp,
        "channels_last": channels_last,
        "baseline_img_s": len(X) / best_b,
        "transformer_img_s": len(X) / best_t,
        "overhead_best": best_t / best_b - 1,
        "overhead_median": med_t / med_b - 1,
        "overhead_cpu": statistics.median(ct) / statistics.median(cb) - 1,
        "max_rel_diff": err,
    }
    if dev.type == "cuda":
        ti = _time(input_only, dev, repeats)
        row["input_only_img_s"] = len(X) / min(ti)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="timm name (default: resnet18 on CPU, resnet50 on CUDA)"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="image size (default: 112 on CPU, 224 on CUDA)"
    )
    parser.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="images per run (default: 128 on CPU, 2048 on CUDA)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 32 on CPU, 128 on CUDA"
    )
    parser.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, plus cuda when available"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated CPU thread counts (torch and BLAS), each measured in turn",
    )
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, CPU thread counts {thread_counts}")
    for device in devices:
        gpu = device.startswith("cuda")
        model = args.model or ("resnet50" if gpu else "resnet18")
        size = args.size or (224 if gpu else 112)
        n = args.n_images or (2048 if gpu else 128)
        bs = args.batch_size or (128 if gpu else 32)
        X = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        configs = [(False, False)]
        if gpu:
            configs += [(True, False), (True, True), ("bfloat16", True)]
            print(
                f"\n{model} on {torch.cuda.get_device_name(torch.device(device))}, "
                f"{n} images {size}x{size}, batch {bs}"
            )
        else:
            print(f"\n{model} on CPU, {n} images {size}x{size}, batch {bs}")
        header = (
            f"{'threads':>7} {'amp':>9} {'ch_last':>7} {'baseline img/s':>15} "
            f"{'transformer img/s':>18} "
            f"{'overhead(best)':>15} {'overhead(median)':>17} {'overhead(CPU)':>14} "
            f"{'max rel diff':>13} {'load':>5}"
        )
        if gpu:
            header += f" {'input path img/s':>17}"
        print(header)
        # on CUDA the host threads barely matter: the first count only
        for n_threads, (amp, cl) in itertools.product(thread_counts[: 1 if gpu else None], configs):
            with thread_limits(n_threads, torch=True):
                r = bench(model, device, X, bs, amp, cl, args.repeats)
            line = (
                f"{n_threads:>7} {str(amp):>9} {str(cl):>7} {r['baseline_img_s']:15.1f} "
                f"{r['transformer_img_s']:18.1f} {r['overhead_best']:+15.1%} "
                f"{r['overhead_median']:+17.1%} {r['overhead_cpu']:+14.1%} "
                f"{r['max_rel_diff']:13.1e} {os.getloadavg()[0]:5.1f}"
            )
            if gpu:
                line += f" {r['input_only_img_s']:17.0f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()

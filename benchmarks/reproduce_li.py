"""Li et al. (TMLR 2024) with real pretrained backbones on Fashion-MNIST and emoji categories.

*Understanding and Improving Transfer Learning of Deep Models via Neural
Collapse*: (1) the lower the NC1 of a pretrained model's frozen features on
the downstream training data, the higher its linear-probe accuracy, so NC1
ranks backbones without training; (2) tuning one intermediate block plus the
classifier with a skip connection from that block to the penultimate
features (SCL-FT) trains >= 90% fewer parameters than full fine-tuning and
overfits less when downstream data is scarce.

Protocol here (all data real, fetched by ``benchmarks/fetch_data.py``):

- backbones: real ImageNet MobileNetV2 and EfficientNet-Lite0/1/2
  (:func:`sknc.datasets.load_pretrained_backbone`), fed 96 px images, and the
  project's own ``resnet10t`` trained from scratch on the source emoji classes
  by ``benchmarks/reproduce_galanti.py`` (three of its checkpoints: after the
  first epoch, half way and at the end; 48 px);
- downstream tasks: Fashion-MNIST (a stratified subsample of the official
  training and test sets: 2,000 + 2,000 images) and emoji categories (the
  ~390 *novel* emoji of the Galanti split, which the own backbones never
  saw, labelled by their Unicode category; test images are drawings of other emoji than the training
  images, 30% of the emoji of each category; categories with fewer than 10
  novel emoji dropped);
- ranking (:func:`sknc.model_selection.rank_backbones`): NC1 and CDNV of the
  frozen features on the downstream training set against the accuracy of a
  linear probe (standardised features, logistic regression) on the test set,
  with Spearman's and Kendall's rank correlations and p-values;
- fine-tuning (:class:`sknc.finetune.FineTuningClassifier`) of the ImageNet
  MobileNetV2 (96 px): linear probe, Layer FT, SCL-FT and full FT, on the
  full training set of each task and on a stratified 10% of it (3 epochs and
  30 epochs: about the same number of steps), three training seeds each:
  test accuracy, trainable parameters, seconds, NC1 of the fine-tuned
  features on the training data.

Run (from the repository root, after ``benchmarks/reproduce_galanti.py``)::

    python benchmarks/reproduce_li.py            # release run (~45 min on 1 busy core)
    python benchmarks/reproduce_li.py --quick    # smoke run (needs the galanti --quick run)
    python benchmarks/reproduce_li.py --replot   # verdicts and figures from results.json

Outputs in ``--out`` (default ``benchmarks/results/li/``, git-ignored):
``results.json``, ``nc_vs_accuracy.png``, ``finetune_fashion_mnist.png``,
``finetune_emoji_category.png``. Features are cached under
``benchmarks/data/cache`` and each fine-tuning run is stored as it finishes,
so an interrupted run resumes where it stopped.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _repro_common as rc

METHODS = ("linear-probe", "layer-ft", "scl-ft", "full-ft")
TASKS = {"fashion_mnist": "Fashion-MNIST", "emoji_category": "emoji categories"}

PRESETS = {
    "release": dict(
        imagenet=rc.IMAGENET_BACKBONES,
        imagenet_size=96,
        fmnist_train=2000,
        fmnist_test=2000,
        emoji_test_fraction=0.3,
        min_category_emoji=10,
        scarce_fraction=0.1,
        ft_model="mobilenetv2_100",
        ft_lr=5e-4,
        ft_batch_size=32,
        ft_epochs_full=3,
        ft_epochs_scarce=30,
        ft_seeds=(0, 1, 2),
        galanti="galanti",
        max_classes=None,
    ),
    "quick": dict(
        imagenet=("mobilenetv2_100", "tf_efficientnet_lite0"),
        imagenet_size=64,
        fmnist_train=300,
        fmnist_test=200,
        emoji_test_fraction=0.3,
        min_category_emoji=3,
        scarce_fraction=0.1,
        ft_model="mobilenetv2_100",
        ft_lr=5e-4,
        ft_batch_size=32,
        ft_epochs_full=1,
        ft_epochs_scarce=2,
        ft_seeds=(0,),
        galanti="galanti_quick",
        max_classes=160,
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run (a few minutes)")
    p.add_argument(
        "--out", default=None, help="output folder (default benchmarks/results/li[_quick])"
    )
    p.add_argument(
        "--galanti-dir",
        default=None,
        help="output folder of reproduce_galanti.py (own backbones' checkpoints)",
    )
    p.add_argument("--imagenet-size", type=int, default=None)
    p.add_argument(
        "--fmnist-train",
        type=int,
        default=None,
        help="Fashion-MNIST training images (stratified subsample)",
    )
    p.add_argument("--fmnist-test", type=int, default=None)
    p.add_argument("--ft-epochs-full", type=int, default=None)
    p.add_argument("--ft-epochs-scarce", type=int, default=None)
    p.add_argument("--skip-finetune", action="store_true", help="only the ranking study")
    p.add_argument(
        "--replot",
        action="store_true",
        help="only recompute the verdicts and redraw the figures from the "
        "results.json in --out (no new measurement)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    cfg = dict(PRESETS["quick" if args.quick else "release"])
    for key in (
        "imagenet_size",
        "fmnist_train",
        "fmnist_test",
        "ft_epochs_full",
        "ft_epochs_scarce",
    ):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg["seed"] = args.seed
    cfg["threads"] = args.threads
    cfg["preset"] = "quick" if args.quick else "release"
    cfg["finetune"] = not args.skip_finetune
    cfg["replot"] = args.replot
    if args.galanti_dir is None:
        args.galanti_dir = os.path.join(rc.RESULTS_DIR, cfg["galanti"])
    if args.out is None:
        args.out = os.path.join(rc.RESULTS_DIR, "li_quick" if args.quick else "li")
    return args, cfg


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def load_tasks(cfg):
    """{task: dict(X_train, y_train, X_test, y_test, scarce, info)} at the ImageNet size."""
    from sknc.datasets import load_fashion_mnist
    from sknc.model_selection import split_classes, subsample_per_class

    size, seed = cfg["imagenet_size"], cfg["seed"]
    tasks = {}

    tr = load_fashion_mnist(data_home=rc.DATA_DIR, subset="train")
    te = load_fashion_mnist(data_home=rc.DATA_DIR, subset="test")
    i_tr = subsample_per_class(tr.target, n_per_class=cfg["fmnist_train"] // 10, random_state=seed)
    i_te = subsample_per_class(te.target, n_per_class=cfg["fmnist_test"] // 10, random_state=seed)
    names = tr.target_names
    tasks["fashion_mnist"] = dict(
        X_train=rc.resize_rgb(tr.images[i_tr], size),
        y_train=names[tr.target[i_tr]],
        X_test=rc.resize_rgb(te.images[i_te], size),
        y_test=names[te.target[i_te]],
        info={
            "source": "Fashion-MNIST (real, 28 px greyscale), stratified subsample of the "
            "official train / test sets",
            "n_classes": 10,
            "n_train": int(len(i_tr)),
            "n_test": int(len(i_te)),
        },
    )

    emoji, split = rc.load_emoji_protocol(seed=seed, max_classes=cfg["max_classes"])
    nov = split.novel
    cat = emoji.category[nov]
    cls = emoji.target[nov]
    # categories with enough novel emoji to put some in train and some in test
    per_cat = {c: len(np.unique(cls[cat == c])) for c in np.unique(cat)}
    kept = sorted(c for c, n in per_cat.items() if n >= cfg["min_category_emoji"])
    keep = np.isin(cat, kept)
    nov, cat, cls = nov[keep], cat[keep], cls[keep]
    _, test_emoji = split_classes(
        cls, n_novel=cfg["emoji_test_fraction"], strata=cat, random_state=seed
    )
    is_test = np.isin(cls, test_emoji)
    X = rc.resize_rgb(emoji.images[nov], size)
    tasks["emoji_category"] = dict(
        X_train=X[~is_test],
        y_train=cat[~is_test],
        X_test=X[is_test],
        y_test=cat[is_test],
        info={
            "source": "the novel emoji of the Galanti split (never seen by the own "
            "backbones), labelled by Unicode category; test = drawings of "
            f"{int(100 * cfg['emoji_test_fraction'])}% of the emoji of each "
            "category (other emoji than in training)",
            "categories": kept,
            "dropped_categories": sorted(set(per_cat) - set(kept)),
            "n_classes": len(kept),
            "n_emoji": int(len(np.unique(cls))),
            "n_train": int((~is_test).sum()),
            "n_test": int(is_test.sum()),
        },
    )
    for _name, t in tasks.items():
        t["scarce"] = subsample_per_class(
            t["y_train"], fraction=cfg["scarce_fraction"], random_state=seed
        )
        t["info"]["n_train_scarce"] = int(len(t["scarce"]))
        t["info"]["train_class_counts"] = dict(
            zip(*[a.tolist() for a in np.unique(t["y_train"], return_counts=True)])
        )
    return tasks


def own_checkpoints(galanti_dir):
    """{label: path} of three checkpoints of the own backbone, and its config."""
    res = rc.read_json(os.path.join(galanti_dir, "results.json"))
    manifest = rc.read_json(os.path.join(galanti_dir, "checkpoints", "manifest.json"))
    if res is None or manifest is None:
        raise FileNotFoundError(
            f"no results of reproduce_galanti.py in {galanti_dir!r}; run "
            "`python benchmarks/reproduce_galanti.py` (or pass --galanti-dir)."
        )
    files = manifest["files"]
    last = len(files) - 1
    picks = sorted({1, max(1, last // 2), last})
    out = {}
    for e in picks:
        out[f"own {res['config']['model']} ep {e}"] = os.path.join(
            galanti_dir, "checkpoints", files[e]
        )
    return out, res["config"]


# ----------------------------------------------------------------------------
# ranking: NC1 of frozen features vs linear-probe accuracy
# ----------------------------------------------------------------------------
def candidates(cfg, own, own_cfg):
    from sknc.features import BackboneFeatures

    cands, meta = {}, {}
    for name in cfg["imagenet"]:
        module, _ = rc.imagenet_backbone(name)
        label = rc.SHORT_NAMES[name]
        cands[label] = BackboneFeatures(
            module,
            input_size=cfg["imagenet_size"],
            crop_pct=1.0,
            batch_size=128,
            device="cpu",
            memory=rc.CACHE_DIR,
        )
        meta[label] = {
            "kind": "imagenet",
            "model": name,
            "input_size": cfg["imagenet_size"],
            "weights": "ImageNet-1k",
        }
    for label, path in own.items():
        cands[label] = BackboneFeatures(
            own_cfg["model"],
            weights=path,
            input_size=own_cfg["size"],
            crop_pct=1.0,
            batch_size=256,
            device="cpu",
            memory=rc.CACHE_DIR,
        )
        meta[label] = {
            "kind": "own",
            "model": own_cfg["model"],
            "input_size": own_cfg["size"],
            "weights": os.path.relpath(path, rc.REPO_DIR),
        }
    return cands, meta


def rank(cfg, tasks, cands, meta):
    from sknc.model_selection import rank_backbones, rank_correlation

    out = {}
    for task, t in tasks.items():
        t0 = time.perf_counter()
        rc.log(f"ranking {len(cands)} backbones on {TASKS[task]}")
        r = rank_backbones(
            cands,
            t["X_train"],
            t["y_train"],
            X_test=t["X_test"],
            y_test=t["y_test"],
            random_state=cfg["seed"],
        )
        table = [dict(row, **meta[row["backbone"]]) for row in r.table]
        imagenet = [row for row in table if row["kind"] == "imagenet"]
        out[task] = {
            "table": table,
            "correlations": r.correlations,
            "imagenet_only": rank_correlation(
                [row["nc1"] for row in imagenet], [row["accuracy"] for row in imagenet]
            ),
            "seconds": time.perf_counter() - t0,
        }
        for row in table:
            rc.log(
                f"  {row['backbone']:<24} NC1 {row['nc1']:8.3f}  CDNV {row['cdnv']:.3f}  "
                f"LP acc {100 * row['accuracy']:.1f}%"
            )
        c = r.correlations["nc1"]
        rc.log(
            f"  NC1 vs accuracy: Spearman {c['spearman']:.2f} (p={c['spearman_pvalue']:.2g}), "
            f"Kendall {c['kendall']:.2f} (p={c['kendall_pvalue']:.2g})"
        )
    return out


# ----------------------------------------------------------------------------
# fine-tuning (each run stored as it finishes)
# ----------------------------------------------------------------------------
def _cosine(epochs):
    from skorch.callbacks import LRScheduler

    return [("cosine", LRScheduler(policy="CosineAnnealingLR", T_max=epochs))]


def finetune(cfg, tasks, out):
    """Per-run rows, their summary over the training seeds ``cfg["ft_seeds"]``, cache use.

    :func:`sknc.experiments.compare_finetuning` on every task; runs are
    stored in ``out/finetune_runs.json`` as they finish (keyed by everything
    that determines them), and a re-run reuses them.
    """
    from sknc.experiments import compare_finetuning
    from sknc.finetune import FineTuningClassifier

    module, _ = rc.imagenet_backbone(cfg["ft_model"])
    base = FineTuningClassifier(
        module,
        input_size=cfg["imagenet_size"],
        lr=cfg["ft_lr"],
        batch_size=cfg["ft_batch_size"],
        device="cpu",
    )
    regimes = {
        "full": {
            "params": {
                "max_epochs": cfg["ft_epochs_full"],
                "callbacks": _cosine(cfg["ft_epochs_full"]),
            }
        },
        "scarce": {
            "fraction": cfg["scarce_fraction"],
            "params": {
                "max_epochs": cfg["ft_epochs_scarce"],
                "callbacks": _cosine(cfg["ft_epochs_scarce"]),
            },
            # the gap to the test accuracy shows overfitting (scarce sets only: a pass
            # over a full training set costs as much as an epoch)
            "score_train": True,
        },
    }
    per_run, summary = {}, {}
    cache = {"reused_runs": 0, "computed_runs": 0}
    for task, t in tasks.items():
        rc.log(f"fine-tuning {cfg['ft_model']} on {TASKS[task]}: {', '.join(METHODS)}")
        res = compare_finetuning(
            base,
            t["X_train"],
            t["y_train"],
            t["X_test"],
            t["y_test"],
            methods=METHODS,
            regimes=regimes,
            seeds=cfg["ft_seeds"],
            random_state=cfg["seed"],
            cache=os.path.join(out, "finetune_runs.json"),
            verbose=True,
        )
        per_run[task] = [dict(r, task=task) for r in res["runs"]]
        summary[task] = [dict(r, task=task) for r in res["summary"]]
        for key in cache:
            cache[key] += res["cache"][key]
    cache["fit_seconds_all_runs"] = sum(r["fit_seconds"] for rows in per_run.values() for r in rows)
    return per_run, summary, cache


# ----------------------------------------------------------------------------
# verdicts: sknc.experiments' rules, the same as sknc demo's
# ----------------------------------------------------------------------------
def claims(res):
    """The verdicts of Li et al.'s claims from the numbers in ``res``."""
    from sknc.experiments import (
        make_claim,
        verdict_collapse_predicts_transfer,
        verdict_scl_ft_collapse,
        verdict_scl_ft_efficient,
    )

    out = {
        "collapse_predicts_transfer": verdict_collapse_predicts_transfer(
            res["ranking"], TASKS, subgroup={"label": "ImageNet", "key": "imagenet_only"}
        )
    }
    if not res.get("finetune"):
        for key in ("scl_ft_efficient", "scl_ft_collapse"):
            out[key] = make_claim(key, "not run", "fine-tuning was skipped (--skip-finetune).")
        return out
    out["scl_ft_efficient"] = verdict_scl_ft_efficient(res["finetune"], TASKS)
    out["scl_ft_collapse"] = verdict_scl_ft_collapse(res["finetune"], TASKS)
    return out


# ----------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------
def figures(res, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sknc.plotting import plot_finetune_comparison, plot_nc_vs_accuracy

    files = {}
    ranking = res["ranking"]
    fig, axes = plt.subplots(
        1, len(ranking), figsize=(6 * len(ranking), 4.6), constrained_layout=True
    )
    for ax, (task, r) in zip(np.atleast_1d(axes), ranking.items()):
        plot_nc_vs_accuracy(
            [row["nc1"] for row in r["table"]],
            [row["accuracy"] for row in r["table"]],
            labels=[row["backbone"] for row in r["table"]],
            ax=ax,
        )
        ax.set_title(f"{TASKS[task]}: {ax.get_title()}", fontsize=10)
    fig.suptitle("NC1 of frozen features on the downstream training set vs linear-probe accuracy")
    files["nc_vs_accuracy"] = "nc_vs_accuracy.png"
    fig.savefig(os.path.join(out, files["nc_vs_accuracy"]), dpi=90)
    plt.close(fig)

    for task, rows in (res.get("finetune") or {}).items():
        fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
        for ax_row, regime in zip(axes, ("full", "scarce")):
            sel = [r for r in rows if r["regime"] == regime]
            plot_finetune_comparison(
                [r["method"] for r in sel],
                [r["accuracy"] for r in sel],
                [r["n_trainable_params"] for r in sel],
                [r["fit_seconds"] for r in sel],
                axes=ax_row,
            )
            std = [r.get("accuracy_std") for r in sel]
            if all(rc.finite(v) for v in std):  # error bars: std over the seeds
                ax_row[0].errorbar(
                    np.arange(len(sel)),
                    [100 * r["accuracy"] for r in sel],
                    yerr=[100 * v for v in std],
                    fmt="none",
                    ecolor="0.2",
                    capsize=4,
                )
            ax_row[0].set_title(
                f"{'full' if regime == 'full' else '10%'} training set "
                f"({sel[0]['n_train']} images): {ax_row[0].get_title()}",
                fontsize=9,
            )
        model = rc.SHORT_NAMES[res["config"]["ft_model"]]
        n_seeds = rows[0].get("n_seeds", 1)
        fig.suptitle(
            f"{TASKS[task]}: fine-tuning ImageNet {model} (means over {n_seeds} "
            "training seeds; bars: ± 1 std)"
        )
        files[f"finetune_{task}"] = f"finetune_{task}.png"
        fig.savefig(os.path.join(out, files[f"finetune_{task}"]), dpi=90)
        plt.close(fig)
    return files


# ----------------------------------------------------------------------------
def main(argv=None):
    args, cfg = parse_args(argv)
    rc.set_threads(cfg["threads"])
    out = os.path.abspath(args.out)
    if cfg.pop("replot"):
        return rc.replot(out, claims, figures)
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    revision = rc.code_revision()  # the code that runs, before anything can change it
    rc.log(f"Li et al. on Fashion-MNIST and emoji categories ({cfg['preset']}), output in {out}")
    own, own_cfg = own_checkpoints(args.galanti_dir)
    tasks = load_tasks(cfg)
    for task, t in tasks.items():
        rc.log(f"{TASKS[task]}: {t['info']}")
    cands, meta = candidates(cfg, own, own_cfg)
    ranking = rank(cfg, tasks, cands, meta)
    res = {
        "experiment": "li",
        "title": "Li et al. (TMLR 2024) on Fashion-MNIST and emoji categories",
        "command": rc.command_line(None if argv is None else [sys.argv[0], *argv]),
        "config": {
            **cfg,
            "imagenet": list(cfg["imagenet"]),
            "ft_seeds": list(cfg["ft_seeds"]),
            "own_backbone": own_cfg["model"],
            "own_size": own_cfg["size"],
            "own_checkpoints": list(own),
            "probe": "StandardScaler + LogisticRegression(max_iter=1000)",
            "ft_optimizer": "AdamW, cosine schedule, no augmentation",
        },
        "environment": rc.environment(revision),
        "revision": rc.revision_at_end(revision),
        "data": {task: t["info"] for task, t in tasks.items()},
        "ranking": ranking,
    }
    if cfg["finetune"]:
        res["finetune_runs"], res["finetune"], res["finetune_cache"] = finetune(cfg, tasks, out)
    res["claims"] = claims(res)
    res["figures"] = figures(res, out)
    return rc.finish(out, res, t_start)


if __name__ == "__main__":
    main()

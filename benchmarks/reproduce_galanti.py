"""Galanti et al. (ICLR 2022) on real artwork: multi-vendor emoji as an Omniglot-like benchmark.

*On the Role of Neural Collapse in Transfer Learning*: a network trained on
many source classes collapses (its class-distance normalised variance, CDNV,
falls) on its training samples, on unseen samples of those classes and on
classes it never saw; so a nearest-class-centre (NCC) classifier on its
frozen features is a strong few-shot learner on new classes.

Protocol here (all data real, fetched by ``benchmarks/fetch_data.py``):

- data: the emoji drawn by at least 4 of 7 vendors (one emoji = one class,
  one vendor's drawing = one sample; about 1,560 classes and 9,100 images
  once each group of emoji that some vendor draws with one and the same
  image is reduced to one emoji), split by
  :func:`sknc.model_selection.source_novel_split`: a quarter of the emoji
  (stratified by Unicode category) are novel classes, and two vendors are
  held out of source training (their drawings of the source emoji are the
  "source test" set: unseen samples, by unseen designers; two, because CDNV
  needs two samples of a class);
- pre-training: a timm ``resnet10t`` from random weights on the source
  classes (:func:`sknc.finetune.pretrain_backbone`), AdamW with a cosine
  schedule, light affine augmentation, a checkpoint after every epoch
  (epoch 0 = the initial weights);
- for every checkpoint: CDNV and NC1 of the frozen penultimate features on
  source-train, source-test (held-out vendors) and novel classes (over the
  classes with at least two samples in the set); NCC accuracy on the
  held-out vendors; 5-way 1-shot and 5-shot NCC episodes on the novel
  classes with 95% confidence intervals (:func:`sknc.model_selection.evaluate_episodes`);
- baselines on the same novel-class episodes: NCC on raw pixels and on the
  frozen features of real ImageNet backbones (MobileNetV2, EfficientNet-Lite0/1/2).

Run (from the repository root, after ``python benchmarks/fetch_data.py``)::

    python benchmarks/reproduce_galanti.py            # release run (~20 min on 1 busy core)
    python benchmarks/reproduce_galanti.py --quick    # smoke run, ~1 minute
    python benchmarks/reproduce_galanti.py --replot   # verdicts and figures from results.json

Outputs in ``--out`` (default ``benchmarks/results/galanti/``, git-ignored):
``results.json``, ``collapse_curves.png``, ``fewshot_vs_cdnv.png``,
``fewshot_per_epoch.png`` and the per-epoch checkpoints (``checkpoints/``),
which ``benchmarks/reproduce_li.py`` uses as the project's own backbones.
Features are cached under ``benchmarks/data/cache``; a re-run reuses the
checkpoints and cached features, so an interrupted run resumes cheaply.
"""

import argparse
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _repro_common as rc

N_WAY = 5
# Emoji classes have 4 to 7 drawings, so the episodes use few queries:
# 1-shot: 3 queries per class (every novel class has >= 4 drawings);
# 5-shot: 1 query per class (only novel classes drawn by >= 6 vendors).
SHOTS = {1: 3, 5: 1}

PRESETS = {
    "release": dict(
        model="resnet10t",
        size=48,
        epochs=15,
        lr=2e-3,
        batch_size=64,
        weight_decay=5e-4,
        episodes=2000,
        imagenet_size=96,
        imagenet=rc.IMAGENET_BACKBONES,
        max_classes=None,
    ),
    "quick": dict(
        model="resnet10t",
        size=32,
        epochs=2,
        lr=2e-3,
        batch_size=64,
        weight_decay=5e-4,
        episodes=200,
        imagenet_size=64,
        imagenet=("mobilenetv2_100",),
        max_classes=160,
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run (~2 minutes)")
    p.add_argument(
        "--out", default=None, help="output folder (default benchmarks/results/galanti[_quick])"
    )
    p.add_argument("--model", default=None, help="timm architecture trained from scratch")
    p.add_argument("--size", type=int, default=None, help="input size of the own backbone")
    p.add_argument("--epochs", type=int, default=None, help="source pre-training epochs")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--episodes", type=int, default=None, help="episodes per protocol")
    p.add_argument(
        "--imagenet-size", type=int, default=None, help="input size of the ImageNet backbones"
    )
    p.add_argument("--no-augment", action="store_true", help="pre-train without augmentation")
    p.add_argument(
        "--replot",
        action="store_true",
        help="only recompute the verdicts and redraw the figures from the "
        "results.json in --out (no new measurement)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)"
    )
    args = p.parse_args(argv)
    preset = dict(PRESETS["quick" if args.quick else "release"])
    for key in ("model", "size", "epochs", "lr", "batch_size", "episodes", "imagenet_size"):
        value = getattr(args, key)
        if value is not None:
            preset[key] = value
    preset["augment"] = not args.no_augment
    preset["seed"] = args.seed
    preset["threads"] = args.threads
    preset["preset"] = "quick" if args.quick else "release"
    preset["replot"] = args.replot
    if args.out is None:
        args.out = os.path.join(rc.RESULTS_DIR, "galanti_quick" if args.quick else "galanti")
    return args, preset


# ----------------------------------------------------------------------------
# pre-training with per-epoch checkpoints (resumable)
# ----------------------------------------------------------------------------
def make_augment():
    """Light geometric augmentation on white background (no flips: arrows have
    directions; no colour jitter: hearts of different colours are different emoji)."""
    from torchvision.transforms import v2

    return v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1), fill=1.0)


def pretrain(cfg, X, y, out):
    """Checkpoint paths (epoch 0 = initial weights) and the training history."""
    from safetensors.torch import save_file
    from skorch.callbacks import LRScheduler

    from sknc.features import create_backbone
    from sknc.finetune import pretrain_backbone

    folder = os.path.join(out, "checkpoints")
    manifest_path = os.path.join(folder, "manifest.json")
    key = {
        k: cfg[k]
        for k in (
            "model",
            "size",
            "epochs",
            "lr",
            "batch_size",
            "weight_decay",
            "augment",
            "seed",
            "max_classes",
        )
    }
    key["n_train"] = int(len(y))
    manifest = rc.read_json(manifest_path)
    if (
        manifest is not None
        and manifest["key"] == rc.to_jsonable(key)
        and all(os.path.exists(os.path.join(folder, f)) for f in manifest["files"])
    ):
        rc.log(f"reusing {len(manifest['files'])} checkpoints in {folder}")
        history = dict(manifest["history"], reused=True)
        return [os.path.join(folder, f) for f in manifest["files"]], history

    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    init = os.path.join(folder, "epoch_000.safetensors")
    module = create_backbone(cfg["model"], seed=cfg["seed"])
    save_file(
        {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()},
        init,
        metadata={"epoch": "0", "format": "pt"},
    )
    t0 = time.perf_counter()

    def on_epoch_end(estimator, epoch):
        row = estimator.net_.history[-1]
        rc.log(
            f"  epoch {epoch}/{cfg['epochs']}: train loss {row['train_loss']:.3f}, "
            f"{row['dur']:.0f} s"
        )

    rc.log(
        f"pre-training {cfg['model']} on {len(y)} images of {len(np.unique(y))} source "
        f"classes, {cfg['size']} px, {cfg['epochs']} epochs"
    )
    est = pretrain_backbone(
        cfg["model"],
        X,
        y,
        checkpoint_dir=folder,
        weights=init,
        max_epochs=cfg["epochs"],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        batch_size=cfg["batch_size"],
        input_size=cfg["size"],
        augment=make_augment() if cfg["augment"] else None,
        device="cpu",
        on_epoch_end=on_epoch_end,
        random_state=cfg["seed"],
        callbacks=[("cosine", LRScheduler(policy="CosineAnnealingLR", T_max=cfg["epochs"]))],
    )
    # pretrain_backbone writes epoch_000 (the same initial weights) ... epoch_NNN
    # directly into folder; the resume state is not needed once the run is done
    files = [os.path.basename(path) for path in est.checkpoints_]
    os.remove(os.path.join(folder, "training_state.pt"))
    history = {
        "epoch": list(range(1, len(est.history_) + 1)),
        "train_loss": [float(v) for v in est.history_[:, "train_loss"]],
        "seconds": [float(v) for v in est.history_[:, "dur"]],
        "total_seconds": time.perf_counter() - t0,
        "final_train_nc1": est.train_nc1_,
        "n_params": int(est.n_params_),
    }
    rc.write_json(manifest_path, {"key": key, "files": files, "history": history})
    return [os.path.join(folder, f) for f in files], rc.to_jsonable(dict(history, reused=False))


# ----------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------
def _protocol(extractors, X, y, split, cfg, refit=True):
    """sknc.experiments.measure_checkpoints with this script's episodes."""
    from sknc.experiments import measure_checkpoints

    return measure_checkpoints(
        extractors,
        X,
        y,
        split,
        n_way=N_WAY,
        shots=SHOTS,
        n_episodes=cfg["episodes"],
        small_classes="skip",
        refit=refit,
        random_state=cfg["seed"],
        n_jobs=1,
    )


def _fewshot(m, i):
    """The few-shot entry of checkpoint ``i`` of a measure_checkpoints result."""
    return {
        k: {f: s[f][i] for f in ("mean", "std", "ci95")} | {"n_classes": s["n_classes"]}
        for k, s in m["few_shot"]["shots"].items()
    }


def _features(model, size, batch_size, weights=None):
    from sknc.features import BackboneFeatures

    return BackboneFeatures(
        model,
        weights=weights,
        input_size=size,
        crop_pct=1.0,
        batch_size=batch_size,
        device="cpu",
        memory=rc.CACHE_DIR,
    )


def measure_checkpoints(cfg, checkpoints, X, y, split):
    """Galanti et al.'s protocol on every checkpoint, in this script's results layout."""
    t0 = time.perf_counter()
    m = _protocol(
        [_features(cfg["model"], cfg["size"], 256, weights=path) for path in checkpoints],
        X,
        y,
        split,
        cfg,
    )
    collapse = {
        part: {k: v[k] for k in ("cdnv", "nc1", "cdnv_corrected")}
        for part, v in m["collapse"].items()
    }
    collapse["n_classes"] = {part: v["n_classes"] for part, v in m["collapse"].items()}
    shots = {
        k: {f: s[f] for f in ("n_shot", "n_query", "mean", "std", "ci95", "n_classes")}
        for k, s in m["few_shot"]["shots"].items()
    }
    for epoch in range(len(checkpoints)):
        rc.log(
            f"  checkpoint {epoch}: CDNV train/test/novel "
            f"{collapse['source_train']['cdnv'][epoch]:.3f}/"
            f"{collapse['source_test']['cdnv'][epoch]:.3f}/{collapse['novel']['cdnv'][epoch]:.3f}, "
            f"NCC held-out vendors {100 * m['ncc_accuracy'][epoch]:.1f}%, "
            + ", ".join(f"{k}-shot {100 * shots[k]['mean'][epoch]:.1f}%" for k in shots)
        )
    rc.log(f"  {len(checkpoints)} checkpoints measured in {time.perf_counter() - t0:.0f} s")
    return collapse, m["ncc_accuracy"], shots, m["n_features"][-1]


def measure_baselines(cfg, X_own, X_native, y, split):
    """Raw pixels and frozen ImageNet backbones on the novel-class episodes."""
    from sklearn.preprocessing import FunctionTransformer

    idx = split.novel
    y_nov = y[idx]
    novel = {"novel": np.arange(len(idx))}
    Z = X_own[idx].reshape(len(idx), -1).astype(np.float32) / 255.0
    m = _protocol([FunctionTransformer().fit(Z)], Z, y_nov, novel, cfg, refit=False)
    rows = [
        {
            "name": "raw pixels",
            "kind": "raw",
            "input_size": cfg["size"],
            "n_features": m["n_features"][0],
            "cdnv": m["collapse"]["novel"]["cdnv"][0],
            "nc1": m["collapse"]["novel"]["nc1"][0],
            "fewshot": _fewshot(m, 0),
            "seconds": 0.0,
        }
    ]
    for name in cfg["imagenet"]:
        t0 = time.perf_counter()
        module, _ = rc.imagenet_backbone(name)
        feats = _features(module, cfg["imagenet_size"], 128).fit()
        m = _protocol([feats], X_native[idx], y_nov, novel, cfg, refit=False)
        rows.append(
            {
                "name": rc.SHORT_NAMES[name] + " (ImageNet)",
                "kind": "imagenet",
                "model": name,
                "input_size": cfg["imagenet_size"],
                "n_features": m["n_features"][0],
                "cdnv": m["collapse"]["novel"]["cdnv"][0],
                "nc1": m["collapse"]["novel"]["nc1"][0],
                "fewshot": _fewshot(m, 0),
                "seconds": time.perf_counter() - t0,
            }
        )
        rc.log(
            f"  {name}: novel CDNV {rows[-1]['cdnv']:.3f}, "
            + ", ".join(f"{k}-shot {100 * v['mean']:.1f}%" for k, v in rows[-1]["fewshot"].items())
        )
    return rows


# ----------------------------------------------------------------------------
# verdicts: sknc.experiments' rules, the same as sknc demo's
# ----------------------------------------------------------------------------
SET_LABELS = {
    "source_train": "source-train",
    "source_test": "held-out-vendors",
    "novel": "novel-class",
}


def claims(res):
    """The verdicts of Galanti et al.'s claims from the numbers in ``res``."""
    from sknc.experiments import (
        verdict_collapse_generalizes,
        verdict_fewshot_follows_cdnv,
        verdict_source_training_helps,
    )

    col, fs, corr = res["collapse"], res["fewshot"], res["correlations"]
    k = str(max(SHOTS))
    corrected = None  # results stored before the bias-corrected CDNV was measured lack it
    if all("cdnv_corrected" in col[key] for key in SET_LABELS):
        corrected = {key: col[key]["cdnv_corrected"] for key in SET_LABELS}
    return {
        "collapse_generalizes": verdict_collapse_generalizes(
            col["epoch"], {key: col[key]["cdnv"] for key in SET_LABELS}, SET_LABELS, corrected
        ),
        "fewshot_follows_cdnv": verdict_fewshot_follows_cdnv(fs, corr["epochs"], N_WAY),
        "source_training_helps": verdict_source_training_helps(
            res["feature_sets"], corr["feature_sets"][k], N_WAY, k
        ),
    }


# ----------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------
def figures(res, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from sknc.plotting import plot_cdnv_curves, plot_fewshot_vs_cdnv

    files = {}
    col = res["collapse"]
    labels = {
        "source_train": "source train",
        "source_test": "source, held-out vendors",
        "novel": "novel classes",
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, metric in zip(axes, ("cdnv", "nc1")):
        plot_cdnv_curves(
            col["epoch"], {labels[k]: col[k][metric] for k in labels}, ylabel=metric.upper(), ax=ax
        )
    fig.suptitle(f"Emoji: collapse of {res['config']['model']} features during source training")
    files["collapse_curves"] = "collapse_curves.png"
    fig.savefig(os.path.join(out, files["collapse_curves"]), dpi=90)
    plt.close(fig)

    fs = res["fewshot"]
    names = {k: f"{N_WAY}-way {k}-shot" for k in fs}
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    plot_fewshot_vs_cdnv(
        col["novel"]["cdnv"],
        {names[k]: s["mean"] for k, s in fs.items()},
        ci95={names[k]: s["ci95"] for k, s in fs.items()},
        labels=[f"ep {e}" for e in col["epoch"]],
        ax=ax,
    )
    base = [r for r in res["feature_sets"] if r["kind"] != "own"]
    shapes = "sD^vP*Xp"
    for i, row in enumerate(base):
        for j, s in enumerate(row["fewshot"].values()):
            ax.errorbar(
                [row["cdnv"]],
                [100 * s["mean"]],
                yerr=[100 * s["ci95"]],
                fmt=shapes[i],
                color=f"C{j}",
                markersize=7,
                markerfacecolor="white",
                capsize=3,
            )
    handles, texts = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], marker=shapes[i], ls="", color="0.3", markerfacecolor="white", markersize=7)
        for i in range(len(base))
    ]
    texts += [row["name"] for row in base]
    ax.legend(handles, texts, fontsize=8, loc="lower left")
    ax.set_title(
        "Novel emoji: NCC few-shot accuracy vs CDNV\n(lines: own backbone per epoch; "
        "open markers: baselines)",
        fontsize=10,
    )
    files["fewshot_vs_cdnv"] = "fewshot_vs_cdnv.png"
    fig.savefig(os.path.join(out, files["fewshot_vs_cdnv"]), dpi=90)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9.5, 4.6), constrained_layout=True)
    epochs = np.asarray(col["epoch"])
    handles = []
    for j, (k, s) in enumerate(fs.items()):
        m, ci = 100 * np.asarray(s["mean"]), 100 * np.asarray(s["ci95"])
        handles += ax.plot(
            epochs, m, marker="o", markersize=3, color=f"C{j}", label=f"own backbone, {names[k]}"
        )
        ax.fill_between(epochs, m - ci, m + ci, color=f"C{j}", alpha=0.2)
    # the baselines in a column right of the curves, one marker shape each
    x0 = epochs[-1] + 1.5
    for i, row in enumerate(base):
        for j, f in enumerate(row["fewshot"].values()):
            ax.errorbar(
                [x0 + 0.5 * i],
                [100 * f["mean"]],
                yerr=[100 * f["ci95"]],
                fmt=shapes[i],
                color=f"C{j}",
                markersize=6,
                markerfacecolor="white",
                capsize=2,
            )
        handles.append(
            Line2D(
                [],
                [],
                marker=shapes[i],
                ls="",
                color="0.3",
                markerfacecolor="white",
                markersize=6,
                label=row["name"],
            )
        )
    ax.axvline(epochs[-1] + 0.9, color="0.6", lw=0.8)
    ax.set_xticks(epochs[:: max(1, len(epochs) // 8)])
    ax.set_xlabel("epoch of source training (right of the line: baselines)")
    ax.set_ylabel("few-shot NCC accuracy on novel emoji (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title("Few-shot accuracy per epoch (band / bars: 95% CI)", fontsize=10)
    files["fewshot_per_epoch"] = "fewshot_per_epoch.png"
    fig.savefig(os.path.join(out, files["fewshot_per_epoch"]), dpi=90)
    plt.close(fig)
    return files


def _data_info(emoji, split):
    """The ``data`` entry of results.json."""
    y = emoji.target
    n_per_class = np.bincount(y)
    return {
        "n_classes": int(len(emoji.target_names)),
        "n_images": int(len(y)),
        "min_vendors": rc.EMOJI_MIN_VENDORS,
        "vendors": sorted(set(emoji.vendor.tolist())),
        "samples_per_class": {
            "min": int(n_per_class.min()),
            "median": float(np.median(n_per_class)),
            "max": int(n_per_class.max()),
        },
        "duplicates_dropped": len(emoji.duplicates_dropped),
        "duplicates_dropped_examples": emoji.duplicates_dropped[:6],
        "held_out_vendors": [str(v) for v in split.test_groups],
        "source": {
            "n_classes": int(len(split.source_classes)),
            "n_train": int(len(split.source_train)),
            "n_test": int(len(split.source_test)),
        },
        "novel": {"n_classes": int(len(split.novel_classes)), "n_images": int(len(split.novel))},
    }


def _own_row(cfg, collapse, shots, width, i, name):
    """The own backbone at checkpoint ``i`` as a row of the feature-set comparison."""
    return {
        "name": name,
        "kind": "own",
        "model": cfg["model"],
        "input_size": cfg["size"],
        "n_features": int(width),
        "cdnv": collapse["novel"]["cdnv"][i],
        "nc1": collapse["novel"]["nc1"][i],
        "fewshot": {
            k: {f: s[f][i] for f in ("mean", "std", "ci95")} | {"n_classes": s["n_classes"]}
            for k, s in shots.items()
        },
    }


# ----------------------------------------------------------------------------
def main(argv=None):
    from sknc.model_selection import rank_correlation

    args, cfg = parse_args(argv)
    rc.set_threads(cfg["threads"])
    out = os.path.abspath(args.out)
    if cfg.pop("replot"):
        return rc.replot(out, claims, figures)
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    revision = rc.code_revision()  # the code that runs, before anything can change it
    rc.log(f"Galanti et al. on emoji ({cfg['preset']}), output in {out}")

    emoji, split = rc.load_emoji_protocol(seed=cfg["seed"], max_classes=cfg["max_classes"])
    y = emoji.target
    X_native = emoji.images  # 64 px
    X_own = rc.resize_rgb(X_native, cfg["size"], resample="lanczos")
    data = _data_info(emoji, split)
    rc.log(f"data: {data}")

    checkpoints, history = pretrain(cfg, X_own[split.source_train], y[split.source_train], out)
    rc.log("measuring every checkpoint")
    collapse, ncc_acc, shots, width = measure_checkpoints(cfg, checkpoints, X_own, y, split)
    collapse["epoch"] = list(range(len(checkpoints)))
    rc.log("baselines on the novel classes")
    baselines = measure_baselines(cfg, X_own, X_native, y, split)
    feature_sets = baselines + [
        _own_row(cfg, collapse, shots, width, 0, "own backbone (random init)"),
        _own_row(cfg, collapse, shots, width, -1, "own backbone (final epoch)"),
    ]

    res = {
        "experiment": "galanti",
        "title": "Galanti et al. (ICLR 2022) on multi-vendor emoji",
        "command": rc.command_line(argv if argv is None else [sys.argv[0], *argv]),
        "config": {
            **cfg,
            "imagenet": list(cfg["imagenet"]),
            "n_way": N_WAY,
            "shots": {str(k): {"n_query": q} for k, q in SHOTS.items()},
            "optimizer": "AdamW, cosine schedule",
            "augment_desc": (
                "RandomAffine(degrees=10, translate=0.08, scale 0.9-1.1, white fill)"
                if cfg["augment"]
                else "none"
            ),
        },
        "environment": rc.environment(revision),
        "revision": rc.revision_at_end(revision),
        "data": data,
        "pretrain": history,
        "collapse": collapse,
        "ncc_held_out_vendors_accuracy": ncc_acc,
        "fewshot": shots,
        "feature_sets": feature_sets,
    }
    k_epochs = {k: rank_correlation(collapse["novel"]["cdnv"], s["mean"]) for k, s in shots.items()}
    k_sets = {
        k: rank_correlation(
            [r["cdnv"] for r in feature_sets], [r["fewshot"][k]["mean"] for r in feature_sets]
        )
        for k in shots
    }
    res["correlations"] = {"epochs": k_epochs, "feature_sets": k_sets}
    res["claims"] = claims(res)
    res["figures"] = figures(res, out)
    return rc.finish(out, res, t_start)


if __name__ == "__main__":
    main()

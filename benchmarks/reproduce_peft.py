"""SCL-FT against the field's parameter-efficient fine-tuning baselines, on real data.

Li et al. (TMLR 2024) claim that tuning one block with a skip connection
(SCL-FT) competes with full fine-tuning at >= 90% fewer tuned parameters and
overfits less on scarce data. This script compares it, with **the same
tuning budget for every method**, against what a practitioner would use
instead: linear probe, BitFit (biases + head), normalisation-layer tuning
(BatchNorm affine + head), LoRA at two ranks (``peft``, on every dense
convolution), Layer FT (the default block), the last two blocks, and full
fine-tuning; SCL-FT with the block chosen by collapse (``tuned_block="auto"``)
and, as an oracle, with the best of a sweep of single blocks.

Protocol (per backbone, data set and regime):

* backbones: a ViT (timm's ``vit_tiny_patch16_224`` layout, 6 blocks of width
  128, 8 x 8 patches of the input) trained from scratch by
  :func:`sknc.finetune.pretrain_backbone` on source emoji, i.e. every emoji of
  the multi-vendor set except the downstream task's (no pretrained ViT can be
  downloaded here; the step is part of this script, cached and resumable,
  its weights saved as safetensors under ``DATA_DIR/pretrained/``); and the
  real ImageNet-1k MobileNetV2 and EfficientNet-Lite0
  (:func:`sknc.datasets.load_pretrained_backbone`, weights fetched by
  ``benchmarks/fetch_data.py``);
* data sets: Fashion-MNIST and emoji categories (the tasks of
  ``reproduce_li.py``, built by its ``load_tasks``), and scikit-learn's
  digits (real 8 x 8 handwritten digits, upscaled);
* regimes: 100% and a stratified 10% of the training set;
* tuning budget: every method picks its learning rate from the same grid on a
  stratified validation split of the training set (seed 0; for the 10%
  regime, fitted on the 10% set and scored on training images outside it),
  then trains on the whole training set with that rate for every seed;
  AdamW, cosine schedule,
  the same epochs and batch size for all methods, no augmentation; the
  reduced preset gives both regimes the same number of optimizer steps (4
  epochs of 5 batches on the full sets, 20 of one batch on the 10% sets) and
  the grid {1e-4, 1e-3, 1e-2}, so that full fine-tuning trains too;
* measured: test accuracy (mean ± sd over the seeds), trainable parameters,
  seconds per epoch, NC1 of the head input on the training data;
* the auto block is validated against a sweep of single SCL-FT blocks: is its
  mean test accuracy within one standard error of the best swept block?

Verdicts on Li et al.'s two fine-tuning claims use the one verdict rule set
of :mod:`sknc.experiments` (``verdict_scl_ft_efficient``,
``verdict_scl_ft_collapse``; "clearly" is ``compare_over_seeds``: a
difference counts only beyond twice its standard error over the seeds); the
comparisons with the PEFT baselines and the auto-block check use the same
``compare_over_seeds``.

Run::

    python benchmarks/reproduce_peft.py --data-dir /work/data            # release
    python benchmarks/reproduce_peft.py --data-dir /work/data --reduced  # ~70 min, 2 shared cores
    python benchmarks/reproduce_peft.py --replot --out DIR               # verdicts again

Runs are cached in ``OUT/runs.json`` (keyed by everything that determines
them), so an interrupted run resumes where it stopped; so is the ViT's
pretraining (its per-epoch checkpoints).
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _repro_common as rc
import reproduce_li as li

from sknc.experiments import PEFT_BASELINES  # the baselines SCL-FT is compared with

#: (label, estimator parameters); ``scl-ft-auto`` is SCL-FT with the block chosen
#: by collapse; the oracle ``scl-ft-best`` row comes from the block sweep.
METHODS = (
    ("linear-probe", dict(method="linear-probe")),
    ("bitfit", dict(method="bitfit")),
    ("norm", dict(method="norm")),
    ("lora-r4", dict(method="lora", lora_rank=4)),
    ("lora-r16", dict(method="lora", lora_rank=16)),
    ("layer-ft", dict(method="layer-ft")),
    ("scl-ft-auto", dict(method="scl-ft", tuned_block="auto")),
    ("last-2", dict(method="layer-ft", last_k=2)),
    ("full-ft", dict(method="full-ft")),
)
#: The ViT of the study (a backbone name of its own): trained by pretrain_backbone
VIT = "vit_emoji"
#: timm model and its size; the patch is ``imagenet_size // 8`` (8 x 8 tokens)
VIT_MODEL = "vit_tiny_patch16_224"
VIT_KWARGS = dict(depth=6, embed_dim=128, num_heads=2)
SHORT_NAMES = {**rc.SHORT_NAMES, VIT: "ViT (emoji)"}
TASKS = {
    "fashion_mnist": "Fashion-MNIST",
    "emoji_category": "emoji categories",
    "digits": "digits",
}

PRESETS = {
    "release": dict(
        backbones=(VIT, "mobilenetv2_100", "tf_efficientnet_lite0"),
        imagenet_size=96,
        fmnist_train=2000,
        fmnist_test=2000,
        digits_train=1000,
        emoji_test_fraction=0.3,
        min_category_emoji=10,
        max_classes=None,
        max_train=None,
        scarce_fraction=0.1,
        lr_grid=(3e-4, 1e-3, 3e-3),
        validation_fraction=0.2,
        batch_size=32,
        epochs_full=5,
        epochs_scarce=30,
        seeds=(0, 1, 2),
        sweep_blocks=None,  # every candidate block
        vit_pretrain=dict(max_epochs=30, lr=1e-3, batch_size=64, weight_decay=0.05),
    ),
    "reduced": dict(
        backbones=(VIT, "mobilenetv2_100", "tf_efficientnet_lite0"),
        imagenet_size=32,
        fmnist_train=150,
        fmnist_test=150,
        digits_train=150,
        emoji_test_fraction=0.3,
        min_category_emoji=3,
        max_classes=160,
        max_train=150,
        scarce_fraction=0.1,
        lr_grid=(1e-4, 1e-3, 1e-2),
        validation_fraction=0.25,
        batch_size=32,
        epochs_full=4,
        epochs_scarce=20,
        seeds=(0, 1, 2),
        sweep_blocks=3,  # evenly spaced candidate blocks (and the auto block)
        vit_pretrain=dict(max_epochs=10, lr=1e-3, batch_size=64, weight_decay=0.05),
    ),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--reduced", action="store_true", help="the reduced scale (~20 min)")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("SKNC_DATA", rc.DATA_DIR),
        help="folder of benchmarks/fetch_data.py (default $SKNC_DATA or benchmarks/data)",
    )
    p.add_argument("--backbones", nargs="+", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=list(TASKS),
        default=None,
        help="only these data sets (default: all; a subset changes no fit, so cached fits are reused)",
    )
    p.add_argument("--replot", action="store_true", help="only recompute the verdicts")
    p.add_argument("--seed", type=int, default=0, help="seed of the data subsamples")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    preset = "reduced" if args.reduced else "release"
    cfg = dict(PRESETS[preset], preset=preset, seed=args.seed, threads=args.threads)
    cfg["progress"] = not args.no_progress
    if args.backbones:
        cfg["backbones"] = tuple(args.backbones)
    if args.seeds:
        cfg["seeds"] = tuple(args.seeds)
    if args.tasks:
        cfg["tasks"] = tuple(t for t in TASKS if t in args.tasks)
    if args.out is None:
        args.out = os.path.join(rc.RESULTS_DIR, f"peft_{preset}")
    rc.DATA_DIR = os.path.abspath(args.data_dir)
    return args, cfg


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def load_tasks(cfg):
    """reproduce_li's Fashion-MNIST and emoji tasks, plus digits, capped at ``max_train``."""
    from sklearn.datasets import load_digits

    from sknc.model_selection import subsample_per_class

    tasks = li.load_tasks(cfg)
    digits = load_digits()
    rng = np.random.default_rng(cfg["seed"])
    order = rng.permutation(len(digits.target))
    n_tr = cfg["digits_train"]
    tr, te = order[:n_tr], order[n_tr : 2 * n_tr]
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    names = np.array([str(d) for d in range(10)])
    tasks["digits"] = dict(
        X_train=rc.resize_rgb(images[tr], cfg["imagenet_size"]),
        y_train=names[digits.target[tr]],
        X_test=rc.resize_rgb(images[te], cfg["imagenet_size"]),
        y_test=names[digits.target[te]],
        info={"source": "scikit-learn load_digits (real 8 px handwritten digits)"},
    )
    for t in tasks.values():
        if cfg["max_train"] is not None and len(t["y_train"]) > cfg["max_train"]:
            keep = subsample_per_class(
                t["y_train"],
                fraction=cfg["max_train"] / len(t["y_train"]),
                random_state=cfg["seed"],
            )
            t["X_train"], t["y_train"] = t["X_train"][keep], t["y_train"][keep]
        t["scarce"] = subsample_per_class(
            t["y_train"], fraction=cfg["scarce_fraction"], random_state=cfg["seed"]
        )
        t["info"].update(
            n_classes=int(len(np.unique(t["y_train"]))),
            n_train=int(len(t["y_train"])),
            n_train_scarce=int(len(t["scarce"])),
            n_test=int(len(t["y_test"])),
        )
    return tasks


def _validation_split(y, fraction, seed):
    """(train, val) indices: a stratified split when every class has 2 samples, else random."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    _, counts = np.unique(y, return_counts=True)
    strat = y if counts.min() >= 2 else None
    n_val = max(int(round(fraction * len(y))), len(counts) if strat is not None else 1)
    if strat is not None and len(y) - n_val < len(counts):
        strat = None
    return train_test_split(idx, test_size=n_val, stratify=strat, random_state=seed)


def _lr_split(y, idx, cfg):
    """(fit, validation) indices for the learning-rate choice of one regime.

    Full regime: a stratified ``validation_fraction`` of the training set is
    held out. 10% regime: the 10% set is too small to split (a split would
    leave one image per class), so the candidates are fitted on the whole 10%
    set and scored on as many training images from *outside* it as the full
    regime's validation split has (stratified).
    """
    if len(idx) == len(y):
        fit_i, val_i = _validation_split(y, cfg["validation_fraction"], cfg["seed"])
        return idx[fit_i], idx[val_i]
    rest = np.setdiff1d(np.arange(len(y)), idx)
    n_val = int(round(cfg["validation_fraction"] * len(y)))
    _, val_i = _validation_split(y[rest], min(n_val / len(rest), 0.99), cfg["seed"])
    return np.asarray(idx), rest[val_i]


# ----------------------------------------------------------------------------
# the ViT: pretrained here on source emoji (no pretrained ViT can be downloaded)
# ----------------------------------------------------------------------------
def vit_kwargs(cfg):
    """timm keywords of the study's ViT at the preset's input size (8 x 8 patches)."""
    size = cfg["imagenet_size"]
    return dict(VIT_KWARGS, img_size=size, patch_size=size // 8)


def vit_source(cfg):
    """Source images and labels of the ViT: every emoji but the downstream task's.

    The multi-vendor emoji (the loader settings of the emoji task), minus every
    emoji of the protocol's novel classes (those the emoji task draws its training
    *and* test images from, found by their Unicode code points), labelled by emoji
    (one class per emoji, every vendor's drawing), at the preset's input size.
    Fashion-MNIST and digits share nothing with emoji.
    """
    from sknc.datasets import load_emoji

    emoji = load_emoji(
        data_home=rc.DATA_DIR,
        min_vendors=rc.EMOJI_MIN_VENDORS,
        size=rc.EMOJI_NATIVE_SIZE,
        dedupe=True,
    )
    protocol, split = rc.load_emoji_protocol(seed=cfg["seed"], max_classes=cfg["max_classes"])
    downstream = set(protocol.unified[np.unique(protocol.target[split.novel])])
    keep = ~np.isin(emoji.unified[emoji.target], sorted(downstream))
    X = rc.resize_rgb(emoji.images[keep], cfg["imagenet_size"])
    y = emoji.target[keep]
    info = {
        "source": "multi-vendor emoji (every vendor's drawing, labelled by emoji) except "
        "the downstream emoji task's emoji",
        "n_images": int(keep.sum()),
        "n_classes": int(len(np.unique(y))),
        "excluded_emoji": len(downstream),
    }
    return X, y, info


def pretrain_vit(cfg):
    """(weights path, info) of the study's ViT, pretrained unless already done (resumable).

    :func:`sknc.finetune.pretrain_backbone` from random weights on
    :func:`vit_source`, with the preset's ``vit_pretrain`` settings (AdamW,
    cosine schedule), one checkpoint per epoch (safetensors) in
    ``DATA_DIR/pretrained/<name>`` (an ignored data folder); an interrupted
    pretraining resumes from its last complete epoch.
    """
    import json

    from skorch.callbacks import LRScheduler

    from sknc.finetune import pretrain_backbone

    settings = dict(cfg["vit_pretrain"])
    epochs = settings["max_epochs"]
    tag = f"{VIT}_{cfg['imagenet_size']}px_seed{cfg['seed']}_e{epochs}"
    if cfg["max_classes"] is not None:
        tag += f"_not{cfg['max_classes']}"
    folder = os.path.join(rc.DATA_DIR, "pretrained", tag)
    final = os.path.join(folder, f"epoch_{epochs:03d}.safetensors")
    info_path = os.path.join(folder, "info.json")
    if os.path.exists(final) and os.path.exists(info_path):
        with open(info_path) as f:
            return final, json.load(f)
    X, y, info = vit_source(cfg)
    rc.log(f"pretraining the ViT on {info['n_images']} source emoji images, "
           f"{info['n_classes']} classes, {epochs} epochs, in {folder}")  # fmt: skip
    t0 = time.perf_counter()
    est = pretrain_backbone(
        VIT_MODEL,
        X,
        y,
        checkpoint_dir=folder,
        resume=True,
        model_kwargs=vit_kwargs(cfg),
        input_size=cfg["imagenet_size"],
        device="cpu",
        random_state=cfg["seed"],
        callbacks=[("cosine", LRScheduler(policy="CosineAnnealingLR", T_max=epochs))],
        **settings,
    )
    history = est.history_
    info.update(
        model=VIT_MODEL,
        model_kwargs=vit_kwargs(cfg),
        settings=dict(settings, optimizer="AdamW, cosine schedule, no augmentation"),
        final_train_loss=float(history[-1, "train_loss"]),
        source_train_accuracy=float(est.score(X, y)),
        seconds=time.perf_counter() - t0,
        weights=os.path.relpath(final, rc.DATA_DIR),
    )
    rc.write_json(info_path, info)
    return final, info


# ----------------------------------------------------------------------------
# runs: sknc.experiments.compare_finetuning, cached in OUT/runs.json
# ----------------------------------------------------------------------------
class Runner:
    """:func:`sknc.experiments.compare_finetuning` for one backbone and regime."""

    def __init__(self, cfg, out):
        self.cfg = cfg
        self.store = os.path.join(out, "runs.json")
        self.counts = {"computed_runs": 0, "reused_runs": 0}
        self.modules = {}
        self.vit_info = None

    def module(self, name):
        if name not in self.modules:
            if name == VIT:
                from sknc.features import create_backbone

                weights, self.vit_info = pretrain_vit(self.cfg)
                # no head (the source head is unused): every weight comes from the file,
                # so the module's fingerprint, part of every run's cache key, is the same
                # in every invocation (a random head would make the cache miss)
                self.modules[name] = create_backbone(
                    VIT_MODEL,
                    weights=weights,
                    model_kwargs=dict(vit_kwargs(self.cfg), num_classes=0),
                )
            else:
                self.modules[name] = rc.imagenet_backbone(name)[0]
        return self.modules[name]

    def compare(self, backbone, regime, methods, seeds, train, test):
        """Summary rows of ``methods`` (label -> parameters) trained on ``train``."""
        from skorch.callbacks import LRScheduler

        from sknc.experiments import compare_finetuning
        from sknc.finetune import FineTuningClassifier

        cfg = self.cfg
        epochs = cfg["epochs_full"] if regime == "full" else cfg["epochs_scarce"]
        base = FineTuningClassifier(
            self.module(backbone),
            input_size=cfg["imagenet_size"],
            max_epochs=epochs,
            batch_size=cfg["batch_size"],
            device="cpu",
            callbacks=[("cosine", LRScheduler(policy="CosineAnnealingLR", T_max=epochs))],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = compare_finetuning(
                base,
                *train,
                *test,
                methods=methods,
                regimes={regime: 1.0},
                seeds=seeds,
                cache=self.store,
                verbose=self.cfg["progress"],
            )
        for key in self.counts:
            self.counts[key] += res["cache"][key]
        return res["summary"]


def _sweep_blocks(cfg, runner, backbone, auto_block):
    from sknc.finetune._modules import candidate_blocks

    blocks = candidate_blocks(runner.module(backbone))
    n = cfg["sweep_blocks"]
    if n is not None and n < len(blocks):
        picks = np.unique(np.linspace(0, len(blocks) - 1, n + 2)[1:-1].round().astype(int))
        blocks = [blocks[i] for i in picks]
    if auto_block not in blocks:
        blocks.append(auto_block)
    return blocks


def _setting(cfg, runner, backbone, task, t, regime):
    """Summary rows of one (backbone, task, regime): every method, then the block sweep."""
    idx = np.arange(len(t["y_train"])) if regime == "full" else t["scarce"]
    fit_i, val_i = _lr_split(t["y_train"], idx, cfg)
    rc.log(
        f"{backbone} / {TASKS[task]} / {regime}: {len(idx)} training images "
        f"({len(fit_i)} + {len(val_i)} for the learning-rate choice)"
    )
    X, y = t["X_train"], t["y_train"]
    train = (X[idx], y[idx])
    test = (t["X_test"], t["y_test"])
    # the learning rate of every method, chosen on the validation split (seed cfg["seed"])
    grid = {
        f"{label}@{lr:g}": dict(params, lr=lr) for label, params in METHODS for lr in cfg["lr_grid"]
    }
    val = runner.compare(
        backbone, regime, grid, [cfg["seed"]], (X[fit_i], y[fit_i]), (X[val_i], y[val_i])
    )
    val = {row["method"]: row["accuracy"] for row in val}
    chosen, val_acc = {}, {}
    for label, _ in METHODS:
        val_acc[label] = {lr: val[f"{label}@{lr:g}"] for lr in cfg["lr_grid"]}
        chosen[label] = max(cfg["lr_grid"], key=lambda v: (val_acc[label][v], -v))
    methods = {label: dict(params, lr=chosen[label]) for label, params in METHODS}
    summary = runner.compare(backbone, regime, methods, cfg["seeds"], train, test)
    for row in summary:
        row.update(
            backbone=backbone,
            task=task,
            lr=chosen[row["method"]],
            validation_accuracy=val_acc[row["method"]],
        )
    # block sweep for SCL-FT at the learning rate chosen for the auto block
    auto = next(r for r in summary if r["method"] == "scl-ft-auto")
    lr = chosen["scl-ft-auto"]
    blocks = _sweep_blocks(cfg, runner, backbone, auto["tuned_block"])
    sweep = runner.compare(
        backbone,
        regime,
        {f"scl-ft@{b}": dict(method="scl-ft", tuned_block=b, lr=lr) for b in blocks},
        cfg["seeds"],
        train,
        test,
    )
    best = max(sweep, key=lambda r: r["accuracy"])
    summary.append(
        dict(best, backbone=backbone, task=task, lr=lr, method="scl-ft-best", oracle=True)
    )
    auto["sweep"] = [
        {k: r[k] for k in ("tuned_block", "accuracy", "accuracy_std", "n_seeds")} for r in sweep
    ]
    return summary


def experiment(cfg, tasks, out):
    runner = Runner(cfg, out)
    summary = []
    for backbone in cfg["backbones"]:
        for task, t in tasks.items():
            for regime in ("full", "scarce"):
                summary += _setting(cfg, runner, backbone, task, t, regime)
    for row in summary:
        full = next(
            r
            for r in summary
            if (r["backbone"], r["task"], r["regime"], r["method"])
            == (row["backbone"], row["task"], row["regime"], "full-ft")
        )
        row["trainable_vs_full"] = row["n_trainable_params"] / full["n_trainable_params"]
    return summary, runner.counts, runner.vit_info


# ----------------------------------------------------------------------------
# verdicts
# ----------------------------------------------------------------------------
def _pm(row):
    """Mean accuracy ± sd over the seeds."""
    if not rc.finite(row.get("accuracy_std")):
        return rc.percent(row["accuracy"])
    return f"{100 * row['accuracy']:.1f} ± {100 * row['accuracy_std']:.1f}%"


def claims(res):
    """Li et al.'s claims and the PEFT comparisons, with sknc.experiments' one rule set.

    "Clearly better/worse" is :func:`sknc.experiments.compare_over_seeds`
    everywhere (a difference beyond twice its standard error over the seeds).
    """
    from sknc.experiments import (
        verdict_auto_block,
        verdict_peft_level_with_scl,
        verdict_scl_ft_collapse,
        verdict_scl_ft_efficient,
    )

    out = {}
    by_backbone = {}
    for r in res["summary"]:
        by_backbone.setdefault(r["backbone"], {}).setdefault(r["task"], []).append(r)
    for backbone, per_task in by_backbone.items():
        # Li et al.'s SCL-FT is the auto-block row here
        finetune = {
            task: [
                dict(r, method={"scl-ft-auto": "scl-ft"}.get(r["method"], r["method"]))
                for r in rows
                if r["method"] in ("scl-ft-auto", "layer-ft", "full-ft")
            ]
            for task, rows in per_task.items()
        }
        short = SHORT_NAMES.get(backbone, backbone)
        for key, fn in (
            ("scl_ft_efficient", verdict_scl_ft_efficient),
            ("scl_ft_collapse", verdict_scl_ft_collapse),
        ):
            c = fn(finetune, TASKS)
            c["title"] += f" ({short}; SCL-FT with the auto block)"
            out[f"{key}:{backbone}"] = c
    names = dict(SHORT_NAMES)
    out["peft_level_with_scl"] = verdict_peft_level_with_scl(
        res["summary"], TASKS, backbone_names=names, baselines=PEFT_BASELINES
    )
    out["auto_block"] = verdict_auto_block(res["summary"], TASKS, backbone_names=names)
    return out


def table(summary):
    """A plain-text table of the summary rows."""
    lines = [
        f"{'backbone':<16}{'task':<16}{'regime':<8}{'method':<14}{'lr':>8}{'accuracy':>16}"
        f"{'trainable':>12}{'vs full':>9}{'s/epoch':>9}{'train NC1':>11}  block"
    ]
    for r in summary:
        lines.append(
            f"{r['backbone']:<16}{r['task']:<16}{r['regime']:<8}{r['method']:<14}"
            f"{r['lr']:>8g}{_pm(r):>16}{r['n_trainable_params']:>12,}"
            f"{100 * r['trainable_vs_full']:>8.1f}%{rc.num(r['seconds_per_epoch'], 3):>9}"
            f"{rc.num(r['train_nc1'], 3):>11}  {r['tuned_block'] or '-'}"
        )
    return "\n".join(lines)


def main(argv=None):
    args, cfg = parse_args(argv)
    rc.set_threads(cfg["threads"])
    out = os.path.abspath(args.out)
    if args.replot:
        path = os.path.join(out, "results.json")
        res = rc.read_json(path)
        if res is None:
            raise SystemExit(f"--replot: no results.json in {out}")
        res["claims"] = claims(res)
        rc.write_json(path, res)
        return res
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    revision = rc.code_revision()  # the code that runs, before anything can change it
    rc.log(f"PEFT comparison ({cfg['preset']}), output in {out}")
    tasks = load_tasks(cfg)
    if cfg.get("tasks"):
        tasks = {t: tasks[t] for t in cfg["tasks"]}
    for task, t in tasks.items():
        rc.log(f"{TASKS[task]}: {t['info']}")
    summary, cache, vit_info = experiment(cfg, tasks, out)
    res = {
        "experiment": "peft",
        "title": "SCL-FT against parameter-efficient fine-tuning baselines",
        "command": rc.command_line(None if argv is None else [sys.argv[0], *argv]),
        "config": {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "methods": {label: params for label, params in METHODS},
            "optimizer": "AdamW, cosine schedule, no augmentation",
        },
        "environment": rc.environment(revision),
        "git": None if revision is None else revision["git"],
        "revision": rc.revision_at_end(revision),
        "data": {task: t["info"] for task, t in tasks.items()},
        "summary": summary,
        "cache": cache,
    }
    if vit_info is not None:
        res["vit_pretraining"] = vit_info
    res["claims"] = claims(res)
    res = rc.finish(out, res, t0)
    print(table(summary))
    return res


if __name__ == "__main__":
    main()

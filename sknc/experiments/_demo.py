"""``sknc demo``: the two papers' claims, end to end, on the embedded glyph data.

Contents
--------
run_demo(out_dir, *, preset="default", ...)
    Pre-train a small timm backbone on the source glyph classes (a checkpoint
    per epoch), measure collapse and few-shot accuracy on every checkpoint,
    rank the checkpoints by NC1 on a downstream training set against their
    linear-probe accuracy, compare fine-tuning methods on scarce digits, and
    write ``results.json``, PNG figures and ``report.md``.
PRESETS
    The configurations behind ``sknc demo`` (``"default"``), ``--quick``
    and the test-only ``--tiny``.

Everything is computed by the toolkit's public pieces: ``sknc.datasets``
(data and splits), ``sknc.finetune`` (pre-training, fine-tuning),
``sknc.features.BackboneFeatures`` (frozen features of each checkpoint),
``sknc.metrics`` (NC1, CDNV), ``sknc.model_selection`` (episodes, ranking)
and ``sknc.plotting`` (figures).
"""

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..utils._options import PAPER_METHODS
from ._common import (
    InputError,
    Interrupted,
    Progress,
    check_device,
    check_int,
    check_model,
    check_out_dir,
    environment,
    new_figure,
    save_figure,
    single_threaded_blas,
    staged_output,
    torch_threads,
    write_results,
)
from ._format import finite, pct
from ._protocols import compare_finetuning, measure_checkpoints
from ._report import render_demo_report
from ._verdicts import (
    verdict_collapse_generalizes,
    verdict_collapse_predicts_transfer,
    verdict_fewshot_follows_cdnv,
    verdict_scl_ft_collapse,
    verdict_scl_ft_efficient,
)

__all__ = ["PRESETS", "run_demo"]

DEFAULT_DEMO_DIR = os.path.join("sknc_results", "demo")
_METHODS = PAPER_METHODS
_DOWNSTREAMS = ("novel", "digits")
_N_WAY = 5
_SHOTS = (1, 5)
_CONFIDENCE = 95  # FewShotResult.ci95 is the half-width of the 95% interval


@dataclass(frozen=True)
class DemoPreset:
    """One configuration of the demo (see :data:`PRESETS`)."""

    model: str
    image_size: int
    epochs: int
    lr: float
    batch_size: int
    n_episodes: int
    n_query: int
    finetune_epochs: int
    finetune_lr: float
    finetune_batch_size: int
    scarce_fraction: float
    scripts: tuple = None  # glyph scripts; None = all 170 classes
    glyph_cache: bool = True
    n_novel: float = 0.25
    test_typefaces: float = 0.25


#: Configurations: ``default`` (``sknc demo``, about 3 minutes on a quiet
#: 2-core CPU, within 10), ``quick`` (``--quick``, about 1 minute) and ``tiny`` (the
#: test suite's: a few classes, two epochs, tiny images, seconds).
PRESETS = {
    "default": DemoPreset(
        model="resnet10t",
        image_size=32,
        epochs=20,
        lr=2e-3,
        batch_size=64,
        n_episodes=600,
        n_query=10,
        finetune_epochs=30,
        finetune_lr=1e-3,
        finetune_batch_size=32,
        scarce_fraction=0.1,
    ),
    "quick": DemoPreset(
        model="resnet10t",
        image_size=32,
        epochs=5,
        lr=2e-3,
        batch_size=64,
        n_episodes=300,
        n_query=10,
        finetune_epochs=15,
        finetune_lr=1e-3,
        finetune_batch_size=32,
        scarce_fraction=0.1,
    ),
    "tiny": DemoPreset(
        model="test_resnet",
        image_size=16,
        epochs=2,
        lr=2e-3,
        batch_size=64,
        n_episodes=20,
        n_query=5,
        finetune_epochs=1,
        finetune_lr=1e-3,
        finetune_batch_size=64,
        scarce_fraction=0.1,
        scripts=("greek",),
        glyph_cache=False,
    ),
}


# ----------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------
def _command_line(out_dir, preset, epochs, model, image_size, downstream, device, seed):
    parts = ["sknc", "demo", "--out", out_dir]
    if preset == "quick":
        parts.append("--quick")
    elif preset == "tiny":
        parts.append("--tiny")
    parts += [
        "--epochs",
        str(epochs),
        "--model",
        model,
        "--size",
        str(image_size),
        "--downstream",
        downstream,
        "--device",
        str(device),
        "--seed",
        str(seed),
    ]
    return " ".join(parts)


# ----------------------------------------------------------------------------
# steps
# ----------------------------------------------------------------------------
def _load_data(p, image_size, downstream, seed):
    from sklearn.model_selection import train_test_split

    from ..datasets import load_digits_images, load_glyphs
    from ..model_selection import source_novel_split, subsample_per_class

    glyphs = load_glyphs(size=image_size, scripts=p.scripts, cache=p.glyph_cache)
    y = glyphs.target
    split = source_novel_split(
        y,
        glyphs.typeface,
        n_novel=p.n_novel,
        test_size=p.test_typefaces,
        strata=glyphs.script[y],
        random_state=seed,
    )
    sets = {
        "source_train": (glyphs.images[split.source_train], y[split.source_train]),
        "source_test": (glyphs.images[split.source_test], y[split.source_test]),
    }
    digits = load_digits_images(size=image_size)
    d_train, d_test = train_test_split(
        np.arange(len(digits.target)), test_size=0.25, stratify=digits.target, random_state=seed
    )
    # Galanti et al.'s protocol on every glyph: indices into the glyph images
    sets["glyphs"] = (glyphs.images, y)
    sets["protocol"] = {
        "source_train": split.source_train,
        "source_test": split.source_test,
        "novel": split.novel,
    }
    if downstream == "novel":
        # the novel classes, halved (stratified): probe training / test images
        ds_train, ds_test = train_test_split(
            split.novel, test_size=0.5, stratify=y[split.novel], random_state=seed
        )
        sets["downstream_train"] = (glyphs.images[ds_train], y[ds_train])
        sets["downstream_test"] = (glyphs.images[ds_test], y[ds_test])
        # the episodes follow the order of the probe's training and test images
        sets["protocol"]["novel"] = np.concatenate([ds_train, ds_test])
        ds_name = "novel glyph classes"
    else:
        sets["novel"] = (glyphs.images[split.novel], y[split.novel])
        sets["downstream_train"] = (digits.images[d_train], digits.target[d_train])
        sets["downstream_test"] = (digits.images[d_test], digits.target[d_test])
        ds_name = "scikit-learn digits"
    scarce = d_train[
        subsample_per_class(digits.target[d_train], fraction=p.scarce_fraction, random_state=seed)
    ]
    sets["scarce_train"] = (digits.images[scarce], digits.target[scarce])
    sets["digits_train"] = (digits.images[d_train], digits.target[d_train])
    sets["scarce_test"] = (digits.images[d_test], digits.target[d_test])

    info = _data_info(glyphs, split, sets, ds_name, p.scarce_fraction, d_train, d_test, scarce)
    return sets, info


def _data_info(glyphs, split, sets, ds_name, fraction, d_train, d_test, scarce):
    """The ``data`` entry of ``results.json``: the sizes of every set."""
    y = glyphs.target
    novel_y = y[split.novel]
    info = {
        "glyphs": {
            "n_classes": len(glyphs.target_names),
            "n_images": len(y),
            "n_typefaces": len(glyphs.typeface_names),
        },
        "source": {
            "n_classes": len(split.source_classes),
            "n_train": len(split.source_train),
            "n_test": len(split.source_test),
            "n_test_typefaces": len(split.test_groups),
        },
        "novel": {
            "n_classes": len(split.novel_classes),
            "n_images": len(split.novel),
            "min_class_size": int(np.bincount(novel_y)[split.novel_classes].min()),
        },
        "downstream": {
            "name": ds_name,
            "n_classes": len(np.unique(sets["downstream_train"][1])),
            "n_train": len(sets["downstream_train"][1]),
            "n_test": len(sets["downstream_test"][1]),
        },
        "scarce": {
            "name": "scikit-learn digits",
            "n_classes": 10,
            "fraction": fraction,
            "n_train_full": len(d_train),
            "n_train": len(scarce),
            "n_test": len(d_test),
        },
    }
    return info


def _save_initial_weights(model, path, seed):
    """Epoch 0: the random initial weights, saved so that they are a checkpoint too."""
    from safetensors.torch import save_file

    from ..features import create_backbone

    module = create_backbone(model, seed=seed)
    save_file(
        {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()},
        path,
        metadata={"epoch": "0", "format": "pt"},
    )
    return path


def _pretrain(p, model, size, epochs, sets, work, pretrain_dir, resume, device, seed, progress):
    """Pre-train with a checkpoint per epoch in ``pretrain_dir`` (resumable)."""
    from skorch.callbacks import LRScheduler

    from ..finetune import pretrain_backbone

    X, y = sets["source_train"]
    init = _save_initial_weights(model, os.path.join(work, "initial_weights.safetensors"), seed)
    bar = progress.bar(total=epochs, desc="pre-training", unit="epoch")

    def on_epoch_end(estimator, epoch):
        bar.set_postfix(loss=f"{estimator.net_.history[-1, 'train_loss']:.3f}")
        bar.update(max(0, epoch - bar.n))

    try:
        est = pretrain_backbone(
            model,
            X,
            y,
            checkpoint_dir=pretrain_dir,
            resume=resume,
            weights=init,
            max_epochs=epochs,
            lr=p.lr,
            batch_size=p.batch_size,
            input_size=size,
            device=device,
            on_epoch_end=on_epoch_end,
            random_state=seed,
            callbacks=[("cosine", LRScheduler(policy="CosineAnnealingLR", T_max=epochs))],
        )
    finally:
        bar.close()
    _check_trained(est, epochs, "pre-training")
    history = est.history_
    # checkpoints_[0] is the initial weights, as saved in init. The paths are those of
    # pretrain_dir: a resumed run's history may name the folder it was copied from.
    checkpoints = [os.path.join(pretrain_dir, os.path.basename(c)) for c in est.checkpoints_]
    if not checkpoints or not os.path.basename(checkpoints[0]).startswith("epoch_000"):
        checkpoints = [init] + checkpoints
    missing = [c for c in checkpoints if not os.path.exists(c)]
    if missing:
        raise InputError(f"pre-training checkpoints missing in {pretrain_dir}: {missing}")
    return checkpoints, {
        "epoch": list(range(1, len(history) + 1)),
        "train_loss": [float(v) for v in history[:, "train_loss"]],
        "seconds": [float(v) for v in history[:, "dur"]],
        "final_train_nc1": est.train_nc1_,
        "resumed_from_epoch": int(getattr(est, "resumed_from_", 0)),
    }


def _check_trained(estimator, epochs, what):
    """Raise KeyboardInterrupt if a fit stopped before its epochs without saying so.

    skorch catches Ctrl-C inside ``fit`` and returns the half-trained net;
    the demo has no early stopping, so fewer epochs than asked means that
    the user interrupted, and its results must not be reported as complete.
    """
    done = len(estimator.history_)
    if done < epochs:
        raise KeyboardInterrupt(f"{what} stopped after {done} of {epochs} epochs")


def _features(model, path, size, device):
    from ..features import BackboneFeatures

    return BackboneFeatures(model, weights=path, input_size=size, batch_size=256, device=device)


def _measure_checkpoints(p, model, size, checkpoints, sets, device, seed, n_jobs, progress):
    """Galanti et al.'s protocol on every checkpoint (:func:`measure_checkpoints`)."""
    X, y = sets["glyphs"]
    y_novel = y[sets["protocol"]["novel"]]
    min_count = int(np.unique(y_novel, return_counts=True)[1].min())
    n_query = min(p.n_query, min_count - max(_SHOTS))
    if n_query < 1:
        raise InputError(
            f"the smallest novel class has {min_count} images; few-shot episodes "
            f"need at least {max(_SHOTS) + 1}."
        )
    m = measure_checkpoints(
        [_features(model, path, size, device) for path in checkpoints],
        X,
        y,
        sets["protocol"],
        n_way=_N_WAY,
        shots=_SHOTS,
        n_query=n_query,
        n_episodes=p.n_episodes,
        random_state=seed,
        n_jobs=n_jobs,
        verbose=progress.enabled,
    )
    epochs = list(range(len(checkpoints)))
    collapse = {"epoch": epochs}
    for part, values in m["collapse"].items():
        collapse[part] = {k: values[k] for k in ("cdnv", "nc1", "cdnv_corrected")}
    fs = m["few_shot"]
    few = {
        "epoch": epochs,
        "n_way": fs["n_way"],
        "n_query": n_query,
        "n_episodes": fs["n_episodes"],
        "confidence_level": fs["confidence_level"],
        "novel_cdnv": list(collapse["novel"]["cdnv"]),
        "shots": {
            k: {"n_shot": s["n_shot"], "mean": s["mean"], "ci95": s["ci95"]}
            for k, s in fs["shots"].items()
        },
    }
    return collapse, few


def _ranking_scores():
    """The transferability scores the checkpoints are ranked by, beside NC1 and CDNV.

    Every score of :func:`sknc.model_selection.get_score_names` but three:
    LEEP and NCE need the source classifier's outputs, and NLEEP's Gaussian
    mixture (five components per class) costs more than ten seconds per
    checkpoint on the demo's data, more than the rest of the ranking.
    """
    from ..model_selection import get_score_names

    return tuple(s for s in get_score_names() if s not in ("leep", "nce", "nleep"))


def _rank_checkpoints(model, size, checkpoints, sets, device, seed, progress):
    """Li et al.'s transfer study: NC1 on downstream training data vs linear-probe accuracy.

    Every other transferability score is computed from the same features and
    judged the same way (weighted Kendall tau, top-1 regret against the
    probe's accuracy).
    """
    from ..model_selection import rank_backbones

    names = [f"epoch {e}" for e in range(len(checkpoints))]
    candidates = {
        name: _features(model, path, size, device) for name, path in zip(names, checkpoints)
    }
    X, y = sets["downstream_train"]
    X_test, y_test = sets["downstream_test"]
    scores = _ranking_scores()
    with single_threaded_blas():  # small probes: see single_threaded_blas
        ranking = rank_backbones(
            candidates,
            X,
            y,
            X_test=X_test,
            y_test=y_test,
            random_state=seed,
            verbose=progress.enabled,
            scores=scores,
        )
    rows = {row["backbone"]: row for row in ranking.table}
    return {
        "n_checkpoints": len(checkpoints),
        "epoch": list(range(len(checkpoints))),
        "nc1": [rows[n]["nc1"] for n in names],
        "cdnv": [rows[n]["cdnv"] for n in names],
        "accuracy": [rows[n]["accuracy"] for n in names],
        "rank_by_nc1": [rows[n]["rank"] for n in names],
        "correlations": ranking.correlations,
        # every score per checkpoint, and how well each ranks them by probe accuracy
        "scores": {s: [rows[n][s] for n in names] for s in scores},
        "evaluation": ranking.evaluation,
        "score_seconds": ranking.score_time,
    }


def _finetune(p, model, size, checkpoint, sets, device, seed, progress):
    """The fine-tuning methods on scarce digits (:func:`compare_finetuning`)."""
    from ..finetune import FineTuningClassifier

    base = FineTuningClassifier(
        model,
        weights=checkpoint,
        input_size=size,
        max_epochs=p.finetune_epochs,
        lr=p.finetune_lr,
        batch_size=p.finetune_batch_size,
        device=device,
    )
    X, y = sets["digits_train"]
    X_test, y_test = sets["scarce_test"]
    res = compare_finetuning(
        base,
        X,
        y,
        X_test,
        y_test,
        methods=_METHODS,
        regimes={"scarce": p.scarce_fraction},
        seeds=(seed,),
        random_state=seed,
        verbose=progress.enabled,
    )
    return [
        {
            "method": r["method"],
            "tuned_block": r["tuned_block"],
            "accuracy": r["accuracy"],
            "n_trainable_params": r["n_trainable_params"],
            "n_params": r["n_params"],
            "trainable_fraction": r["trainable_fraction"],
            "seconds": r["fit_seconds"],
            "train_nc1": r["train_nc1"],
            "trainable_vs_full": r["trainable_vs_full"],
        }
        for r in res["summary"]
    ]


# ----------------------------------------------------------------------------
# verdicts: sknc.experiments' one rule set (the reproductions use it too)
# ----------------------------------------------------------------------------
_SET_LABELS = {"source_train": "source-train", "source_test": "source-test", "novel": "novel-class"}


def _claims(results):
    """The verdicts, computed from the numbers with :mod:`sknc.experiments`' rules."""
    col, fs, tr = results["collapse"], results["few_shot"], results["transfer"]
    table = sorted(
        (
            {"backbone": f"epoch {e}", "nc1": nc1, "accuracy": acc}
            for e, nc1, acc in zip(tr["epoch"], tr["nc1"], tr["accuracy"])
        ),
        key=lambda row: (not finite(row["nc1"]), row["nc1"] if finite(row["nc1"]) else 0.0),
    )
    ranking = {"downstream": {"table": table, "correlations": tr["correlations"]}}
    scarce = results["data"]["scarce"]
    rows = [
        {
            **m,
            "regime": "scarce",
            "n_seeds": 1,
            "accuracy_std": None,
            "train_nc1_std": None,
        }
        for m in results["finetune"]["methods"]
    ]
    tasks = {"scarce": scarce["name"]}
    regimes = {"scarce": f"{pct(scarce['fraction'])}%"}
    return {
        "collapse_generalizes": verdict_collapse_generalizes(
            col["epoch"],
            {k: col[k]["cdnv"] for k in _SET_LABELS},
            _SET_LABELS,
            cdnv_corrected={k: col[k]["cdnv_corrected"] for k in _SET_LABELS},
        ),
        "fewshot_follows_cdnv": verdict_fewshot_follows_cdnv(
            {k: s for k, s in fs["shots"].items()}, fs["correlations"], fs["n_way"]
        ),
        "collapse_predicts_transfer": verdict_collapse_predicts_transfer(
            ranking, {"downstream": tr["downstream"]}
        ),
        "scl_ft_efficient": verdict_scl_ft_efficient({"scarce": rows}, tasks, regimes),
        "scl_ft_collapse": verdict_scl_ft_collapse({"scarce": rows}, tasks, regimes),
    }


# ----------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------
def _figures(results, out_dir):
    from ..plotting import (
        plot_cdnv_curves,
        plot_fewshot_vs_cdnv,
        plot_finetune_comparison,
        plot_nc_vs_accuracy,
    )

    files = {}
    col = results["collapse"]
    labels = {
        "source_train": "source train",
        "source_test": "source test (unseen typefaces)",
        "novel": "novel classes",
    }
    fig, axes = new_figure(2, figsize=(11, 4))
    for ax, metric in zip(axes, ("cdnv", "nc1")):
        plot_cdnv_curves(
            col["epoch"], {labels[k]: col[k][metric] for k in labels}, ylabel=metric.upper(), ax=ax
        )
    fig.suptitle("Collapse per epoch of source pre-training")
    files["cdnv_curves"] = save_figure(fig, os.path.join(out_dir, "cdnv_curves.png"))

    fs = results["few_shot"]
    fig, (ax,) = new_figure(1, figsize=(6, 4.5))
    names = {k: f"{fs['n_way']}-way {s['n_shot']}-shot" for k, s in fs["shots"].items()}
    plot_fewshot_vs_cdnv(
        fs["novel_cdnv"],
        {names[k]: s["mean"] for k, s in fs["shots"].items()},
        ci95={names[k]: s["ci95"] for k, s in fs["shots"].items()},
        labels=[f"ep {e}" for e in fs["epoch"]],
        ax=ax,
    )
    ax.set_title("Novel classes: few-shot NCC accuracy vs CDNV, per epoch")
    files["fewshot_vs_cdnv"] = save_figure(fig, os.path.join(out_dir, "fewshot_vs_cdnv.png"))

    tr = results["transfer"]
    fig, (ax,) = new_figure(1, figsize=(6, 4.5))
    plot_nc_vs_accuracy(tr["nc1"], tr["accuracy"], labels=[f"ep {e}" for e in tr["epoch"]], ax=ax)
    ax.set_title(f"{tr['downstream']}: {ax.get_title()}", fontsize=10)
    files["nc_vs_accuracy"] = save_figure(fig, os.path.join(out_dir, "nc_vs_accuracy.png"))

    ft = results["finetune"]["methods"]
    fig, axes = new_figure(3, figsize=(11, 3.8))
    plot_finetune_comparison(
        [m["method"] for m in ft],
        [m["accuracy"] for m in ft],
        [m["n_trainable_params"] for m in ft],
        [m["seconds"] for m in ft],
        axes=axes,
    )
    fig.suptitle(
        f"Fine-tuning on {pct(results['data']['scarce']['fraction'])}% of the digits training set"
    )
    files["finetune_comparison"] = save_figure(
        fig, os.path.join(out_dir, "finetune_comparison.png")
    )
    return {k: os.path.basename(v) for k, v in files.items()}


# ----------------------------------------------------------------------------
# the demo
# ----------------------------------------------------------------------------
def run_demo(
    out_dir=DEFAULT_DEMO_DIR,
    *,
    preset="default",
    epochs=None,
    model=None,
    image_size=None,
    downstream="novel",
    device="auto",
    seed=0,
    threads=None,
    keep_checkpoints=False,
    resume=False,
    progress=True,
):
    """Run the demo end to end and write its report.

    1. Pre-train a small timm backbone from scratch on the source classes of
       :func:`sknc.datasets.load_glyphs` with
       :func:`sknc.finetune.pretrain_backbone`, keeping a checkpoint per
       epoch (epoch 0 is the initial weights).
    2. For every checkpoint, NC1 and CDNV of its frozen features on the
       source training images, on source-class images drawn by held-out
       typefaces and on the novel classes (Galanti et al.'s three curves).
    3. 5-way 1-shot and 5-shot nearest-class-centre accuracy on the novel
       classes, with 95% confidence intervals, next to their CDNV.
    4. :func:`sknc.model_selection.rank_backbones` over the checkpoints: NC1
       on a downstream training set against linear-probe accuracy, with
       Spearman and Kendall rank correlations (Li et al.).
    5. Linear probe, Layer FT, SCL-FT and full fine-tuning of the last
       checkpoint on 10% of the digits training set: accuracy, trainable
       parameters, seconds.

    Parameters
    ----------
    out_dir : str or path-like, default="sknc_results/demo"
        Output folder (created; files of an earlier run are overwritten):
        ``results.json``, ``report.md``, ``cdnv_curves.png``,
        ``fewshot_vs_cdnv.png``, ``nc_vs_accuracy.png``,
        ``finetune_comparison.png`` (and ``checkpoints/`` with
        ``keep_checkpoints``).
    preset : {"default", "quick", "tiny"}, default="default"
        See :data:`PRESETS`.
    epochs : int or None, default=None
        Pre-training epochs (None: the preset's).
    model : str or None, default=None
        A timm model name (None: the preset's, ``"resnet10t"``).
    image_size : int or None, default=None
        Side of the glyph and digit images in pixels (None: the preset's).
    downstream : {"novel", "digits"}, default="novel"
        Downstream data of step 4: the novel glyph classes (halved into
        probe-training and test images) or scikit-learn's digits.
    device : str, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    seed : int, default=0
        Seeds the splits, the initial weights, training and the episodes.
    threads : int or None, default=None
        Number of torch CPU threads (None: every core this process may use).
    keep_checkpoints : bool, default=False
        Copy the per-epoch checkpoints to ``out_dir/checkpoints``.
    resume : bool, default=False
        Continue the pre-training of an interrupted run from the checkpoints
        it kept in ``out_dir/interrupted_checkpoints`` (same arguments;
        the final weights equal those of an uninterrupted run, see
        :func:`sknc.finetune.pretrain_backbone`); that folder is removed
        once the run completes. Without it, the demo starts afresh.
    progress : bool, default=True
        Step lines and progress bars on stderr.

    Returns
    -------
    results : dict
        What ``results.json`` holds.

    Raises
    ------
    InputError
        Unknown model, bad option values, an output folder that is a file
        or cannot be created (checked before any work).
    Interrupted
        Ctrl-C (a ``KeyboardInterrupt``): nothing in ``out_dir`` is
        overwritten (the files of a run are moved into place together at
        the end); the pre-training checkpoints completed so far are kept in
        ``out_dir/interrupted_checkpoints``; the message says so.

    Examples
    --------
    >>> from sknc.experiments import run_demo
    >>> results = run_demo("sknc_results/demo", preset="quick")  # doctest: +SKIP
    >>> results["claims"]["fewshot"]["verdict"]  # doctest: +SKIP
    'held: novel-class CDNV went from ...'
    """
    t_start = time.perf_counter()
    opt = _check_options(preset, epochs, model, image_size, downstream, device, seed)
    out_dir = check_out_dir(out_dir)
    check_model(opt.model, opt.image_size)
    results = {
        "command": "demo",
        "command_line": _command_line(
            out_dir,
            preset,
            opt.epochs,
            opt.model,
            opt.image_size,
            downstream,
            device,
            opt.seed,
        ),
        "config": {
            **asdict(opt.p),
            "preset": preset,
            "model": opt.model,
            "image_size": opt.image_size,
            "epochs": opt.epochs,
            "downstream": downstream,
            "device": str(device),
            "seed": opt.seed,
            "scripts": list(opt.p.scripts) if opt.p.scripts else None,
        },
    }
    run = _Steps(Progress(progress, n_steps=6))
    with (
        torch_threads(threads) as n_threads,
        tempfile.TemporaryDirectory(prefix="sknc-demo-") as work,
    ):
        resume_dir = os.path.join(out_dir, INTERRUPTED_CHECKPOINTS)
        resuming = bool(resume) and os.path.isdir(resume_dir)
        pretrain_dir = resume_dir if resuming else os.path.join(work, "pretraining")
        try:
            results["environment"] = environment(opt.resolved, n_threads)
            if resume and not resuming:
                run.progress.note(f"  nothing to resume in {resume_dir}: starting afresh")
            checkpoints = _run_steps(run, opt, results, work, pretrain_dir, resuming, n_threads)
            with run(None, f"writing the report to {out_dir}"), staged_output(out_dir) as stage:
                if keep_checkpoints:
                    target = os.path.join(stage, "checkpoints")
                    os.makedirs(target)
                    for epoch, path in enumerate(checkpoints):
                        shutil.copyfile(
                            path, os.path.join(target, f"epoch_{epoch:03d}.safetensors")
                        )
                results = _write_demo(results, run.timing, t_start, stage, keep_checkpoints)
            if resuming:  # the interrupted run is complete now
                shutil.rmtree(resume_dir, ignore_errors=True)
        except KeyboardInterrupt as exc:
            raise Interrupted(_interrupted_message(run.current, out_dir, pretrain_dir)) from exc
    return results


@dataclass(frozen=True)
class _Options:
    """The demo's checked options."""

    p: DemoPreset
    model: str
    image_size: int
    epochs: int
    downstream: str
    device: str
    resolved: object
    seed: int


def _check_options(preset, epochs, model, image_size, downstream, device, seed):
    """The options of :func:`run_demo`, checked before any work (:class:`InputError`)."""
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}.")
    p = PRESETS[preset]
    epochs = check_int(p.epochs if epochs is None else epochs, "epochs", 1)
    image_size = check_int(p.image_size if image_size is None else image_size, "image size", 8)
    seed = check_int(seed, "seed", 0)
    if downstream not in _DOWNSTREAMS:
        raise InputError(f"downstream must be one of {_DOWNSTREAMS}, got {downstream!r}.")
    resolved = check_device(device)
    model = p.model if model is None else model
    return _Options(p, model, image_size, epochs, downstream, device, resolved, seed)


class _Steps:
    """The demo's steps: a numbered line each, their timing, the step under way.

    ``with steps(key, text):`` announces the step and, when it completes,
    records its seconds under ``timing[key]`` (unless ``key`` is None); an
    interrupt leaves ``current`` naming the step it stopped.
    """

    def __init__(self, progress):
        self.progress = progress
        self.timing = {}
        self.current = "starting"

    @contextlib.contextmanager
    def __call__(self, key, text):
        self.current = text
        self.progress.step(text)
        t = time.perf_counter()
        yield
        if key is not None:
            self.timing[key] = time.perf_counter() - t


def _run_steps(run, opt, results, work, pretrain_dir, resuming, n_threads):
    """Steps 1 to 5 of :func:`run_demo`, their results into ``results``; the checkpoints."""
    from ..model_selection import rank_correlation

    p, model, size, device, seed = opt.p, opt.model, opt.image_size, opt.device, opt.seed
    bars = run.progress
    with run("load_data", "loading the glyph and digits data"):
        sets, d = _load_data(p, size, opt.downstream, seed)
        results["data"] = d
    src = d["source"]
    text = (
        f"pre-training {model} from scratch on {src['n_classes']} source "
        f"classes ({src['n_train']} images), {opt.epochs} epochs"
    )
    with run("pretraining", text):
        checkpoints, results["pretraining"] = _pretrain(
            p, model, size, opt.epochs, sets, work, pretrain_dir, resuming, device, seed, bars
        )
    text = (
        f"collapse and few-shot accuracy of {len(checkpoints)} checkpoints "
        "(epoch 0 = initial weights)"
    )
    with run("checkpoint_metrics", text):
        results["collapse"], fs = _measure_checkpoints(
            p, model, size, checkpoints, sets, device, seed, n_threads, bars
        )
        fs["correlations"] = {
            k: rank_correlation(fs["novel_cdnv"], shot["mean"]) for k, shot in fs["shots"].items()
        }
        results["few_shot"] = fs
    text = (
        f"ranking the checkpoints by NC1 on {d['downstream']['name']} against linear-probe accuracy"
    )
    with run("transfer_ranking", text):
        results["transfer"] = {
            "downstream": d["downstream"]["name"],
            **_rank_checkpoints(model, size, checkpoints, sets, device, seed, bars),
        }
    text = (
        f"fine-tuning the last checkpoint on {d['scarce']['n_train']} digits "
        f"({pct(p.scarce_fraction)}% of the training set): {', '.join(_METHODS)}"
    )
    with run("finetuning", text):
        results["finetune"] = {
            "dataset": d["scarce"]["name"],
            "backbone_epoch": len(checkpoints) - 1,
            "epochs": p.finetune_epochs,
            "lr": p.finetune_lr,
            "batch_size": p.finetune_batch_size,
            "methods": _finetune(p, model, size, checkpoints[-1], sets, device, seed, bars),
        }
    return checkpoints


def _write_demo(results, timing, t_start, folder, keep_checkpoints):
    """Verdicts, figures, ``results.json`` and ``report.md`` into ``folder``."""
    results["claims"] = _claims(results)
    results["figures"] = _figures(results, folder)
    results["files"] = {
        "report.md": "this report",
        "results.json": "every number of this report, and the configuration",
        **{
            name: desc
            for name, desc in (
                (
                    results["figures"]["cdnv_curves"],
                    "CDNV and NC1 per epoch: source train, source test, novel classes",
                ),
                (
                    results["figures"]["fewshot_vs_cdnv"],
                    "few-shot accuracy against novel-class CDNV",
                ),
                (
                    results["figures"]["nc_vs_accuracy"],
                    "NC1 against linear-probe accuracy, one point per checkpoint",
                ),
                (results["figures"]["finetune_comparison"], "fine-tuning methods compared"),
            )
        },
    }
    if keep_checkpoints:
        results["files"]["checkpoints/"] = "the weights after every epoch (safetensors)"
    return write_results(folder, results, timing, t_start, render_demo_report)


#: Where an interrupted demo keeps the checkpoints it had completed.
INTERRUPTED_CHECKPOINTS = "interrupted_checkpoints"


def _complete_checkpoints(work):
    """The readable ``epoch_NNN.safetensors`` files under ``work``, by epoch."""
    import glob

    from safetensors import safe_open

    found = {}
    for path in glob.glob(os.path.join(work, "**", "epoch_*.safetensors"), recursive=True):
        stem = os.path.basename(path)[len("epoch_") : -len(".safetensors")]
        if not stem.isdigit():
            continue
        try:  # a file cut in the middle of writing does not open
            with safe_open(path, framework="pt") as f:
                f.keys()
        except Exception:
            continue
        found.setdefault(int(stem), path)
    return [found[e] for e in sorted(found)]


def _resumable_files(folder):
    """The files of a pre-training run that resuming can continue from.

    The training state is saved after the epoch's checkpoint, so Ctrl-C in
    between leaves a checkpoint the state does not cover yet: only the
    checkpoints up to the state's epoch are kept (just the initial weights
    when there is no state), so that ``--resume`` accepts the folder.
    """
    from ..finetune import load_training_state

    try:
        state = load_training_state(folder)
    except ValueError:  # unreadable: resuming cannot use it
        state = None
    last = int(state["epoch"]) if state is not None else 0
    keep = [
        name
        for name in sorted(os.listdir(folder))
        if name.startswith("epoch_")
        and name.endswith(".safetensors")
        and name[6:9].isdigit()
        and int(name[6:9]) <= last
    ]
    return keep + ([os.path.basename(state["path"])] if state is not None else [])


def _interrupted_message(step, out_dir, pretrain_dir):
    """Keep an interrupted demo's pre-training run (to resume it); say what happened."""
    report = os.path.join(out_dir, "report.md")
    if os.path.exists(report):
        kept = f"the earlier report in {out_dir} was left untouched"
    else:
        kept = "no report was written"
    text = f"interrupted while {step}; {kept}"
    target = os.path.join(out_dir, INTERRUPTED_CHECKPOINTS)
    try:
        if os.path.isdir(pretrain_dir) and os.path.abspath(pretrain_dir) != os.path.abspath(target):
            names = _resumable_files(pretrain_dir)
            if names:
                shutil.rmtree(target, ignore_errors=True)
                os.makedirs(target)
                for name in names:  # checkpoints and the training state resuming needs
                    shutil.copyfile(os.path.join(pretrain_dir, name), os.path.join(target, name))
    except OSError as exc:  # the message must still come out
        return text + f"; the completed checkpoints could not be kept ({exc})."
    ckpts = _complete_checkpoints(target) if os.path.isdir(target) else []
    if ckpts:
        epochs = [int(os.path.basename(c)[6:9]) for c in ckpts]
        text += (
            f"; the {len(ckpts)} complete pre-training checkpoint(s) (epochs "
            f"{epochs[0]} to {epochs[-1]}) were kept in {target}; add --resume to the "
            "same command to continue from there"
        )
    return text + "."

"""``sknc rank``: every transferability score of several backbones on an image folder."""

import os
import time
import warnings

import numpy as np

from ._common import (
    InputError,
    Progress,
    check_device,
    check_int,
    check_out_dir,
    environment,
    new_figure,
    save_figure,
    staged_output,
    torch_threads,
    write_results,
)
from ._evaluate import _load_folder
from ._format import count, num

__all__ = ["run_rank"]

DEFAULT_RANK_DIR = os.path.join("sknc_results", "rank")
_FOLDS = 5


def _parse_model(spec):
    """``"name"`` or ``"name=weights_file"`` -> (label, name, weights)."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"a model must be a timm name, optionally NAME=FILE, got {spec!r}.")
    name, sep, weights = spec.partition("=")
    name = name.strip()
    if sep and not weights:
        raise InputError(f"model {spec!r}: no weight file after '='.")
    if sep and not os.path.isfile(weights):
        raise InputError(f"model {spec!r}: weight file {weights!r} does not exist.")
    label = name if not sep else f"{name}={os.path.basename(weights)}"
    return label, name, (weights if sep else None)


def _render_rank_report(results):
    lines = [
        "# sknc rank: which backbone will transfer?",
        "",
        f"Command: `{results['command_line']}`",
        "",
        f"Data: `{results['data']['path']}`, {count(results['data']['n_images'])} images in "
        f"{num(results['data']['n_classes'])} classes. Every score below is computed on the "
        "frozen features of each model on all images, from one forward pass per model "
        "(higher is better, except NC1 and CDNV).",
        "",
    ]
    scores = results["scores"]
    header = ["rank", "model", "features"] + scores
    if results["probe"] is not None:
        header.append("probe accuracy")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in results["table"]:
        cells = [str(row["rank"]), row["backbone"], str(row["n_features"])]
        cells += [num(row[s]) for s in scores]
        if results["probe"] is not None:
            cells.append(f"{100 * row['accuracy']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Rows are sorted by {results['rank_by']}. ![scores](scores.png)")
    lines.append("")
    if results["probe"] is not None:
        lines.append(
            f"## How well each score ranks the models (against the linear probe, "
            f"{results['probe']['n_splits']}-fold)"
        )
        lines.append("")
        lines.append("| score | weighted tau | Kendall | Spearman | top-1 regret | time (s) |")
        lines.append("|---|---|---|---|---|---|")
        for name, ev in results["evaluation"].items():
            lines.append(
                f"| {name} | {num(ev['weighted_tau'])} | {num(ev['kendall'])} | "
                f"{num(ev['spearman'])} | {num(ev['top1_regret'])} | "
                f"{num(results['score_time'].get(name))} |"
            )
        lines.append("")
        if len(results["table"]) < 3:
            lines.append("With fewer than 3 models the rank statistics say little.")
            lines.append("")
    else:
        lines.append(
            "Run with `--probe` to measure linear-probe accuracy and judge each score "
            "against it (weighted Kendall tau, top-1 regret)."
        )
        lines.append("")
    lines.append("## Time")
    lines.append("")
    for key, value in results["timing"].items():
        lines.append(f"- {key}: {num(value)} s")
    return "\n".join(lines) + "\n"


def _command_line(models, data, pretrained, probe, input_size, batch_size, out_dir, seed):
    import shlex

    parts = ["sknc", "rank"]
    for m in models:
        parts += ["--model", m]
    parts += ["--data", os.fspath(data)]
    if pretrained:
        parts.append("--pretrained")
    if probe:
        parts.append("--probe")
    if input_size is not None:
        parts += ["--input-size", str(input_size)]
    parts += ["--batch-size", str(batch_size), "--out", os.fspath(out_dir), "--seed", str(seed)]
    return shlex.join(parts)


def run_rank(
    models,
    data,
    *,
    pretrained=False,
    probe=False,
    scores=None,
    input_size=None,
    batch_size=64,
    device="auto",
    out_dir=DEFAULT_RANK_DIR,
    seed=0,
    threads=None,
    progress=True,
):
    """Every transferability score of several backbones on an image folder.

    Each model's frozen penultimate features of every image are extracted
    once (:class:`sknc.features.BackboneFeatures`) and every score of
    :func:`sknc.model_selection.get_score_names` -- NC1, CDNV, LogME,
    H-score, NLEEP, TransRate, GBC, PARC, SFDA, PACTran, k-NN, NCTI, ETran,
    and LEEP and NCE from the pretrained classifier's outputs of the same
    forward pass -- is computed from them by
    :func:`sknc.model_selection.rank_backbones`.
    With ``probe=True`` a linear probe (standardised features, logistic
    regression, stratified k-fold, k = 5 or the smallest class size)
    measures each model's accuracy, and each score is judged by how well it
    ranks the models against it (weighted Kendall tau, Kendall, Spearman,
    Pearson, top-1 regret).

    Parameters
    ----------
    models : list of str
        timm model names, each optionally ``NAME=FILE`` with a local weight
        file (``.safetensors``, ``.pth``).
    data : str or path-like
        Image folder, ``data/<class>/<image>``.
    pretrained : bool, default=False
        Load timm's hub weights for the models without a weight file.
    probe : bool, default=False
        Measure linear-probe accuracy and judge the scores against it.
    scores : list of str or None, default=None
        Scores to compute (None: all).
    input_size : int or None, default=None
        Resize and centre-crop images to this size (None: each model's default).
    batch_size : int, default=64
    device : str, default="auto"
    out_dir : str or path-like, default="sknc_results/rank"
        ``results.json``, ``report.md`` and ``scores.png``, moved into place
        together at the end (an interrupted run leaves an earlier report
        untouched).
    seed : int, default=0
        Seeds random initialisations, the seeded scores and the folds.
    threads : int or None, default=None
        torch CPU threads.
    progress : bool, default=True

    Returns
    -------
    dict
        What ``results.json`` holds.

    Raises
    ------
    InputError
        Fewer than two models, a duplicate model, a missing weight file,
        an unknown model or score, a bad image folder.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sknc.experiments import run_rank
    >>> root = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> for c in ["a", "b", "c"]:
    ...     os.makedirs(os.path.join(root, c))
    ...     for i in range(6):
    ...         pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ...         Image.fromarray(pixels).save(os.path.join(root, c, f"{i}.png"))
    >>> res = run_rank(["test_resnet", "test_efficientnet"], root, input_size=16,
    ...                scores=["nc1", "logme", "sfda"], probe=True,
    ...                out_dir=os.path.join(root, "out"), progress=False)
    >>> sorted(res["evaluation"])
    ['logme', 'nc1', 'sfda']
    >>> sorted(os.listdir(os.path.join(root, "out")))
    ['report.md', 'results.json', 'scores.png']
    """
    t_start = time.perf_counter()
    parsed, labels, names = _check_rank_args(models, scores, batch_size, seed, input_size)
    resolved = check_device(device)
    out_dir = check_out_dir(out_dir)
    folder, counts = _load_folder(data)
    y = folder.target
    steps = Progress(progress, n_steps=2)
    timing = {}

    candidates = _rank_candidates(
        parsed, names, pretrained, input_size, batch_size, device, progress, seed
    )

    n_splits = int(min(_FOLDS, counts.min()))
    with torch_threads(threads) as n_threads:
        steps.step(
            f"features of {len(candidates)} models for {len(y)} images, "
            f"{len(names)} scores each" + (", linear probe" if probe else "")
        )
        t = time.perf_counter()
        ranking = _rank_scores(
            candidates, folder.filenames, y, names, probe, n_splits, seed, progress
        )
        timing["features_scores_probe"] = time.perf_counter() - t

    steps.step(f"writing the report to {out_dir}")
    results = {
        "command": "rank",
        "command_line": _command_line(
            models, data, pretrained, probe, input_size, batch_size, out_dir, seed
        ),
        "config": {
            "models": labels,
            "pretrained": bool(pretrained),
            "input_size": input_size,
            "batch_size": batch_size,
            "seed": seed,
        },
        "environment": environment(resolved, n_threads),
        "data": {
            "path": os.path.abspath(os.fspath(data)),
            "n_images": int(len(y)),
            "n_classes": int(len(folder.target_names)),
            "class_sizes": counts.tolist(),
        },
        "scores": names,
        "higher_is_better": {k: ranking.higher_is_better[k] for k in names},
        "rank_by": ranking.rank_by,
        "table": ranking.table,
        "parts": ranking.parts,
        "score_time": ranking.score_time,
        "probe": {"n_splits": n_splits, "protocol": "stratified k-fold"} if probe else None,
        "evaluation": ranking.evaluation,
    }
    with staged_output(out_dir) as stage:
        _plot_scores(ranking, names, os.path.join(stage, "scores.png"))
        results["figures"] = {"scores": "scores.png"}
        results = write_results(stage, results, timing, t_start, _render_rank_report)
    return results


def _check_rank_args(models, scores, batch_size, seed, input_size):
    """``run_rank``'s arguments checked: ``(parsed models, their labels, score names)``."""
    from ..model_selection import get_score_names

    check_int(batch_size, "batch size", 1)
    check_int(seed, "seed", 0)
    if input_size is not None:
        check_int(input_size, "input size", 1)
    if isinstance(models, str) or len(models) < 2:
        raise InputError("rank needs at least two models (--model A --model B ...).")
    parsed = [_parse_model(m) for m in models]
    labels = [p[0] for p in parsed]
    if len(set(labels)) != len(labels):
        raise InputError(f"models must be distinct, got {labels}.")
    names = get_score_names() if scores is None else list(scores)
    unknown = [s for s in names if s not in get_score_names()]
    if unknown:
        raise InputError(f"unknown score(s) {unknown}; choose from {get_score_names()}.")
    return parsed, labels, names


def _rank_candidates(parsed, names, pretrained, input_size, batch_size, device, progress, seed):
    """One fitted :class:`BackboneFeatures` per model (errors before any long work)."""
    from ..features import BackboneFeatures

    want_head = any(s in ("leep", "nce") for s in names)
    candidates = {}
    for label, name, weights in parsed:
        feats = BackboneFeatures(
            name,
            pretrained=pretrained and weights is None,
            weights=weights,
            input_size=input_size,
            batch_size=batch_size,
            device=device,
            verbose=progress,
            random_state=seed,
            head="proba" if want_head else None,
        )
        try:  # builds the model and loads the weights now: errors before any work
            try:
                feats.fit()
            except ValueError as exc:
                if not want_head or "classifier" not in str(exc):
                    raise
                feats.set_params(head=None).fit()  # no classifier: LEEP/NCE undefined
        except (ValueError, TypeError, OSError, RuntimeError, AssertionError) as exc:
            raise InputError(f"model {label!r}: {str(exc).strip() or type(exc).__name__}") from exc
        candidates[label] = feats
    return candidates


def _rank_scores(candidates, files, y, names, probe, n_splits, seed, progress):
    """:func:`rank_backbones` of the fitted candidates: one extraction each, every score."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..model_selection import rank_backbones

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*failed to converge.*")
        try:
            return rank_backbones(
                candidates,
                files,
                y,
                accuracy=probe,
                probe=make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed),
                rank_by=names[0],
                refit=False,
                random_state=seed,
                verbose=progress,
                scores=names,
            )
        except OSError as exc:
            raise InputError(str(exc)) from exc


def _plot_scores(ranking, names, path):
    """Every score of every model, min-max scaled so that 1 is the best, in one figure."""
    fig, axes = new_figure(1, figsize=(max(6, 0.6 * len(names) + 3), 4))
    ax = axes[0]
    M = np.array([[row[s] for s in names] for row in ranking.table], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo, hi = np.nanmin(M, 0), np.nanmax(M, 0)
        scaled = (M - lo) / np.where(hi > lo, hi - lo, 1.0)
    for j, s in enumerate(names):
        if not ranking.higher_is_better[s]:
            scaled[:, j] = 1 - scaled[:, j]
    for i, row in enumerate(ranking.table):
        ax.plot(range(len(names)), scaled[i], marker="o", label=row["backbone"])
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("min-max scaled score (1 = best)")
    ax.legend(fontsize=8)
    save_figure(fig, path)

"""``sknc evaluate``: collapse and transfer of a backbone's frozen features on your images.

Contents
--------
run_evaluate(model, data, *, weights=None, ...)
    One forward pass over an ImageFolder-style folder tapping every block;
    NC1, CDNV and NC2 per block; linear-probe and few-shot accuracy of the
    penultimate features; the most collapsed block as a starting point for
    SCL-FT's ``tuned_block``; ``results.json``, a figure and ``report.md``.
"""

import os
import time
import warnings

import numpy as np

from ._common import (
    InputError,
    Progress,
    check_device,
    check_int,
    check_model,
    environment,
    new_figure,
    save_figure,
    single_threaded_blas,
    torch_threads,
    write_results,
)
from ._report import count, num, render_evaluate_report

__all__ = ["run_evaluate"]

DEFAULT_EVALUATE_DIR = os.path.join("sknc_results", "evaluate")
_PENULTIMATE = "penultimate"
_N_WAY, _SHOTS, _N_QUERY, _FOLDS = 5, (1, 5), 15, 5
_CONFIDENCE = 95


def _load_folder(data):
    from ..datasets import load_image_folder

    try:
        folder = load_image_folder(data)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    names, counts = (
        folder.target_names,
        np.bincount(folder.target, minlength=len(folder.target_names)),
    )
    if len(names) < 2:
        raise InputError(
            f"{os.fspath(data)!r} has a single class folder ({names[0]!r}); "
            "collapse and transfer need at least 2 classes."
        )
    small = [f"{n!r} ({c})" for n, c in zip(names, counts) if c < 2]
    if small:
        raise InputError(
            f"class folder(s) with a single image in {os.fspath(data)!r}: "
            f"{', '.join(small[:20])}; every class needs at least 2 images "
            "(one to learn from, one to test on)."
        )
    return folder, counts


def _parse_layers(layers):
    """None, or a list of ints / module paths / 'penultimate' from the command line."""
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    out = []
    for spec in layers:
        if isinstance(spec, str) and spec.lstrip("-").isdigit():
            spec = int(spec)
        out.append(spec)
    if not out:
        raise InputError("layers is empty.")
    return out


def _fewshot_protocol(n_classes, min_count, n_episodes):
    notes = []
    n_way = min(_N_WAY, n_classes)
    if n_way < _N_WAY:
        notes.append(f"Episodes are {num(n_way)}-way: the data has {num(n_classes)} classes.")
    shots = sorted({min(k, min_count - 1) for k in _SHOTS})
    if max(shots) < max(_SHOTS):
        notes.append(
            f"At most {num(max(shots))} shots: the smallest class has "
            f"{num(min_count)} images and each episode needs queries too."
        )
    n_query = min(_N_QUERY, min_count - max(shots))
    if n_query < _N_QUERY:
        notes.append(
            f"Queries per class: {num(n_query)} instead of {num(_N_QUERY)}, as the "
            f"smallest class has {num(min_count)} images."
        )
    return n_way, shots, n_query, notes


def run_evaluate(
    model,
    data,
    *,
    weights=None,
    pretrained=False,
    layers=None,
    input_size=None,
    batch_size=64,
    device="auto",
    out_dir=DEFAULT_EVALUATE_DIR,
    seed=0,
    n_episodes=600,
    threads=None,
    progress=True,
):
    """Evaluate a backbone's frozen features on an image folder and write a report.

    The folder follows torchvision's ImageFolder layout (``data/<class>/<image>``,
    see :func:`sknc.datasets.load_image_folder`). One forward pass taps every
    block (:func:`sknc.features.list_layers`) and the penultimate features.
    For each: NC1, CDNV and NC2 (:func:`sknc.metrics.collapse_report`). On
    the penultimate features: a linear probe (standardised features,
    logistic regression, stratified k-fold cross-validation, k = 5 or the
    smallest class size) and N-way K-shot nearest-class-centre accuracy
    (:func:`sknc.model_selection.evaluate_episodes`) with ``N`` capped by
    the number of classes and shots and queries by the smallest class, as
    the report says. The block whose features collapse most (lowest NC1),
    the last block left out, is suggested as SCL-FT's ``tuned_block``.

    Parameters
    ----------
    model : str or torch.nn.Module
        A timm model name, or a torch module.
    data : str or path-like
        The image folder.
    weights : str, path-like or None, default=None
        Local weight file (``.safetensors``, ``.pth``), e.g. a checkpoint of
        :func:`sknc.finetune.pretrain_backbone`.
    pretrained : bool, default=False
        Load timm's hub weights (needs network access or a local HF cache).
    layers : None, str or list, default=None
        Layers to tap: None is every block plus ``"penultimate"``; a list of
        block indices / module paths, or a comma-separated string of them.
        ``"penultimate"`` is always added.
    input_size : int or None, default=None
        Images are resized and centre-cropped to this size (None: the
        model's default).
    batch_size : int, default=64
        Images per forward pass.
    device : str, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    out_dir : str or path-like, default="sknc_results/evaluate"
        Output folder: ``results.json``, ``report.md``, ``layerwise_nc.png``.
    seed : int, default=0
        Seeds the random initialisation (without weights), the folds and
        the episodes.
    n_episodes : int, default=600
        Few-shot episodes per protocol.
    threads : int or None, default=None
        Number of torch CPU threads (None: every usable core).
    progress : bool, default=True
        Step lines and progress bars on stderr.

    Returns
    -------
    results : dict
        What ``results.json`` holds.

    Raises
    ------
    InputError
        Missing folder, a class folder with fewer than two images, fewer
        than two classes, unknown model or layer, unreadable weights or images.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sknc.experiments import run_evaluate
    >>> root = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> for c in ["a", "b", "c"]:
    ...     os.makedirs(os.path.join(root, c))
    ...     for i in range(4):
    ...         pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ...         Image.fromarray(pixels).save(os.path.join(root, c, f"{i}.png"))
    >>> res = run_evaluate("test_resnet", root, input_size=16, n_episodes=10,
    ...                    out_dir=os.path.join(root, "out"), progress=False)
    >>> [row["layer"] for row in res["layers"]][-1], res["few_shot"]["n_way"]
    ('penultimate', 3)
    >>> sorted(os.listdir(os.path.join(root, "out")))
    ['layerwise_nc.png', 'report.md', 'results.json']
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..features import BackboneFeatures, list_layers
    from ..metrics import collapse_report
    from ..model_selection import EpisodeSplit, evaluate_episodes

    t_start = time.perf_counter()
    for value, name, low in (
        (batch_size, "batch size", 1),
        (n_episodes, "episodes", 1),
        (seed, "seed", 0),
    ):
        check_int(value, name, low)
    if input_size is not None and (
        isinstance(input_size, bool)
        or not isinstance(input_size, (int, np.integer))
        or input_size < 1
    ):
        raise InputError(f"input size must be a positive int, got {input_size!r}.")
    resolved = check_device(device)
    out_dir = os.fspath(out_dir)
    steps = Progress(progress, n_steps=4)
    timing = {}

    folder, counts = _load_folder(data)
    y = folder.target
    module = check_model(model)
    specs = _parse_layers(layers)
    if specs is None:
        specs = list_layers(module)
    if _PENULTIMATE not in specs:
        specs = list(specs) + [_PENULTIMATE]

    with torch_threads(threads) as n_threads:
        t = time.perf_counter()
        feats = BackboneFeatures(
            model,
            pretrained=pretrained,
            weights=weights,
            layers=specs,
            input_size=input_size,
            batch_size=batch_size,
            device=device,
            verbose=progress,
            random_state=seed,
        )
        try:  # builds the model, loads the weights, runs one blank image
            feats.fit()
        except (ValueError, TypeError, OSError, RuntimeError, AssertionError) as exc:
            raise InputError(str(exc).strip() or type(exc).__name__) from exc
        size = feats.data_config_["input_size"]
        steps.step(
            f"features of {len(feats.layers_)} layers of {model} for "
            f"{len(y)} images in {len(folder.target_names)} classes "
            f"({size[1]} x {size[2]} px, one forward pass)"
        )
        try:
            Z = feats.transform_layers(folder.filenames)
        except (ValueError, OSError) as exc:
            raise InputError(str(exc)) from exc
        timing["features"] = time.perf_counter() - t

        t = time.perf_counter()
        steps.step("NC1, CDNV and NC2 per layer")
        rows = []
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.simplefilter("ignore")  # degenerate geometry is reported as NaN
            for index, (layer, Zl) in enumerate(Z.items()):
                rep = collapse_report(Zl, y)
                rows.append(
                    {
                        "layer": layer,
                        "index": index,
                        "n_features": int(Zl.shape[1]),
                        "nc1": rep.nc1,
                        "cdnv": rep.cdnv,
                        "nc2": rep.nc2,
                        "equinorm": rep.equinorm,
                        "equiangularity": rep.equiangularity,
                    }
                )
        blocks = [r for r in rows if r["layer"] != _PENULTIMATE]
        finite = [r for r in blocks if np.isfinite(r["nc1"])]
        best = min(finite, key=lambda r: r["nc1"]) if finite else None
        earlier = [r for r in finite if r is not blocks[-1]]
        suggested = min(earlier, key=lambda r: r["nc1"]) if earlier else None
        timing["collapse_metrics"] = time.perf_counter() - t

        t = time.perf_counter()
        steps.step("linear probe and few-shot episodes on the penultimate features")
        Zp = Z[_PENULTIMATE]
        min_count = int(counts.min())
        n_splits = min(_FOLDS, min_count)
        cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        with warnings.catch_warnings(), single_threaded_blas():
            warnings.filterwarnings("ignore", message=".*failed to converge.*")
            scores = cross_val_score(probe, Zp, y, cv=cv)
        linear_probe = {
            "protocol": "stratified k-fold cross-validation",
            "n_splits": n_splits,
            "accuracy": float(scores.mean()),
            "std": float(scores.std()),
            "fold_accuracy": scores.tolist(),
        }
        n_way, shots, n_query, notes = _fewshot_protocol(
            len(folder.target_names), min_count, n_episodes
        )
        few = {
            "n_way": n_way,
            "n_query": n_query,
            "n_episodes": n_episodes,
            "confidence_level": _CONFIDENCE,
            "shots": {},
            "notes": notes,
            "requested": {"n_way": _N_WAY, "shots": list(_SHOTS), "n_query": _N_QUERY},
        }
        for k in steps.bar(shots, desc="few-shot", unit="protocol"):
            split = EpisodeSplit(
                n_way=n_way, n_shot=k, n_query=n_query, n_episodes=n_episodes, random_state=seed
            )
            res = evaluate_episodes(Zp, y, split, return_cdnv=False, n_jobs=n_threads)
            few["shots"][str(k)] = {"n_shot": k, "mean": res.mean, "ci95": res.ci95}
        timing["transfer"] = time.perf_counter() - t

        results = {
            "command": "evaluate",
            "command_line": _command_line(
                model,
                data,
                weights,
                pretrained,
                layers,
                input_size,
                batch_size,
                device,
                out_dir,
                seed,
                n_episodes,
            ),
            "config": {
                "model": model if isinstance(model, str) else type(model).__name__,
                "weights": os.fspath(weights) if weights is not None else None,
                "pretrained": bool(pretrained),
                "layers": [str(s) for s in specs],
                "input_size": [int(size[1]), int(size[2])],
                "batch_size": batch_size,
                "device": str(device),
                "seed": seed,
                "n_episodes": n_episodes,
            },
            "environment": environment(resolved, n_threads),
            "data": {
                "path": os.path.abspath(os.fspath(data)),
                "n_images": int(len(y)),
                "n_classes": int(len(folder.target_names)),
                "class_names": folder.target_names.tolist(),
                "class_sizes": counts.tolist(),
                "min_class_size": min_count,
                "max_class_size": int(counts.max()),
            },
            "layers": rows,
            "most_collapsed_block": best,
            "suggested_tuned_block": suggested,
            "linear_probe": linear_probe,
            "few_shot": few,
        }
    steps.step(f"writing the report to {out_dir}")
    os.makedirs(out_dir, exist_ok=True)
    from ..plotting import plot_layerwise_nc

    fig, axes = new_figure(3, figsize=(12, 4))
    plot_layerwise_nc(
        [r["layer"] for r in rows],
        {
            "NC1": [r["nc1"] for r in rows],
            "CDNV": [r["cdnv"] for r in rows],
            "NC2": [r["nc2"] for r in rows],
        },
        highlight=suggested["layer"] if suggested else None,
        axes=axes,
    )
    fig.suptitle(
        f"{results['config']['model']}: collapse of the frozen features per layer "
        f"({count(len(y))} images, {num(len(folder.target_names))} classes)"
    )
    save_figure(fig, os.path.join(out_dir, "layerwise_nc.png"))
    results["figures"] = {"layerwise_nc": "layerwise_nc.png"}
    results["files"] = {
        "report.md": "this report",
        "results.json": "every number of this report, and the configuration",
        "layerwise_nc.png": "NC1, CDNV and NC2 per layer",
    }
    return write_results(out_dir, results, timing, t_start, render_evaluate_report)


def _command_line(
    model,
    data,
    weights,
    pretrained,
    layers,
    input_size,
    batch_size,
    device,
    out_dir,
    seed,
    n_episodes,
):
    name = model if isinstance(model, str) else type(model).__name__
    parts = ["sknc", "evaluate", "--model", name, "--data", os.fspath(data)]
    if weights is not None:
        parts += ["--weights", os.fspath(weights)]
    if pretrained:
        parts.append("--pretrained")
    if layers is not None:
        spec = layers if isinstance(layers, str) else ",".join(str(s) for s in layers)
        parts += ["--layers", spec]
    if input_size is not None:
        parts += ["--input-size", str(input_size)]
    parts += [
        "--batch-size",
        str(batch_size),
        "--device",
        str(device),
        "--out",
        os.fspath(out_dir),
        "--seed",
        str(seed),
        "--episodes",
        str(n_episodes),
    ]
    return " ".join(parts)

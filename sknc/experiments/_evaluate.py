"""``sknc evaluate``: collapse and transfer of a backbone's frozen features on your images.

Contents
--------
run_evaluate(model, data, *, weights=None, ...)
    One forward pass over an ImageFolder-style folder tapping every block;
    NC1, CDNV and NC2 per block; linear-probe and few-shot accuracy and the
    field's transferability scores (LogME, SFDA, ...) of the penultimate
    features; the most collapsed block as a starting point for SCL-FT's
    ``tuned_block``; ``results.json``, a figure and ``report.md``.
"""

import os
import time
import warnings

import numpy as np

from ..utils._options import INTERPOLATIONS
from ._common import (
    InputError,
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
from ._report import count, num, render_evaluate_report
from ._text_input import fit_text_features, is_text_input, load_text_data

__all__ = ["run_evaluate"]

DEFAULT_EVALUATE_DIR = os.path.join("sknc_results", "evaluate")
_PENULTIMATE = "penultimate"
_N_WAY, _SHOTS, _N_QUERY, _FOLDS = 5, (1, 5), 15, 5
_CONFIDENCE = 95
#: Inputs of at most this many pixels get ``crop_pct=1.0`` unless one is given:
#: timm's default centre crop (0.875 of a slightly larger resize) would cut the
#: border of small images, where their content is.
SMALL_INPUT_SIZE = 64
_INTERPOLATIONS = INTERPOLATIONS


def _load_folder(data):
    from ..datasets import load_image_folder

    try:
        folder = load_image_folder(data)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    names = [str(n) for n in folder.target_names]  # plain str: no np.str_ reprs in messages
    counts = np.bincount(folder.target, minlength=len(names))
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


def _check_args(batch_size, n_episodes, seed, preprocessing):
    """``run_evaluate``'s numbers checked; returns :func:`_check_preprocessing`'s result."""
    for value, name, low in (
        (batch_size, "batch size", 1),
        (n_episodes, "episodes", 1),
        (seed, "seed", 0),
    ):
        check_int(value, name, low)
    return _check_preprocessing(*preprocessing)


def _check_preprocessing(input_size, crop_pct, mean, std, interpolation, model_kwargs):
    """Validate the preprocessing options; return (crop_pct, model_kwargs, notes)."""
    notes = []
    if input_size is not None and (
        isinstance(input_size, bool)
        or not isinstance(input_size, (int, np.integer))
        or input_size < 1
    ):
        raise InputError(f"input size must be a positive int, got {input_size!r}.")
    if crop_pct is not None:
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float, np.floating)):
            raise InputError(f"crop_pct must be a number in (0, 1], got {crop_pct!r}.")
        if not 0 < float(crop_pct) <= 1:
            raise InputError(f"crop_pct must be in (0, 1], got {crop_pct!r}.")
        crop_pct = float(crop_pct)
    elif input_size is not None and input_size <= SMALL_INPUT_SIZE:
        crop_pct = 1.0
        notes.append(
            "No border crop (crop_pct 1): at small input sizes the model's default centre "
            "crop would cut off the images' border; pass --crop-pct to crop."
        )
    for name, value in (("mean", mean), ("std", std)):
        if value is None:
            continue
        vals = np.atleast_1d(np.asarray(value, dtype=object))
        try:
            vals = vals.astype(float)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be 1 or 3 numbers, got {value!r}.") from None
        if vals.ndim != 1 or len(vals) not in (1, 3) or not np.isfinite(vals).all():
            raise InputError(f"{name} must be 1 or 3 finite numbers, got {value!r}.")
        if name == "std" and (vals <= 0).any():
            raise InputError(f"std must be positive, got {value!r}.")
    if interpolation is not None and interpolation not in _INTERPOLATIONS:
        raise InputError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}.")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise InputError(
            f"model_kwargs must be a dict (a JSON object on the command line), "
            f"got {model_kwargs!r}."
        )
    return crop_pct, model_kwargs, notes


def _layer_row(index, layer, Zl, y, n_classes):
    """NC1, CDNV and NC2 of one layer's features, with what makes them not meaningful.

    Warnings of the metrics (coinciding class means, too few features) are
    recorded in the row and shown to the user (not silenced). Geometry on
    which the metrics are undefined (every class mean equal) gives NaN and
    the reason, not an exception.
    """
    from ..metrics import collapse_report

    row = {
        "layer": layer,
        "index": index,
        "n_features": int(Zl.shape[1]),
        # NC1 needs the class means to span K - 1 directions in more than K - 1
        # features; on narrower blocks it is not comparable with wider ones
        "nc1_comparable": bool(Zl.shape[1] > n_classes - 1),
        "nc1": float("nan"),
        "cdnv": float("nan"),
        "nc2": float("nan"),
        "equinorm": float("nan"),
        "equiangularity": float("nan"),
        "warnings": [],
        "error": None,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rep = collapse_report(Zl, y)
        except ValueError as exc:
            row["error"] = str(exc)
        else:
            for key in ("nc1", "cdnv", "nc2", "equinorm", "equiangularity"):
                row[key] = float(getattr(rep, key))
    seen = []
    for w in caught:
        text = str(w.message)
        if text not in seen:
            seen.append(text)
            warnings.warn(f"layer {layer!r}: {text}", w.category, stacklevel=3)
    row["warnings"] = seen
    return row


def _choose_blocks(rows, n_classes):
    """The most collapsed block and the suggested ``tuned_block`` (last block left out).

    NC1 is compared only over blocks wider than K - 1 features; when no
    block is that wide, CDNV (which has no such restriction) decides.
    """
    blocks = [r for r in rows if r["layer"] != _PENULTIMATE]
    wide = [r for r in blocks if r["nc1_comparable"] and np.isfinite(r["nc1"])]
    metric, pool = "nc1", wide
    if not wide:
        metric, pool = "cdnv", [r for r in blocks if np.isfinite(r["cdnv"])]
    best = min(pool, key=lambda r: r[metric]) if pool else None
    earlier = [r for r in pool if blocks and r is not blocks[-1]]
    suggested = min(earlier, key=lambda r: r[metric]) if earlier else None
    return best, suggested, metric


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
    crop_pct=None,
    mean=None,
    std=None,
    interpolation=None,
    model_kwargs=None,
    batch_size=64,
    device="auto",
    out_dir=DEFAULT_EVALUATE_DIR,
    seed=0,
    n_episodes=600,
    threads=None,
    progress=True,
    transferability=True,
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
    the report says. With ``transferability=True``, every transferability
    score of :func:`sknc.model_selection.get_score_names` that needs no
    classifier head (LogME, H-score, NLEEP, TransRate, GBC, PARC, SFDA,
    PACTran, k-NN, and the per-model parts of NCTI and ETran) is computed
    on the same penultimate features, beside their NC1 and CDNV, through
    :func:`sknc.model_selection.rank_backbones` (seeded by ``seed``). The
    block whose features collapse most (lowest NC1), the last block left
    out, is suggested as SCL-FT's ``tuned_block``.

    NC1 is compared only between blocks with more than ``K - 1`` features
    (``K`` classes): on narrower blocks the class means cannot span the
    ``K - 1`` between-class directions with room to spare, and NC1 is not
    comparable (it explodes at ``d = K - 1``). Such blocks are marked in the
    table and the figure and left out of the choice; when no block is wide
    enough, CDNV decides. The metrics' warnings (coinciding class means,
    narrow blocks) are shown, not silenced, and recorded per layer in
    ``results.json``; a layer on which every class mean coincides gets NaN
    and the reason instead of an error.

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
    crop_pct : float in (0, 1] or None, default=None
        Share of the resized image kept by the centre crop (None: the
        model's, except for ``input_size`` of at most
        :data:`SMALL_INPUT_SIZE` = 64 px, where it is 1.0 -- no border crop,
        as small images have content up to their border).
    mean, std : float, sequence of 3 floats or None, default=None
        Normalisation (None: the model's).
    interpolation : {"bilinear", "bicubic", "nearest"} or None, default=None
        Resize filter (None: the model's).
    model_kwargs : dict or None, default=None
        Extra keyword arguments of the timm model (e.g.
        ``{"zero_init_last": False}`` for a random-initialisation baseline).
    batch_size : int, default=64
        Images per forward pass.
    device : str, default="auto"
        ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
    out_dir : str or path-like, default="sknc_results/evaluate"
        Output folder: ``results.json``, ``report.md``, ``layerwise_nc.png``,
        moved into place together at the end (an interrupted run leaves an
        earlier report untouched). Checked before any work.
    seed : int, default=0
        Seeds the random initialisation (without weights), the folds and
        the episodes.
    n_episodes : int, default=600
        Few-shot episodes per protocol.
    threads : int or None, default=None
        Number of torch CPU threads (None: every usable core).
    progress : bool, default=True
        Step lines and progress bars on stderr.
    transferability : bool, default=True
        Compute the transferability scores of the penultimate features
        (``results["transferability"]``). A score undefined on the data is
        None there, with the reason; NCTI and ETran combine their parts
        across a pool of candidates, so a single model gets its parts only
        (compare backbones with ``sknc rank``). k-NN and NLEEP grow
        quadratically with the number of images: leave them out with False
        on large folders.

    Returns
    -------
    results : dict
        What ``results.json`` holds.

    The preprocessing used (input size, crop, normalisation,
    interpolation) is recorded under ``config["preprocessing"]`` and in the
    report, with the matching :class:`~sknc.finetune.FineTuningClassifier`
    line.

    Raises
    ------
    InputError
        Missing folder, a class folder with fewer than two images, fewer
        than two classes, unknown model or layer, unreadable weights or
        images, bad preprocessing options, an output folder that is a file
        or cannot be created (checked before any work), images on which
        every layer's class means coincide (e.g. identical images under
        every class name).

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
    t_start = time.perf_counter()
    crop_pct, model_kwargs, prep_notes = _check_args(
        batch_size, n_episodes, seed, (input_size, crop_pct, mean, std, interpolation, model_kwargs)
    )
    opts = dict(
        model=model, data=data, weights=weights, pretrained=pretrained, layers=layers,
        input_size=input_size, crop_pct=crop_pct, mean=mean, std=std,
        interpolation=interpolation, model_kwargs=model_kwargs, batch_size=batch_size,
        device=device, out_dir=out_dir, seed=seed, n_episodes=n_episodes,
        transferability=transferability, progress=progress,
    )  # fmt: skip
    resolved = check_device(device)
    out_dir = opts["out_dir"] = check_out_dir(out_dir)
    steps = Progress(progress, n_steps=5 if transferability else 4)
    timing = {}

    text = is_text_input(model)  # a text encoder: data holds texts (sknc.experiments._text_input)
    folder, counts = load_text_data(data) if text else _load_folder(data)
    y = folder.target
    n_classes = len(folder.target_names)
    specs = _layer_specs(model, layers, text)

    with torch_threads(threads) as n_threads:
        t = time.perf_counter()
        Z, specs, size, preprocessing = _extract(opts, folder, y, n_classes, specs, text, steps)
        timing["features"] = time.perf_counter() - t

        t = time.perf_counter()
        steps.step("NC1, CDNV and NC2 per layer")
        rows, blocks = _collapse(Z, y, n_classes, data)
        timing["collapse_metrics"] = time.perf_counter() - t

        t = time.perf_counter()
        steps.step("linear probe and few-shot episodes on the penultimate features")
        Zp = Z[_PENULTIMATE]
        linear_probe, few = _transfer(Zp, y, counts, seed, n_episodes, n_threads, steps)
        timing["transfer"] = time.perf_counter() - t

        scores = None
        if transferability:
            t = time.perf_counter()
            steps.step("transferability scores of the penultimate features")
            scores = _transferability(Zp, y, rows[-1], seed)
            timing["transferability"] = time.perf_counter() - t

    results = {
        "command": "evaluate",
        "command_line": _command_line(**{k: v for k, v in opts.items() if k != "progress"}),
        "config": _config(opts, specs, size, text, preprocessing),
        "environment": environment(resolved, n_threads),
        "data": _data_summary(data, folder, y, counts),
        "layers": rows,
        "nc1_min_features": n_classes,
        **blocks,
        "notes": prep_notes,
        "linear_probe": linear_probe,
        "few_shot": few,
        "transferability": scores,
    }
    steps.step(f"writing the report to {out_dir}")
    with staged_output(out_dir) as stage:
        results = _write_evaluate(results, timing, t_start, stage)
    return results


def _config(opts, specs, size, text, preprocessing):
    """``results["config"]``: the options as used (layers and sizes resolved)."""
    model, weights = opts["model"], opts["weights"]
    return {
        "model": model if isinstance(model, str) else type(model).__name__,
        "weights": os.fspath(weights) if weights is not None else None,
        "pretrained": bool(opts["pretrained"]),
        "model_kwargs": opts["model_kwargs"],
        "layers": [str(s) for s in specs],
        "input_size": None if text else [int(size[1]), int(size[2])],
        "max_length": int(size[1]) if text else None,
        "preprocessing": preprocessing,
        "batch_size": opts["batch_size"],
        "device": str(opts["device"]),
        "seed": opts["seed"],
        "n_episodes": opts["n_episodes"],
        "transferability": bool(opts["transferability"]),
    }


def _layer_specs(model, layers, text):
    """The layers to tap, ``"penultimate"`` always among them (None: the text default)."""
    from ..features import list_layers

    specs = _parse_layers(layers)
    module = None if text else check_model(model)
    if specs is None and not text:
        specs = list_layers(module)
    if specs is not None and _PENULTIMATE not in specs:
        specs = list(specs) + [_PENULTIMATE]
    return specs


def _extract(opts, folder, y, n_classes, specs, text, steps):
    """One forward pass over the data tapping ``specs``: ``(Z, specs, size, preprocessing)``."""
    from ..features import BackboneFeatures

    model, seed, progress = opts["model"], opts["seed"], opts["progress"]
    image_args = {
        k: opts[k] for k in ("weights", "input_size", "crop_pct", "mean", "std", "interpolation")
    }
    model_kwargs, batch_size, device = opts["model_kwargs"], opts["batch_size"], opts["device"]
    if text:
        feats, specs = fit_text_features(
            model,
            specs,
            image_args=image_args,
            model_kwargs=model_kwargs,
            batch_size=batch_size,
            device=device,
            progress=progress,
            seed=seed,
        )
        size, preprocessing = (None, feats.max_length_, None), None
    else:
        feats = BackboneFeatures(
            model,
            pretrained=opts["pretrained"],
            layers=specs,
            model_kwargs=model_kwargs,
            batch_size=batch_size,
            device=device,
            verbose=progress,
            random_state=seed,
            **image_args,
        )
        try:  # builds the model, loads the weights, runs one blank image
            feats.fit()
        except (ValueError, TypeError, OSError, RuntimeError, AssertionError) as exc:
            raise InputError(str(exc).strip() or type(exc).__name__) from exc
        dc = feats.data_config_
        size = dc["input_size"]
        preprocessing = {
            "input_size": [int(v) for v in size],
            "crop_pct": float(dc["crop_pct"]),
            "crop_mode": dc.get("crop_mode", "center"),
            "interpolation": dc["interpolation"],
            "mean": [float(v) for v in dc["mean"]],
            "std": [float(v) for v in dc["std"]],
        }
    steps.step(
        f"features of {len(feats.layers_)} layers of {model} for "
        f"{len(y)} {'texts' if text else 'images'} in {n_classes} classes "
        + (f"(at most {size[1]} tokens" if text else f"({size[1]} x {size[2]} px")
        + ", one forward pass)"
    )
    try:
        Z = feats.transform_layers(folder.data if text else folder.filenames)
    except (ValueError, OSError) as exc:
        raise InputError(str(exc)) from exc
    return Z, specs, size, preprocessing


def _collapse(Z, y, n_classes, data):
    """Per-layer collapse rows and the chosen blocks (an error if undefined everywhere)."""
    with single_threaded_blas():
        rows = [
            _layer_row(index, layer, Zl, y, n_classes)
            for index, (layer, Zl) in enumerate(Z.items())
        ]
    if all(r["error"] is not None for r in rows):
        raise InputError(
            f"collapse is undefined on every layer for the images in "
            f"{os.fspath(data)!r}: {rows[-1]['error']} The images of different "
            "classes look the same to the model (identical images under several "
            "class names, or blank images?)."
        )
    best, suggested, chosen_by = _choose_blocks(rows, n_classes)
    return rows, {
        "most_collapsed_block": best,
        "suggested_tuned_block": suggested,
        "block_chosen_by": chosen_by,
    }


def _transfer(Zp, y, counts, seed, n_episodes, n_threads, steps):
    """Linear-probe (stratified k-fold) and few-shot NCC accuracy of the features ``Zp``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..model_selection import EpisodeSplit, evaluate_episodes

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
    n_way, shots, n_query, notes = _fewshot_protocol(counts.size, min_count, n_episodes)
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
    return linear_probe, few


def _transferability(Zp, y, penultimate_row, seed):
    """Every feature transferability score of ``Zp`` beside its NC1 and CDNV.

    The per-model scores come from :func:`sknc.model_selection.rank_backbones`
    on the already extracted features (an identity candidate), so names,
    defaults and seeds are those of ``sknc rank``; NCTI and ETran, which
    combine their parts across a pool, give their parts
    (:func:`sknc.metrics.ncti_parts`, :func:`sknc.metrics.etran_parts`). A
    score undefined on the data is NaN (its parts left out) with the reason,
    and the warning is shown.
    """
    from sklearn.preprocessing import FunctionTransformer

    from .. import metrics
    from ..model_selection import get_score_names, rank_backbones

    pooled = ("ncti", "etran")
    names = [k for k in get_score_names() if k not in ("nc1", "cdnv", "leep", "nce", *pooled)]
    with warnings.catch_warnings(record=True) as caught, single_threaded_blas():
        warnings.simplefilter("always")
        ranking = rank_backbones(
            {"features": FunctionTransformer()},
            Zp,
            y,
            accuracy=False,
            scores=names,
            rank_by=names[0],
            random_state=seed,
        )
    undefined = {}
    for w in caught:
        text = str(w.message)
        for key in names:
            if text.startswith(f"Score {key!r} is undefined"):
                undefined[key] = text
        warnings.warn(text, w.category, stacklevel=3)
    seconds = {k: float(v) for k, v in ranking.score_time.items()}
    parts = {}
    for key in pooled:
        t0 = time.perf_counter()
        try:
            with single_threaded_blas():
                parts[key] = getattr(metrics, f"{key}_parts")(Zp, y)
        except ValueError as exc:
            undefined[key] = f"{key.upper()} parts are undefined on these features: {exc}"
            warnings.warn(undefined[key], UserWarning, stacklevel=3)
        seconds[key] = time.perf_counter() - t0
    values = {"nc1": penultimate_row["nc1"], "cdnv": penultimate_row["cdnv"]}
    values.update({k: float(ranking.table[0][k]) for k in names})
    return {
        "scores": values,
        "higher_is_better": {k: k not in ("nc1", "cdnv") for k in values},
        "seconds": {k: seconds.get(k) for k in values},
        "parts": parts,
        "parts_seconds": {k: seconds[k] for k in pooled},
        "undefined": undefined,
        "seed": seed,
    }


def _data_summary(data, folder, y, counts):
    return {
        "path": os.path.abspath(os.fspath(data)),
        "n_images": int(len(y)),
        "n_classes": int(len(folder.target_names)),
        "class_names": [str(n) for n in folder.target_names],
        "class_sizes": counts.tolist(),
        "min_class_size": int(counts.min()),
        "max_class_size": int(counts.max()),
    }


def _write_evaluate(results, timing, t_start, folder):
    """The figure, ``results.json`` and ``report.md`` into ``folder``."""
    from ..plotting import plot_layerwise_nc

    rows, data = results["layers"], results["data"]
    suggested = results["suggested_tuned_block"]
    fig, axes = new_figure(3, figsize=(12, 4))
    plot_layerwise_nc(
        [r["layer"] for r in rows],
        {
            "NC1": [r["nc1"] for r in rows],
            "CDNV": [r["cdnv"] for r in rows],
            "NC2": [r["nc2"] for r in rows],
        },
        highlight=suggested["layer"] if suggested else None,
        not_comparable={"NC1": [r["layer"] for r in rows if not r["nc1_comparable"]]},
        axes=axes,
    )
    fig.suptitle(
        f"{results['config']['model']}: collapse of the frozen features per layer "
        f"({count(data['n_images'])} images, {num(data['n_classes'])} classes)"
    )
    save_figure(fig, os.path.join(folder, "layerwise_nc.png"))
    results["figures"] = {"layerwise_nc": "layerwise_nc.png"}
    results["files"] = {
        "report.md": "this report",
        "results.json": "every number of this report, and the configuration",
        "layerwise_nc.png": "NC1, CDNV and NC2 per layer",
    }
    return write_results(folder, results, timing, t_start, render_evaluate_report)


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
    *,
    crop_pct=None,
    mean=None,
    std=None,
    interpolation=None,
    model_kwargs=None,
    transferability=True,
):
    import json
    import shlex

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
    if crop_pct is not None:
        parts += ["--crop-pct", f"{crop_pct:g}"]
    for flag, value in (("--mean", mean), ("--std", std)):
        if value is not None:
            parts += [flag, ",".join(f"{float(v):g}" for v in np.atleast_1d(value))]
    if interpolation is not None:
        parts += ["--interpolation", interpolation]
    if model_kwargs:
        parts += ["--model-kwargs", shlex.quote(json.dumps(model_kwargs))]
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
    if not transferability:
        parts.append("--no-transferability")
    return " ".join(parts)

"""The text input path of ``sknc evaluate`` (kept apart from the image path).

Contents
--------
is_text_input(model)
    Whether ``model`` is a text encoder (then ``data`` holds texts).
load_text_data(data)
    A folder ``data/<class>/<file>.txt`` or a CSV/TSV file with a text and a
    label column -> Bunch(data, target, target_names) and the class sizes.
fit_text_features(model, layers, ...)
    The fitted :class:`~sknc.features.TextFeatures` that taps them.
"""

import os

import numpy as np

from ._common import InputError

__all__ = ["fit_text_features", "is_text_input", "load_text_data"]

_TABLE_EXTENSIONS = (".csv", ".tsv", ".tab")


def is_text_input(model):
    from ..features._text import is_text_model

    return is_text_model(model)


def load_text_data(data):
    """Texts and labels of a class-folder tree of ``.txt`` files or a CSV/TSV table."""
    from ..datasets import load_text_files, load_text_table

    path = os.fspath(data)
    try:
        if os.path.isfile(path) and path.lower().endswith(_TABLE_EXTENSIONS):
            bunch = load_text_table(path)
        elif os.path.isfile(path):
            raise InputError(
                f"{path!r}: text data is a folder data/<class>/<file>.txt or a .csv/.tsv "
                "file with a text and a label column."
            )
        else:
            bunch = load_text_files(path)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    counts = np.bincount(bunch.target, minlength=len(bunch.target_names))
    names = bunch.target_names
    if len(names) < 2:
        raise InputError(
            f"{path!r} has a single class ({names[0]!r}); collapse and transfer need at "
            "least 2 classes."
        )
    small = [f"{n!r} ({c})" for n, c in zip(names, counts) if c < 2]
    if small:
        raise InputError(
            f"class(es) with a single text in {path!r}: {', '.join(small[:20])}; every "
            "class needs at least 2 texts (one to learn from, one to test on)."
        )
    return bunch, counts


def fit_text_features(
    model, layers, *, image_args, model_kwargs, batch_size, device, progress, seed
):
    """A fitted TextFeatures tapping ``layers`` (None: every layer) and the sentence embedding."""
    from ..features import TextFeatures, list_layers

    given = sorted(k for k, v in image_args.items() if v is not None)
    if given:
        raise InputError(
            f"{', '.join(given)} apply to image backbones; a text model takes its weights "
            "and tokenizer from its directory or hub id."
        )
    try:
        specs = list(list_layers(model)) if layers is None else list(layers)
        if "penultimate" not in specs:
            specs.append("penultimate")
        feats = TextFeatures(
            model,
            layers=specs,
            batch_size=batch_size,
            device=device,
            verbose=progress,
            model_kwargs=model_kwargs,
            random_state=seed,
        )
        feats.fit()
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        raise InputError(str(exc).strip() or type(exc).__name__) from exc
    return feats, specs

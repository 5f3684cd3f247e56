"""Backbone creation: a timm name, a module or a factory -> a module in eval mode on CPU.

create_backbone(model, *, pretrained=False, weights=None, model_kwargs=None, seed=None)
    Build a module from a timm name, a module instance (deep-copied) or a
    factory; optionally load timm hub weights (failing fast when offline, see
    :mod:`._hub`) and/or a local weight file (:func:`._weights.load_weights`).
"""

import copy
import difflib

import torch
from torch import nn

from ._hub import hub_guard
from ._weights import _MAX_LISTED, load_weights

__all__ = ["create_backbone"]


def _check_timm_name(name):
    import timm

    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        return
    if timm.is_model(name):
        return
    base = name.split(".", 1)[0]
    candidates = timm.list_models()
    close = difflib.get_close_matches(base, candidates, n=_MAX_LISTED, cutoff=0.6)
    if not close:
        close = [m for m in candidates if base.lower() in m][:_MAX_LISTED]
    hint = f" Close matches: {close}." if close else ""
    raise ValueError(
        f"Unknown timm model name {name!r}.{hint} See timm.list_models() for all "
        "names, or pass a torch.nn.Module."
    )


def create_backbone(model, *, pretrained=False, weights=None, model_kwargs=None, seed=None):
    """Build a backbone module, in eval mode on CPU.

    Parameters
    ----------
    model : str, torch.nn.Module, nn.Module subclass or callable
        A timm model name (``timm.create_model(name, pretrained=pretrained,
        **model_kwargs)``), a module instance (deep-copied; the user's object
        is never mutated), or a module class / zero-argument factory returning
        a module (called with ``**model_kwargs``).
    pretrained : bool, default=False
        Load timm's hub weights (timm names only). Offline, this fails within
        seconds with a message explaining how to use a local weight file.
    weights : str, path-like, mapping or None, default=None
        A local weight file (``.safetensors``; ``.pth``/``.pt``/``.bin``
        loaded with ``torch.load(weights_only=True)``) or a state dict, loaded
        after the model is built; see :func:`load_weights`.
    model_kwargs : dict or None, default=None
        Keyword arguments for ``timm.create_model`` or the factory.
    seed : int or None, default=None
        If given, the torch random state used to initialise the weights is
        seeded with it (without touching the global random state), so that
        random-init models are reproducible.

    Returns
    -------
    torch.nn.Module
        The backbone, in eval mode, on CPU.

    Examples
    --------
    >>> from sknc.features import create_backbone, list_layers
    >>> model = create_backbone("resnet18", model_kwargs={"num_classes": 10}, seed=0)
    >>> model.fc.out_features, model.training
    (10, False)
    """
    model_kwargs = dict(model_kwargs or {})
    if pretrained and not isinstance(model, str):
        raise ValueError(
            "pretrained=True only applies to timm model names; load weights into "
            "your own module yourself or pass weights='path/to/file'."
        )

    def build():
        if isinstance(model, str):
            import timm

            _check_timm_name(model)
            if pretrained:
                with hub_guard(model):
                    return timm.create_model(model, pretrained=True, **model_kwargs)
            return timm.create_model(model, pretrained=False, **model_kwargs)
        if isinstance(model, nn.Module):
            if model_kwargs:
                raise ValueError(
                    "model_kwargs only apply when model is a timm name or a factory; "
                    f"got a {type(model).__name__} instance."
                )
            return copy.deepcopy(model)
        if callable(model):
            built = model(**model_kwargs)
            if not isinstance(built, nn.Module):
                raise TypeError(
                    f"model factory {model!r} returned {type(built).__name__}, "
                    "expected a torch.nn.Module."
                )
            return built
        raise TypeError(
            "model must be a timm model name, a torch.nn.Module, or a callable "
            f"returning one; got {type(model).__name__}."
        )

    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            module = build()
    else:
        module = build()
    if weights is not None:
        load_weights(module, weights)
    return module.to("cpu").eval()

"""The parameter table of :mod:`sknc.finetune`, declared once.

Contents
--------
NET_PARAMETER_CONSTRAINTS
    Constraints of the network options, shared by
    :class:`~sknc.finetune.FineTuneNet` (its constructor arguments) and
    :class:`~sknc.finetune.FineTuningClassifier` (which forwards them as
    ``module__*``).
PARAMETER_CONSTRAINTS
    Every parameter of ``FineTuningClassifier``: the network options plus
    training, preprocessing and bookkeeping
    (``FineTuningClassifier._parameter_constraints``).
AUTO_BLOCK_TOLERANCE
    The default threshold of the ``tuned_block="auto"`` rule.
ROUTED_PREFIXES
    skorch-style prefixes routed to the net (``optimizer__betas=...``,
    ``iterator_train__num_workers=...``, ...).
PRETRAIN_DEFAULTS, PRETRAIN_FIXED
    What :func:`~sknc.finetune.pretrain_backbone` changes in a
    ``FineTuningClassifier``.

A new option is one entry here (its constraint), one parameter of
``FineTuningClassifier`` and, for network options, one argument of
``FineTuneNet``: the estimator forwards every name of
``NET_PARAMETER_CONSTRAINTS`` to the net, and ``pretrain_backbone``
forwards everything. No torch import here (the estimator module stays cheap
to import).
"""

import numbers
import os
from collections.abc import Mapping

from ..utils._options import (
    AMP,
    COMBINES,
    INTERPOLATIONS,
    METHODS,
    OPTIMIZERS,
    POOLS,
    PROJECTIONS,
    Check,
    Interval,
    Options,
)

__all__ = [
    "AUTO_BLOCK_TOLERANCE",
    "NET_PARAMETER_CONSTRAINTS",
    "PARAMETER_CONSTRAINTS",
    "PRETRAIN_DEFAULTS",
    "PRETRAIN_FIXED",
    "ROUTED_PREFIXES",
    "routed_prefix",
]


def _is_block(value):
    return (isinstance(value, str) and value != "auto") or (
        isinstance(value, numbers.Integral) and not isinstance(value, bool)
    )


def _is_block_list(value):
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(map(_is_block, value))


def _is_str_list(value):
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, str) for v in value)
    )


def _is_optimizer_class(value):
    if not isinstance(value, type):
        return False
    import torch

    return issubclass(value, torch.optim.Optimizer)


_BLOCK = Check(
    lambda v: _is_block(v) or (isinstance(v, str) and v == "auto") or _is_block_list(v),
    "an int, a module path, 'auto', or a non-empty list of ints and module paths",
)

#: FineTuneNet's options (the estimator's ``module__*``).
NET_PARAMETER_CONSTRAINTS = {
    "method": [Options(*METHODS)],
    "tuned_block": [None, _BLOCK],
    "last_k": [None, Interval("int", 1)],
    "pretrained": ["boolean"],
    "weights": [None, str, os.PathLike, Mapping],
    "model_kwargs": [None, dict],
    "combine": [Options(*COMBINES)],
    "projection": [Options(*PROJECTIONS)],
    "projection_rank": [None, Options("auto"), Interval("int", 1)],
    "skip_pool": [Options(*POOLS)],
    "skip_norm": ["boolean"],
    "input_size": "no_validation",  # checked by resolve_data_config
    "lora_rank": [Interval("int", 1)],
    "lora_alpha": [None, Interval("real", 0, closed="neither")],
    "lora_dropout": [Interval("real", 0, 1, closed="left")],
    "lora_targets": [
        Check(lambda v: isinstance(v, str), "'auto' or a regular expression"),
        Check(_is_str_list, "a non-empty list of module names"),
    ],
}

#: Every parameter of FineTuningClassifier (``_parameter_constraints``).
PARAMETER_CONSTRAINTS = {
    "model": "no_validation",  # checked by create_backbone
    **NET_PARAMETER_CONSTRAINTS,
    "auto_block_tolerance": [Interval("real", 0, 1)],
    "lr": [Interval("real", 0, closed="neither")],
    "optimizer": [
        Options(*OPTIMIZERS),
        Check(_is_optimizer_class, "a torch.optim.Optimizer subclass"),
    ],
    "weight_decay": [Interval("real", 0)],
    "momentum": [Interval("real", 0)],
    "max_epochs": [Interval("int", 0)],
    "batch_size": [Interval("int", 1)],
    "augment": [None, "callable"],
    "cache_prefix": [Options("auto", True, False)],
    "cache_inputs": [Options("auto", True, False), Interval("int", 0)],
    "validation_fraction": [None, Interval("real", 0, 1, closed="neither")],
    "patience": [None, Interval("int", 1)],
    "mean": "no_validation",  # checked by resolve_data_config
    "std": "no_validation",
    "crop_pct": [None, Interval("real", 0, 1, closed="right")],
    "interpolation": [None, Options(*INTERPOLATIONS)],
    "device": "no_validation",  # checked by resolve_device
    "amp": [Options(*AMP)],
    "num_workers": [Interval("int", 0)],
    "checkpoint_dir": [None, str, os.PathLike],
    "save_checkpoints": ["boolean"],
    "resume": ["boolean"],
    "on_epoch_end": [None, "callable"],
    "compute_train_nc1": ["boolean"],
    "callbacks": [None, list, tuple],
    "random_state": ["random_state"],
    "verbose": ["boolean", Interval("int", 0)],
}

#: skorch-style routed parameters: ``<prefix>__<name>`` reaches the net.
ROUTED_PREFIXES = ("optimizer", "criterion", "iterator_train", "iterator_valid", "callbacks")


def routed_prefix(name):
    """The routing prefix of ``name`` (``"optimizer"`` for ``optimizer__betas``), or None."""
    head, sep, tail = name.partition("__")
    if sep and tail and head in ROUTED_PREFIXES:
        return head
    return None


#: Default threshold of the ``tuned_block="auto"`` rule (share of the total
#: drop of log10 NC1; ``FineTuningClassifier(auto_block_tolerance=...)``).
AUTO_BLOCK_TOLERANCE = 0.1

#: pretrain_backbone's defaults where they differ from FineTuningClassifier's.
PRETRAIN_DEFAULTS = {"max_epochs": 30, "weight_decay": 5e-4, "batch_size": 64}
#: What pretraining is: full fine-tuning, checkpointed, without a prefix cache.
PRETRAIN_FIXED = {"method": "full-ft", "save_checkpoints": True, "cache_prefix": False}

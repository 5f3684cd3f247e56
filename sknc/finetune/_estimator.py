"""The scikit-learn estimator of :mod:`sknc.finetune`.

Contents
--------
FineTuningClassifier(model, method="scl-ft", tuned_block=None, ...)
    Linear probe, Layer FT, SCL-FT (Li et al. 2024) and full fine-tuning of a
    timm model or any ``torch.nn.Module`` as one scikit-learn classifier whose
    ``fit`` builds and trains a skorch net (``net_``).

torch and skorch are imported inside the methods, so importing this module is
cheap.
"""

import copy
import difflib
import functools
import inspect
import os
import re
import tempfile
import time
import warnings
from types import SimpleNamespace

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ..utils._options import CACHEABLE_METHODS, TUNED_METHODS, amp_dtype, validate_params
from ..utils._warnings import CacheWarning, warn_external
from ._params import (
    AUTO_BLOCK_TOLERANCE,
    NET_PARAMETER_CONSTRAINTS,
    PARAMETER_CONSTRAINTS,
    ROUTED_PREFIXES,
    routed_prefix,
)

__all__ = ["FineTuningClassifier"]

# "auto" prefix caching is skipped (with a warning) above this many bytes.
AUTO_CACHE_MAX_BYTES = 4 * 1024**3


def _noop(*args, **kwargs):
    return None


_CHECKPOINT_RE = re.compile(r"epoch_(\d{3,})\.safetensors")


def _is_fitted_name(name):
    """Attributes a fit sets: ``name_`` (scikit-learn's rule) and ``_n_features_out``."""
    return (name.endswith("_") and not name.startswith("__")) or name == "_n_features_out"


def _check_routed_names(caller, kwargs):
    """Refuse keyword arguments that are neither parameters nor routed (``prefix__name``)."""
    for key in kwargs:
        if routed_prefix(key) is not None and not key.endswith("_"):
            continue
        message = f"{caller} got an unexpected keyword argument {key!r}"
        head = key.partition("__")[0]
        if head == "module":
            message += (
                "; the network's options are parameters of their own: pass "
                f"{key.partition('__')[2]}=... instead"
            )
        else:
            close = difflib.get_close_matches(head, ROUTED_PREFIXES, n=1)
            hint = f" (did you mean {close[0]}__...?)" if close and "__" in key else ""
            message += (
                f"{hint}; routed arguments are <prefix>__<name> with prefix one of "
                f"{ROUTED_PREFIXES}"
            )
        raise TypeError(message + ".")


@functools.lru_cache(maxsize=64)
def _init_arguments(cls):
    """Keyword names ``cls(...)`` accepts, or None when it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


class FineTuningClassifier(
    ClassNamePrefixFeaturesOutMixin, ClassifierMixin, TransformerMixin, BaseEstimator
):
    """Fine-tune a pretrained backbone: linear probe, Layer FT, SCL-FT or full FT.

    One estimator for the four methods compared by Li et al. (*Understanding
    and Improving Transfer Learning of Deep Models via Neural Collapse*, TMLR
    2024), so that ``GridSearchCV`` over ``method`` compares them:

    - ``"linear-probe"``: the whole backbone is frozen; a new linear head is
      trained on its penultimate (pre-logits) features.
    - ``"layer-ft"``: one block (``tuned_block``) and the head are trained;
      everything else is frozen. Blocks after the tuned one still run (they
      are frozen, not removed).
    - ``"scl-ft"``: Layer FT plus a skip connection: the tuned block's output
      is pooled, projected and combined with the penultimate features before
      the head (see *Skip connection* below).
    - ``"full-ft"``: everything is trained. With ``pretrained=False`` and
      ``save_checkpoints=True`` this is source pre-training (see
      :func:`~sknc.finetune.pretrain_backbone`).

    and the parameter-efficient baselines of the field, so that the
    comparison is made with the same budget, data and head:

    - ``"lora"``: low-rank adapters (Hu et al. 2022) on the backbone's
      ``nn.Linear`` / ``nn.Conv2d`` layers through Hugging Face ``peft``
      (the optional extra ``pip install 'sknc[peft]'``), plus the head.
    - ``"bitfit"``: every bias of the backbone (Zaken et al. 2022) plus the
      head.
    - ``"norm"``: the affine parameters of every normalisation layer
      (BatchNorm, LayerNorm, GroupNorm, ...) plus the head.
    - ``"layer-ft"`` / ``"scl-ft"`` with several blocks (a list in
      ``tuned_block``, or the last ``last_k`` blocks), and with the block
      chosen from the collapse of the downstream data
      (``tuned_block="auto"``).

    ``fit`` builds a skorch ``NeuralNetClassifier`` (``net_``) from the
    module *class* and these parameters, so every fit (and every ``clone``)
    starts from the pretrained weights, never from an earlier fit.

    Parameters
    ----------
    model : str, torch.nn.Module, nn.Module subclass or callable
        A timm model name, a module (deep-copied, never modified) or a module
        class / factory, as for :class:`sknc.features.BackboneFeatures`. Its
        classifier is replaced by a new head with one output per class. A
        Hugging Face text encoder (model directory, hub id, or a
        :class:`~sknc.features.TextFeatures`) fine-tunes on strings with
        every method, prefix caching and checkpoints (see the text page of
        the user guide).
    method : {"linear-probe", "layer-ft", "scl-ft", "full-ft", "lora", "bitfit", "norm"}, \
default="scl-ft"
        What to train (see above).
    tuned_block : int, str, list of int/str, "auto" or None, default=None
        The block(s) Layer FT / SCL-FT train (ignored by the other methods, so
        a grid over ``method`` may keep it fixed). A list tunes several
        blocks (SCL-FT's skip branch reads the first of them in forward
        order). ``"auto"`` chooses one block from the layer-wise collapse of
        the training data: one forward pass taps the pooled output of every
        block of :func:`~sknc.finetune._modules.candidate_blocks`, measures
        its NC1 (``block_nc_``) and applies
        :func:`~sknc.finetune._modules.select_block_by_collapse`: the first
        block after which NC1 stops improving (see *Notes*). One block is an
        index into
        ``sknc.features.list_layers(model)`` (for ResNets these are
        whole stages, e.g. ``3`` is ``"layer3"``) or any module path, e.g.
        ``"layer3.5"`` (one bottleneck) or ``"blocks.8"``. An unknown name
        raises a ``ValueError`` listing the valid blocks. None picks a
        default: the last block of the penultimate stage for staged
        networks (``"layer3.5"`` for ResNet-50, ``"layer3.1"`` for ResNet-18,
        ``"stages.2.blocks.<last>"`` for ConvNeXt), and the block at two
        thirds of the depth for flat block lists (``"blocks.7"`` for ViT-B,
        whose blocks are ``blocks.0`` ... ``blocks.11``). The resolved path is
        ``tuned_block_``.
    last_k : int or None, default=None
        Layer FT / SCL-FT: tune the last ``last_k`` blocks of
        :func:`~sknc.finetune._modules.candidate_blocks` (``layer3.1``,
        ``layer4.0``, ``layer4.1`` for ``last_k=3`` on a ResNet-18);
        ``tuned_block`` must then be None.
    auto_block_tolerance : float in [0, 1], default=0.1
        The threshold of the ``tuned_block="auto"`` rule (see *Notes*): a
        block is chosen once no later block improves the collapse reached
        before it by more than this share of the total drop of
        ``log10 NC1``. Smaller values choose later blocks (0: the block
        after which no block improves at all), larger ones earlier blocks
        (1: always the second candidate block). Ignored unless
        ``tuned_block="auto"``.
    lora_rank : int, default=8
        ``method="lora"``: the rank ``r`` of every adapter.
    lora_alpha : float or None, default=None
        ``method="lora"``: the update is scaled by ``lora_alpha / lora_rank``;
        None uses the rank (scale 1).
    lora_dropout : float in [0, 1), default=0.0
        ``method="lora"``: dropout on the adapters' input during training.
    lora_targets : "auto", str or list of str, default="auto"
        ``method="lora"``: the adapted layers. ``"auto"``: the attention
        projections of transformers (timm's fused ``qkv``; else query and
        value projections), else every dense (``groups=1``) ``nn.Conv2d``
        of a CNN (all block convolutions, depthwise ones left out); for a
        text encoder every ``nn.Linear`` of its transformer layers
        (``query``, ``key``, ``value`` and the ``dense`` layers of BERT). A list
        of module paths or name suffixes (``["qkv", "proj"]``), or a regular
        expression matched against the full module paths. The adapted
        paths are ``lora_targets_``.
    pretrained : bool, default=False
        Load timm's hub weights (timm names only; fails fast offline).
        Without them (and without ``weights``) training starts from timm's
        random initialisation, in which the last BatchNorm of every residual
        block is zero (``zero_init_last=True``). That suits training from
        scratch (``"full-ft"``, :func:`~sknc.finetune.pretrain_backbone`),
        but a frozen random backbone then barely uses its blocks, so
        ``method="linear-probe"`` warns in that case (see
        :class:`~sknc.features.BackboneFeatures`, *Random weights*).
    weights : str, path-like, mapping or None, default=None
        A local weight file (``.safetensors``, ``.pth``) or state dict loaded
        into the backbone; the classifier head may mismatch.
    model_kwargs : dict or None, default=None
        Extra arguments for ``timm.create_model`` or the factory (e.g.
        ``{"img_size": 32}``, ``{"drop_path_rate": 0.1}``).
    combine : {"add", "concat"}, default="add"
        SCL-FT only: ``z = f + P(g)`` or ``z = [f, P(g)]``, where ``f`` are
        the penultimate features and ``g`` the pooled tuned-block output.
    projection : {"auto", "linear", "identity"}, default="auto"
        SCL-FT only: the map ``P``. ``"auto"`` is ``"linear"`` for
        ``combine="add"`` and ``"identity"`` for ``"concat"``.
    projection_rank : "auto", int or None, default="auto"
        Rank of a ``"linear"`` projection from ``C`` (block width) to ``D``
        (penultimate width): None is a dense ``nn.Linear(C, D)``; an int a
        factorised ``up(down(g))``; ``"auto"`` uses rank ``min(C, D) // 4``
        (when cheaper than dense). A dense 1024 -> 2048 map for a ResNet-50
        ``layer3`` block has as many parameters as two bottlenecks; rank
        256 keeps SCL-FT below 10% of the network's parameters.
    skip_pool : {"auto", "avg", "token", "max"}, default="auto"
        SCL-FT only: pooling of the block output; ``"auto"`` is the global
        average of feature maps and the class token of ViTs (token mean
        for token models without one).
    skip_norm : bool, default=False
        SCL-FT only: a ``LayerNorm`` on the pooled block output before the
        projection.
    lr : float, default=1e-3
        Learning rate (``optimizer__lr`` overrides it, as in skorch).
    optimizer : {"adamw", "adam", "sgd"} or torch optimizer class, default="adamw"
        Only trainable parameters are given to it. Any other argument of
        the optimizer is routed: ``optimizer__betas=(0.9, 0.99)``,
        ``optimizer__nesterov=True`` (see *Routed parameters* below).
    weight_decay : float, default=0.0
        The optimizer's weight decay (``optimizer__weight_decay`` overrides
        it).
    momentum : float, default=0.9
        Used with ``optimizer="sgd"`` only (``optimizer__momentum``
        overrides it).
    max_epochs : int, default=10
        Epochs (0 builds the network without training it).
    batch_size : int, default=32
        Batch size for training and prediction.
    augment : callable or None, default=None
        Training-time augmentation: called with each training image as a
        float CHW tensor in [0, 1] at its original size, returning a CHW
        tensor (e.g. ``torchvision.transforms.v2.RandomHorizontalFlip()``);
        the result is resized/cropped to the model's input size if needed and
        normalised. Prediction never augments.
    cache_prefix : {"auto", True, False}, default="auto"
        Cache the frozen prefix. Without augmentation the part of the network
        before the tuned block is a fixed function of the image, so its
        outputs are computed once (one no-grad pass over ``X`` before
        training) and every epoch runs only the tuned block onward; for a
        linear probe the cache is the penultimate features and training is a
        logistic regression on them. Valid for ``"linear-probe"``,
        ``"layer-ft"`` and ``"scl-ft"`` without ``augment``. The backbone is
        split at the tuned block's input with ``torch.fx`` (checked on a
        sample batch). ``"auto"`` caches when valid and the split works and
        the cache stays below 4 GiB, otherwise trains without caching (with a
        warning when the split or the size is the reason); ``True`` raises
        instead. Cached activations are float32 (bfloat16/float16 under
        ``amp``) on the CPU. The training trajectory equals the uncached one.
    cache_inputs : "auto", bool or int, default="auto"
        Keep the preprocessed training images in memory. Without
        ``augment`` the preprocessing (decoding, resizing, normalisation) is a
        fixed function of each image, so when training runs on images (no
        prefix cache) every image is preprocessed once, before the first
        epoch, and every epoch reads the stored float32 tensors, which are
        the same tensors bit for bit (the training trajectory is unchanged).
        The bound is on their memory (``4 * C * H * W`` bytes per image at
        the model's input size): ``"auto"`` keeps up to 1 GiB, an int up to
        that many bytes, True all images; the first images that fit are
        kept and the rest are preprocessed at every epoch as without the
        cache. False (or 0) preprocesses every image at every epoch. Ignored
        with ``augment`` and for text. The stored tensors are dropped at the
        end of ``fit`` (never pickled or cloned); ``n_inputs_cached_`` says
        how many images were kept.
    validation_fraction : float or None, default=None
        Hold out this stratified fraction of the training data to report
        ``valid_loss`` / ``valid_acc`` per epoch (None: train on everything,
        as befits few-shot support sets).
    patience : int or None, default=None
        Early stopping: stop after this many epochs without improvement of
        ``valid_loss`` (``train_loss`` without a validation split) and
        restore the best weights.
    input_size : int, (H, W), (C, H, W) or None, default=None
        Model input size (default: the model's data config). Images already
        at this size are used as they are; others are resized and
        centre-cropped like timm's eval transform (also for training, after
        ``augment``).
    mean, std : float, sequence or None, default=None
        Normalisation (default: the model's data config).
    crop_pct : float in (0, 1] or None, default=None
        Centre-crop fraction of that resize: the image is resized so that
        the crop of ``input_size`` is ``crop_pct`` of it (default: the
        model's data config, e.g. 0.875 or 0.95 for timm models). ``1.0``
        keeps the whole field of view of a square image; the same value as
        :class:`~sknc.features.BackboneFeatures` gives the same input
        tensors.
    interpolation : {"bilinear", "bicubic", "nearest"} or None, default=None
        Resize interpolation (default: the model's data config).
    device : str or torch.device, default="auto"
        ``"auto"`` is CUDA when available, else CPU.
    amp : bool or {"float16", "fp16", "bfloat16", "bf16"}, default=False
        Mixed precision (``torch.autocast``) on CUDA, with the meaning it has
        in every sknc estimator: True, ``"float16"`` or ``"fp16"`` is
        float16 (training then scales gradients with a
        ``torch.amp.GradScaler``), ``"bfloat16"`` or ``"bf16"`` bfloat16.
        Ignored, with a warning at fit, on other devices.
    num_workers : int, default=0
        DataLoader worker processes for training
        (``iterator_train__num_workers`` overrides it).
    checkpoint_dir : str, path-like or None, default=None
        Where checkpoints go (with ``save_checkpoints=True``): written
        directly into this directory (created if needed), so their paths are
        known in advance (see *Checkpoints and resuming* below). None: a new
        directory ``sknc-ft-*`` in the system temp directory for each fit.
        A fit refuses a directory that already holds another run's
        checkpoints unless ``resume=True``.
    save_checkpoints : bool, default=False
        Save the backbone as ``epoch_000.safetensors`` (the initial
        weights), ``epoch_001.safetensors`` (after the first epoch), ... in
        the model's own layout: loadable with
        ``sknc.features.BackboneFeatures(model, weights=path)`` or
        ``timm.create_model(model, num_classes=n_classes, checkpoint_path=path)``;
        the trained head is included under the model's classifier name
        except for SCL-FT. Paths in ``checkpoints_``. The state needed to
        resume is kept beside them in ``training_state.pt``.
    resume : bool, default=False
        Continue the run whose checkpoints are in ``checkpoint_dir`` from its
        last complete epoch (needs ``save_checkpoints=True`` and a
        ``checkpoint_dir``); when the directory holds no run yet, start one.
        The network, optimizer, learning-rate schedulers (skorch
        ``LRScheduler`` callbacks), torch's random state and the history are
        restored, so an interrupted and resumed fit ends with the same weights
        as an uninterrupted one with the same ``random_state``. A run on
        other classes or another number of images is refused.
    on_epoch_end : callable or None, default=None
        ``on_epoch_end(estimator, epoch)`` after every epoch (``epoch``
        starts at 1); inside it ``estimator.transform(X)`` gives the current
        head-input features, e.g. to track NC1 or CDNV per epoch. A return
        value other than None is stored in ``history_`` under
        ``"epoch_hook"``.
    compute_train_nc1 : bool, default=True
        After fitting, compute ``train_nc1_`` exactly: one extra no-grad
        forward pass over the training data with the final weights (over
        the cache only, when the prefix is cached; over the stored
        preprocessed images with ``cache_inputs``). For full fine-tuning it
        costs about a quarter to a third of one training epoch, so a few
        percent of a fit of ten epochs (``train_nc1_time_`` reports it,
        ``bench_finetune.py --overhead`` measures it); pass False to skip
        it. It is on by default because ``train_nc1_`` is what the demo,
        the experiment protocols and the reproduction scripts record. It is not
        accumulated during the last epoch instead because those features
        come from weights that change batch by batch and from train-mode
        BatchNorm/dropout, so they are not the fitted network's features.
    callbacks : list of skorch callbacks or (name, callback) pairs, default=None
        Extra skorch callbacks (copied for each fit), e.g.
        ``skorch.callbacks.LRScheduler(policy="CosineAnnealingLR", T_max=10)``.
    random_state : int, RandomState instance or None, default=None
        Seeds the random initialisation of non-pretrained weights, of the
        head and skip branch, data shuffling, the validation split and
        augmentation. The caller's torch random state is left untouched.
        A seeded fit is deterministic on the CPU (see *Reproducibility*).
    verbose : int, default=0
        0 is silent; 1 prints skorch's per-epoch table and the cache size; 2
        adds per-batch progress bars.
    **kwargs : routed parameters
        skorch-style ``<prefix>__<name>=value`` arguments handed to what
        the fit builds, with the same names as in ``skorch.NeuralNet``:

        - ``optimizer__<name>``: the optimizer (``optimizer__betas``,
          ``optimizer__eps``, ``optimizer__nesterov``, ``optimizer__lr``,
          skorch's ``optimizer__param_groups``);
        - ``criterion__<name>``: the ``torch.nn.CrossEntropyLoss``
          (``criterion__label_smoothing=0.1``);
        - ``iterator_train__<name>`` / ``iterator_valid__<name>``: the
          ``torch.utils.data.DataLoader`` of training / of the validation
          split (``iterator_train__num_workers=2``,
          ``iterator_train__persistent_workers=True``);
        - ``callbacks__<callback>__<name>``: a parameter of one of the fit's
          skorch callbacks, named as in ``net_.callbacks_``
          (``callbacks__early_stopping__threshold=1e-3``), or
          ``callbacks__<callback>=None`` to turn one off
          (``callbacks__print_log=None``).

        They are parameters like any other (``get_params``,
        ``set_params``, ``clone``, pickling, ``GridSearchCV`` over
        ``optimizer__lr`` or ``optimizer__betas``) and override the
        defaults the flat parameters set. Their names are checked at
        ``fit`` against what receives them (an unknown name raises a
        ``ValueError`` naming it and listing the valid ones); a keyword
        that is neither a parameter nor routed raises a ``TypeError`` at
        construction. The network's own options are the flat parameters
        above (there is no ``module__*`` routing).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (any kind; encoded internally as 0 .. K-1).
    net_ : skorch.NeuralNetClassifier
        The trained net; ``net_.module_`` is the
        :class:`~sknc.finetune.FineTuneNet`.
    history_ : skorch.History
        Per-epoch losses, timings, checkpoints, hook values.
    n_iter_ : int
        Epochs run.
    tuned_block_ : str, list of str or None
        Module path of the tuned block (Layer FT / SCL-FT); a list, in
        forward order, when several blocks are tuned.
    block_nc_ : dict or None
        With ``tuned_block="auto"``: ``{block: NC1}`` of the pooled block
        outputs on the training data, in forward order, from which
        ``tuned_block_`` was chosen; None otherwise.
    lora_targets_ : list of str or None
        The layers LoRA adapted (``method="lora"``).
    seconds_per_epoch_ : float or None
        Median wall time of the training epochs (skorch's ``dur``; after
        the prefix cache was built). None when no epoch ran.
    n_params_ : int
        Parameters of the fine-tuned network (backbone without its old
        classifier, skip branch, new head).
    n_trainable_params_ : int
        Parameters that are trained (head, skip branch and LoRA adapters
        included).
    trainable_fraction_ : float
        ``n_trainable_params_ / n_params_``.
    train_nc1_ : float
        NC1 (:func:`sknc.metrics.nc1`) of the head-input features of the
        training data after fitting (NaN if it cannot be computed, e.g.
        when all class means coincide; None with ``compute_train_nc1=False``).
    train_nc1_time_ : float or None
        Seconds the training-NC1 pass took (part of ``fit_time_``; None with
        ``compute_train_nc1=False``): the cost of ``train_nc1_``.
    prefix_cached_ : bool
        Whether training ran on cached prefix activations.
    n_inputs_cached_ : int
        How many training images were kept preprocessed in memory
        (``cache_inputs``; 0 with a prefix cache, with ``augment``, or when
        caching is off).
    data_config_ : dict
        The preprocessing: ``input_size``, ``mean``, ``std``, ``crop_pct``,
        ``interpolation``, ``crop_mode`` (as ``BackboneFeatures.data_config_``).
    device_ : torch.device
        Where the fitted network is: the resolved ``device`` after ``fit``.
        It follows ``net_.device``, so after a CUDA-fitted estimator is
        unpickled on a machine without CUDA (skorch then loads the network
        on the CPU) it is the CPU.
    checkpoint_dir_ : str or None
        The directory of this fit's checkpoints.
    checkpoints_ : list of str
        Checkpoint paths in epoch order: ``checkpoints_[e]`` holds the
        weights after epoch ``e``, ``checkpoints_[0]`` the initial weights
        (empty without ``save_checkpoints``).
    resumed_from_ : int
        The epoch this fit resumed from (0 when it started afresh).
    fit_time_ : float
        Seconds spent in ``fit``.

    See Also
    --------
    sknc.finetune.pretrain_backbone : Source pre-training with checkpoints.
    sknc.features.BackboneFeatures : Frozen features for any scikit-learn model.

    Notes
    -----
    Choices the paper leaves open, as implemented here:

    * **Frozen parts are fixed functions.** Frozen parameters have
      ``requires_grad=False`` and are not given to the optimizer; every
      frozen module stays in eval mode during training (BatchNorm keeps its
      running statistics, dropout and drop-path are off; skorch's ``Freezer``
      alone would let BatchNorm statistics drift). The tuned block trains in
      train mode, so its own BatchNorm layers use batch statistics and update
      their running statistics. The frozen prefix runs under
      ``torch.no_grad()``.
    * **Skip connection.** The tuned block's output is pooled (``skip_pool``),
      optionally normalised (``skip_norm``), mapped by ``P`` and combined with
      the penultimate features ``f``. With ``combine="add"``, ``P`` is
      zero-initialised (its last factor, when low-rank), so at initialisation
      SCL-FT computes exactly the logits of Layer FT. With ``"concat"``, the
      head's extra input columns are zero-initialised instead, with the same
      effect. The new head is initialised identically for every method (same
      ``random_state``).
    * ``transform(X)`` returns the head-input features ``z`` (penultimate
      features, or the combined features for SCL-FT), the features whose
      collapse ``train_nc1_`` measures.
    * **Parameter-efficient baselines.** For ``"lora"``, ``"bitfit"`` and
      ``"norm"`` the backbone stays in eval mode while training, like every
      frozen part: BatchNorm layers keep their pretrained running statistics
      (``"norm"`` trains their scale and shift only), dropout and drop-path
      are off (LoRA's own dropout is on). Their trainable parameters sit
      throughout the network, so prefix caching does not apply. LoRA's
      ``lora_B`` starts at zero: at initialisation the network computes the
      linear probe's logits. ``net_.module_.merge_lora()`` folds the updates
      into the base weights (same predictions, no adapter overhead);
      checkpoints store the merged weights in the model's own layout.
    * **Tuned block chosen by collapse** (``tuned_block="auto"``). Li et al.
      find that the downstream features of a pretrained network collapse
      progressively with depth, and that tuning the block where that
      progress stalls, with a skip connection to the head, gets the most
      out of one block. The rule implemented (our reading of that
      guideline): with ``v_i = log10 NC1`` of block ``i`` and
      ``D = v_0 - min v``, tune the first block ``i >= 1`` such that
      ``v_{i-1} - min_{j >= i} v_j <= t D`` with ``t =
      auto_block_tolerance`` (no later block improves the collapse reached
      before block ``i`` by more than the share ``t``, by default 10%, of
      the total drop), or the last block when collapse keeps improving to
      the end.
      NC1 is measured on all of ``X`` (the validation split included).

    **Interrupts and failures.** Ctrl-C (or any ``KeyboardInterrupt``)
    during ``fit`` stops training and propagates to the caller, so scripts
    and ``GridSearchCV`` stop too (skorch alone would swallow it and return
    a half-trained net); only a skorch callback's request to stop early
    (``EarlyStopping`` raising in ``on_epoch_end``) ends training quietly.
    A ``fit`` that raises, interrupted or not, leaves the estimator as it was
    before the call (an earlier fit stays usable, an unfitted estimator stays
    unfitted); checkpoints written so far are kept, and the interrupt's
    message says where.

    **Checkpoints and resuming.** With ``save_checkpoints=True`` and
    ``checkpoint_dir="run"`` a fit writes ``run/epoch_000.safetensors``
    (initial weights), ``run/epoch_001.safetensors``, ... and
    ``run/training_state.pt`` (network, optimizer, scheduler and random
    states, history; replaced atomically after every epoch, read with
    ``torch.load(weights_only=True)``). After an interruption the same call
    with ``resume=True`` continues from the last complete epoch. Early
    stopping's patience counter restarts on resuming.

    **Reproducibility.** On the CPU a fit with an int ``random_state`` is
    deterministic: two fits give identical weights (torch's random state is
    seeded and forked, the data order, head initialisation, validation split
    and DataLoader worker seeds all derive from it). Augmentations must draw
    from torch's random generator (torchvision transforms do), not from
    NumPy's global one. On CUDA, cuDNN and atomic-add kernels make runs
    differ in the last bits unless ``torch.use_deterministic_algorithms(True)``
    is set (with ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment) and
    ``torch.backends.cudnn.benchmark`` is False; sknc does not change these
    global settings for you.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.finetune import FineTuningClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog", "emu"] * 4)
    >>> clf = FineTuningClassifier("resnet10t", method="scl-ft", max_epochs=2,
    ...                            input_size=32, random_state=0).fit(X, y)
    >>> clf.tuned_block_, clf.predict(X[:3]).shape, clf.transform(X[:3]).shape
    ('layer3.0', (3,), (3, 512))
    >>> bool(clf.trainable_fraction_ < 0.25), clf.prefix_cached_
    (True, True)

    Optimizer, loss, data-loader and callback arguments are routed the
    skorch way:

    >>> probe = FineTuningClassifier("resnet10t", method="linear-probe", max_epochs=1,
    ...                              input_size=32, optimizer__betas=(0.8, 0.99),
    ...                              criterion__label_smoothing=0.1, random_state=0)
    >>> probe.get_params()["optimizer__betas"]
    (0.8, 0.99)
    >>> probe.fit(X, y).net_.optimizer_.param_groups[0]["betas"]
    (0.8, 0.99)
    """

    _parameter_constraints: dict = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        model,
        method="scl-ft",
        tuned_block=None,
        *,
        pretrained=False,
        weights=None,
        model_kwargs=None,
        combine="add",
        projection="auto",
        projection_rank="auto",
        skip_pool="auto",
        skip_norm=False,
        lr=1e-3,
        optimizer="adamw",
        weight_decay=0.0,
        momentum=0.9,
        max_epochs=10,
        batch_size=32,
        augment=None,
        cache_prefix="auto",
        cache_inputs="auto",
        validation_fraction=None,
        patience=None,
        last_k=None,
        auto_block_tolerance=AUTO_BLOCK_TOLERANCE,
        lora_rank=8,
        lora_alpha=None,
        lora_dropout=0.0,
        lora_targets="auto",
        input_size=None,
        mean=None,
        std=None,
        crop_pct=None,
        interpolation=None,
        device="auto",
        amp=False,
        num_workers=0,
        checkpoint_dir=None,
        save_checkpoints=False,
        resume=False,
        on_epoch_end=None,
        compute_train_nc1=True,
        callbacks=None,
        random_state=None,
        verbose=0,
        **kwargs,
    ):
        # long: scikit-learn's convention, one signature line and one stored attribute
        # per parameter (40 of them), and the check of the routed names (skorch style)
        _check_routed_names(type(self).__name__, kwargs)
        self.model = model
        self.method = method
        self.tuned_block = tuned_block
        self.pretrained = pretrained
        self.weights = weights
        self.model_kwargs = model_kwargs
        self.combine = combine
        self.projection = projection
        self.projection_rank = projection_rank
        self.skip_pool = skip_pool
        self.skip_norm = skip_norm
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.augment = augment
        self.cache_prefix = cache_prefix
        self.cache_inputs = cache_inputs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.last_k = last_k
        self.auto_block_tolerance = auto_block_tolerance
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_targets = lora_targets
        self.input_size = input_size
        self.mean = mean
        self.std = std
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self.device = device
        self.amp = amp
        self.num_workers = num_workers
        self.checkpoint_dir = checkpoint_dir
        self.save_checkpoints = save_checkpoints
        self.resume = resume
        self.on_epoch_end = on_epoch_end
        self.compute_train_nc1 = compute_train_nc1
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose
        for key, value in kwargs.items():  # routed: optimizer__betas=..., ...
            setattr(self, key, value)

    # ------------------------------------------------------------------
    # scikit-learn plumbing
    # ------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.target_tags.required = True
        tags.classifier_tags.poor_score = True
        tags.transformer_tags.preserves_dtype = []  # transform always gives float32
        return tags

    # ------------------------------------------------------------------
    # parameters: one constraint table, skorch-style routed arguments
    # ------------------------------------------------------------------
    def get_params(self, deep=True):
        """Parameters of this estimator, routed ``optimizer__*`` etc. included.

        Parameters
        ----------
        deep : bool, default=True
            As for any scikit-learn estimator.

        Returns
        -------
        params : dict
        """
        params = super().get_params(deep=deep)
        params.update(self._routed_params())
        return params

    def set_params(self, **params):
        """Set parameters, including routed ones (``optimizer__betas=...``).

        A routed name (``optimizer__*``, ``criterion__*``,
        ``iterator_train__*``, ``iterator_valid__*``, ``callbacks__*``) may
        be set even when the estimator was built without it, so that
        ``GridSearchCV`` can search ``optimizer__lr`` or
        ``optimizer__betas``. Its sub-name is checked at ``fit``.

        Returns
        -------
        self : FineTuningClassifier
        """
        routed = {k: v for k, v in params.items() if routed_prefix(k) is not None}
        _check_routed_names(type(self).__name__, routed)
        rest = {k: v for k, v in params.items() if k not in routed}
        if rest:
            super().set_params(**rest)
        for key, value in routed.items():
            setattr(self, key, value)
        return self

    def _routed_params(self, prefixes=ROUTED_PREFIXES):
        return {
            key: value
            for key, value in sorted(vars(self).items())
            if routed_prefix(key) in prefixes
        }

    def _check_params(self):
        """Validate every parameter (one table) and the combinations of them."""
        validate_params(
            self._parameter_constraints, self.get_params(deep=False), type(self).__name__
        )
        tb = self.tuned_block
        if self.last_k is not None and tb is not None:
            raise ValueError(
                f"Pass either tuned_block or last_k, not both (got tuned_block={tb!r}, "
                f"last_k={self.last_k!r})."
            )
        if self.resume and not (self.save_checkpoints and self.checkpoint_dir is not None):
            raise ValueError(
                "resume=True continues the run saved in checkpoint_dir: it needs "
                "save_checkpoints=True and a checkpoint_dir."
            )
        if self.method == "lora":
            from ._peft import import_peft

            import_peft()
        self._check_routed(self._optimizer_args()[0])

    def _check_routed(self, optimizer_cls):
        """Check the sub-names of routed arguments against what receives them."""
        import torch
        from torch.utils.data import DataLoader

        receivers = {
            "optimizer": (optimizer_cls, {"params"}),
            "criterion": (torch.nn.CrossEntropyLoss, set()),
            "iterator_train": (DataLoader, {"dataset"}),
            "iterator_valid": (DataLoader, {"dataset"}),
        }
        for key in self._routed_params(tuple(receivers)):
            prefix = routed_prefix(key)
            name = key[len(prefix) + 2 :]
            if prefix == "optimizer" and name == "param_groups":  # skorch's groups
                continue
            receiver, reserved = receivers[prefix]
            accepted = _init_arguments(receiver)
            if accepted is not None and (name not in accepted or name in reserved):
                valid = sorted(accepted - reserved) + (["param_groups"] * (prefix == "optimizer"))
                raise ValueError(
                    f"{key}: {receiver.__name__} has no argument {name!r}; "
                    f"{prefix}__ takes one of {valid}."
                )

    @staticmethod
    def _check_routed_callbacks(net, routed):
        """``callbacks__<name>...`` must name one of the net's callbacks."""
        names = [name for name, _ in net.get_default_callbacks()]
        names += [name for name, _ in net.callbacks]
        for key in routed:
            if routed_prefix(key) != "callbacks":
                continue
            name = key[len("callbacks__") :].split("__", 1)[0]
            if name not in names:
                raise ValueError(
                    f"{key}: this fit has no callback named {name!r}; its callbacks are {names}."
                )

    def _auto_block(self, X, y_enc, seed, device):
        """``(block, block_nc)`` for ``tuned_block="auto"`` (one pass over ``X``)."""
        import torch

        from ..features import create_backbone, list_layers, resolve_data_config, strip_classifier
        from ..features._images import check_images, iter_batches
        from ._modules import candidate_blocks, layerwise_nc1, select_block_by_collapse

        if np.bincount(y_enc).max() < 2:
            raise ValueError(
                "tuned_block='auto' needs at least one class with two or more training "
                "images: with one image per class the within-class scatter, and so NC1, is "
                "zero at every block and cannot rank them. Pass tuned_block explicitly."
            )
        with torch.random.fork_rng(devices=[]):
            backbone = create_backbone(
                self.model,
                pretrained=self.pretrained,
                weights=self.weights,
                model_kwargs=self.model_kwargs,
                seed=seed,
            )
        blocks = candidate_blocks(backbone, list_layers(backbone))
        strip_classifier(backbone)
        backbone.to(device).eval()
        config = resolve_data_config(
            backbone,
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
        )
        source = check_images(X, n_channels=config["input_size"][0])
        batches = (
            b
            for _, _, b in iter_batches(
                source, config, batch_size=max(self.batch_size, 64), device=device
            )
        )
        block_nc = layerwise_nc1(backbone, batches, y_enc, blocks, pool=self.skip_pool)
        block = select_block_by_collapse(block_nc, tolerance=self.auto_block_tolerance)
        return block, block_nc

    def _optimizer_args(self):
        """``(optimizer class, optimizer__* keyword arguments of the net)``.

        ``weight_decay`` (and ``momentum`` for SGD) are defaults that routed
        ``optimizer__*`` arguments override.
        """
        import torch

        if isinstance(self.optimizer, str):
            cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[
                self.optimizer
            ]
        else:
            cls = self.optimizer
        kwargs = {"optimizer__weight_decay": float(self.weight_decay)}
        if cls is torch.optim.SGD:
            kwargs["optimizer__momentum"] = float(self.momentum)
        kwargs.update(self._routed_params(("optimizer",)))
        return cls, kwargs

    def _amp_dtype(self, device, what=None):
        """The autocast dtype name on ``device`` (see :func:`~sknc.utils._options.amp_dtype`)."""
        return amp_dtype(self.amp, device, what=what)

    def _callbacks(self, checkpoint_dir, fingerprint=None, state=None):
        from skorch.callbacks import Callback, EarlyStopping, ProgressBar

        from ._callbacks import BackboneCheckpoint, EpochHook, TrainingState

        cbs = []
        if self.patience is not None:
            monitor = "valid_loss" if self.validation_fraction else "train_loss"
            cbs.append(
                (
                    "early_stopping",
                    EarlyStopping(
                        monitor=monitor,
                        patience=self.patience,
                        load_best=True,
                        sink=print if self.verbose else _noop,
                    ),
                )
            )
        if checkpoint_dir is not None:
            cbs.append(("backbone_checkpoint", BackboneCheckpoint(checkpoint_dir)))
        if self.on_epoch_end is not None:
            cbs.append(("epoch_hook", EpochHook(self.on_epoch_end, self)))
        if self.verbose >= 2:
            cbs.append(("progress_bar", ProgressBar()))
        for i, item in enumerate(self.callbacks or ()):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                name, cb = item
            else:
                name, cb = None, item
            if not (
                isinstance(cb, Callback) or (isinstance(cb, type) and issubclass(cb, Callback))
            ):
                raise ValueError(f"callbacks[{i}] is not a skorch callback: {item!r}.")
            cb = copy.deepcopy(cb)
            cbs.append((name or f"user_callback_{i}", cb))
        if checkpoint_dir is not None:
            # Last, so that the saved state holds everything of its epoch.
            schedulers = None if state is None else state["schedulers"]
            cbs.append(("training_state", TrainingState(checkpoint_dir, fingerprint, schedulers)))
        return cbs

    # ------------------------------------------------------------------
    # fit
    # ------------------------------------------------------------------
    def _check_y(self, y, n_samples):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if len(y) != n_samples:
            raise ValueError(f"X has {n_samples} images but y has {len(y)} labels.")
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                "Fine-tuning needs at least 2 classes; y has only one class: "
                f"{encoder.classes_.tolist()}."
            )
        return encoder.classes_, encoder.transform(y).astype(np.int64)

    @staticmethod
    def _n_images(X):
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2 and getattr(X, "dtype", None) != object:  # noqa: E721 (numpy dtype equality, not type identity)
            what = "sparse matrix" if hasattr(X, "tocsr") else "array"
            raise ValueError(
                f"Got a 2-D {what} of shape {tuple(shape)}: {FineTuningClassifier.__name__} "
                "takes images (N, H, W), (N, H, W, C) or (N, C, H, W), or lists of file paths "
                "or PIL images, not tabular features."
            )
        try:
            return len(X)
        except TypeError as exc:
            raise ValueError(f"X must be a collection of images, got {type(X).__name__}.") from exc

    def fit(self, X, y):
        """Fine-tune on images ``X`` with labels ``y``.

        A fit that raises (bad input, an error in a callback, Ctrl-C) leaves
        the estimator as it was before the call; a ``KeyboardInterrupt``
        propagates with a note saying how far training got and where its
        checkpoints are.

        Parameters
        ----------
        X : image collection
            Arrays (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or float in
            [0, 1]; lists/arrays of file paths (read lazily); lists of PIL
            images or arrays.
        y : array-like of shape (n_samples,)
            Class labels of any kind (at least two classes).

        Returns
        -------
        self : FineTuningClassifier
        """
        before = dict(self.__dict__)
        for key in [k for k in before if _is_fitted_name(k)]:
            del self.__dict__[key]
        progress = {}
        try:
            self._fit(X, y, progress)
        except BaseException as exc:
            self.__dict__.clear()
            self.__dict__.update(before)
            if isinstance(exc, KeyboardInterrupt):
                exc.add_note(self._interrupt_note(progress))
            raise
        return self

    def _interrupt_note(self, progress):
        net = progress.get("net")
        done = 0 if net is None else sum("dur" in row for row in net.history)
        note = (
            f"{type(self).__name__}.fit was interrupted after {done} complete epoch(s) "
            f"of {self.max_epochs}; the estimator was left as it was before the call."
        )
        if progress.get("checkpoint_dir") is not None:
            note += f" Checkpoints written so far are in {progress['checkpoint_dir']!r}" + (
                "; fit again with resume=True to continue." if self.checkpoint_dir else "."
            )
        return note

    def _checkpoint_dir(self):
        """This fit's checkpoint directory (or None) and the state to resume from."""
        from ._callbacks import STATE_FILE, load_training_state

        if not self.save_checkpoints:
            return None, None
        if self.checkpoint_dir is None:
            return tempfile.mkdtemp(prefix="sknc-ft-"), None
        path = os.fspath(self.checkpoint_dir)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"checkpoint_dir {path!r} exists and is not a directory.")
        os.makedirs(path, exist_ok=True)
        state = load_training_state(path)
        done = sorted(
            int(m.group(1))
            for m in (_CHECKPOINT_RE.fullmatch(name) for name in os.listdir(path))
            if m and int(m.group(1)) > 0
        )
        if self.resume:
            if state is None and done:
                raise ValueError(
                    f"checkpoint_dir {path!r} holds checkpoints up to epoch {done[-1]} but no "
                    f"{STATE_FILE}, so the run cannot be resumed; use another directory."
                )
            return path, state
        if state is not None or done:
            last = state["epoch"] if state is not None else done[-1]
            raise ValueError(
                f"checkpoint_dir {path!r} already holds the checkpoints of a run ({last} "
                "epoch(s)); pass resume=True to continue it, or choose another directory "
                "(nothing there is overwritten)."
            )
        return path, None

    def _fit(self, X, y, progress):
        from ..features._text import is_text_model

        if is_text_model(self.model):  # Hugging Face / sentence-transformers encoders
            from ._text import fit_text

            other = [k for k in self._routed_params() if routed_prefix(k) != "optimizer"]
            if other:
                raise ValueError(
                    f"{other[0]}: only optimizer__* arguments are routed for text encoders yet."
                )
            self._check_params()
            from ..utils import resolve_device

            self._amp_dtype(resolve_device(self.device), what="training and prediction run")
            return fit_text(self, X, y, progress)

        import torch

        start = time.perf_counter()
        self._check_params()
        setup = self._prepare_fit(X, y, progress)
        tuned_block, block_nc = self.tuned_block, None
        if self.method in TUNED_METHODS and isinstance(tuned_block, str) and tuned_block == "auto":
            tuned_block, block_nc = self._auto_block(X, setup.y_enc, setup.seed, setup.device)
        net = self._build_net(setup, tuned_block)
        progress["net"] = net
        with torch.random.fork_rng(devices=setup.fork_devices):
            torch.manual_seed(setup.seed)
            net.initialize()
            module = net.module_
            if setup.state is not None:
                self._restore(net, setup.state)
            self._warn_random_linear_probe(module)
            # Set now (not only on success) because on_epoch_end hooks use the
            # estimator during training; fit() restores the earlier state if
            # anything below raises.
            source = self._set_model_attributes(net, X, setup, block_nc)
            cache = self._build_cache(module, source, setup.y_enc)
            self.prefix_cached_ = cache is not None
            try:
                self._train(net, source, cache, setup)
            finally:
                module.__dict__["_split"] = None
        module.eval()
        self.fit_time_ = time.perf_counter() - start
        return self

    def _prepare_fit(self, X, y, progress):
        """Labels, seed, device, checkpoint directory and resume state of a fit."""
        import torch

        from ..utils import resolve_device

        n_samples = self._n_images(X)
        classes, y_enc = self._check_y(y, n_samples)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        device = resolve_device(self.device)
        self._amp_dtype(device, what="training and prediction run")  # warns off CUDA
        checkpoint_dir, state = self._checkpoint_dir()
        progress["checkpoint_dir"] = checkpoint_dir
        fingerprint = {
            "classes": [str(c) for c in classes],
            "n_samples": int(n_samples),
            "method": self.method,
            "model": self.model if isinstance(self.model, str) else type(self.model).__name__,
            "seed": seed,
        }
        done, seed = self._resume_point(state, fingerprint)
        fork_devices = []
        if device.type == "cuda":
            fork_devices = [
                device.index if device.index is not None else torch.cuda.current_device()
            ]
        return SimpleNamespace(
            classes=classes,
            y_enc=y_enc,
            seed=seed,
            device=device,
            checkpoint_dir=checkpoint_dir,
            state=state,
            fingerprint=fingerprint,
            done=done,
            fork_devices=fork_devices,
        )

    def _resume_point(self, state, fingerprint):
        """``(epochs done, seed)`` of the saved run ``state`` (None: a new run at 0).

        Refuses a run trained on other classes, another number of samples,
        another method or model, or for more than ``max_epochs``; the seed
        (and so the validation split) is the saved run's.
        """
        if state is None:
            return 0, fingerprint["seed"]
        saved = state["fingerprint"]
        for key in ("classes", "n_samples", "method", "model"):
            if saved.get(key) != fingerprint[key]:
                raise ValueError(
                    f"Cannot resume from {state['path']!r}: it was trained with "
                    f"{key}={saved.get(key)!r}, this fit has {key}={fingerprint[key]!r}."
                )
        done = int(state["epoch"])
        if done > self.max_epochs:
            raise ValueError(
                f"Cannot resume from {state['path']!r}: it has already run {done} "
                f"epochs, more than max_epochs={self.max_epochs}."
            )
        fingerprint["seed"] = int(saved["seed"])
        return done, fingerprint["seed"]

    def _build_net(self, setup, tuned_block):
        """The (uninitialised) skorch net of this fit; routed arguments override defaults."""
        import torch

        from ._callbacks import FineTuneSkorchNet
        from ._modules import FineTuneNet

        optimizer, optimizer_kwargs = self._optimizer_args()
        train_split = None
        if self.validation_fraction:
            from skorch.dataset import ValidSplit

            train_split = ValidSplit(
                float(self.validation_fraction), stratified=True, random_state=setup.seed
            )
        module_kwargs = {
            f"module__{name}": getattr(self, name) for name in NET_PARAMETER_CONSTRAINTS
        }
        module_kwargs["module__tuned_block"] = None if tuned_block == "auto" else tuned_block
        cuda = setup.device.type == "cuda"
        kwargs = {
            **module_kwargs,
            "module__model": self.model,
            "module__n_classes": len(setup.classes),
            "module__seed": setup.seed,
            "criterion": torch.nn.CrossEntropyLoss,
            "optimizer": optimizer,
            "lr": float(self.lr),
            "max_epochs": int(self.max_epochs) - setup.done,
            "batch_size": int(self.batch_size),
            "train_split": train_split,
            "callbacks": self._callbacks(setup.checkpoint_dir, setup.fingerprint, setup.state),
            "classes": list(range(len(setup.classes))),
            "device": str(setup.device),
            "verbose": int(self.verbose),
            "iterator_train__shuffle": True,
            "iterator_train__num_workers": int(self.num_workers),
            "iterator_train__pin_memory": cuda,
            "iterator_valid__pin_memory": cuda,
            "amp_dtype": self._amp_dtype(setup.device),
            **optimizer_kwargs,
        }
        routed = self._routed_params(("criterion", "iterator_train", "iterator_valid", "callbacks"))
        kwargs.update(routed)
        net = FineTuneSkorchNet(module=FineTuneNet, **kwargs)
        self._check_routed_callbacks(net, routed)
        return net

    def _warn_random_linear_probe(self, module):
        import torch

        if (
            self.method == "linear-probe"
            and not self.pretrained
            and self.weights is None
            and not isinstance(self.model, torch.nn.Module)
        ):
            from ..features._weights import warn_identity_blocks

            warn_identity_blocks(module.backbone, self.model, what="linear-probe features")

    def _set_model_attributes(self, net, X, setup, block_nc):
        """The fitted attributes known before training; returns the checked images."""
        from ..features import resolve_data_config
        from ..features._images import check_images
        from ._modules import count_parameters

        module = net.module_
        self.classes_ = setup.classes
        self.net_ = net
        blocks_ = list(module.tuned_blocks)
        self.tuned_block_ = None if not blocks_ else blocks_[0] if len(blocks_) == 1 else blocks_
        self.block_nc_ = block_nc
        self.lora_targets_ = module.lora_targets
        self.data_config_ = resolve_data_config(
            module.backbone,
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
        )
        self.n_params_, self.n_trainable_params_ = count_parameters(module)
        self.trainable_fraction_ = self.n_trainable_params_ / max(self.n_params_, 1)
        self._n_features_out = module.head_in_features
        self.checkpoint_dir_ = setup.checkpoint_dir
        self.resumed_from_ = setup.done
        return check_images(X, n_channels=self.data_config_["input_size"][0])

    def _train(self, net, source, cache, setup):
        """Run the epochs (after the resumed ones) and set the training attributes."""
        import torch

        from ._data import CachedImageDataset, input_cache_bound, make_train_dataset

        if cache is not None:
            dataset = cache
        else:
            bound = input_cache_bound(self.cache_inputs) if self.max_epochs > setup.done else 0
            dataset = make_train_dataset(
                source, setup.y_enc, self.data_config_, self.augment, cache_bytes=bound
            )
        inputs = dataset if isinstance(dataset, CachedImageDataset) else None
        self.n_inputs_cached_ = 0 if inputs is None else inputs.n_cached
        state = setup.state
        if state is not None:
            torch.set_rng_state(state["torch_rng"])
            if setup.fork_devices and state["cuda_rng"]:
                torch.cuda.set_rng_state(state["cuda_rng"][setup.fork_devices[0]], setup.device)
        if self.max_epochs > setup.done:
            net.partial_fit(dataset, setup.y_enc)
        self.history_ = net.history
        self.n_iter_ = len(net.history)
        durations = [row["dur"] for row in net.history if "dur" in row]
        self.seconds_per_epoch_ = float(np.median(durations)) if durations else None
        self.checkpoints_ = self._checkpoint_paths(net, setup.checkpoint_dir)
        self.train_nc1_ = self.train_nc1_time_ = None
        if self.compute_train_nc1:
            start = time.perf_counter()
            self.train_nc1_ = self._train_nc1(source, cache, setup.y_enc, inputs)
            self.train_nc1_time_ = time.perf_counter() - start

    @staticmethod
    def _restore(net, state):
        """Load a saved training state into a freshly initialised net."""
        from skorch.history import History

        net.module_.load_state_dict(state["module"])
        net.optimizer_.load_state_dict(state["optimizer"])
        net.history = History(state["history"])

    @staticmethod
    def _checkpoint_paths(net, checkpoint_dir):
        if checkpoint_dir is None:
            return []
        from ._callbacks import checkpoint_path

        # named from checkpoint_dir, not the history: a resumed run's folder may
        # have been moved or copied since the history recorded its paths
        paths = [
            os.path.join(checkpoint_dir, os.path.basename(row["checkpoint"]))
            for row in net.history
            if "checkpoint" in row
        ]
        first = checkpoint_path(checkpoint_dir, 0)
        return ([first] if os.path.exists(first) else []) + paths

    def _no_cache_reason(self):
        """Why the prefix cannot be cached for these parameters, or None."""
        if self.method == "full-ft":
            return "full fine-tuning trains every layer, so no prefix is frozen"
        if self.method not in CACHEABLE_METHODS:
            return (
                f"method={self.method!r} trains parameters throughout the backbone, "
                "so no prefix is frozen"
            )
        if self.augment is not None:
            return "augment is set, so the frozen prefix sees different inputs every epoch"
        return None

    def _build_cache(self, module, source, y_enc):
        """The :class:`CachedPrefixDataset` for this fit, or None."""
        import torch

        from ..features._images import iter_batches, preprocess_batch
        from ._data import CachedPrefixDataset
        from ._modules import SplitError

        if self.cache_prefix is False or self.max_epochs == 0:
            return None
        reason = self._no_cache_reason()
        if reason is not None:
            if self.cache_prefix is True:
                raise ValueError(f"cache_prefix=True cannot be used: {reason}.")
            return None
        module.eval()
        example = preprocess_batch(
            source.load(0, min(2, len(source))), self.data_config_, device=self.device_
        )
        try:
            module.build_split(example)
        except SplitError as exc:
            if self.cache_prefix is True:
                raise ValueError(
                    f"cache_prefix=True but the backbone cannot be split at "
                    f"{module.tuned_block!r}: {exc}"
                ) from exc
            warn_external(f"Prefix caching disabled, training without it: {exc}", CacheWarning)
            return None
        with torch.no_grad(), self.net_._autocast():
            per_sample = sum(
                t[0].numel() * t.element_size() for t in module.prefix_outputs(example)
            )
        estimate = per_sample * len(source)
        if self.cache_prefix == "auto" and estimate > AUTO_CACHE_MAX_BYTES:
            warn_external(
                f"Prefix caching disabled: the cache would take {estimate / 1024**3:.1f} GiB "
                f"(> {AUTO_CACHE_MAX_BYTES / 1024**3:.0f} GiB); pass cache_prefix=True to "
                "cache anyway.",
                CacheWarning,
            )
            module.__dict__["_split"] = None
            return None
        chunks = None
        batches = iter_batches(
            source, self.data_config_, batch_size=max(self.batch_size, 64), device=self.device_
        )
        if self.verbose:
            from tqdm.auto import tqdm

            batches = tqdm(
                batches,
                total=-(-len(source) // max(self.batch_size, 64)),
                desc="caching prefix",
                leave=False,
            )
        with torch.no_grad(), self.net_._autocast():
            for _, _, batch in batches:
                outs = module.prefix_outputs(batch)
                if chunks is None:
                    chunks = [[] for _ in outs]
                for store, out in zip(chunks, outs):
                    store.append(out.to("cpu"))
        tensors = [torch.cat(parts) for parts in chunks]
        dataset = CachedPrefixDataset(tensors, y_enc)
        if self.verbose:
            print(
                f"Cached prefix activations for {len(source)} images: "
                f"{dataset.nbytes / 1024**2:.1f} MiB "
                f"(shapes {[tuple(t.shape[1:]) for t in tensors]})."
            )
        return dataset

    def _train_nc1(self, source, cache, y_enc, inputs=None):
        from ..metrics import nc1

        Z = self._train_features(source, cache, inputs)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return float(nc1(Z, y_enc))
        except ValueError:
            return float("nan")

    def _train_features(self, source, cache, inputs):
        """Head-input features of the training images with the fitted weights (no grad).

        From the prefix cache when there is one; on the CPU from the stored
        preprocessed images (``inputs``, a :class:`CachedImageDataset`) when
        they are all there: the same model inputs in the same batches as
        ``transform(source)`` (preprocessing a batch on the CPU gives its
        images' tensors one by one, bit for bit), without preprocessing the
        images again; else ``transform(source)``'s pass.
        """
        import torch

        if cache is not None:
            module = self.net_.module_
            module.eval()
            parts = []
            bs = max(self.batch_size, 64)
            with torch.no_grad(), self.net_._autocast():
                for s in range(0, len(cache), bs):
                    cached = [t[s : s + bs].to(self.device_) for t in cache.tensors]
                    parts.append(module.head_input(cached=cached).float().cpu())
            return torch.cat(parts).numpy()
        if inputs is not None and inputs.n_cached == len(inputs) and self.device_.type == "cpu":
            bs = self.batch_size
            stored = inputs.tensor
            return self._forward_batches(
                (stored[s : s + bs] for s in range(0, len(stored), bs)), features=True
            )
        return self._forward(source, features=True)

    # NC scorers (sknc.metrics.make_nc_scorer) score ``transform(X)``, the
    # inputs of the head whose weights are ``coef_`` / ``intercept_``, rather
    # than the images themselves.
    _sknc_transform_is_head_input = True

    @property
    def coef_(self):
        """Weights of the fine-tuned linear head, shape (n_classes, n_features_out).

        Rows in the order of ``classes_``; columns are the features of
        :meth:`transform`, so ``transform(X) @ coef_.T + intercept_`` equals
        :meth:`decision_function` for three classes or more (up to float32 rounding;
        with two, the difference of its two columns). Used by the NC3 /
        NC4 scorers.
        """
        check_is_fitted(self, "net_")
        return self.net_.module_.head.weight.detach().cpu().numpy().copy()

    @property
    def intercept_(self):
        """Bias of the fine-tuned linear head, shape (n_classes,)."""
        check_is_fitted(self, "net_")
        bias = self.net_.module_.head.bias
        if bias is None:
            return np.zeros(self.net_.module_.head.out_features, dtype=np.float32)
        return bias.detach().cpu().numpy().copy()

    @property
    def device_(self):
        # Derived from the net rather than stored: skorch loads an unpickled
        # net on the CPU when CUDA is missing, and a stored copy would still
        # say "cuda". Unfitted, ``self.net_`` raises AttributeError, so
        # ``hasattr(clf, "device_")`` is False as for any fitted attribute.
        import torch

        return torch.device(self.net_.device)

    # ------------------------------------------------------------------
    # inference
    # ------------------------------------------------------------------
    def _forward(self, X, features=False):
        from ..features._images import iter_batches

        if getattr(self, "text_features_", None) is not None:
            from ._text import forward_text

            return forward_text(self, X, features=features)
        batches = iter_batches(
            X, self.data_config_, batch_size=self.batch_size, device=self.device_
        )
        return self._forward_batches((batch for _, _, batch in batches), features)

    def _forward_batches(self, batches, features=False):
        """Logits (or head inputs) of model-ready batches, float32 numpy, in eval mode."""
        import torch

        module = self.net_.module_
        device = self.device_
        was_training = module.training
        module.eval()
        outs = []
        try:
            with torch.no_grad(), self.net_._autocast():
                for batch in batches:
                    batch = batch.to(device)
                    out = module.head_input(batch) if features else module(batch)
                    outs.append(out.float().cpu())
        finally:
            module.train(was_training)
        return torch.cat(outs).numpy()

    def _check_X(self, X):
        check_is_fitted(self, "net_")
        if getattr(self, "text_features_", None) is None:
            self._n_images(X)
        return X

    def decision_function(self, X):
        """Logits of the fine-tuned network, in scikit-learn's shape.

        Parameters
        ----------
        X : image collection

        Returns
        -------
        ndarray of shape (n_samples, n_classes) or (n_samples,), float32
            The logits, columns in the order of ``classes_``; with two
            classes, as scikit-learn's binary classifiers do, the score of
            ``classes_[1]``: its logit minus that of ``classes_[0]`` (positive
            means ``classes_[1]``), so that scorers such as ``"roc_auc"`` work.
        """
        logits = self._logits(X)
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def _logits(self, X):
        """The network's (n_samples, n_classes) float32 logits."""
        return self._forward(self._check_X(X))

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        X : image collection

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        logits = self._logits(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        logits = self._logits(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : image collection

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        scores = self._logits(X)  # raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(scores, axis=1)]

    def transform(self, X):
        """Head-input features of the fine-tuned network (what ``train_nc1_`` measures).

        Parameters
        ----------
        X : image collection

        Returns
        -------
        ndarray of shape (n_samples, n_features_out), float32
            Penultimate features (linear probe, Layer FT, full FT) or the
            combined features of SCL-FT.
        """
        return self._forward(self._check_X(X), features=True)

    def fit_transform(self, X, y):
        """Fit, then return ``transform(X)`` (the fine-tuned head-input features)."""
        return self.fit(X, y).transform(X)

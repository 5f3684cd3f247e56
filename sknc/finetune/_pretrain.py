"""Source pre-training with per-epoch checkpoints (Galanti et al.'s protocol).

Contents
--------
pretrain_backbone(model, X, y, *, checkpoint_dir=None, resume=False, **params)
    Train a backbone as a plain classifier on source classes (full
    fine-tuning, from scratch by default) and save it after every epoch: a
    :class:`~sknc.finetune.FineTuningClassifier` with the pretraining
    settings, so every option of the estimator is available here too.
"""

from sklearn.base import clone

from ._estimator import FineTuningClassifier
from ._params import PRETRAIN_DEFAULTS, PRETRAIN_FIXED

__all__ = ["pretrain_backbone"]


def pretrain_backbone(model, X, y, *, checkpoint_dir=None, resume=False, **params):
    """Train a backbone on source classes and save a checkpoint after every epoch.

    The first half of Galanti et al.'s experiment (*On the Role of Neural
    Collapse in Transfer Learning*, ICLR 2022): train a network as a plain
    classifier on many source classes, keep its weights after every epoch,
    then measure CDNV on train / test / novel-class features for each
    checkpoint and evaluate few-shot episodes on the novel classes.

    This is :class:`FineTuningClassifier` with ``method="full-ft"``,
    ``save_checkpoints=True`` and ``cache_prefix=False``, fitted on
    ``(X, y)``: every other keyword is a parameter of the estimator (routed
    ``optimizer__*``, ``iterator_train__*``, ... included), so the two never
    drift apart. Where pretraining wants other defaults than fine-tuning,
    they are ``max_epochs=30``, ``weight_decay=5e-4``, ``batch_size=64``. Training
    starts from random weights unless ``pretrained`` or ``weights`` say
    otherwise.

    Ctrl-C stops training and propagates (the checkpoints written so far
    stay); calling again with ``resume=True`` continues from the last
    complete epoch.

    Parameters
    ----------
    model : str, torch.nn.Module, nn.Module subclass, callable or FineTuningClassifier
        A timm name or a module, as for :class:`FineTuningClassifier`; or
        an unfitted-or-fitted ``FineTuningClassifier`` whose parameters
        to use (it is cloned, not modified; its ``method``,
        ``save_checkpoints`` and ``cache_prefix`` are replaced by the
        pretraining ones, and the pretraining defaults above do not apply
        to it).
    X : image collection
        Source training images.
    y : array-like of shape (n_samples,)
        Source class labels.
    checkpoint_dir : str, path-like or None, default=None
        Where this run writes ``epoch_000.safetensors`` (the initial
        weights), ``epoch_001.safetensors``, ... and ``training_state.pt``
        (what resuming needs), directly (no sub-directory; created if
        needed). None: a new ``sknc-ft-*`` directory in the system temp
        directory. A directory holding another run is refused unless
        ``resume=True``.
    resume : bool, default=False
        Continue the run saved in ``checkpoint_dir`` from its last complete
        epoch (or start it if there is none yet): the weights, optimizer,
        learning-rate schedulers, random state and history are restored, so
        the final weights equal those of an uninterrupted run with the same
        ``random_state``. Call with the same arguments as the interrupted
        run (``max_epochs`` may be larger to train on).
    **params
        Parameters of :class:`FineTuningClassifier` (``max_epochs``,
        ``lr``, ``optimizer``, ``augment``, ``input_size``, ``device``,
        ``amp``, ``on_epoch_end``, ``callbacks``, ``random_state``,
        ``optimizer__betas``, ...), with the pretraining defaults above.
        ``method``, ``save_checkpoints`` and ``cache_prefix`` are fixed and
        may not be passed.

    Returns
    -------
    FineTuningClassifier
        The fitted estimator; ``checkpoints_`` lists the checkpoint paths in
        epoch order, ``checkpoints_[0]`` being the initial weights (epoch 0).
        Each file holds the whole model in its own layout (the
        source head under the model's classifier name), so
        ``sknc.features.BackboneFeatures(model, weights=path)`` or
        ``sknc.features.create_backbone(model, weights=path)``
        loads it.

    Raises
    ------
    TypeError
        For ``method``, ``save_checkpoints`` or ``cache_prefix``, and for
        a keyword that is not a parameter of ``FineTuningClassifier`` (a
        ``ValueError`` from ``set_params`` when ``model`` is an estimator).

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.features import create_backbone
    >>> from sknc.finetune import pretrain_backbone
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = np.arange(8) % 4
    >>> est = pretrain_backbone("resnet10t", X, y, max_epochs=2, input_size=32,
    ...                         random_state=0)
    >>> [p.rsplit("/", 1)[-1] for p in est.checkpoints_]
    ['epoch_000.safetensors', 'epoch_001.safetensors', 'epoch_002.safetensors']
    >>> est.weight_decay, est.batch_size
    (0.0005, 64)
    >>> backbone = create_backbone("resnet10t", weights=est.checkpoints_[-1])
    """
    fixed = sorted(set(params) & set(PRETRAIN_FIXED))
    if fixed:
        raise TypeError(
            f"pretrain_backbone got {fixed[0]}={params[fixed[0]]!r}: pretraining is "
            f"{', '.join(f'{k}={v!r}' for k, v in PRETRAIN_FIXED.items())}; use "
            "FineTuningClassifier for other settings."
        )
    settings = {**params, **PRETRAIN_FIXED, "checkpoint_dir": checkpoint_dir, "resume": resume}
    if isinstance(model, FineTuningClassifier):
        est = clone(model).set_params(**settings)
    else:
        est = FineTuningClassifier(model, **{**PRETRAIN_DEFAULTS, **settings})
    return est.fit(X, y)

"""Source pre-training with per-epoch checkpoints (Galanti et al.'s protocol).

Contents
--------
pretrain_backbone(model, X, y, *, checkpoint_dir=None, ...)
    Train a backbone as a plain classifier on source classes (full
    fine-tuning, from scratch by default) and save it after every epoch.
"""

from ._estimator import FineTuningClassifier

__all__ = ["pretrain_backbone"]


def pretrain_backbone(
    model,
    X,
    y,
    *,
    checkpoint_dir=None,
    resume=False,
    pretrained=False,
    weights=None,
    model_kwargs=None,
    max_epochs=30,
    lr=1e-3,
    optimizer="adamw",
    weight_decay=5e-4,
    momentum=0.9,
    batch_size=64,
    augment=None,
    validation_fraction=None,
    patience=None,
    input_size=None,
    mean=None,
    std=None,
    crop_pct=None,
    interpolation=None,
    device="auto",
    amp=False,
    num_workers=0,
    on_epoch_end=None,
    callbacks=None,
    random_state=None,
    verbose=0,
):
    """Train a backbone on source classes and save a checkpoint after every epoch.

    The first half of Galanti et al.'s experiment (*On the Role of Neural
    Collapse in Transfer Learning*, ICLR 2022): train a network as a plain
    classifier on many source classes, keep its weights after every epoch,
    then measure CDNV on train / test / novel-class features for each
    checkpoint and evaluate few-shot episodes on the novel classes. This is
    :class:`FineTuningClassifier` with ``method="full-ft"`` and
    ``save_checkpoints=True``; it starts from random weights unless
    ``pretrained`` or ``weights`` say otherwise.

    Ctrl-C stops training and propagates (the checkpoints written so far
    stay); calling again with ``resume=True`` continues from the last
    complete epoch.

    Parameters
    ----------
    model : str, torch.nn.Module, nn.Module subclass or callable
        A timm name or a module, as for :class:`FineTuningClassifier`.
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
    pretrained, weights, model_kwargs : optional
        Starting weights (default: random initialisation) and model options.
    max_epochs : int, default=30
    lr : float, default=1e-3
    optimizer : {"adamw", "adam", "sgd"} or optimizer class, default="adamw"
    weight_decay : float, default=5e-4
    momentum : float, default=0.9
    batch_size : int, default=64
    augment : callable or None, default=None
        Training augmentation (see :class:`FineTuningClassifier`).
    validation_fraction, patience : optional
        Validation split and early stopping.
    input_size, mean, std, crop_pct, interpolation : optional
        Preprocessing overrides (see :class:`FineTuningClassifier`); use the
        same values for the feature extractor that later loads the
        checkpoints.
    device, amp, num_workers : optional
        Where and how to train.
    on_epoch_end : callable or None, default=None
        ``on_epoch_end(estimator, epoch)``: e.g. measure CDNV of
        ``estimator.transform(X_novel)`` while training.
    callbacks : list or None, default=None
        Extra skorch callbacks (e.g. a learning-rate schedule).
    random_state : int, RandomState or None, default=None
    verbose : int, default=0

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
    >>> backbone = create_backbone("resnet10t", weights=est.checkpoints_[-1])
    """
    est = FineTuningClassifier(
        model,
        method="full-ft",
        pretrained=pretrained,
        weights=weights,
        model_kwargs=model_kwargs,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        momentum=momentum,
        max_epochs=max_epochs,
        batch_size=batch_size,
        augment=augment,
        cache_prefix=False,
        validation_fraction=validation_fraction,
        patience=patience,
        input_size=input_size,
        mean=mean,
        std=std,
        crop_pct=crop_pct,
        interpolation=interpolation,
        device=device,
        amp=amp,
        num_workers=num_workers,
        checkpoint_dir=checkpoint_dir,
        save_checkpoints=True,
        resume=resume,
        on_epoch_end=on_epoch_end,
        compute_train_nc1=True,
        callbacks=callbacks,
        random_state=random_state,
        verbose=verbose,
    )
    return est.fit(X, y)

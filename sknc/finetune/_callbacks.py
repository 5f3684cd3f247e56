"""skorch pieces of :mod:`sknc.finetune`: the net subclass and callbacks.

Contents
--------
FineTuneSkorchNet
    ``skorch.NeuralNetClassifier`` that optimises only trainable parameters,
    runs forward passes under CUDA autocast when asked (bfloat16, or float16
    with a gradient scaler) and lets a real interrupt (Ctrl-C) propagate out
    of ``partial_fit``.
BackboneCheckpoint(dirname)
    Saves the backbone (plus the head under the model's own classifier name,
    except for SCL-FT) as ``epoch_000.safetensors`` (the initial weights),
    ``epoch_001.safetensors``, ... and records each path in the history under
    ``"checkpoint"``.
TrainingState(dirname, fingerprint)
    Saves what resuming needs after every epoch, atomically, as
    ``training_state.pt`` (loaded with ``torch.load(weights_only=True)``):
    the whole network, the optimizer, learning-rate schedulers, torch's
    random state and the history. :func:`load_training_state` reads it back.
EpochHook(fn, estimator)
    Calls ``fn(estimator, epoch)`` after every epoch; a non-None return value
    is recorded in the history under ``"epoch_hook"``.

Freezing BatchNorm statistics needs no callback: ``FineTuneNet.train()`` puts
every frozen part back in eval mode each time skorch switches to training.

Only skorch's public API is used (``fit_loop``, ``notify``,
``train_step_single``, ``get_loss``, ``infer``, ``optimizer_``, callbacks);
``tests/test_finetune.py`` checks that no private skorch attribute is
touched.
"""

import contextlib
import json
import os
import signal
import threading

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator

__all__ = [
    "STATE_FILE",
    "BackboneCheckpoint",
    "EpochHook",
    "FineTuneSkorchNet",
    "TrainingState",
    "atomic_write",
    "backbone_state_dict",
    "checkpoint_path",
    "load_training_state",
]

STATE_FILE = "training_state.pt"
STATE_VERSION = 1


def checkpoint_path(dirname, epoch):
    """Path of the weights after ``epoch`` (0: the initial weights)."""
    return os.path.join(os.fspath(dirname), f"epoch_{epoch:03d}.safetensors")


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    A reader never sees a half-written file: an interrupted write leaves the
    previous file (or none) and removes the temporary one.
    """
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def _watch_sigint():
    """Record whether a real SIGINT raised ``KeyboardInterrupt`` (main thread only).

    skorch's own convention is that a callback raises ``KeyboardInterrupt``
    to stop training early (``EarlyStopping`` does). The flag tells such a
    request from a user pressing Ctrl-C. The handler in force (Python's
    default, or one the caller installed) still decides what a SIGINT does:
    it is called, and the flag is set when it raises ``KeyboardInterrupt``.
    Outside the main thread, or when the handler is not a Python function
    (ignored, the system default), nothing is watched.
    """
    state = {"received": False}
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield state
        return

    def handler(signum, frame):
        try:
            return previous(signum, frame)
        except KeyboardInterrupt:
            state["received"] = True
            raise

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def is_stop_request(exc):
    """Whether ``exc`` was raised by a callback's ``on_epoch_end`` to end training.

    That is skorch's convention for stopping early (``EarlyStopping`` raises
    ``KeyboardInterrupt`` there); any other ``KeyboardInterrupt`` is an
    interrupt that must reach the caller.
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    return frame.f_code.co_name == "on_epoch_end" and isinstance(
        frame.f_locals.get("self"), Callback
    )


class FineTuneSkorchNet(NeuralNetClassifier):
    """``NeuralNetClassifier`` for :class:`~sknc.finetune._modules.FineTuneNet`.

    Parameters
    ----------
    *args, **kwargs
        As for ``skorch.NeuralNetClassifier``.
    amp_dtype : {None, "bfloat16", "float16"}, default=None
        Autocast dtype for forward passes on CUDA (None: full precision).
        ``"float16"`` uses a ``torch.amp.GradScaler``.

    Notes
    -----
    ``partial_fit`` differs from skorch's in one way: skorch catches every
    ``KeyboardInterrupt`` and returns as if training had finished. Here only
    a callback's request to stop (a ``KeyboardInterrupt`` raised in its
    ``on_epoch_end``, as ``EarlyStopping`` does) ends training quietly; a
    real interrupt (Ctrl-C, or a ``KeyboardInterrupt`` from anywhere else)
    runs the ``on_train_end`` callbacks and then propagates.
    """

    def __init__(self, *args, amp_dtype=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.amp_dtype = amp_dtype

    def get_all_learnable_params(self):
        # Frozen parameters never reach the optimizer (no weight decay on them,
        # no optimizer state).
        for name, param in super().get_all_learnable_params():
            if param.requires_grad:
                yield name, param

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        if not self.initialized_:
            self.initialize()
        self.notify("on_train_begin", X=X, y=y)
        interrupt = None
        with _watch_sigint() as sigint:
            try:
                self.fit_loop(X, y, **fit_params)
            except KeyboardInterrupt as exc:
                if sigint["received"] or not is_stop_request(exc):
                    interrupt = exc
        if interrupt is None and sigint["received"]:
            # Ctrl-C raised KeyboardInterrupt where something swallowed it (a
            # ``__del__``, a weakref callback, a library's bare ``except``):
            # the interrupt still reaches the caller
            interrupt = KeyboardInterrupt()
        if interrupt is not None:
            try:
                self.notify("on_train_end", X=X, y=y)
            finally:
                raise interrupt  # the interrupt wins over a failing clean-up
        self.notify("on_train_end", X=X, y=y)
        return self

    def _autocast(self):
        """Autocast context for forward passes (a no-op without amp or off CUDA)."""
        if self.amp_dtype is None or torch.device(self.device).type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, self.amp_dtype))

    def _grad_scaler(self):
        """The float16 gradient scaler, or None when not training in float16 on CUDA."""
        if self.amp_dtype != "float16" or torch.device(self.device).type != "cuda":
            return None
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            scaler = self.grad_scaler_ = torch.amp.GradScaler("cuda")
        return scaler

    def infer(self, x, **fit_params):
        if self.amp_dtype is None:
            return super().infer(x, **fit_params)
        with self._autocast():
            out = super().infer(x, **fit_params)
        return out.float()

    def train_step_single(self, batch, **fit_params):
        scaler = self._grad_scaler()
        if scaler is None:
            return super().train_step_single(batch, **fit_params)
        self.module_.train()
        self.criterion_.train()
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        scaler.unscale_(self.optimizer_)  # callbacks see true gradients
        return {"loss": loss, "y_pred": y_pred}

    def train_step(self, batch, **fit_params):
        scaler = self._grad_scaler()
        if scaler is None:
            return super().train_step(batch, **fit_params)
        # GradScaler.step takes no closure, so the step is spelled out; the
        # net has exactly one optimizer, ``optimizer_``.
        self.optimizer_.zero_grad()
        step = self.train_step_single(batch, **fit_params)
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )
        scaler.step(self.optimizer_)
        scaler.update()
        return step


def backbone_state_dict(module):
    """State dict of ``module.backbone`` in the layout of the original model.

    For every method but SCL-FT the trained head is included under the
    model's own classifier name (e.g. ``fc.weight`` for a ResNet), so the
    file loads into ``timm.create_model(name, num_classes=K)`` as is, and
    into any other head size with
    :func:`sknc.features.load_weights` (which skips mismatching
    heads). SCL-FT heads read combined features and are left out.
    """
    state = {
        k: v.detach().to("cpu").clone().contiguous()
        for k, v in module.backbone_state_dict().items()
    }
    if module.method != "scl-ft" and module.classifier_name:
        for key, value in module.head.state_dict().items():
            state[f"{module.classifier_name}.{key}"] = value.detach().to("cpu").clone()
    return state


class BackboneCheckpoint(Callback):
    """Save the backbone as ``<dirname>/epoch_NNN.safetensors``.

    ``epoch_000.safetensors`` holds the initial weights (written when a
    training run starts from epoch 0), ``epoch_001.safetensors`` the weights
    after the first epoch, and so on. Files are written atomically.

    Parameters
    ----------
    dirname : str
        An existing directory.
    """

    def __init__(self, dirname):
        self.dirname = dirname

    def _save(self, net, epoch):
        from safetensors.torch import save_file

        path = checkpoint_path(self.dirname, epoch)
        with atomic_write(path) as tmp:
            save_file(
                backbone_state_dict(net.module_),
                tmp,
                metadata={"epoch": str(epoch), "format": "pt"},
            )
        return path

    def on_train_begin(self, net, **kwargs):
        if len(net.history) == 0:
            self._save(net, 0)

    def on_epoch_end(self, net, **kwargs):
        net.history.record("checkpoint", self._save(net, len(net.history)))


def _jsonable(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    return None  # not representable: dropped from the saved history


def _scheduler_states(net):
    states = {}
    for name, cb in net.callbacks_:
        scheduler = getattr(cb, "lr_scheduler_", None)
        if scheduler is not None and hasattr(scheduler, "state_dict"):
            states[name] = scheduler.state_dict()
    return states


class TrainingState(Callback):
    """Save everything resuming needs as ``<dirname>/training_state.pt``.

    After every epoch (as the last callback, so the history and the
    schedulers already hold that epoch) one file is written atomically with
    ``torch.save``: plain containers of tensors, numbers and strings only, so
    :func:`load_training_state` reads it with ``weights_only=True``. It holds
    the epoch count, the network's state dict, the optimizer's and every
    learning-rate scheduler's state, torch's CPU (and CUDA) random state, the
    history (as JSON; values that are not JSON-representable are dropped)
    and ``fingerprint`` (what the run was trained on, checked when resuming).

    Parameters
    ----------
    dirname : str
    fingerprint : dict
        JSON-representable description of the run.
    scheduler_states : dict or None
        Scheduler states to restore in ``on_train_begin`` (when resuming).
    """

    def __init__(self, dirname, fingerprint, scheduler_states=None):
        self.dirname = dirname
        self.fingerprint = fingerprint
        self.scheduler_states = scheduler_states

    def on_train_begin(self, net, **kwargs):
        # LRScheduler callbacks build their schedulers in their own
        # on_train_begin, which runs before this one (this callback is last).
        for name, state in (self.scheduler_states or {}).items():
            scheduler = getattr(dict(net.callbacks_).get(name), "lr_scheduler_", None)
            if scheduler is None:
                raise ValueError(
                    f"The checkpoint holds the state of the learning-rate scheduler "
                    f"{name!r}, but this fit has no such scheduler callback."
                )
            scheduler.load_state_dict(state)
        self.scheduler_states = None

    def on_epoch_end(self, net, **kwargs):
        cuda = []
        if torch.device(net.device).type == "cuda":
            cuda = [t for t in torch.cuda.get_rng_state_all()]
        state = {
            "version": STATE_VERSION,
            "epoch": len(net.history),
            "fingerprint": json.dumps(self.fingerprint),
            "module": {k: v.detach().cpu() for k, v in net.module_.state_dict().items()},
            "optimizer": net.optimizer_.state_dict(),
            "schedulers": _scheduler_states(net),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": cuda,
            "history": json.dumps(list(net.history), default=_jsonable),
        }
        with atomic_write(os.path.join(self.dirname, STATE_FILE)) as tmp:
            torch.save(state, tmp)


def load_training_state(dirname):
    """The training state that resuming a checkpointed run needs, or None.

    What :func:`~sknc.finetune.pretrain_backbone` (with ``checkpoint_dir``)
    saved after its last complete epoch: ``state["epoch"]``, the history,
    and ``state["path"]``, the state file. Loaded with
    ``torch.load(weights_only=True)`` (no code runs).

    Parameters
    ----------
    dirname : str or path-like
        The checkpoint folder.

    Returns
    -------
    dict or None
        None when the folder holds no training state.

    Raises
    ------
    ValueError
        The state file is unreadable or from another version (the message
        names the file).

    Examples
    --------
    >>> import tempfile
    >>> from sknc.finetune import load_training_state
    >>> load_training_state(tempfile.mkdtemp()) is None
    True
    """
    path = os.path.join(os.fspath(dirname), STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise ValueError(f"Cannot read the training state {path!r}: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"{path!r} is not a training state written by this sknc version.")
    state["fingerprint"] = json.loads(state["fingerprint"])
    state["history"] = json.loads(state["history"])
    state["path"] = path
    return state


class EpochHook(Callback):
    """Call ``fn(estimator, epoch)`` after every epoch (1-based epoch).

    The estimator is usable inside the call (``estimator.transform(X)``
    returns the current head-input features), so per-epoch measurements such
    as NC1 or CDNV on held-out or novel classes are one line. A return value
    other than None is recorded in the history under ``"epoch_hook"``.
    """

    def __init__(self, fn, estimator=None):
        self.fn = fn
        self.estimator = estimator

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        was_training = net.module_.training
        try:
            value = self.fn(self.estimator, epoch)
        finally:
            net.module_.train(was_training)
        if value is not None:
            net.history.record("epoch_hook", value)

    def on_train_end(self, net, **kwargs):
        self.estimator = None  # no reference cycle in the fitted estimator

"""skorch pieces of :mod:`sknc.finetune`: the net subclass and callbacks.

Contents
--------
FineTuneSkorchNet
    ``skorch.NeuralNetClassifier`` that optimises only trainable parameters
    and runs forward passes under CUDA autocast when asked (bfloat16, or
    float16 with a gradient scaler).
BackboneCheckpoint(dirname)
    Saves the backbone (plus the head under the model's own classifier name,
    except for SCL-FT) as ``epoch_001.safetensors``, ... after every epoch
    and records the path in the history under ``"checkpoint"``.
EpochHook(fn, estimator)
    Calls ``fn(estimator, epoch)`` after every epoch; a non-None return value
    is recorded in the history under ``"epoch_hook"``.

Freezing BatchNorm statistics needs no callback: ``FineTuneNet.train()`` puts
every frozen part back in eval mode each time skorch switches to training.
"""

import contextlib
import os

import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator

__all__ = ["BackboneCheckpoint", "EpochHook", "FineTuneSkorchNet", "backbone_state_dict"]


class FineTuneSkorchNet(NeuralNetClassifier):
    """``NeuralNetClassifier`` for :class:`~sknc.finetune._modules.FineTuneNet`.

    Parameters
    ----------
    *args, **kwargs
        As for ``skorch.NeuralNetClassifier``.
    amp_dtype : {None, "bfloat16", "float16"}, default=None
        Autocast dtype for forward passes on CUDA (None: full precision).
        ``"float16"`` uses a ``torch.amp.GradScaler``.
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

    def _autocast(self):
        """Autocast context for forward passes (a no-op without amp or off CUDA)."""
        if self.amp_dtype is None or torch.device(self.device).type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, self.amp_dtype))

    def infer(self, x, **fit_params):
        if self.amp_dtype is None:
            return super().infer(x, **fit_params)
        with self._autocast():
            out = super().infer(x, **fit_params)
        return out.float()

    def train_step(self, batch, **fit_params):
        if self.amp_dtype != "float16" or torch.device(self.device).type != "cuda":
            return super().train_step(batch, **fit_params)
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            scaler = self.grad_scaler_ = torch.amp.GradScaler("cuda")
        self._zero_grad_optimizer()
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        optimizers = [getattr(self, name + "_") for name in self._optimizers]
        for optimizer in optimizers:
            scaler.unscale_(optimizer)
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(self.get_all_learnable_params()),
            batch=batch,
            training=True,
        )
        for optimizer in optimizers:
            scaler.step(optimizer)
        scaler.update()
        return {"loss": loss, "y_pred": y_pred}


def backbone_state_dict(module):
    """State dict of ``module.backbone`` in the layout of the original model.

    For every method but SCL-FT the trained head is included under the
    model's own classifier name (e.g. ``fc.weight`` for a ResNet), so the
    file loads into ``timm.create_model(name, num_classes=K)`` as is, and
    into any other head size with
    :func:`sknc.features._backbone.load_weights` (which skips mismatching
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
    """Save the backbone after every epoch as ``<dirname>/epoch_NNN.safetensors``.

    Parameters
    ----------
    dirname : str
        An existing directory (the estimator creates one unique to each fit).
    """

    def __init__(self, dirname):
        self.dirname = dirname

    def on_epoch_end(self, net, **kwargs):
        from safetensors.torch import save_file

        epoch = len(net.history)
        path = os.path.join(self.dirname, f"epoch_{epoch:03d}.safetensors")
        save_file(
            backbone_state_dict(net.module_), path, metadata={"epoch": str(epoch), "format": "pt"}
        )
        net.history.record("checkpoint", path)


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

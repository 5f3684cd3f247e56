"""Torch interop helpers that do not import torch unless it is already loaded."""

import sys

import numpy as np


def is_torch_tensor(x):
    """Return True if ``x`` is a ``torch.Tensor``, without importing torch.

    If torch has not been imported by anyone, ``x`` cannot be a tensor, so
    this check never pays torch's import cost.
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x):
    """Convert a torch tensor (any device) or array-like to a numpy array."""
    if is_torch_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def resolve_device(device="auto"):
    """Turn ``"auto"`` (or None) into ``"cuda"`` when available, else ``"cpu"``.

    Any other value (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a
    ``torch.device``) is validated and returned as a ``torch.device``.

    Parameters
    ----------
    device : str, torch.device or None, default="auto"
        The requested device.

    Returns
    -------
    torch.device
        The device to run on.

    Raises
    ------
    ValueError
        If the device string is not understood, or CUDA is requested but not
        available.
    """
    import torch

    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', "
            "'cuda', 'cuda:N' or 'mps'."
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine; use device='auto' or 'cpu'."
        )
    return dev

"""Low-level helpers shared by every sknc subpackage (depends on nothing of ours)."""

from ._torch import is_torch_tensor, resolve_device, to_numpy

__all__ = ["is_torch_tensor", "resolve_device", "to_numpy"]

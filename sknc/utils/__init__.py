"""Low-level helpers shared by every sknc subpackage (depends on nothing of ours)."""

from ._options import AmpWarning
from ._threads import (
    available_cores,
    blas_threads,
    idle_cores,
    map_threads,
    single_thread,
    thread_budget,
    thread_limits,
)
from ._torch import is_torch_tensor, resolve_device, to_numpy
from ._warnings import (
    CacheWarning,
    IgnoredOptionWarning,
    RandomWeightsWarning,
    SkncFutureWarning,
    SkncWarning,
    UndefinedScoreWarning,
)

__all__ = [
    "AmpWarning",
    "CacheWarning",
    "IgnoredOptionWarning",
    "RandomWeightsWarning",
    "SkncFutureWarning",
    "SkncWarning",
    "UndefinedScoreWarning",
    "available_cores",
    "blas_threads",
    "idle_cores",
    "is_torch_tensor",
    "map_threads",
    "resolve_device",
    "single_thread",
    "thread_budget",
    "thread_limits",
    "to_numpy",
]

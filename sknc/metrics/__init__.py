"""Neural-collapse metrics: NC1-NC4, CDNV, streaming statistics and scorers.

All metrics take features ``X`` of shape (n_samples, n_features) — numpy
arrays or torch tensors on any device — and labels ``y`` of any sortable
kind. Lower values mean more collapse; the scorers negate them.
"""

from ._collapse import (
    CollapseReport,
    cdnv,
    collapse_report,
    equiangularity,
    equinorm,
    nc1,
    nc2,
    nc3,
    nc4,
)
from ._core import NCDegenerateWarning
from ._scorer import (
    NCMultiScorer,
    NCScorer,
    get_scorer,
    get_scorer_names,
    make_nc_scorer,
    make_nc_scoring,
    nc_scorer,
)
from ._statistics import NC4Counter, NCStatistics

__all__ = [
    "CollapseReport",
    "NC4Counter",
    "NCDegenerateWarning",
    "NCMultiScorer",
    "NCScorer",
    "NCStatistics",
    "cdnv",
    "collapse_report",
    "equiangularity",
    "equinorm",
    "get_scorer",
    "get_scorer_names",
    "make_nc_scorer",
    "make_nc_scoring",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "nc_scorer",
]

"""Neural-collapse metrics: NC1-NC4, CDNV, streaming statistics and scorers.

All metrics take features ``X`` of shape (n_samples, n_features) — numpy
arrays or torch tensors on any device — and labels ``y`` of any sortable
kind. Lower values mean more collapse; the scorers negate them.

The transferability scores of the field (LogME, H-score, NLEEP, TransRate,
GBC, PARC, SFDA, PACTran, k-NN, NCTI and ETran parts, LEEP, NCE) live beside
them, on the same inputs; for those, higher is better.
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
    subsample_classes,
)
from ._core import NCDegenerateWarning, NCNotComparableWarning
from ._scorer import (
    NCMultiScorer,
    NCScorer,
    get_scorer,
    get_scorer_names,
    make_nc_multimetric_scorer,
    make_nc_scorer,
    make_nc_scoring,  # noqa: F401 - deprecated alias (FutureWarning), not in __all__
    nc_scorer,  # noqa: F401 - deprecated alias (FutureWarning), not in __all__
)
from ._statistics import NC4Counter, NCStatistics
from ._transferability import (
    etran_combine,
    etran_parts,
    gbc,
    hscore,
    knn_accuracy,
    leep,
    logme,
    minmax_combine,
    nce,
    ncti_combine,
    ncti_parts,
    nleep,
    pactran,
    parc,
    sfda,
    transrate,
)

__all__ = [
    "CollapseReport",
    "NC4Counter",
    "NCDegenerateWarning",
    "NCNotComparableWarning",
    "NCMultiScorer",
    "NCScorer",
    "NCStatistics",
    "cdnv",
    "collapse_report",
    "equiangularity",
    "equinorm",
    "etran_combine",
    "etran_parts",
    "gbc",
    "get_scorer",
    "get_scorer_names",
    "hscore",
    "knn_accuracy",
    "leep",
    "logme",
    "make_nc_multimetric_scorer",
    "make_nc_scorer",
    "minmax_combine",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "nce",
    "ncti_combine",
    "ncti_parts",
    "nleep",
    "pactran",
    "parc",
    "sfda",
    "transrate",
    "subsample_classes",
]

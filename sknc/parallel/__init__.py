"""Scale out on Dask: partitioned feature extraction and map-reduce NC statistics.

Needs the optional extra ``pip install "sknc[dask]"`` (``dask[distributed]``).
Importing this module imports nothing from Dask; each function imports it
when called.

Public API
----------
extract_features
    A fitted transformer (e.g. :class:`sknc.features.BackboneFeatures`) over
    the partitions of a ``dask.bag`` / ``dask.array`` / ``dask.dataframe``
    of images or image paths, shipped once per worker.
nc_statistics_from_partitions
    :class:`sknc.metrics.NCStatistics` computed per partition and merged by a
    tree reduction on the cluster; the features never leave their workers.
nc4_counter_from_partitions
    The same map-reduce for the second, NC4 pass (:class:`sknc.metrics.NC4Counter`).
collapse_report_from_partitions
    Both passes, returning a :class:`sknc.metrics.CollapseReport`.

Grid searches and cross-validation need no helper: run scikit-learn's own
tools under ``joblib.parallel_config(backend="dask")`` (see the user guide,
"Scaling out").
"""

from ._dask import (
    collapse_report_from_partitions,
    extract_features,
    nc4_counter_from_partitions,
    nc_statistics_from_partitions,
)

__all__ = [
    "collapse_report_from_partitions",
    "extract_features",
    "nc4_counter_from_partitions",
    "nc_statistics_from_partitions",
]

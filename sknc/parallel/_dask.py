"""Dask helpers: partitioned feature extraction and map-reduce NC statistics.

Contents
--------
extract_features(X, transformer, *, dtype=np.float32)
    ``transformer.transform`` over every partition of a Dask collection, the
    fitted transformer sent to each worker once.
nc_statistics_from_partitions(X, y=None, *, split_every=8, chunk_size=None, compute=True)
    One :class:`~sknc.metrics.NCStatistics` per partition, merged by a tree
    reduction on the workers.
nc4_counter_from_partitions(counter, X, y=None, *, split_every=8, compute=True)
    The same for the NC4 pass.
collapse_report_from_partitions(X, y=None, coef=None, intercept=None, ...)
    Both passes, as a :class:`~sknc.metrics.CollapseReport`.

Dask is imported inside the functions, never at import time. The functions
run on the workers (``_partition_*``, ``_merge_*``) are module-level, so they
pickle by reference: sknc must be installed on the workers.

Partitioned inputs
------------------
A *partitioned collection* is a ``dask.array`` (split along axis 0 only;
other axes are rechunked to one block), a ``dask.bag``, a
``dask.dataframe`` DataFrame or Series, or a list of ``dask.delayed``
objects or ``distributed`` futures (one per partition). Partition values are
read as: numpy arrays and torch tensors as they are; pandas objects through
``to_numpy()``; bag partitions as lists.
"""

import copy
import numbers
import sys
import uuid

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ..metrics import NC4Counter, NCStatistics
from ..metrics._collapse import check_report_options
from ..utils import is_torch_tensor, to_numpy

__all__ = [
    "collapse_report_from_partitions",
    "extract_features",
    "nc4_counter_from_partitions",
    "nc_statistics_from_partitions",
]

_COLLECTIONS = (
    "a dask.array, a dask.bag, a dask.dataframe DataFrame/Series, or a list of "
    "dask.delayed objects or distributed futures (one per partition)"
)


# ---------------------------------------------------------------------------
# Dask plumbing (client side)
# ---------------------------------------------------------------------------


def _import_dask():
    try:
        import dask
    except ImportError as exc:  # pragma: no cover - exercised without the extra
        raise ImportError(
            "sknc.parallel needs Dask; install the extra with "
            "pip install 'sknc[dask]' (dask[distributed])."
        ) from exc
    return dask


def _is_future(obj):
    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(obj, distributed.Future)


def _is_dask_dataframe(obj):
    module = type(obj).__module__ or ""
    return module.startswith(("dask.dataframe", "dask_expr")) and hasattr(obj, "to_delayed")


def _is_delayed_list(obj):
    from dask.delayed import Delayed

    return (
        isinstance(obj, (list, tuple))
        and len(obj) > 0
        and all(isinstance(p, Delayed) or _is_future(p) for p in obj)
    )


def _is_partitioned(obj):
    import dask

    return dask.is_dask_collection(obj) or _is_delayed_list(obj)


def _partitions(obj, name):
    """``(kind, parts, lengths)``: one lazy value per partition, in order.

    ``kind`` is "array", "bag", "frame" or "delayed"; ``lengths`` holds the
    row count of each partition (NaN where Dask does not know it).
    """
    import dask.array as da
    import dask.bag as db

    if isinstance(obj, da.Array):
        if obj.ndim == 0:
            raise ValueError(f"{name} is a 0-d dask array; samples must run along axis 0.")
        if any(len(c) > 1 for c in obj.chunks[1:]):
            obj = obj.rechunk({axis: -1 for axis in range(1, obj.ndim)})
        return "array", list(obj.to_delayed().ravel()), list(obj.chunks[0])
    if isinstance(obj, db.Bag):
        parts = list(obj.to_delayed())
        return "bag", parts, [np.nan] * len(parts)
    if _is_dask_dataframe(obj):
        parts = list(obj.to_delayed())
        return "frame", parts, [np.nan] * len(parts)
    if _is_delayed_list(obj):
        return "delayed", list(obj), [np.nan] * len(obj)
    if isinstance(obj, (list, tuple)) and len(obj) == 0:
        raise ValueError(f"{name} is an empty list: there are no partitions.")
    raise TypeError(f"{name} must be {_COLLECTIONS}; got {type(obj).__name__}.")


def _check_split_every(split_every):
    if (
        not isinstance(split_every, numbers.Integral)
        or isinstance(split_every, bool)
        or split_every < 2
    ):
        raise ValueError(f"split_every must be an int >= 2, got {split_every!r}.")
    return int(split_every)


def _tree_reduce(nodes, func, split_every):
    """Merge lazy values ``split_every`` at a time until one is left."""
    from dask import delayed

    merge = delayed(func, pure=True)
    while len(nodes) > 1:
        nodes = [merge(*nodes[i : i + split_every]) for i in range(0, len(nodes), split_every)]
    return nodes[0]


def _align_labels(X, y):
    """Give in-memory or differently chunked labels the row blocks of a dask array X."""
    import dask.array as da

    if not isinstance(X, da.Array):
        if not _is_partitioned(y):
            raise ValueError(
                f"y must be partitioned like X (a Dask collection or a list of delayed "
                f"objects with one entry per partition of X), got {type(y).__name__}. "
                "For a dask.bag, pass y=None and (features, label) pairs as the elements."
            )
        return y
    known = not any(np.isnan(c) for c in X.chunks[0])
    if isinstance(y, da.Array):
        y_known = not any(np.isnan(c) for c in y.chunks[0])
        if known and y_known and y.chunks[0] != X.chunks[0]:
            if y.shape[0] != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels.")
            y = y.rechunk({0: X.chunks[0]})
        return y
    if _is_partitioned(y):
        return y
    if not known:
        raise ValueError(
            "X has unknown chunk sizes, so in-memory labels cannot be split like it; "
            "call X.compute_chunk_sizes() first or pass y as a Dask collection "
            "partitioned like X."
        )
    y = np.asarray(to_numpy(y))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}.")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels.")
    return da.from_array(y, chunks=(X.chunks[0],))


def _xy_partitions(X, y):
    """``(layout, x_parts, y_parts)`` for the two NC passes (see ``_read_xy``)."""
    _import_dask()
    kind, x_parts, _ = _partitions(X, "X")
    if y is None:
        if kind == "bag":
            return "pairs", x_parts, [None] * len(x_parts)
        if kind == "delayed":
            return "pair", x_parts, [None] * len(x_parts)
        raise ValueError(
            "y is required when X is a dask.array or a dask.dataframe: pass labels "
            "partitioned like X, or give X as a dask.bag of (features, label) pairs "
            "or as a list of delayed (X_block, y_block) pairs with y=None."
        )
    y = _align_labels(X, y)
    _, y_parts, _ = _partitions(y, "y")
    if len(x_parts) != len(y_parts):
        raise ValueError(
            f"X has {len(x_parts)} partitions but y has {len(y_parts)}; partition the "
            "labels like the features."
        )
    return "split", x_parts, y_parts


def _distributed_client():
    """The synchronous distributed Client that ``compute`` would use, if any."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    from dask.base import get_scheduler

    try:
        scheduler = get_scheduler()
    except Exception:  # pragma: no cover - a broken scheduler configuration
        return None
    client = getattr(scheduler, "__self__", None)
    if isinstance(client, distributed.Client) and not client.asynchronous:
        return client
    return None


def _share(obj):
    """``obj`` as one graph dependency, deserialised once per worker.

    With a distributed Client, ``obj`` is scattered to every worker up front
    (``broadcast=True``): each worker unpickles it once and all its tasks use
    that copy. Otherwise (local schedulers) it is a single literal key.
    """
    from dask import delayed

    client = _distributed_client()
    if client is not None:
        return client.scatter(obj, broadcast=True, hash=False)
    return delayed(obj, name=f"{type(obj).__name__.lower()}-{uuid.uuid4().hex}")


# ---------------------------------------------------------------------------
# partition readers (run on the workers)
# ---------------------------------------------------------------------------


def _as_block(part):
    """A partition value as an array/tensor (numpy, torch, pandas) or a list."""
    if isinstance(part, np.ndarray) or is_torch_tensor(part):
        return part
    if hasattr(part, "to_numpy") and hasattr(part, "iloc"):  # pandas DataFrame/Series
        return part.to_numpy()
    return list(part)


def _feature_block(part):
    block = _as_block(part)
    if isinstance(block, list):
        block = np.asarray([to_numpy(row) for row in block])
    return block


def _label_block(part):
    block = _as_block(part)
    if isinstance(block, list):
        block = np.asarray([to_numpy(lab) if is_torch_tensor(lab) else lab for lab in block])
    if block.ndim == 2 and block.shape[1] == 1:
        block = block.reshape(-1)
    return block


def _pairs_block(part, index):
    """A bag partition of ``(row, label)`` / ``(X_block, y_block)`` elements."""
    xs, ys = [], []
    for item in part:
        try:
            x, label = item
        except (TypeError, ValueError):
            raise ValueError(
                f"Partition {index}: with y=None the elements of a dask.bag must be "
                f"(features, label) pairs, got {type(item).__name__}."
            ) from None
        x = np.asarray(to_numpy(x))
        if x.ndim == 1:
            xs.append(x[None, :])
            ys.append(to_numpy(label).item() if is_torch_tensor(label) else label)
        elif x.ndim == 2:
            xs.append(x)
            ys.extend(np.asarray(to_numpy(label)).reshape(-1).tolist())
        else:
            raise ValueError(
                f"Partition {index}: features must be a row (1-D) or a block (2-D), "
                f"got an array of shape {x.shape}."
            )
    if not xs:
        return np.empty((0, 0)), np.empty(0)
    return np.concatenate(xs), np.asarray(ys)


def _read_xy(x_part, y_part, layout, index):
    if layout == "split":
        return _feature_block(x_part), _label_block(y_part)
    if layout == "pairs":
        return _pairs_block(x_part, index)
    try:
        x_block, y_block = x_part
    except (TypeError, ValueError):
        raise ValueError(
            f"Partition {index}: with y=None each delayed partition must compute to an "
            f"(X, y) pair, got {type(x_part).__name__}."
        ) from None
    return _feature_block(x_block), _label_block(y_block)


def _partition_statistics(x_part, y_part, layout, chunk_size, index):
    X, y = _read_xy(x_part, y_part, layout, index)
    stats = NCStatistics(chunk_size=chunk_size)
    if len(X) != len(y):
        raise ValueError(f"Partition {index}: X has {len(X)} rows but y has {len(y)} labels.")
    if len(X) == 0:
        return stats
    try:
        stats.update(X, y)
    except ValueError as exc:
        raise ValueError(f"Partition {index}: {exc}") from exc
    return stats


def _merge_statistics(*parts):
    out = NCStatistics(chunk_size=parts[0].chunk_size)
    for part in parts:
        out.merge(part)
    return out


def _partition_nc4(counter, x_part, layout, index):
    if layout == "split":
        X = _feature_block(x_part)
    else:
        X, _ = _read_xy(x_part, None, layout, index)
    out = copy.deepcopy(counter)  # the shared counter is never modified
    if len(X):
        try:
            out.update(X)
        except ValueError as exc:
            raise ValueError(f"Partition {index}: {exc}") from exc
    return out


def _merge_nc4(*parts):
    out = copy.deepcopy(parts[0])
    for part in parts[1:]:
        out.merge(part)
    return out


def _transform_partition(transformer, part, width, dtype, index):
    values = _as_block(part)
    if len(values) == 0:
        return np.empty((0, width), dtype=dtype)
    try:
        Z = transformer.transform(values)
    except ValueError as exc:
        raise ValueError(f"Partition {index}: {exc}") from exc
    Z = to_numpy(Z)
    if Z.shape != (len(values), width):
        raise ValueError(
            f"Partition {index}: transform returned an array of shape {Z.shape}, "
            f"expected ({len(values)}, {width})."
        )
    return np.asarray(Z, dtype=dtype)


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------


def _n_features_out(transformer):
    n = getattr(transformer, "n_features_out_", None)
    if n is None:
        try:
            n = len(transformer.get_feature_names_out())
        except (AttributeError, TypeError, ValueError, NotFittedError):
            n = None
    if n is None:
        raise ValueError(
            f"Cannot tell how many features {type(transformer).__name__}.transform "
            "returns: it needs an n_features_out_ attribute or get_feature_names_out()."
        )
    return int(n)


def extract_features(X, transformer, *, dtype=np.float32):
    """Run a fitted transformer over every partition of a Dask collection.

    Each partition of ``X`` (image file paths, PIL images or image arrays;
    any input ``transformer.transform`` accepts) becomes one task
    ``transformer.transform(partition)``. The transformer is sent to each
    worker **once**: with a ``dask.distributed`` Client it is scattered to
    every worker when this function is called (``broadcast=True``), each
    worker unpickles it a single time and all its tasks share that copy (so a
    backbone is deserialised and moved to the worker's device once per
    worker, not once per partition); with a local scheduler it is one key of
    the graph. :class:`~sknc.features.BackboneFeatures` pickles its model on
    the CPU and resolves ``device`` on the worker at ``transform``, so a GPU
    worker computes on its GPU and a CPU worker on its CPU.

    Features equal those of ``transformer.transform`` on the whole collection
    in one process (bit for bit on the same hardware when every partition
    holds a multiple of ``batch_size`` images, so that the batches are the
    same).

    Parameters
    ----------
    X : dask.bag.Bag, dask.array.Array, dask.dataframe.Series or list of Delayed
        The images, partitioned: a bag of paths (or PIL images, or single-image
        arrays), a 1-D dask array of paths, an image array chunked along its
        first axis (N, H, W[, C]) or (N, C, H, W), a dask Series of paths, or
        a list of delayed objects / futures each computing to such a
        collection.
    transformer : fitted transformer
        E.g. a fitted :class:`~sknc.features.BackboneFeatures`, a
        :class:`~sknc.finetune.FineTuningClassifier` (its head-input
        features) or a Pipeline of such steps. It must expose
        ``n_features_out_`` or ``get_feature_names_out()``.
    dtype : data-type, default=np.float32
        dtype of the returned array; every block is converted to it.

    Returns
    -------
    dask.array.Array of shape (n_samples, n_features_out)
        Lazy features, one row block per partition of ``X``, in order. Row
        counts are known when ``X`` is a dask array and unknown (NaN) for
        bags, dataframes and delayed lists (``.compute_chunk_sizes()`` fills
        them in). With a distributed Client, compute it on that client.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``transformer`` is not fitted.
    TypeError
        If ``X`` is not a partitioned Dask collection.

    See Also
    --------
    nc_statistics_from_partitions : NC statistics of the features, map-reduced.

    Notes
    -----
    Persist the result (``client.persist(features)``) before several passes
    over it (NC statistics, then NC4) so the backbone runs once. To run the
    extraction on GPU workers only, give those workers a resource
    (``dask worker ... --resources "GPU=1"``) and ask for it when computing:
    ``client.persist(features, resources={"GPU": 1})``. With
    ``BackboneFeatures(memory=...)`` on a directory every worker sees, each
    partition's features are cached and reused by any worker. Dask's local
    ``"processes"`` scheduler pickles the inputs of every task, the
    transformer included; use a ``distributed`` ``LocalCluster`` instead to
    load it once per process.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sknc.features import BackboneFeatures
    >>> from sknc.parallel import extract_features
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> feats = BackboneFeatures("resnet18", input_size=32, batch_size=4,
    ...                          random_state=0).fit()
    >>> Z = extract_features(da.from_array(images, chunks=(4, 32, 32, 3)), feats)
    >>> Z
    dask.array<concatenate, shape=(8, 512), dtype=float32, chunksize=(4, 512),
               chunktype=numpy.ndarray>
    >>> bool(np.array_equal(Z.compute(), feats.transform(images)))
    True
    """
    _import_dask()
    import dask.array as da
    from dask import delayed

    check_is_fitted(transformer)
    width = _n_features_out(transformer)
    dtype = np.dtype(dtype)
    _, parts, lengths = _partitions(X, "X")
    shared = _share(transformer)
    task = delayed(_transform_partition, pure=True)
    blocks = [
        da.from_delayed(task(shared, part, width, dtype, i), shape=(n, width), dtype=dtype)
        for i, (part, n) in enumerate(zip(parts, lengths))
    ]
    if len(blocks) == 1:
        return blocks[0]
    return da.concatenate(blocks, axis=0, allow_unknown_chunksizes=True)


def nc_statistics_from_partitions(X, y=None, *, split_every=8, chunk_size=None, compute=True):
    """Neural-collapse statistics of partitioned features, as a tree reduction.

    Every partition of ``(X, y)`` becomes one :class:`~sknc.metrics.NCStatistics`
    (per-class counts, sums and within-class scatter: O(K d + d^2) numbers,
    however many samples), computed where the partition lives; the statistics
    are then merged ``split_every`` at a time (Chan's parallel update, exact)
    until one is left. Only statistics travel: the features are never
    gathered anywhere. NC1, CDNV, NC2, NC3, equinorm and equiangularity of the
    result equal those of the in-memory metrics (:func:`sknc.metrics.nc1`,
    ...) to float64 round-off.

    Parameters
    ----------
    X : dask.array.Array, dask.bag.Bag, dask.dataframe collection or list of Delayed
        The features, partitioned along the samples:

        - a dask array of shape (n_samples, n_features) (chunks along the
          features are merged), or a dask DataFrame of feature columns, or a
          list of delayed objects / futures computing to (n_i, n_features)
          blocks, with labels in ``y``;
        - with ``y=None``: a dask bag whose elements are ``(features, label)``
          pairs (a feature row and its label, or an (n_i, d) block and its
          n_i labels), or a list of delayed objects / futures each computing
          to an ``(X_block, y_block)`` pair.

        Blocks may be numpy arrays or torch tensors (on the worker's device).
    y : dask collection, list of Delayed, array-like or None, default=None
        Labels (any sortable kind) partitioned like ``X``: a dask array (its
        chunks are aligned to ``X``'s), a dask Series or bag, or a list of
        delayed objects with one entry per partition of ``X``. When ``X`` is
        a dask array with known chunks, an in-memory array is split like it.
    split_every : int, default=8
        How many statistics one merge task combines (the fan-in of the tree).
    chunk_size : int or None, default=None
        Rows per internal chunk on the workers (see
        :class:`~sknc.metrics.NCStatistics`).
    compute : bool, default=True
        Compute and return the statistics; False returns the lazy
        ``dask.delayed`` value (compute it with any Dask scheduler, e.g.
        ``client.compute(value)``).

    Returns
    -------
    NCStatistics or dask.delayed.Delayed
        The merged statistics of all partitions. Empty partitions are
        skipped.

    Raises
    ------
    ValueError
        On labels not partitioned like ``X``, a partition whose rows and
        labels differ in number (the message names the partition), or any
        error of :meth:`NCStatistics.update <sknc.metrics.NCStatistics.update>`
        (NaN, inconsistent widths, ...).

    See Also
    --------
    sknc.metrics.NCStatistics : The mergeable statistics.
    nc4_counter_from_partitions : The second pass, for NC4.
    collapse_report_from_partitions : Both passes at once.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sknc.metrics import nc1
    >>> from sknc.parallel import nc_statistics_from_partitions
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 4, 1000)
    >>> X = np.eye(4)[y] * 3 + rng.normal(size=(1000, 4))
    >>> stats = nc_statistics_from_partitions(da.from_array(X, chunks=(100, 4)), y)
    >>> stats.n_samples_, bool(np.isclose(stats.nc1(), nc1(X, y), rtol=1e-12))
    (1000, True)
    """
    split_every = _check_split_every(split_every)
    layout, x_parts, y_parts = _xy_partitions(X, y)
    from dask import delayed

    task = delayed(_partition_statistics, pure=True)
    leaves = [
        task(xp, yp, layout, chunk_size, i) for i, (xp, yp) in enumerate(zip(x_parts, y_parts))
    ]
    result = _tree_reduce(leaves, _merge_statistics, split_every)
    return result.compute() if compute else result


def nc4_counter_from_partitions(counter, X, y=None, *, split_every=8, compute=True):
    """Fill an NC4 counter from partitioned features (the second NC4 pass).

    NC4 compares each sample's linear prediction with its nearest class
    mean, so it needs the class means of the whole data first: get them with
    :func:`nc_statistics_from_partitions`, bind the classifier with
    :meth:`NCStatistics.nc4_counter <sknc.metrics.NCStatistics.nc4_counter>`,
    then pass the empty counter here. Each partition fills a copy of it where
    the partition lives; the copies are summed by a tree reduction.

    Parameters
    ----------
    counter : NC4Counter
        An empty counter (``n_samples_ == 0``) bound to the class means and
        the classifier; it is not modified.
    X : partitioned collection
        The features, in any form :func:`nc_statistics_from_partitions`
        accepts.
    y : partitioned collection or None, default=None
        Not read (NC4 needs no labels); accepted so that the same ``(X, y)``
        as for the first pass can be given. With ``y=None``, a bag or a
        delayed list ``X`` holds ``(features, label)`` pairs, as in the first
        pass; a dask array or dataframe holds the features alone.
    split_every : int, default=8
        Fan-in of the merge tree.
    compute : bool, default=True
        Return the computed counter (True) or the lazy ``dask.delayed`` value.

    Returns
    -------
    NC4Counter or dask.delayed.Delayed
        A new, filled counter; ``.value`` is NC4.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sknc.metrics import nc4
    >>> from sknc.parallel import nc4_counter_from_partitions, nc_statistics_from_partitions
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 600)
    >>> X = np.eye(3)[y] + rng.normal(size=(600, 3))
    >>> clf = LogisticRegression().fit(X, y)
    >>> Xd = da.from_array(X, chunks=(100, 3))
    >>> stats = nc_statistics_from_partitions(Xd, y)
    >>> counter = stats.nc4_counter(clf.coef_, clf.intercept_)
    >>> filled = nc4_counter_from_partitions(counter, Xd)
    >>> filled.n_samples_, filled.value == nc4(X, y, clf.coef_, clf.intercept_)
    (600, True)
    """
    if not isinstance(counter, NC4Counter):
        raise TypeError(
            f"counter must be an NC4Counter (from NCStatistics.nc4_counter), got "
            f"{type(counter).__name__}."
        )
    if counter.n_samples_ != 0:
        raise ValueError(
            f"counter must be empty, but it has already counted {counter.n_samples_} "
            "samples; bind a fresh one with NCStatistics.nc4_counter(coef, intercept)."
        )
    split_every = _check_split_every(split_every)
    _import_dask()
    from dask import delayed

    # labels are not needed: only the features of X are read
    kind, x_parts, _ = _partitions(X, "X")
    layout = "split"
    if y is None and kind in ("bag", "delayed"):
        layout = "pairs" if kind == "bag" else "pair"
    shared = delayed(counter, name=f"nc4counter-{uuid.uuid4().hex}")
    task = delayed(_partition_nc4, pure=True)
    leaves = [task(shared, xp, layout, i) for i, xp in enumerate(x_parts)]
    result = _tree_reduce(leaves, _merge_nc4, split_every)
    return result.compute() if compute else result


def collapse_report_from_partitions(
    X,
    y=None,
    coef=None,
    intercept=None,
    *,
    center="global",
    cdnv_variant="symmetric",
    nc3_variant="papyan",
    classes=None,
    split_every=8,
    chunk_size=None,
):
    """Every neural-collapse metric of partitioned features, in one or two passes.

    The distributed counterpart of :func:`sknc.metrics.collapse_report`: one
    map-reduce pass for the statistics
    (:func:`nc_statistics_from_partitions`) and, with ``coef``, a second one
    for NC4 (:func:`nc4_counter_from_partitions`). ``X`` is read once per
    pass: persist it first (``X = client.persist(X)``) when it is expensive
    to compute, e.g. the output of :func:`extract_features`.

    Parameters
    ----------
    X, y : partitioned collections
        As for :func:`nc_statistics_from_partitions`.
    coef : array-like of shape (n_classes, n_features), default=None
        Linear classifier weights; enables NC3 and NC4.
    intercept : array-like of shape (n_classes,), scalar or None, default=None
        Intercepts for NC4; None means zeros.
    center : {"global", "class-means"}, default="global"
        Centre of the class means.
    cdnv_variant : {"symmetric", "asymmetric"}, default="symmetric"
        CDNV form.
    nc3_variant : {"papyan", "zhu"}, default="papyan"
        NC3 form.
    classes : array-like or None, default=None
        Labels of the rows of ``coef``.
    split_every : int, default=8
        Fan-in of the merge trees.
    chunk_size : int or None, default=None
        Rows per internal chunk on the workers.

    Returns
    -------
    CollapseReport
        As :func:`sknc.metrics.collapse_report` returns for the same data.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from sknc.metrics import collapse_report
    >>> from sknc.parallel import collapse_report_from_partitions
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> X = np.eye(3)[y] * 4 + rng.normal(size=(300, 3))
    >>> W = np.eye(3)
    >>> report = collapse_report_from_partitions(da.from_array(X, chunks=(50, 3)), y, W)
    >>> local = collapse_report(X, y, W)
    >>> bool(np.isclose(report.nc1, local.nc1)), report.nc4 == local.nc4
    (True, True)
    """
    # bad options fail here, before any pass over the partitions
    check_report_options(center, cdnv_variant, nc3_variant)
    if coef is None and intercept is not None:
        raise ValueError("intercept was given without coef; pass the classifier weights too.")
    stats = nc_statistics_from_partitions(X, y, split_every=split_every, chunk_size=chunk_size)
    nc4 = None
    if coef is not None:
        counter = stats.nc4_counter(coef, intercept, classes=classes)
        nc4 = nc4_counter_from_partitions(counter, X, y, split_every=split_every)
    return stats.report(
        coef,
        center=center,
        cdnv_variant=cdnv_variant,
        nc3_variant=nc3_variant,
        classes=classes,
        nc4=nc4,
    )

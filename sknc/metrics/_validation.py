"""Input validation shared by the metric functions and the statistics object."""

import numbers

import numpy as np
from sklearn.utils import check_array, column_or_1d

from ..utils import is_torch_tensor, to_numpy
from ._backend import get_ops

_CENTERS = ("global", "class-means")


def check_center(center):
    """Validate the ``center`` option."""
    if not isinstance(center, str) or center not in _CENTERS:
        raise ValueError(
            f"center={center!r} is not supported; use 'global' (mean of all "
            "samples) or 'class-means' (mean of the class means)."
        )
    return center


def check_option(value, name, allowed):
    """Validate a string option against a tuple of allowed values."""
    if not isinstance(value, str) or value not in allowed:
        allowed_txt = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not supported; use one of {allowed_txt}.")
    return value


def check_features(X, name="X", cpu_tensors_as_numpy=True):
    """Validate a feature matrix and return it with its array adapter.

    numpy input (or anything array-like) goes through scikit-learn's
    ``check_array`` (2-D, numeric; float32 is kept, everything else becomes
    float64). torch tensors stay on their device: float64 and float32 are kept,
    half precision is computed in float32 chunk by chunk, integers become
    float64. float32/float64 tensors on the CPU are returned as zero-copy
    numpy views (``Tensor.numpy()``) with the numpy adapter unless
    ``cpu_tensors_as_numpy=False``: the numpy path is the faster one on the
    CPU (BLAS GEMMs, worker threads with one BLAS thread each, no torch
    thread pool waiting on a busy machine). Finiteness is *not* checked here: the first pass over the data
    detects NaN/inf through the class sums for free (see
    :func:`raise_not_finite`).
    """
    if is_torch_tensor(X):
        import torch

        if X.ndim != 2:
            raise ValueError(
                f"Expected a 2-D {name} of shape (n_samples, n_features), got a "
                f"{X.ndim}-D tensor of shape {tuple(X.shape)}. Reshape it, e.g. "
                f"with {name}.reshape(-1, 1) for a single feature."
            )
        if X.is_complex():
            raise ValueError(f"{name} must be real-valued, got dtype {X.dtype}.")
        if not X.is_floating_point():
            X = X.to(torch.float64)
        X = X.detach()
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(
                f"{name} of shape {tuple(X.shape)} is empty; at least one sample "
                "and one feature are required."
            )
        if (
            cpu_tensors_as_numpy
            and X.device.type == "cpu"
            and X.dtype in (torch.float32, torch.float64)
        ):
            X = X.resolve_conj().resolve_neg().numpy()
            return X, get_ops(X)
        return X, get_ops(X)
    if np.iscomplexobj(X):  # check_array's own message prints the whole array
        raise ValueError(f"{name} must be real-valued, got dtype {np.asarray(X).dtype}.")
    X = check_array(
        X,
        accept_sparse=False,
        dtype=[np.float64, np.float32],
        ensure_all_finite=False,
        ensure_2d=True,
        allow_nd=False,
        input_name=name,
    )
    return X, get_ops(X)


def raise_not_finite(X, ops, name="X"):
    """Raise the ValueError for non-finite input (called when a sum overflowed)."""
    if ops.is_torch:
        import torch

        finite = bool(torch.isfinite(X).all())
    else:
        finite = bool(np.isfinite(X).all())
    if not finite:
        raise ValueError(
            f"{name} contains NaN or infinity; neural-collapse metrics need finite features."
        )
    raise ValueError(f"{name} has values so large that their sums overflow; rescale the features.")


def _unique_numpy(y):
    """Sorted unique labels and integer codes for a 1-D numpy label array."""
    if y.dtype.kind in "iu" and y.size:
        lo, hi = int(y.min()), int(y.max())
        if hi - lo <= 4 * y.size + 1024 and hi <= np.iinfo(np.intp).max:
            # fast path for integer labels: no sort needed
            # shift in a wide dtype: int8 labels -100..100 overflow y - lo
            shifted = y.astype(np.intp) - lo
            counts = np.bincount(shifted, minlength=hi - lo + 1)
            present = np.flatnonzero(counts)
            lut = np.full(hi - lo + 1, -1, dtype=np.intp)
            lut[present] = np.arange(present.size)
            codes = lut[shifted]
            return (present + lo).astype(y.dtype), codes
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as exc:
        raise ValueError(
            "y contains labels that cannot be sorted together (e.g. a mix of "
            "strings and numbers); use labels of one kind."
        ) from exc
    return classes, codes.reshape(-1).astype(np.intp, copy=False)


def encode_labels(y, n_samples, ops, *, min_classes=2):
    """Encode labels of any kind as integer codes into the sorted classes.

    Parameters
    ----------
    y : array-like or torch tensor of shape (n_samples,)
        Class labels (ints, strings, any sortable hashable values).
    n_samples : int
        Expected number of labels (rows of X).
    ops : adapter
        Adapter of X; codes are returned on X's backend/device.
    min_classes : int, default=2
        Minimum number of distinct classes.

    Returns
    -------
    classes : ndarray of shape (n_classes,)
        Sorted distinct labels (numpy, CPU).
    codes : ndarray or torch tensor of shape (n_samples,)
        Index of each sample's class in ``classes``, on X's device.
    """
    if is_torch_tensor(y):
        import torch

        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D of shape (n_samples,), got shape {tuple(y.shape)}.")
        if y.shape[0] != n_samples:
            raise ValueError(
                f"X has {n_samples} samples but y has {y.shape[0]} labels; they "
                "must have the same length."
            )
        if y.is_complex():
            raise ValueError("y must hold real or integer labels, not complex ones.")
        if y.is_floating_point() and not bool(torch.isfinite(y).all()):
            raise ValueError("y contains NaN or infinity; labels must be finite.")
        if ops.is_torch:
            classes_t, codes = torch.unique(y, sorted=True, return_inverse=True)
            classes = classes_t.cpu().numpy()
            codes = codes.to(ops.device)
        else:
            classes, codes = _unique_numpy(y.detach().cpu().numpy())
    else:
        y_arr = np.asarray(y) if not isinstance(y, np.ndarray) else y
        if y_arr.ndim == 0:
            raise ValueError("y must be 1-D of shape (n_samples,), got a scalar.")
        y_arr = column_or_1d(y_arr, warn=False)
        if y_arr.shape[0] != n_samples:
            raise ValueError(
                f"X has {n_samples} samples but y has {y_arr.shape[0]} labels; they "
                "must have the same length."
            )
        if y_arr.dtype.kind == "c":
            raise ValueError("y must hold real or integer labels, not complex ones.")
        if y_arr.dtype.kind == "f" and not np.isfinite(y_arr).all():
            raise ValueError("y contains NaN or infinity; labels must be finite.")
        if y_arr.dtype.kind == "O":
            if any(v is None or (isinstance(v, float) and v != v) for v in y_arr):
                raise ValueError("y contains missing labels (None or NaN).")
        classes, codes = _unique_numpy(y_arr)
        if ops.is_torch:
            codes = ops.from_numpy(codes.astype(np.int64))
    if len(classes) < min_classes:
        raise ValueError(
            f"y has {len(classes)} distinct class(es); neural-collapse metrics need "
            f"at least {min_classes} classes."
        )
    return classes, codes


def check_coef(coef, intercept, classes, n_features, coef_classes=None):
    """Validate classifier weights against the classes of y.

    Parameters
    ----------
    coef : array-like or tensor of shape (n_coef_classes, n_features)
        Linear classifier weights, one row per class. A binary scikit-learn
        coefficient of shape (1, n_features) with two classes is expanded to
        ``[-w/2, w/2]`` (and the intercept to ``[-b/2, b/2]``), which gives the
        same predictions.
    intercept : array-like, scalar or None
        Intercepts, shape (n_coef_classes,) (or (1,) for the binary form);
        None means zeros.
    classes : ndarray of shape (n_classes,)
        Sorted classes of y.
    n_features : int
        Number of features of X.
    coef_classes : array-like or None
        Labels of the rows of ``coef``. None means the rows follow ``classes``.

    Returns
    -------
    W : ndarray of shape (n_rows, n_features), float64
    b : ndarray of shape (n_rows,), float64
    row_codes : ndarray of shape (n_rows,), intp
        Index into ``classes`` of each row's class, or -1 for a row whose class
        does not occur in y.
    W_y : ndarray of shape (n_classes, n_features)
        The rows of ``W`` for the classes of y, in sorted order (for NC3).
    """
    K = len(classes)
    if coef is None:
        raise ValueError("coef is required: pass the (n_classes, n_features) weights.")
    W = np.asarray(to_numpy(coef), dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(
            f"coef must be 2-D of shape (n_classes, n_features), got shape "
            f"{W.shape}; for a single binary weight vector use coef.reshape(1, -1)."
        )
    if coef_classes is None:
        labels = np.asarray(classes)
    else:
        labels = np.asarray(to_numpy(coef_classes))
        if labels.ndim != 1:
            raise ValueError("classes must be 1-D: the label of each row of coef.")
        if len(np.unique(labels)) != len(labels):
            raise ValueError("classes must not contain duplicate labels.")
    n_rows = len(labels)
    binary = W.shape[0] == 1 and n_rows == 2
    if W.shape[1] != n_features or (W.shape[0] != n_rows and not binary):
        expected = f"({n_rows}, {n_features})"
        if n_rows == 2:
            expected += f" or (1, {n_features})"
        why = ""
        if W.shape[1] == n_features and n_rows > 2 and W.shape[0] == n_rows * (n_rows - 1) // 2:
            why = (
                f" {W.shape[0]} = {n_rows}*{n_rows - 1}/2 rows is the one-vs-one layout "
                "(one row per pair of classes, e.g. SVC(kernel='linear').coef_); NC3 and "
                "NC4 need one row per class (one-vs-rest), e.g. from LinearSVC or "
                "LogisticRegression."
            )
        raise ValueError(
            f"coef has shape {W.shape} but {expected} was expected "
            f"({n_rows} classes, {n_features} features).{why}"
        )
    if intercept is None:
        b = np.zeros(W.shape[0])
    else:
        b = np.asarray(to_numpy(intercept), dtype=np.float64)
        if b.ndim == 0 or b.shape == (1,) and W.shape[0] == 1:
            b = np.broadcast_to(b.reshape(-1), (W.shape[0],)).copy()
        if b.shape != (W.shape[0],):
            raise ValueError(
                f"intercept has shape {b.shape} but ({W.shape[0]},) was expected, "
                "one value per row of coef."
            )
    if not (np.isfinite(W).all() and np.isfinite(b).all()):
        raise ValueError("coef or intercept contains NaN or infinity.")
    if binary:
        W = np.vstack([-W[0] / 2.0, W[0] / 2.0])
        b = np.array([-b[0] / 2.0, b[0] / 2.0])
    if coef_classes is None:
        row_codes = np.arange(K, dtype=np.intp)
        W_y = W
    else:
        pos = {lab: i for i, lab in enumerate(labels.tolist())}
        missing = [c for c in classes.tolist() if c not in pos]
        if missing:
            raise ValueError(
                f"y contains classes {missing[:5]} that are not among the classes of coef."
            )
        cls_pos = {lab: i for i, lab in enumerate(classes.tolist())}
        row_codes = np.array([cls_pos.get(lab, -1) for lab in labels.tolist()], dtype=np.intp)
        W_y = W[[pos[c] for c in classes.tolist()]]
    return W, b, row_codes, W_y


def check_not_one_vs_one(clf, metric):
    """Refuse a classifier whose ``coef_`` has one row per pair of classes.

    scikit-learn's libsvm classifiers (``SVC``, ``NuSVC``; recognised by their
    ``decision_function_shape`` parameter) store one-vs-one coefficients,
    ``K(K-1)/2`` rows whatever ``decision_function_shape`` says; with three
    classes that is 3 rows, the shape of a one-vs-rest ``coef_``.
    """
    classes = getattr(clf, "classes_", None)
    n_classes = None if classes is None else len(classes)
    coef = getattr(clf, "coef_", None)
    n_rows = None if coef is None else np.shape(to_numpy(coef))[0]
    ovo = hasattr(clf, "decision_function_shape") and hasattr(clf, "dual_coef_")
    if n_classes is not None and n_classes > 2 and n_rows is not None:
        ovo = ovo or (n_rows == n_classes * (n_classes - 1) // 2 and n_rows != n_classes)
    if ovo and (n_classes is None or n_classes > 2):
        raise ValueError(
            f"{metric.upper()} needs one classifier row per class (one-vs-rest), but "
            f"{type(clf).__name__}.coef_ holds one row per pair of classes "
            f"(one-vs-one, {n_rows} rows for {n_classes} classes; "
            "decision_function_shape does not change coef_). Use a one-vs-rest "
            "linear classifier such as LinearSVC or LogisticRegression."
        )


def check_chunk_size(chunk_size):
    """Validate the ``chunk_size`` option (None or a positive int)."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")
    return int(chunk_size)

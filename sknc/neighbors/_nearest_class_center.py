"""Nearest-class-centre (NCC) classifier.

The classifier of Galanti et al. (ICLR 2022) for few-shot transfer: the class
means of (optionally normalised) support features, and each query goes to the
nearest mean.
"""

import numbers

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..utils._rounding import gamma64, safe_margin

_METRICS = ("euclidean", "cosine")
_NORMALIZE = (None, "l2", "center+l2")


def _safe_norms(X):
    """Row norms of ``X`` with zeros replaced by one (for safe division).

    Zero rows stay zero after division, as in
    :func:`sklearn.preprocessing.normalize`.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    norms[norms == 0.0] = 1.0
    return norms


def _squared_distances(Z, C, chunk_elements=1 << 20):
    """Squared Euclidean distances between the rows of ``Z`` and of ``C``.

    Fast expansion ``||z||^2 - 2 z.c + ||c||^2`` on rows and centres shifted
    by the mean of the centres (translation keeps it accurate for features
    with a large common offset). Rows whose two smallest distances lie within
    a generous bound on the expansion's rounding error are recomputed
    directly as ``sum((z - c)**2)``, so that the nearest centre, and ties in
    particular, are those of the textbook formula.
    """
    ref = C.mean(axis=0)
    Zs = Z - ref
    Cs = C - ref
    zz = np.einsum("ij,ij->i", Zs, Zs)
    cc = np.einsum("ij,ij->i", Cs, Cs)
    d2 = -2.0 * (Zs @ Cs.T)
    d2 += zz[:, None]
    d2 += cc[None, :]
    np.maximum(d2, 0.0, out=d2)
    if C.shape[0] < 2 or Z.shape[0] == 0:
        return d2
    # rounding bound and decision margin: see sknc.utils._rounding
    span = np.sqrt(zz) + np.sqrt(cc.max())
    two = np.partition(d2, 1, axis=1)[:, :2]
    tol = safe_margin(gamma64(Z.shape[1]) * span * span)
    redo = np.flatnonzero(~(two[:, 1] - two[:, 0] > tol))
    step = max(1, chunk_elements // (C.shape[0] * C.shape[1]))
    for i in range(0, redo.size, step):
        rows = redo[i : i + step]
        diff = Z[rows, None, :] - C[None, :, :]
        d2[rows] = np.einsum("ijk,ijk->ij", diff, diff)
    return d2


def _validate_ncc_params(metric, normalize, temperature=1.0):
    """Check the parameters shared by the estimator and the episode fast path."""
    if not isinstance(metric, str) or metric not in _METRICS:
        raise ValueError(f"metric must be one of {list(_METRICS)}; got metric={metric!r}.")
    if normalize is not None and (not isinstance(normalize, str) or normalize not in _NORMALIZE):
        raise ValueError(
            f"normalize must be one of {list(_NORMALIZE)}; got normalize={normalize!r}."
        )
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not np.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            f"temperature must be a finite number > 0; got temperature={temperature!r}."
        )


class NearestClassCenter(ClassifierMixin, BaseEstimator):
    """Nearest-class-centre (NCC) classifier.

    Each class is represented by the mean of its (optionally normalised)
    training features; a sample is assigned to the class whose centre is
    nearest. This is the few-shot classifier of Galanti et al., *On the Role
    of Neural Collapse in Transfer Learning* (ICLR 2022): fitted on the
    support set of an N-way K-shot episode, it classifies the queries.

    Unlike :class:`sklearn.neighbors.NearestCentroid` it offers feature
    normalisation, cosine distance, :meth:`predict_proba`, and works with one
    sample per class, string labels and query sets in which some classes are
    absent.

    Parameters
    ----------
    metric : {"euclidean", "cosine"}, default="euclidean"
        Distance between a (normalised) sample and a class centre. Cosine
        distance is ``1 - cos(x, c)``; a zero vector has cosine 0 with every
        centre.

    normalize : {None, "l2", "center+l2"}, default=None
        Feature normalisation applied to training and test samples before the
        class centres are computed:

        - ``None``: raw features.
        - ``"l2"``: each sample divided by its Euclidean norm.
        - ``"center+l2"``: the mean of the training samples (the support
          mean, stored in ``center_``) is subtracted, then each sample is
          divided by its norm.

        Zero vectors are left at zero. The class centres are the means of the
        normalised samples (they are not re-normalised).

    temperature : float, default=1.0
        Temperature ``T`` of :meth:`predict_proba`, the softmax of the
        negative distances divided by ``T``. Does not affect
        :meth:`predict`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.

    centroids_ : ndarray of shape (n_classes, n_features)
        Class centres (means of the normalised training samples), rows in
        the order of ``classes_``.

    class_count_ : ndarray of shape (n_classes,)
        Number of training samples per class.

    center_ : ndarray of shape (n_features,) or None
        Mean of the training samples subtracted before normalisation when
        ``normalize="center+l2"``, else None.

    n_features_in_ : int
        Number of features seen during :meth:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :meth:`fit`, defined only when `X` has
        string feature names.

    See Also
    --------
    sklearn.neighbors.NearestCentroid : scikit-learn's nearest centroid.
    sknc.model_selection.EpisodeSplit : N-way K-shot episodes as CV splits.
    sknc.model_selection.evaluate_episodes : vectorised few-shot evaluation
        that gives the same per-episode accuracies as this estimator.

    Notes
    -----
    Computation is in float64. Ties (a sample exactly as close to two
    centres) go to the class that comes first in ``classes_``.

    Euclidean distances are computed by expansion,
    ``||z||^2 - 2 z.c + ||c||^2``, after shifting samples and centres by the
    mean of the centres (accurate for features with a large common offset);
    samples whose two nearest centres are within the expansion's rounding
    error of each other get their distances recomputed directly as
    ``sum((x - c)**2)``, so exact ties stay exact.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.neighbors import NearestClassCenter
    >>> X = np.array([[0.0, 0.0], [0.0, 1.0], [4.0, 4.0], [5.0, 4.0]])
    >>> y = np.array(["cat", "cat", "dog", "dog"])
    >>> ncc = NearestClassCenter().fit(X, y)
    >>> ncc.centroids_
    array([[0. , 0.5],
           [4.5, 4. ]])
    >>> ncc.predict([[1.0, 1.0], [3.0, 5.0]])
    array(['cat', 'dog'], dtype='<U3')
    >>> ncc.predict_proba([[1.0, 1.0]]).round(3)
    array([[0.97, 0.03]])
    """

    def __init__(self, metric="euclidean", normalize=None, temperature=1.0):
        self.metric = metric
        self.normalize = normalize
        self.temperature = temperature

    def fit(self, X, y):
        """Compute the class centres of the training samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features (e.g. the support set of an episode).

        y : array-like of shape (n_samples,)
            Class labels: any hashable labels (ints, strings). At least two
            classes; one sample per class is enough.

        Returns
        -------
        self : NearestClassCenter
            The fitted classifier.
        """
        _validate_ncc_params(self.metric, self.normalize, self.temperature)
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, y_enc, counts = np.unique(y, return_inverse=True, return_counts=True)
        if classes.shape[0] < 2:
            raise ValueError(
                "NearestClassCenter needs samples of at least 2 classes; got 1 class "
                f"({classes[0]!r})."
            )
        if self.normalize == "center+l2":
            self.center_ = X.mean(axis=0)
            X = X - self.center_
        else:
            self.center_ = None
        if self.normalize is not None:
            X = X / _safe_norms(X)[:, None]
        order = np.argsort(y_enc, kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        sums = np.add.reduceat(X[order], starts, axis=0)
        self.classes_ = classes
        self.class_count_ = counts
        self.centroids_ = sums / counts[:, None]
        return self

    def _transform(self, X):
        """Apply the fitted normalisation to validated float64 samples."""
        if self.center_ is not None:
            X = X - self.center_
        if self.normalize is not None:
            X = X / _safe_norms(X)[:, None]
        return X

    def _distances(self, X):
        """Distances (n_samples, n_classes) from samples to the class centres."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        Z = self._transform(X)
        C = self.centroids_
        if self.metric == "euclidean":
            return np.sqrt(_squared_distances(Z, C))
        Zn = Z / _safe_norms(Z)[:, None]
        Cn = C / _safe_norms(C)[:, None]
        return 1.0 - Zn @ Cn.T

    def decision_function(self, X):
        """Negative distances to the class centres.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
            ``-distance(x, centre_k)``, columns in the order of
            ``classes_``; larger means closer. For two classes, following
            scikit-learn's binary convention, a 1-D array
            ``distance(x, centre_0) - distance(x, centre_1)``: positive
            values mean ``classes_[1]``, zero or negative ``classes_[0]``.
        """
        D = self._distances(X)
        if D.shape[1] == 2:
            return D[:, 0] - D[:, 1]
        return -D

    def predict(self, X):
        """Label of the nearest class centre.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels; ties go to the first class in ``classes_``.
        """
        D = self._distances(X)
        return self.classes_[np.argmin(D, axis=1)]

    def predict_proba(self, X):
        """Softmax of the negative distances divided by ``temperature``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Class probabilities, columns in the order of ``classes_``.
        """
        D = self._distances(X)
        return softmax(-D / self.temperature, axis=1)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`, computed stably.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            Log class probabilities, columns in the order of ``classes_``.
        """
        from scipy.special import log_softmax

        D = self._distances(X)
        return log_softmax(-D / self.temperature, axis=1)

"""N-way K-shot episodes as a scikit-learn cross-validation splitter."""

import numbers

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, column_or_1d

from ..utils import to_numpy
from ..utils._warnings import IgnoredOptionWarning, warn_external

# Episodes are drawn in chunks of this many (the last one truncated), one
# random stream for the whole run: ``split`` and ``evaluate_episodes`` both go
# through ``_iter_chunks``, so they see identical episodes, and the first k
# episodes do not depend on ``n_episodes``. Changing it changes the episodes
# drawn for a given seed.
_CHUNK_EPISODES = 1024


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {name}={value!r}.")
    return int(value)


def _distinct_by_rejection(rng, pools, m):
    """One ordered m-tuple of distinct integers from ``range(pools[i])`` per row.

    Vectorised rejection sampling: draw every row, redraw the rows with a
    repeated value until none is left. Conditioning independent uniform draws
    on being distinct makes each row uniform over the ordered m-tuples without
    repetition. Meant for ``m * (m - 1) <= pool``, where a row is accepted with
    probability above about 0.6.
    """
    pools = np.asarray(pools, dtype=np.intp)[:, None]
    out = _uniform_ints(rng, pools, m)
    todo = np.arange(pools.shape[0])
    while todo.size:
        srt = np.sort(out[todo], axis=1)
        todo = todo[(srt[:, 1:] == srt[:, :-1]).any(axis=1)]
        if todo.size:
            out[todo] = _uniform_ints(rng, pools[todo], m)
    return out


def _uniform_ints(rng, pools, m):
    """``m`` integers uniform in ``range(pool)`` per row of ``pools`` (shape (n, 1)).

    ``floor(u * pool)`` with ``u`` uniform on [0, 1) in 53-bit steps: bias
    below ``pool / 2**53``, and faster than ``randint`` with per-row bounds.
    """
    out = (rng.random_sample((pools.shape[0], m)) * pools).astype(np.intp)
    return np.minimum(out, pools - 1, out=out)


def _distinct_by_keys(rng, n_rows, pool, m):
    """Like :func:`_distinct_by_rejection` for a common small pool.

    Random keys for the whole pool; the m smallest, in key order, form a
    uniformly random ordered m-tuple. Cost proportional to ``n_rows * pool``.
    """
    keys = rng.random_sample((n_rows, pool))
    sel = np.argpartition(keys, m - 1, axis=1)[:, :m]
    order = np.argsort(np.take_along_axis(keys, sel, axis=1), axis=1)
    return np.take_along_axis(sel, order, axis=1).astype(np.intp, copy=False)


def _use_rejection(pool, m):
    return m * (m - 1) <= pool


class EpisodeSplit(BaseCrossValidator):
    """N-way K-shot episodes as a cross-validation splitter.

    Each split is one few-shot episode: ``n_way`` classes are drawn at
    random, then ``n_shot`` support samples and ``n_query`` query samples
    (disjoint) from each of them. The support indices are the training set,
    the query indices the test set, so any classifier can be evaluated with
    the episodic protocol of Galanti et al. (ICLR 2022) through
    :func:`~sklearn.model_selection.cross_val_score`; for the
    nearest-class-centre classifier on cached features,
    :func:`sknc.model_selection.evaluate_episodes` evaluates the same
    episodes much faster.

    Parameters
    ----------
    n_way : int, default=5
        Number of classes per episode (at least 2).

    n_shot : int, default=5
        Support (training) samples per class and episode.

    n_query : int, default=15
        Query (test) samples per class and episode.

    n_episodes : int, default=600
        Number of episodes, i.e. of splits.

    classes : array-like of labels, default=None
        Restrict the episodes to these classes (e.g. the novel classes a
        backbone never saw); samples of other classes are never drawn. By
        default every class in ``y`` is used.

    small_classes : {"raise", "skip"}, default="raise"
        What to do with a class (among ``classes``) that has fewer than
        ``n_shot + n_query`` samples: raise a ``ValueError`` naming it, or
        leave it out of the episodes.

    random_state : int, RandomState instance or None, default=None
        Controls the episodes drawn. As for
        :class:`~sklearn.model_selection.ShuffleSplit`, the generator is
        taken with :func:`~sklearn.utils.check_random_state` at every call of
        :meth:`split` or :meth:`sample_episodes`: with an int, every call
        gives the same episodes; with a ``RandomState`` instance or None,
        each call gives new episodes. Pass an int to evaluate two models (or
        the ``cross_val_score`` path and :func:`evaluate_episodes`) on
        identical episodes.

    See Also
    --------
    sknc.model_selection.evaluate_episodes : vectorised NCC evaluation of
        the same episodes.
    sknc.neighbors.NearestClassCenter : the few-shot classifier.

    Notes
    -----
    With an int ``random_state``, the first ``k`` episodes are the same
    whatever ``n_episodes`` (at least ``k``) is.

    Within an episode the classes are in sorted label order, and the support
    (and query) indices are grouped by class in that order:
    ``train[j * n_shot:(j + 1) * n_shot]`` are the support samples of the
    ``j``-th class of the episode. Episodes are drawn independently, so a
    sample can appear in several episodes.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import cross_val_score
    >>> from sknc.model_selection import EpisodeSplit
    >>> from sknc.neighbors import NearestClassCenter
    >>> X, y = load_digits(return_X_y=True)
    >>> cv = EpisodeSplit(n_way=5, n_shot=5, n_query=15, n_episodes=20,
    ...                   classes=[5, 6, 7, 8, 9], random_state=0)
    >>> train, test = next(cv.split(X, y))
    >>> train.shape, test.shape
    ((25,), (75,))
    >>> y[train[:10]]
    array([5, 5, 5, 5, 5, 6, 6, 6, 6, 6])
    >>> scores = cross_val_score(NearestClassCenter(), X, y, cv=cv)
    >>> scores.shape
    (20,)
    >>> print(f"{scores.mean():.3f}")
    0.891
    """

    def __init__(
        self,
        n_way=5,
        n_shot=5,
        n_query=15,
        *,
        n_episodes=600,
        classes=None,
        small_classes="raise",
        random_state=None,
    ):
        self.n_way = n_way
        self.n_shot = n_shot
        self.n_query = n_query
        self.n_episodes = n_episodes
        self.classes = classes
        self.small_classes = small_classes
        self.random_state = random_state

    def _check_params(self):
        n_way = _check_int(self.n_way, "n_way", 2)
        n_shot = _check_int(self.n_shot, "n_shot", 1)
        n_query = _check_int(self.n_query, "n_query", 1)
        n_episodes = _check_int(self.n_episodes, "n_episodes", 1)
        if self.small_classes not in ("raise", "skip"):
            raise ValueError(
                "small_classes must be 'raise' or 'skip'; got "
                f"small_classes={self.small_classes!r}."
            )
        return n_way, n_shot, n_query, n_episodes

    def _check_y(self, X, y):
        if y is None:
            raise ValueError(
                f"{type(self).__name__}.split needs the class labels y to draw "
                "episodes; got y=None."
            )
        y = column_or_1d(to_numpy(y), warn=True)
        if X is not None:
            check_consistent_length(X, y)
        check_classification_targets(y)
        return y

    def _class_pool(self, y):
        """Labels, per-class sample indices and the classes episodes draw from.

        Returns
        -------
        labels : ndarray
            Sorted unique labels of ``y``.
        members : ndarray of shape (n_samples,)
            Sample indices sorted by class (stable, so ascending within a
            class); class ``c`` owns ``members[starts[c]:starts[c] + counts[c]]``.
        starts, counts : ndarray of shape (n_labels,)
        eligible : ndarray
            Codes (indices into ``labels``) of the classes episodes draw
            from, ascending.
        """
        n_way, n_shot, n_query, _ = self._check_params()
        labels, y_enc, counts = np.unique(y, return_inverse=True, return_counts=True)
        if self.classes is None:
            eligible = np.arange(labels.shape[0])
        else:
            code_of = {label: code for code, label in enumerate(labels.tolist())}
            wanted = list(dict.fromkeys(np.asarray(self.classes, dtype=object).ravel().tolist()))
            missing = [c for c in wanted if c not in code_of]
            if missing:
                raise ValueError(
                    f"classes {missing} do not occur in y "
                    f"(labels present: {_preview(labels.tolist())})."
                )
            eligible = np.sort(np.array([code_of[c] for c in wanted], dtype=np.intp))
        need = n_shot + n_query
        small = eligible[counts[eligible] < need]
        if small.size and self.small_classes == "raise":
            names = labels.tolist()
            named = ", ".join(f"{names[c]!r} ({counts[c]} samples)" for c in small[:10])
            more = f" and {small.size - 10} more" if small.size > 10 else ""
            raise ValueError(
                f"Class {named}{more} has fewer than n_shot + n_query = {need} "
                "samples, needed to draw an episode. Restrict the classes with "
                "classes=..., lower n_shot or n_query, or pass "
                "small_classes='skip' to leave such classes out."
            )
        eligible = eligible[counts[eligible] >= need]
        if eligible.size < n_way:
            raise ValueError(
                f"Only {eligible.size} classes have at least n_shot + n_query = "
                f"{need} samples, fewer than n_way={n_way}."
            )
        members = np.argsort(y_enc, kind="stable").astype(np.intp, copy=False)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        return labels, members, starts, counts, eligible

    def _iter_chunks(self, y):
        """Yield episodes in chunks: ``(support, query)`` index arrays.

        ``support`` has shape (n, n_way, n_shot) and ``query`` shape
        (n, n_way, n_query), with n <= ``_CHUNK_EPISODES``; ``y`` is a
        validated 1-D numpy array. The random generator is taken once per
        call, as in ShuffleSplit.
        """
        n_way, n_shot, n_query, n_episodes = self._check_params()
        _, members, starts, counts, eligible = self._class_pool(y)
        rng = check_random_state(self.random_state)
        m = n_shot + n_query
        for first in range(0, n_episodes, _CHUNK_EPISODES):
            # always draw a whole chunk, so that the first episodes do not
            # depend on n_episodes
            n = _CHUNK_EPISODES
            keep = min(n, n_episodes - first)
            if _use_rejection(eligible.size, n_way):
                ways = _distinct_by_rejection(rng, np.full(n, eligible.size), n_way)
            else:
                ways = _distinct_by_keys(rng, n, eligible.size, n_way)
            ways.sort(axis=1)
            pair_class = eligible[ways].ravel()  # (n * n_way,) class codes
            pools = counts[pair_class]
            picks = np.empty((n * n_way, m), dtype=np.intp)
            big = _use_rejection(pools, m)
            if big.any():
                local = _distinct_by_rejection(rng, pools[big], m)
                picks[big] = members[starts[pair_class[big]][:, None] + local]
            if not big.all():
                small_class = np.where(big, -1, pair_class)
                for c in np.unique(pair_class[~big]):
                    rows = np.flatnonzero(small_class == c)
                    local = _distinct_by_keys(rng, rows.size, counts[c], m)
                    picks[rows] = members[starts[c] + local]
            picks = picks.reshape(n, n_way, m)[:keep]
            yield (
                np.ascontiguousarray(picks[:, :, :n_shot]),
                np.ascontiguousarray(picks[:, :, n_shot:]),
            )

    def sample_episodes(self, y):
        """Draw all episodes at once as index arrays.

        Parameters
        ----------
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        support : ndarray of shape (n_episodes, n_way, n_shot)
            Support (training) sample indices; ``support[e, j]`` are the
            samples of the ``j``-th class (in sorted label order) of episode
            ``e``.
        query : ndarray of shape (n_episodes, n_way, n_query)
            Query (test) sample indices, laid out like ``support``.

        Notes
        -----
        Episode ``e`` is the ``e``-th split of :meth:`split` (for an int
        ``random_state``): ``train == support[e].ravel()`` and
        ``test == query[e].ravel()``.

        Examples
        --------
        >>> import numpy as np
        >>> from sknc.model_selection import EpisodeSplit
        >>> y = np.repeat(["a", "b", "c"], 4)
        >>> cv = EpisodeSplit(n_way=2, n_shot=1, n_query=2, n_episodes=3,
        ...                   random_state=0)
        >>> support, query = cv.sample_episodes(y)
        >>> support.shape, query.shape
        ((3, 2, 1), (3, 2, 2))
        """
        y = self._check_y(None, y)
        chunks = list(self._iter_chunks(y))
        return (
            np.concatenate([s for s, _ in chunks]),
            np.concatenate([q for _, q in chunks]),
        )

    def split(self, X, y=None, groups=None):
        """Generate support (train) and query (test) indices, one episode per split.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; only its length is used.

        y : array-like of shape (n_samples,)
            Class labels. Required.

        groups : object
            Always ignored (with a warning if given), exists for API
            compatibility.

        Yields
        ------
        train : ndarray of shape (n_way * n_shot,)
            Support indices of the episode, grouped by class in sorted label
            order.

        test : ndarray of shape (n_way * n_query,)
            Query indices of the episode, laid out like ``train``.
        """
        if groups is not None:
            warn_external(
                f"The groups parameter is ignored by {type(self).__name__}", IgnoredOptionWarning
            )
        y = self._check_y(X, y)
        for support, query in self._iter_chunks(y):
            for s, q in zip(support, query):
                yield s.ravel(), q.ravel()

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits, i.e. ``n_episodes``.

        Parameters
        ----------
        X, y, groups : object
            Always ignored, exist for API compatibility.

        Returns
        -------
        n_splits : int
            The number of episodes.
        """
        return _check_int(self.n_episodes, "n_episodes", 1)


def _preview(values, k=10):
    values = list(values)
    text = ", ".join(repr(v) for v in values[:k])
    return text + (f", ... ({len(values)} in all)" if len(values) > k else "")

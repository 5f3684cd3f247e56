"""Splits for transfer experiments: source / novel classes, held-out samples, scarce subsets.

Contents
--------
split_classes
    Draw novel classes at random (optionally stratified by a per-class label).
source_novel_split
    Index arrays for Galanti et al.'s protocol: source-train, source-test
    (unseen samples of the source classes, ideally unseen groups such as
    typefaces or vendors) and novel.
subsample_per_class
    A stratified subset with a fixed number or fraction of samples per class
    (scarce downstream data, K-shot training sets).
"""

import numbers

import numpy as np
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import column_or_1d


def _check_y(y, name="y"):
    y = column_or_1d(np.asarray(y), warn=False)
    if y.shape[0] == 0:
        raise ValueError(f"{name} is empty.")
    if y.dtype.kind == "f" and np.isnan(y).any():
        raise ValueError(f"{name} contains NaN.")
    return y


def _check_same_length(y, other, name):
    other = column_or_1d(np.asarray(other), warn=False)
    if other.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name} has {other.shape[0]} entries but y has {y.shape[0]}; "
            "give one value per sample."
        )
    return other


def _resolve_count(value, total, name, *, low, high):
    """Turn an int count or a float fraction of ``total`` into an int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an int or a float, got {value!r}.")
    if isinstance(value, numbers.Integral):
        count = int(value)
    else:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}={value!r}: a float must be in [0, 1).")
        count = int(np.floor(value * total + 0.5))
        count = max(count, low) if value > 0 else count
    if not low <= count <= high:
        raise ValueError(
            f"{name}={value!r} gives {count} out of {total}; it must give between {low} and {high}."
        )
    return count


def split_classes(y, *, n_novel=0.25, strata=None, random_state=None):
    """Split the classes of ``y`` into source classes and novel classes.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels (any hashable values); or simply the list of classes.
    n_novel : int or float, default=0.25
        Number of novel classes (int) or their fraction of all classes
        (float in (0, 1), rounded, at least one). Source and novel must both
        be non-empty.
    strata : array-like of shape (n_samples,), default=None
        An optional label of each sample's class (e.g. the script of a glyph,
        ``glyphs.script[glyphs.target]``, or the category of an emoji). Novel
        classes are then drawn from every stratum in proportion to its number
        of classes (largest remainders). Every class must have one stratum.
    random_state : int, RandomState instance or None, default=None
        Controls the draw.

    Returns
    -------
    source_classes : ndarray
        Sorted labels of the source classes.
    novel_classes : ndarray
        Sorted labels of the novel classes.

    Examples
    --------
    >>> from sknc.model_selection import split_classes
    >>> source, novel = split_classes([0, 0, 1, 1, 2, 2, 3, 3], n_novel=1, random_state=0)
    >>> len(source), len(novel)
    (3, 1)
    """
    return _split_classes(_check_y(y), n_novel, strata, check_random_state(random_state))


def _split_classes(y, n_novel, strata, rng):
    classes, y_idx = np.unique(y, return_inverse=True)
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(
            f"y has {n_classes} class; at least 2 are needed to split source and novel classes."
        )
    n_nov = _resolve_count(n_novel, n_classes, "n_novel", low=1, high=n_classes - 1)
    if strata is None:
        novel_idx = rng.choice(n_classes, size=n_nov, replace=False)
    else:
        strata = _check_same_length(y, strata, "strata")
        class_stratum = np.empty(n_classes, dtype=object)
        for k in range(n_classes):
            values = np.unique(strata[y_idx == k])
            if len(values) != 1:
                raise ValueError(
                    f"class {classes[k]!r} has samples in several strata {list(values)[:5]}; "
                    "strata must be a label of the class (one value per class)."
                )
            class_stratum[k] = values[0]
        names, stratum_of_class = np.unique(class_stratum.astype(str), return_inverse=True)
        sizes = np.bincount(stratum_of_class, minlength=len(names))
        quota = n_nov * sizes / n_classes
        alloc = np.floor(quota).astype(int)
        remainder = quota - alloc
        # Largest remainders, ties broken at random.
        order = np.lexsort((rng.permutation(len(names)), -remainder))
        for s in order[: n_nov - alloc.sum()]:
            alloc[s] += 1
        novel_idx = np.concatenate(
            [
                rng.choice(np.flatnonzero(stratum_of_class == s), size=alloc[s], replace=False)
                for s in range(len(names))
            ]
        ).astype(int)
    is_novel = np.zeros(n_classes, dtype=bool)
    is_novel[novel_idx] = True
    return classes[~is_novel], classes[is_novel]


def source_novel_split(
    y, groups=None, *, n_novel=0.25, test_size=0.25, strata=None, random_state=None
):
    """Index arrays for the source / novel transfer protocol.

    The classes are split with :func:`split_classes`. The samples of the
    source classes are split again into a training part and a held-out test
    part (Galanti et al.'s "test samples of the train classes"):

    - with ``groups`` (e.g. the typeface of a glyph, the vendor of an emoji),
      whole groups are held out: ``test_size`` of the distinct groups among
      the source samples go to ``source_test`` and never appear in
      ``source_train``, so the held-out samples are drawn by unseen typefaces;
    - without ``groups``, each source class is split on its own
      (stratified), keeping at least one training sample per class.

    All samples of the novel classes go to ``novel``.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    groups : array-like of shape (n_samples,), default=None
        Group of each sample; see above.
    n_novel : int or float, default=0.25
        Number or fraction of novel classes, see :func:`split_classes`.
    test_size : int or float, default=0.25
        With ``groups``: number (int) or fraction (float) of the groups held
        out. Without: number of test samples per source class (int) or their
        fraction (float, rounded). 0 gives an empty ``source_test``.
    strata : array-like of shape (n_samples,), default=None
        Per-class label for a stratified class split, see :func:`split_classes`.
    random_state : int, RandomState instance or None, default=None
        Controls both draws.

    Returns
    -------
    split : :class:`~sklearn.utils.Bunch`
        With sorted integer index arrays ``source_train``, ``source_test``
        and ``novel``, the label arrays ``source_classes`` and
        ``novel_classes``, and ``test_groups`` (the held-out groups, or None).

    Raises
    ------
    ValueError
        If a source class would be left without training samples (too many
        groups held out for a class drawn by few groups).

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.model_selection import source_novel_split
    >>> y = np.repeat(np.arange(8), 4)          # 8 classes, 4 samples each
    >>> groups = np.tile(["a", "b", "c", "d"], 8)  # e.g. 4 typefaces
    >>> split = source_novel_split(y, groups, n_novel=2, test_size=1, random_state=0)
    >>> len(split.novel_classes), len(split.source_train), len(split.source_test)
    (2, 18, 6)
    >>> set(groups[split.source_train]) & set(groups[split.source_test])
    set()
    """
    y = _check_y(y)
    rng = check_random_state(random_state)
    # Same draw as split_classes(y, ..., random_state) for an int seed.
    source_classes, novel_classes = _split_classes(y, n_novel, strata, rng)
    is_novel = np.isin(y, novel_classes)
    source_idx = np.flatnonzero(~is_novel)
    novel_idx = np.flatnonzero(is_novel)
    test_groups = None
    if groups is not None:
        groups = _check_same_length(y, groups, "groups")
        src_groups = np.unique(groups[source_idx])
        n_test = _resolve_count(
            test_size, len(src_groups), "test_size", low=0, high=len(src_groups) - 1
        )
        test_groups = np.sort(rng.choice(src_groups, size=n_test, replace=False))
        in_test = np.isin(groups[source_idx], test_groups)
        train_idx, test_idx = source_idx[~in_test], source_idx[in_test]
        missing = np.setdiff1d(source_classes, y[train_idx])
        if len(missing):
            raise ValueError(
                f"holding out groups {list(test_groups)} leaves source class(es) "
                f"{list(missing[:10])} without training samples; lower test_size."
            )
    else:
        train_parts, test_parts = [], []
        for c in source_classes:
            idx = source_idx[y[source_idx] == c]
            n_c = len(idx)
            if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
                if test_size < 0:
                    raise ValueError(f"test_size must be >= 0, got {test_size}.")
                k = min(int(test_size), n_c - 1)
            else:
                k = _resolve_count(test_size, n_c, "test_size", low=0, high=n_c)
                k = min(k, n_c - 1)
            perm = rng.permutation(idx)
            test_parts.append(perm[:k])
            train_parts.append(perm[k:])
        train_idx = np.concatenate(train_parts)
        test_idx = np.concatenate(test_parts)
    return Bunch(
        source_train=np.sort(train_idx),
        source_test=np.sort(test_idx),
        novel=novel_idx,
        source_classes=source_classes,
        novel_classes=novel_classes,
        test_groups=test_groups,
    )


def subsample_per_class(y, *, n_per_class=None, fraction=None, random_state=None):
    """Indices of a stratified subset: a few samples of every class.

    Use it for scarce downstream training sets (e.g. 10% of the training data,
    as in Li et al.'s data-scarce fine-tuning) or K-shot training sets. Unlike
    :func:`sklearn.model_selection.train_test_split` with ``stratify``, every
    class is guaranteed at least one sample and ``n_per_class`` is exact.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels.
    n_per_class : int, default=None
        Exact number of samples per class. Every class must have that many.
    fraction : float in (0, 1], default=None
        Fraction of each class (rounded, at least one sample per class).
        Give exactly one of ``n_per_class`` and ``fraction``.
    random_state : int, RandomState instance or None, default=None
        Controls the draw.

    Returns
    -------
    indices : ndarray of int
        Sorted indices into ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> from sknc.model_selection import subsample_per_class
    >>> y = np.repeat([0, 1, 2], 10)
    >>> idx = subsample_per_class(y, fraction=0.1, random_state=0)
    >>> np.bincount(y[idx])
    array([1, 1, 1])
    >>> len(subsample_per_class(y, n_per_class=5, random_state=0))
    15
    """
    y = _check_y(y)
    if (n_per_class is None) == (fraction is None):
        raise ValueError("give exactly one of n_per_class and fraction.")
    if n_per_class is not None:
        if (
            isinstance(n_per_class, bool)
            or not isinstance(n_per_class, numbers.Integral)
            or n_per_class < 1
        ):
            raise ValueError(f"n_per_class must be a positive int, got {n_per_class!r}.")
    else:
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, numbers.Real)
            or not 0 < fraction <= 1
        ):
            raise ValueError(f"fraction must be a float in (0, 1], got {fraction!r}.")
    rng = check_random_state(random_state)
    classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    if n_per_class is not None:
        short = classes[counts < n_per_class]
        if len(short):
            raise ValueError(
                f"n_per_class={n_per_class} but class(es) {list(short[:10])} have fewer samples "
                f"(smallest class: {counts.min()})."
            )
    parts = []
    for k in range(len(classes)):
        idx = np.flatnonzero(y_idx == k)
        m = (
            n_per_class
            if n_per_class is not None
            else max(1, int(np.floor(fraction * len(idx) + 0.5)))
        )
        parts.append(rng.choice(idx, size=m, replace=False))
    return np.sort(np.concatenate(parts))

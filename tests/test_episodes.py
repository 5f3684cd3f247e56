"""Tests for sknc.model_selection.EpisodeSplit."""

import doctest
from collections import Counter

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import BaseCrossValidator, check_cv, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknc.model_selection import EpisodeSplit, _episodes
from sknc.neighbors import NearestClassCenter
from sknc.utils import IgnoredOptionWarning


def _labels(n_classes=8, per_class=12, kind="int"):
    y = np.repeat(np.arange(n_classes), per_class)
    if kind == "str":
        y = np.array([f"class_{c:02d}" for c in y])
    return y


def _check_episode(train, test, y, n_way, n_shot, n_query, allowed=None):
    assert train.dtype.kind == "i" and test.dtype.kind == "i"
    assert train.shape == (n_way * n_shot,)
    assert test.shape == (n_way * n_query,)
    assert len(set(train)) == train.size and len(set(test)) == test.size
    assert not set(train) & set(test)
    cls_train = y[train].reshape(n_way, n_shot)
    cls_test = y[test].reshape(n_way, n_query)
    # grouped by class, classes in sorted order, the same in train and test
    assert (cls_train == cls_train[:, :1]).all()
    assert (cls_test == cls_test[:, :1]).all()
    order = cls_train[:, 0]
    np.testing.assert_array_equal(order, np.sort(order))
    np.testing.assert_array_equal(order, cls_test[:, 0])
    assert len(set(order)) == n_way
    if allowed is not None:
        assert set(order) <= set(allowed)


@pytest.mark.parametrize("kind", ["int", "str"])
@pytest.mark.parametrize("n_way, n_shot, n_query", [(5, 1, 3), (3, 5, 7), (2, 4, 8), (8, 1, 1)])
def test_episodes_are_valid(kind, n_way, n_shot, n_query):
    y = _labels(8, 12, kind)
    X = np.zeros((y.size, 2))
    cv = EpisodeSplit(n_way, n_shot, n_query, n_episodes=40, random_state=0)
    splits = list(cv.split(X, y))
    assert len(splits) == 40 == cv.get_n_splits()
    for train, test in splits:
        _check_episode(train, test, y, n_way, n_shot, n_query)


def test_classes_restriction_and_string_labels():
    y = _labels(10, 20, "str")
    novel = ["class_07", "class_02", "class_09", "class_05"]
    cv = EpisodeSplit(3, 2, 4, n_episodes=60, classes=novel, random_state=1)
    seen = Counter()
    for train, test in cv.split(np.zeros((y.size, 1)), y):
        _check_episode(train, test, y, 3, 2, 4, allowed=novel)
        seen.update(y[train[::2]])
    assert set(seen) == set(novel)  # every novel class gets drawn


def test_reproducible_with_int_seed():
    y = _labels(6, 15)
    X = np.zeros((y.size, 3))
    cv = EpisodeSplit(4, 2, 3, n_episodes=25, random_state=42)
    first = list(cv.split(X, y))
    second = list(cv.split(X, y))
    third = list(EpisodeSplit(4, 2, 3, n_episodes=25, random_state=42).split(X, y))
    for (a, b), (c, d), (e, f) in zip(first, second, third):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
        np.testing.assert_array_equal(a, e)
        np.testing.assert_array_equal(b, f)
    other = list(EpisodeSplit(4, 2, 3, n_episodes=25, random_state=43).split(X, y))
    assert any((a != c).any() for (a, _), (c, _) in zip(first, other))


def test_random_state_instance_and_none_follow_shufflesplit():
    y = _labels(6, 15)
    X = np.zeros((y.size, 3))
    # a RandomState instance: every iteration draws new episodes
    cv = EpisodeSplit(4, 2, 3, n_episodes=10, random_state=np.random.RandomState(0))
    a = np.concatenate([t for t, _ in cv.split(X, y)])
    b = np.concatenate([t for t, _ in cv.split(X, y)])
    assert (a != b).any()
    # ... and the first iteration equals the one of the int seed
    seeded = EpisodeSplit(4, 2, 3, n_episodes=10, random_state=0)
    c = np.concatenate([t for t, _ in seeded.split(X, y)])
    np.testing.assert_array_equal(a, c)
    cv = EpisodeSplit(4, 2, 3, n_episodes=10)
    a = np.concatenate([t for t, _ in cv.split(X, y)])
    b = np.concatenate([t for t, _ in cv.split(X, y)])
    assert (a != b).any()


def test_sample_episodes_matches_split_across_chunks(monkeypatch):
    monkeypatch.setattr(_episodes, "_CHUNK_EPISODES", 7)
    y = _labels(9, 10)
    cv = EpisodeSplit(4, 3, 2, n_episodes=30, random_state=5)
    support, query = cv.sample_episodes(y)
    assert support.shape == (30, 4, 3) and query.shape == (30, 4, 2)
    splits = list(cv.split(np.zeros((y.size, 1)), y))
    assert len(splits) == 30
    for e, (train, test) in enumerate(splits):
        np.testing.assert_array_equal(train, support[e].ravel())
        np.testing.assert_array_equal(test, query[e].ravel())
        _check_episode(train, test, y, 4, 3, 2)


@pytest.mark.parametrize("per_class", [9, 200])  # both samplers: random keys / rejection
def test_sampling_is_uniform(per_class):
    # class choice and sample choice are uniform (fixed seed: deterministic)
    n_classes, n_way, n_shot, n_query, n_ep = 6, 3, 2, 3, 3000
    y = _labels(n_classes, per_class)
    cv = EpisodeSplit(n_way, n_shot, n_query, n_episodes=n_ep, random_state=0)
    support, query = cv.sample_episodes(y)
    class_freq = np.bincount(y[support[:, :, 0]].ravel(), minlength=n_classes) / n_ep
    np.testing.assert_allclose(class_freq, n_way / n_classes, atol=0.04)
    # within class 0: each sample is support (query) equally often
    counts_s = np.bincount(support.ravel(), minlength=y.size)[:per_class]
    counts_q = np.bincount(query.ravel(), minlength=y.size)[:per_class]
    n_drawn = (y[support[:, :, 0]] == 0).sum()
    expected_s = n_drawn * n_shot / per_class
    expected_q = n_drawn * n_query / per_class
    tol = 5 * np.sqrt(expected_s) if per_class == 9 else 6 * np.sqrt(expected_s) + 2
    assert np.abs(counts_s - expected_s).max() < tol
    tol = 5 * np.sqrt(expected_q) if per_class == 9 else 6 * np.sqrt(expected_q) + 2
    assert np.abs(counts_q - expected_q).max() < tol


def test_class_with_exactly_enough_samples():
    y = np.repeat([0, 1, 2], [5, 5, 9])
    cv = EpisodeSplit(3, 2, 3, n_episodes=20, random_state=0)
    for train, test in cv.split(np.zeros((y.size, 1)), y):
        _check_episode(train, test, y, 3, 2, 3)
        # classes 0 and 1 are used whole
        assert set(train[y[train] == 0]) | set(test[y[test] == 0]) == set(range(5))


def test_works_with_cross_val_score_and_any_classifier():
    X, y = load_digits(return_X_y=True)
    cv = EpisodeSplit(5, 5, 10, n_episodes=8, classes=[0, 2, 4, 6, 8, 9], random_state=0)
    assert isinstance(cv, BaseCrossValidator)
    assert check_cv(cv) is cv
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
    scores = cross_val_score(probe, X, y, cv=cv)
    assert scores.shape == (8,) and scores.mean() > 0.7
    scores = cross_val_score(NearestClassCenter(normalize="l2"), X, y, cv=cv)
    assert scores.shape == (8,) and scores.mean() > 0.8


def test_repr_and_params():
    cv = EpisodeSplit(5, 1, 15, n_episodes=100, random_state=0)
    assert repr(cv).startswith("EpisodeSplit(")
    assert "n_shot=1" in repr(cv)
    with pytest.warns(IgnoredOptionWarning, match="groups"):
        next(cv.split(np.zeros((100, 1)), np.repeat(np.arange(5), 20), groups=np.zeros(100)))


def test_error_class_too_small_is_named():
    y = np.array(["a"] * 20 + ["b"] * 20 + ["tiny"] * 4 + ["c"] * 20)
    cv = EpisodeSplit(3, 5, 5, n_episodes=3, random_state=0)
    with pytest.raises(ValueError, match=r"'tiny' \(4 samples\).*n_shot \+ n_query = 10"):
        list(cv.split(np.zeros((y.size, 1)), y))
    # skip it instead, or leave it out with classes=
    cv = EpisodeSplit(3, 5, 5, n_episodes=3, small_classes="skip", random_state=0)
    for train, test in cv.split(np.zeros((y.size, 1)), y):
        assert "tiny" not in set(y[train]) | set(y[test])
    cv = EpisodeSplit(3, 5, 5, n_episodes=3, classes=["a", "b", "c"], random_state=0)
    assert len(list(cv.split(np.zeros((y.size, 1)), y))) == 3


def test_error_too_few_classes():
    y = np.repeat([0, 1, 2, 3], [20, 20, 3, 20])
    cv = EpisodeSplit(4, 2, 2, n_episodes=3, small_classes="skip", random_state=0)
    with pytest.raises(ValueError, match="Only 3 classes have at least .* fewer than n_way=4"):
        list(cv.split(np.zeros((y.size, 1)), y))
    with pytest.raises(ValueError, match="Only 2 classes"):
        list(EpisodeSplit(3, 1, 1, classes=[0, 1]).split(None, y))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_way": 1}, "n_way must be an integer >= 2"),
        ({"n_shot": 0}, "n_shot must be an integer >= 1"),
        ({"n_query": 2.5}, "n_query must be an integer >= 1"),
        ({"n_episodes": 0}, "n_episodes must be an integer >= 1"),
        ({"n_way": True}, "n_way must be an integer"),
        ({"small_classes": "drop"}, "small_classes must be"),
        ({"classes": [0, 1, 99]}, r"classes \[99\] do not occur in y"),
    ],
)
def test_bad_parameters(params, match):
    y = _labels(5, 10)
    cv = EpisodeSplit(**{"n_way": 2, "n_shot": 1, "n_query": 1, **params})
    with pytest.raises(ValueError, match=match):
        list(cv.split(np.zeros((y.size, 1)), y))


def test_bad_y():
    cv = EpisodeSplit(2, 1, 1, n_episodes=2)
    with pytest.raises(ValueError, match="needs the class labels y"):
        list(cv.split(np.zeros((10, 1))))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        list(cv.split(np.zeros((9, 1)), np.repeat([0, 1], 5)))
    with pytest.raises(ValueError, match="Unknown label type"):
        list(cv.split(np.zeros((10, 1)), np.linspace(0, 1, 10)))


def test_docstring_examples():
    result = doctest.testmod(_episodes, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_first_episodes_do_not_depend_on_n_episodes(monkeypatch):
    monkeypatch.setattr(_episodes, "_CHUNK_EPISODES", 16)
    y = _labels(7, 11)
    short_s, short_q = EpisodeSplit(3, 2, 2, n_episodes=20, random_state=3).sample_episodes(y)
    long_s, long_q = EpisodeSplit(3, 2, 2, n_episodes=50, random_state=3).sample_episodes(y)
    np.testing.assert_array_equal(short_s, long_s[:20])
    np.testing.assert_array_equal(short_q, long_q[:20])

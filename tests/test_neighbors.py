"""Tests for sknc.neighbors.NearestClassCenter."""

import doctest
import pickle

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from sknc.neighbors import NearestClassCenter, _nearest_class_center


@parametrize_with_checks(
    [
        NearestClassCenter(),
        NearestClassCenter(metric="cosine"),
        NearestClassCenter(normalize="l2", temperature=0.1),
        NearestClassCenter(metric="cosine", normalize="center+l2"),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _hand_distances(Xtr, ytr, Xte, metric, normalize):
    """Textbook NCC: explicit per-class loops and direct distances."""
    Xtr = np.asarray(Xtr, dtype=float)
    Xte = np.asarray(Xte, dtype=float)
    if normalize == "center+l2":
        mu = Xtr.mean(axis=0)
        Xtr, Xte = Xtr - mu, Xte - mu
    if normalize is not None:
        Xtr = np.array([x / np.linalg.norm(x) if np.linalg.norm(x) > 0 else x for x in Xtr])
        Xte = np.array([x / np.linalg.norm(x) if np.linalg.norm(x) > 0 else x for x in Xte])
    classes = sorted(set(ytr))
    centres = np.array([Xtr[np.asarray(ytr) == c].mean(axis=0) for c in classes])
    D = np.empty((len(Xte), len(classes)))
    for i, x in enumerate(Xte):
        for k, c in enumerate(centres):
            if metric == "euclidean":
                D[i, k] = np.sqrt(((x - c) ** 2).sum())
            else:
                nx, nc = np.linalg.norm(x), np.linalg.norm(c)
                D[i, k] = 1.0 - (x @ c / (nx * nc) if nx > 0 and nc > 0 else 0.0)
    return np.array(classes), centres, D


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("normalize", [None, "l2", "center+l2"])
def test_matches_hand_computation(metric, normalize, rng):
    Xtr = rng.normal(size=(12, 5)) + 3.0
    ytr = np.array(list("abcd") * 3)
    Xte = rng.normal(size=(9, 5)) + 3.0
    classes, centres, D = _hand_distances(Xtr, ytr, Xte, metric, normalize)

    ncc = NearestClassCenter(metric=metric, normalize=normalize, temperature=0.7).fit(Xtr, ytr)
    np.testing.assert_array_equal(ncc.classes_, classes)
    np.testing.assert_allclose(ncc.centroids_, centres, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ncc.class_count_, [3, 3, 3, 3])
    np.testing.assert_allclose(ncc.decision_function(Xte), -D, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ncc.predict(Xte), classes[D.argmin(axis=1)])
    proba = ncc.predict_proba(Xte)
    np.testing.assert_allclose(proba, softmax(-D / 0.7, axis=1), rtol=1e-9)
    np.testing.assert_allclose(np.exp(ncc.predict_log_proba(Xte)), proba, rtol=1e-12)
    if normalize == "center+l2":
        np.testing.assert_allclose(ncc.center_, Xtr.mean(axis=0))
    else:
        assert ncc.center_ is None


def test_small_worked_example():
    X = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 2.0]])
    y = np.array([1, 1, 7, 7])
    ncc = NearestClassCenter().fit(X, y)
    np.testing.assert_array_equal(ncc.centroids_, [[1.0, 0.0], [10.0, 1.0]])
    # distances from (1, 1): 1 to the centre of class 1, 9 to that of class 7
    d = ncc.decision_function([[1.0, 1.0]])
    # binary: distance to classes_[0] minus distance to classes_[1]
    np.testing.assert_allclose(d, [1.0 - 9.0])
    assert ncc.predict([[1.0, 1.0]])[0] == 1
    assert ncc.predict([[9.0, 0.0]])[0] == 7


def test_ties_go_to_first_class_in_sorted_order():
    # centres at -1, +1 and 5/3 (not representable); the query 0 is exactly
    # as far from -1 as from +1, whatever the label order in y
    X = np.array([[-1.0], [1.0], [5.0]])
    for y in (["z", "b", "q"], ["b", "z", "q"]):
        ncc = NearestClassCenter().fit(X, y)
        np.testing.assert_array_equal(ncc.classes_, ["b", "q", "z"])
        D = -ncc.decision_function([[0.0]])[0]
        assert D[0] == D[2] == 1.0
        assert ncc.predict([[0.0]])[0] == "b"
        proba = ncc.predict_proba([[0.0]])[0]
        assert proba[0] == proba[2]
    # many exact ties on an integer grid: predictions follow the textbook rule
    grid = np.array([[i, j] for i in range(-3, 4) for j in range(-3, 4)], dtype=float)
    Xtr = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, -2.0], [3.0, 3.0], [-1.0, -1.0]])
    ytr = np.array([4, 4, 9, 9, 2, 2])
    ncc = NearestClassCenter().fit(Xtr, ytr)
    classes, _, D = _hand_distances(Xtr, ytr, grid, "euclidean", None)
    assert (np.sort(D, axis=1)[:, 0] == np.sort(D, axis=1)[:, 1]).sum() >= 5  # real ties
    np.testing.assert_array_equal(ncc.predict(grid), classes[D.argmin(axis=1)])
    # cosine: (1, 1) is at equal cosine distance from both centres; class 2 wins
    ncc = NearestClassCenter(metric="cosine").fit([[1.0, 0.0], [0.0, 1.0]], [3, 2])
    assert ncc.predict([[1.0, 1.0]])[0] == 2


def test_binary_decision_function_is_1d_and_consistent():
    X, y = load_digits(n_class=2, return_X_y=True)
    ncc = NearestClassCenter().fit(X, y)
    dec = ncc.decision_function(X)
    assert dec.shape == (X.shape[0],)
    np.testing.assert_array_equal(ncc.classes_[(dec > 0).astype(int)], ncc.predict(X))
    # multiclass: (n, K), argmax == predict
    X3, y3 = load_digits(n_class=3, return_X_y=True)
    ncc3 = NearestClassCenter().fit(X3, y3)
    dec3 = ncc3.decision_function(X3)
    assert dec3.shape == (X3.shape[0], 3)
    np.testing.assert_array_equal(ncc3.classes_[dec3.argmax(axis=1)], ncc3.predict(X3))


def test_one_sample_per_class_and_string_labels():
    X = np.array([[0.0, 1.0], [3.0, 0.0], [-2.0, -2.0]])
    y = np.array(["cat", "dog", "emu"])
    for normalize in [None, "l2", "center+l2"]:
        ncc = NearestClassCenter(normalize=normalize).fit(X, y)
        np.testing.assert_array_equal(ncc.predict(X), y)
        assert ncc.score(X, y) == 1.0
        assert np.isfinite(ncc.predict_proba(X)).all()


def test_query_set_missing_classes():
    X, y = load_digits(return_X_y=True)
    ncc = NearestClassCenter().fit(X[:500], y[:500])
    only_3 = y == 3
    proba = ncc.predict_proba(X[only_3])
    assert proba.shape == (only_3.sum(), 10)
    assert ncc.score(X[only_3], y[only_3]) > 0.8


@pytest.mark.filterwarnings("ignore:self.within_class_std_dev_:UserWarning")
def test_agrees_with_sklearn_nearest_centroid():
    X, y = load_digits(return_X_y=True)
    ncc = NearestClassCenter().fit(X[:1000], y[:1000])
    ref = NearestCentroid().fit(X[:1000], y[:1000])
    np.testing.assert_allclose(ncc.centroids_, ref.centroids_)
    np.testing.assert_array_equal(ncc.predict(X[1000:]), ref.predict(X[1000:]))


def test_zero_vectors_with_normalisation():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 3.0]])
    y = [0, 0, 1, 1]
    for metric in ["euclidean", "cosine"]:
        for normalize in [None, "l2"]:
            ncc = NearestClassCenter(metric=metric, normalize=normalize).fit(X, y)
            D = -ncc.decision_function([[0.0, 0.0], [5.0, 0.1]])
            assert np.isfinite(D).all()
            assert ncc.predict([[5.0, 0.1]])[0] == 0


def test_large_offset_float32_is_accurate(rng):
    base = rng.normal(size=(40, 8))
    y = np.repeat([0, 1, 2, 3], 10)
    base[y == 1] += 0.5
    Xoff = (base + 1e4).astype(np.float32)
    X0 = Xoff.astype(np.float64) - 1e4  # the same points without the offset
    a = NearestClassCenter().fit(Xoff, y)
    b = NearestClassCenter().fit(X0, y)
    np.testing.assert_allclose(a.decision_function(Xoff), b.decision_function(X0), atol=1e-6)


def test_pipeline_clone_pickle(rng):
    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), NearestClassCenter(normalize="l2"))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.8
    ncc = NearestClassCenter(metric="cosine", normalize="center+l2", temperature=0.5).fit(X, y)
    again = pickle.loads(pickle.dumps(ncc))
    np.testing.assert_array_equal(again.predict_proba(X[:20]), ncc.predict_proba(X[:20]))
    c = clone(ncc)
    assert c.get_params() == ncc.get_params()
    assert not hasattr(c, "centroids_")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"metric": "manhattan"}, "metric must be one of"),
        ({"normalize": "l1"}, "normalize must be one of"),
        ({"temperature": 0}, "temperature must be"),
        ({"temperature": -1.0}, "temperature must be"),
        ({"temperature": float("nan")}, "temperature must be"),
        ({"temperature": "hot"}, "temperature must be"),
    ],
)
def test_bad_parameters(params, match):
    X, y = np.eye(4), [0, 0, 1, 1]
    with pytest.raises(ValueError, match=match):
        NearestClassCenter(**params).fit(X, y)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 classes"):
        NearestClassCenter().fit(np.eye(3), ["a", "a", "a"])
    with pytest.raises(ValueError, match="NaN"):
        NearestClassCenter().fit([[0.0, np.nan], [1.0, 1.0]], [0, 1])
    ncc = NearestClassCenter().fit(np.eye(4), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="features"):
        ncc.predict(np.eye(3))
    with pytest.raises(ValueError, match="Unknown label type"):
        NearestClassCenter().fit(np.eye(4), [0.1, 0.2, 0.3, 0.4])


def test_docstring_examples():
    result = doctest.testmod(_nearest_class_center, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("n", [3, 64, 512, 2048])
def test_shared_rounding_bounds_hold(n):
    """The float64 and float32 dot-product bounds of sknc.utils._rounding hold.

    float32 inputs have exact float64 products, so math.fsum gives the exact
    dot product; cancellation-heavy vectors (large common parts, tiny
    differences) make the rounding as large as it gets in practice.
    """
    import math

    import torch

    from sknc.utils._rounding import dot_error32, gamma64, safe_margin

    rng = np.random.default_rng(n)
    for scale in (1.0, 1e6):
        a = ((scale + rng.standard_normal(n)) * rng.choice([-1, 1], n)).astype(np.float32)
        b = (scale + rng.standard_normal(n)).astype(np.float32)
        exact = math.fsum(float(x) * float(y) for x, y in zip(a, b))
        bound = float(np.linalg.norm(a.astype(np.float64)) * np.linalg.norm(b.astype(np.float64)))
        err64 = abs(float(a.astype(np.float64) @ b.astype(np.float64)) - exact)
        assert err64 <= gamma64(n) * bound
        for got in (float(a @ b), float(torch.from_numpy(a) @ torch.from_numpy(b))):
            assert abs(got - exact) <= dot_error32(n) * bound
    assert safe_margin(1.0, 1.0) == 12.0  # 8 E64 + 4 E32 (see the module note)
    assert safe_margin(np.array([1.0]))[0] == 8.0

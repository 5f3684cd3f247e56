"""scikit-learn's estimator checks on the image estimators, through a tabular view.

``BackboneFeatures`` and ``FineTuningClassifier`` take images, and tag
themselves so (``input_tags.two_d_array = False``); scikit-learn then runs
none of its checks on them, since they all generate tabular data. To hold
the estimators to the checks anyway, each is subclassed here with one
change: 2-D numeric input (what the checks generate) becomes greyscale
images first, one row per image (:func:`_as_images`), and the tags say so.
Everything else -- parameters, validation of what is not a table, fitting,
fitted attributes, pickling, errors -- is the real estimator's code.

The checks that cannot hold for an image estimator, or that test
something the tabular view itself changes, are listed in ``_EXPECTED`` with
the reason; they are run and must fail (strict xfail), so a check that
starts passing is noticed.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.utils.estimator_checks import parametrize_with_checks

pytest.importorskip("timm")

from _helpers import TinyNet

from sknc.features import BackboneFeatures
from sknc.finetune import FineTuningClassifier


def _as_images(X):
    """2-D numeric rows -> float greyscale images (n, d, 2) in [0, 1]; anything else as is.

    Each feature is one image row (two pixels wide), squashed by a logistic
    function, so that different rows give different images; NaN and inf
    stay NaN and inf, complex values stay complex and an empty table gives
    empty images, so that the estimator's own input checks see them. Sparse
    matrices, 1-D arrays, object arrays and images pass unchanged: the
    estimator must reject or handle them itself.
    """
    if sp.issparse(X) or isinstance(X, (str, bytes)):
        return X
    try:
        A = np.asarray(X)
    except Exception:  # ragged lists and the like: the estimator's problem
        return X
    if A.ndim != 2 or A.dtype.kind not in "biufc":
        return X
    if A.dtype.kind == "c":
        img = A
    else:
        A = A.astype(np.float64)
        with np.errstate(over="ignore"):
            img = (1.0 / (1.0 + np.exp(-A))).astype(np.float32)
        img[~np.isfinite(A)] = A[~np.isfinite(A)]
    return np.repeat(img[:, :, None], 2, axis=2)


class _TabularView:
    """The mixin of the subclasses below: tabular rows in, images to the estimator."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = False
        tags.input_tags.string = False
        return tags


class TabularBackboneFeatures(_TabularView, BackboneFeatures):
    def fit(self, X, y=None):
        return super().fit(_as_images(X), y)

    def transform(self, X):
        return super().transform(_as_images(X))


class TabularFineTuningClassifier(_TabularView, FineTuningClassifier):
    def fit(self, X, y):
        return super().fit(_as_images(X), y)

    def decision_function(self, X):
        return super().decision_function(_as_images(X))

    def predict(self, X):
        return super().predict(_as_images(X))

    def predict_proba(self, X):
        return super().predict_proba(_as_images(X))

    def predict_log_proba(self, X):
        return super().predict_log_proba(_as_images(X))

    def transform(self, X):
        return super().transform(_as_images(X))


# The estimators' real defaults except what makes them tiny: an 8 x 8 input, a
# two-convolution net (random weights), one thread's worth of work.
_TINY = dict(model=TinyNet, model_kwargs={"in_chans": 1}, input_size=8, device="cpu")

ESTIMATORS = [
    TabularBackboneFeatures(**_TINY, random_state=0),
    TabularFineTuningClassifier(
        **_TINY, method="full-ft", max_epochs=2, batch_size=64, lr=1e-2, random_state=0
    ),
]

# Why each of these checks cannot pass (strict xfail: they must still fail).
_IMAGES = {
    "check_n_features_in": "inputs are images of any size (resized to input_size): "
    "there is no n_features_in_",
    "check_n_features_in_after_fitting": "inputs are images of any size (resized to "
    "input_size): there is no n_features_in_ and no feature count to check",
    "check_fit2d_predict1d": "a 1-D array is refused in image terms ('Expected a batch of "
    "images ...'), not with the tabular advice 'Reshape your data'",
    "check_dtype_object": "an object array holds file paths or PIL images (1-D), not "
    "numbers; a 2-D one is refused",
    "check_estimators_empty_data_messages": "an empty table is an image of no pixels "
    "here, refused in those terms, not as '0 feature(s)'",
}
_ANY_SIZE = (
    "images of another size are resized to input_size, so a different number of "
    "'features' (pixels) is valid input"
)
_EXPECTED = {
    "TabularBackboneFeatures": {
        **_IMAGES,
        "check_transformer_general": _ANY_SIZE,
        "check_complex_data": "complex images are refused, naming the dtype ('dtype "
        "complex128 are not supported'), not as 'Complex data not supported'",
        "check_estimators_nan_inf": "fit reads the shape of X, not its pixels; transform "
        "refuses NaN and inf",
    },
    "TabularFineTuningClassifier": {
        **_IMAGES,
        "check_transformer_general": _ANY_SIZE,
        "check_classifiers_train": _ANY_SIZE,
        "check_do_not_raise_errors_in_init_or_set_params": "__init__ takes skorch-style "
        "routed **kwargs (optimizer__lr=..., iterator_train__num_workers=...) and, like "
        "skorch, refuses a key without a known prefix at once; the check passes one "
        "named 'kwargs'",
    },
}


def _expected_failed_checks(estimator):
    return _EXPECTED[type(estimator).__name__]


# check_supervised_y_no_nan: scikit-learn's own target check casts the NaN labels
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=_expected_failed_checks, xfail_strict=True
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_images_without_pixels_are_refused():
    # found by check_estimators_empty_data_messages: images of 0 x W pixels passed fit
    # and failed in transform with a ZeroDivisionError deep in the resizing
    est = BackboneFeatures(**_TINY)
    for shape in [(4, 0, 5), (4, 5, 0), (4, 0, 5, 1), (4, 1, 0, 5)]:
        with pytest.raises(ValueError, match=r"images of \d+ x \d+ pixels; images need at least"):
            est.fit(np.zeros(shape, dtype=np.float32))
    est.fit()
    with pytest.raises(ValueError, match="images need at least one pixel"):
        est.transform(np.zeros((4, 0, 5), dtype=np.float32))


def test_sparse_input_is_named_in_the_error():
    X = sp.csr_matrix(np.ones((4, 3)))
    with pytest.raises(ValueError, match="sparse matrix"):
        BackboneFeatures(**_TINY).fit(X)
    with pytest.raises(ValueError, match="sparse matrix"):
        FineTuningClassifier(**_TINY).fit(X, [0, 1, 0, 1])

"""The cache of preprocessed training images of FineTuningClassifier (``cache_inputs``)."""

import gc
import pickle
import weakref

import numpy as np
import pytest
import torch
from sklearn.base import clone

pytest.importorskip("timm")
pytest.importorskip("skorch")

from _helpers import CONFIG_32

from sknc.features import ImageDataset
from sknc.features import _images as images_module
from sknc.features._images import preprocess_batch
from sknc.finetune import FineTuningClassifier
from sknc.finetune import _data as data_module
from sknc.finetune._data import (
    INPUT_CACHE_MAX_BYTES,
    CachedImageDataset,
    input_cache_bound,
    make_train_dataset,
)

RESNET_KW = dict(channels=(16, 32, 64, 128), stem_width=8)  # a narrow resnet10t
CONFIG = CONFIG_32


def _images(n=16, size=40, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, size, size, channels) if channels > 1 else (n, size, size)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _labels(n=16):
    return np.array(["cat", "dog", "emu", "fox"] * (n // 4 + 1))[:n]


def _fit(X=None, y=None, **params):
    X = _images() if X is None else X
    y = _labels(len(X)) if y is None else y
    params = {
        "method": "full-ft",
        "input_size": 32,
        "model_kwargs": RESNET_KW,
        "max_epochs": 2,
        "batch_size": 6,
        "lr": 1e-2,
        "random_state": 0,
        **params,
    }
    return FineTuningClassifier("resnet10t", **params).fit(X, y)


def _per_image_bytes(config=CONFIG):
    return 4 * int(np.prod(config["input_size"]))


# --------------------------------------------------------------------------
# the dataset
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "X,config",
    [
        (_images(9, size=40), CONFIG),  # resized and centre-cropped
        (_images(9, size=32), CONFIG),  # already at the input size
        (_images(9, size=37, channels=1), dict(CONFIG, interpolation="bicubic")),
        (_images(9, size=50).astype(np.float32) / 255, dict(CONFIG, crop_mode="squash")),
        (list(_images(9, size=48, seed=3)), dict(CONFIG, interpolation="nearest")),
    ],
)
def test_cached_items_are_the_preprocessed_images_bit_for_bit(X, config):
    y = np.arange(len(X)) % 3
    plain = ImageDataset(X, y, data_config=config)
    for max_bytes in (None, 4 * _per_image_bytes(config) + 7):
        cached = CachedImageDataset(ImageDataset(X, y, data_config=config), max_bytes)
        assert len(cached) == len(plain)
        for i in range(len(plain)):
            (a, ya), (b, yb) = plain[i], cached[i]
            assert a.dtype == b.dtype == torch.float32
            assert torch.equal(a, b), i
            assert ya == yb


def test_the_bound_is_respected():
    X, y = _images(10), np.arange(10)
    per_image = _per_image_bytes()
    for max_bytes, n_cached in [
        (None, 10),
        (0, 0),
        (per_image - 1, 0),
        (per_image, 1),
        (3 * per_image + per_image // 2, 3),
        (100 * per_image, 10),
    ]:
        cached = CachedImageDataset(ImageDataset(X, y, data_config=CONFIG), max_bytes)
        assert cached.n_cached == n_cached
        assert cached.nbytes == n_cached * per_image
        assert max_bytes is None or cached.nbytes <= max_bytes


def test_input_cache_bound_of_the_parameter():
    assert input_cache_bound("auto") == INPUT_CACHE_MAX_BYTES == 1024**3
    assert input_cache_bound(True) is None
    assert input_cache_bound(False) == 0
    assert input_cache_bound(12345) == 12345


def test_no_cache_with_augmentation_or_random_preprocessing():
    X, y = _images(6), np.arange(6)
    flip = lambda img: img.flip(-1)  # noqa: E731
    assert isinstance(make_train_dataset(X, y, CONFIG, cache_bytes=None), CachedImageDataset)
    assert type(make_train_dataset(X, y, CONFIG, cache_bytes=0)) is ImageDataset
    augmented = make_train_dataset(X, y, CONFIG, augment=flip, cache_bytes=None)
    assert type(augmented) is ImageDataset and augmented.transform is not None
    with pytest.raises(ValueError, match="deterministic"):
        CachedImageDataset(ImageDataset(X, y, data_config=CONFIG, transform=flip), None)


def test_batch_preprocessing_equals_per_image_preprocessing():
    # The training-NC1 pass reads the stored tensors (each image preprocessed
    # alone) in place of transform()'s batches; train_nc1_ stays exact only
    # because the two agree bit for bit on the CPU.
    rng = np.random.default_rng(1)
    for interpolation in ("bilinear", "bicubic", "nearest"):
        for crop_mode in ("center", "squash"):
            for h, w, channels in [(40, 40, 3), (37, 53, 1), (20, 30, 3), (32, 32, 3)]:
                config = dict(CONFIG, interpolation=interpolation, crop_mode=crop_mode)
                x = torch.from_numpy(rng.integers(0, 256, (7, channels, h, w), dtype=np.uint8))
                batch = preprocess_batch(x, config, check=False)
                one_by_one = torch.stack(
                    [preprocess_batch(x[i : i + 1], config)[0] for i in range(7)]
                )
                assert torch.equal(batch, one_by_one), (interpolation, crop_mode, h, w)


# --------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------
def _count_preprocessed(monkeypatch):
    """Count the images that go through preprocessing (ImageDataset and transform)."""
    counter = {"images": 0}
    original = images_module.preprocess_batch

    def counting(x, *args, **kwargs):
        counter["images"] += len(x)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(images_module, "preprocess_batch", counting)
    return counter


def test_each_image_is_preprocessed_once_per_fit(monkeypatch):
    X = _images(12)
    counter = _count_preprocessed(monkeypatch)
    est = _fit(X, max_epochs=3)  # defaults: cache_inputs="auto", compute_train_nc1=True
    assert est.n_inputs_cached_ == 12
    assert counter["images"] == 12  # not 3 epochs x 12 + 12 for the training-NC1 pass
    counter["images"] = 0
    off = _fit(X, max_epochs=3, cache_inputs=False)
    assert off.n_inputs_cached_ == 0
    assert counter["images"] == 3 * 12 + 12


@pytest.mark.parametrize(
    "params",
    [
        dict(),
        dict(validation_fraction=0.4, batch_size=4),
        dict(method="layer-ft", cache_prefix=False),
        dict(method="bitfit", X=_images(12, size=32, channels=1)),
    ],
)
def test_fit_is_identical_with_and_without_the_cache(params):
    params = dict(params)
    X = params.pop("X", _images(12))
    a = _fit(X, **params)
    b = _fit(X, cache_inputs=False, **params)
    c = _fit(X, cache_inputs=5 * _per_image_bytes(), **params)  # part of the images
    assert a.n_inputs_cached_ == 12 and b.n_inputs_cached_ == 0 and c.n_inputs_cached_ == 5
    for other in (b, c):
        assert [r["train_loss"] for r in other.history_] == [r["train_loss"] for r in a.history_]
        for p, q in zip(a.net_.module_.parameters(), other.net_.module_.parameters()):
            assert torch.equal(p, q)
        for p, q in zip(a.net_.module_.buffers(), other.net_.module_.buffers()):
            assert torch.equal(p, q)
        assert other.train_nc1_ == a.train_nc1_  # exactly: the same features
        np.testing.assert_array_equal(other.decision_function(X), a.decision_function(X))
    assert np.isfinite(a.train_nc1_)


def test_train_nc1_from_the_cache_equals_the_features_of_transform():
    from sknc.metrics import nc1

    X, y = _images(12), _labels(12)
    est = _fit(X, y)
    assert est.n_inputs_cached_ == 12
    assert est.train_nc1_ == float(nc1(est.transform(X), est._check_y(y, 12)[1]))


def test_cache_is_off_with_augmentation_and_with_a_prefix_cache():
    assert _fit(augment=lambda img: img.flip(-1)).n_inputs_cached_ == 0
    assert _fit(cache_inputs=False).n_inputs_cached_ == 0
    assert _fit(cache_inputs=0).n_inputs_cached_ == 0
    scl = _fit(method="scl-ft")
    assert scl.prefix_cached_ and scl.n_inputs_cached_ == 0
    unfitted = FineTuningClassifier("resnet10t", max_epochs=0, input_size=32)
    assert unfitted.fit(_images(4), _labels(4)).n_inputs_cached_ == 0  # nothing to train


def test_auto_bound_is_the_module_constant(monkeypatch):
    monkeypatch.setattr(data_module, "INPUT_CACHE_MAX_BYTES", 3 * _per_image_bytes() + 1)
    assert _fit().n_inputs_cached_ == 3
    assert _fit(cache_inputs=True).n_inputs_cached_ == 16


@pytest.mark.parametrize("value", [-1, 1.5, "yes", None])
def test_cache_inputs_is_validated(value):
    with pytest.raises(ValueError, match="cache_inputs"):
        _fit(cache_inputs=value, max_epochs=1)


def test_pickle_and_clone_do_not_carry_the_cache(monkeypatch):
    made = []
    original_init = CachedImageDataset.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        made.append(weakref.ref(self.tensor))

    monkeypatch.setattr(CachedImageDataset, "__init__", recording_init)
    X = _images(24, size=64)  # large stored tensors: 24 x 12 KiB
    est = _fit(X, input_size=64, max_epochs=1)
    assert est.n_inputs_cached_ == 24 and len(made) == 1
    gc.collect()
    assert made[0]() is None  # nothing holds the stored images after fit
    size = len(pickle.dumps(est))
    off = _fit(X, input_size=64, max_epochs=1, cache_inputs=False)
    assert abs(size - len(pickle.dumps(off))) < 2048  # same pickle, cache or not
    twin = clone(est)
    assert twin.get_params()["cache_inputs"] == "auto"
    assert not hasattr(twin, "n_inputs_cached_")
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.decision_function(X), est.decision_function(X))


def test_the_cost_of_the_training_nc1_pass_is_reported():
    on = _fit(max_epochs=1)
    assert 0 < on.train_nc1_time_ < on.fit_time_
    off = _fit(max_epochs=1, compute_train_nc1=False)
    assert off.train_nc1_ is None and off.train_nc1_time_ is None

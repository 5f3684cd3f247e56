"""Tests for sknc.features.BackboneFeatures."""

import doctest
import pickle
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from torch import nn

timm = pytest.importorskip("timm")

from _helpers import VIT_KW, TinyNet  # noqa: E402

from sknc.features import (  # noqa: E402
    BackboneFeatures,
    ImageDataset,
    create_backbone,
    list_layers,
)
from sknc.features._images import check_images  # noqa: E402
from sknc.utils import CacheWarning, IgnoredOptionWarning, RandomWeightsWarning  # noqa: E402

# tiny random-init timm ResNets (no download) warn that their zero-initialised residual
# branches are off; incidental here, tested in test_random_init_with_zero_scales_warns
pytestmark = pytest.mark.filterwarnings("ignore::sknc.utils.RandomWeightsWarning")

MEAN = np.array([0.485, 0.456, 0.406])[:, None, None]
STD = np.array([0.229, 0.224, 0.225])[:, None, None]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)


def _normalised(X, mean=MEAN, std=STD):
    """Hand-written preprocessing of images already at the model size."""
    x = X.transpose(0, 3, 1, 2) / 255.0
    return torch.from_numpy(((x - mean) / std).astype(np.float32))


def _resnet(**kw):
    kw.setdefault("input_size", 32)
    kw.setdefault("random_state", 0)
    kw.setdefault("device", "cpu")
    return BackboneFeatures("resnet18", **kw)


def _vit(**kw):
    kw.setdefault("random_state", 0)
    kw.setdefault("device", "cpu")
    return BackboneFeatures("vit_tiny_patch16_224", model_kwargs=VIT_KW, **kw)


def _reference(est):
    """The same weights in a fresh, untouched timm model."""
    ref = create_backbone(est.model, model_kwargs=est.model_kwargs)
    ref.load_state_dict(est.model_.state_dict(), strict=False)
    return ref.eval()


# ----------------------------------------------------------------------------
# the features are what the model computes
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_resnet, _vit], ids=["cnn", "vit"])
def test_penultimate_equals_hand_written_forward(make, images):
    est = make().fit(images)
    Z = est.transform(images)
    ref = _reference(est)
    x = _normalised(images, *((MEAN, STD) if est.model == "resnet18" else (0.5, 0.5)))
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True).numpy()
    assert Z.dtype == np.float32 and Z.shape == (len(images), ref.head_hidden_size)
    np.testing.assert_allclose(Z, want, atol=1e-5, rtol=1e-5)
    assert list(est.get_feature_names_out()[:2]) == ["penultimate__0", "penultimate__1"]


def test_intermediate_layers_match_forward_intermediates_cnn(images):
    est = _resnet(layers=[1, "layer3", -1, "penultimate"]).fit()
    parts = est.transform_layers(images)
    assert list(parts) == ["layer1", "layer3", "layer4", "penultimate"]
    ref = _reference(est)
    with torch.no_grad():
        inter = ref.forward_intermediates(
            _normalised(images), indices=[1, 3, 4], intermediates_only=True
        )
    for name, t in zip(["layer1", "layer3", "layer4"], inter):
        np.testing.assert_allclose(parts[name], t.mean(dim=(2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(parts["layer4"], parts["penultimate"], atol=1e-5)


@pytest.mark.parametrize("pool", ["auto", "avg", "max"])
def test_intermediate_layers_match_forward_intermediates_vit(pool, images):
    est = _vit(layers=[0, "blocks.2"], pool=pool).fit()
    parts = est.transform_layers(images)
    ref = _reference(est)
    with torch.no_grad():
        out = ref.forward_intermediates(
            _normalised(images, 0.5, 0.5),
            indices=[0, 2],
            return_prefix_tokens=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
    for name, (spatial, prefix) in zip(["blocks.0", "blocks.2"], out):
        want = {"auto": prefix[:, 0], "avg": spatial.mean(1), "max": spatial.amax(1)}[pool]
        np.testing.assert_allclose(parts[name], want.numpy(), atol=1e-5)


SWIN_KW = dict(
    img_size=64, window_size=4, embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)
)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("test_efficientnet", None),
        ("test_convnext", None),
        ("test_nfnet", None),
        ("test_mambaout", None),  # head_hidden_size (256) != num_features (64)
        ("test_vit2", None),
        ("swin_tiny_patch4_window7_224", SWIN_KW),  # NHWC stages
    ],
)
def test_other_timm_families(name, kwargs):
    from sknc.features._images import preprocess_batch

    est = BackboneFeatures(
        name, layers=[0, -1, None], model_kwargs=kwargs, random_state=0, device="cpu"
    ).fit()
    _, h, w = est.data_config_["input_size"]
    X = np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    parts = est.transform_layers(X)
    ref = _reference(est)
    x = preprocess_batch(torch.from_numpy(X).permute(0, 3, 1, 2), est.data_config_)
    with torch.no_grad():
        pen = ref.forward_head(ref.forward_features(x), pre_logits=True)
        last = len(list_layers(ref)) - 1
        first_map, last_map = ref.forward_intermediates(
            x, indices=[0, last], intermediates_only=True
        )
    assert parts["penultimate"].shape[1] == ref.head_hidden_size
    first, last_name = list(parts)[:2]
    np.testing.assert_allclose(parts["penultimate"], pen.numpy(), atol=1e-5)
    if first_map.ndim == 4:  # test_vit2 has no class token: its blocks are mean-pooled
        np.testing.assert_allclose(parts[first], first_map.mean((2, 3)).numpy(), atol=1e-5)
        np.testing.assert_allclose(parts[last_name], last_map.mean((2, 3)).numpy(), atol=1e-5)


def test_tiny_torch_module(images):
    net = TinyNet()
    est = BackboneFeatures(net, input_size=32, mean=0.5, std=0.25, device="cpu").fit()
    assert isinstance(net.fc, torch.nn.Linear)  # the user's module is untouched
    Z = est.transform(images)
    x = _normalised(images, 0.5, 0.25)
    with torch.no_grad():
        want = net.flat(net.pool(net.block(net.act(net.conv(x))))).numpy()
    np.testing.assert_allclose(Z, want, atol=1e-5)
    assert list_layers(net) == ["conv", "act", "block", "pool", "flat"]
    block = BackboneFeatures(net, layers="block", input_size=32, mean=0.5, std=0.25).fit()
    np.testing.assert_allclose(block.transform(images), want, atol=1e-5)
    factory = BackboneFeatures(
        TinyNet, model_kwargs={"width": 3}, input_size=32, random_state=0
    ).fit()
    assert factory.n_features_out_ == 6


def test_torchvision_model(images):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = tv.models.resnet18(weights=None).eval()
    est = BackboneFeatures(net, layers=["layer3", None], input_size=32, device="cpu").fit()
    assert list_layers(net) == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
    ]
    parts = est.transform_layers(images)
    x = _normalised(images)  # ImageNet defaults for non-timm modules
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        l3 = net.layer3(net.layer2(net.layer1(h)))
        pen = torch.flatten(net.avgpool(net.layer4(l3)), 1)
    np.testing.assert_allclose(parts["layer3"], l3.mean((2, 3)).numpy(), atol=1e-5)
    np.testing.assert_allclose(parts["penultimate"], pen.numpy(), atol=1e-5)
    assert est.data_config_["mean"] == (0.485, 0.456, 0.406)


def test_greyscale_model_and_images():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(4, 8, 8), dtype=np.uint8)
    est = BackboneFeatures(TinyNet(in_chans=1), input_size=8, layers="conv").fit(X)
    assert est.data_config_["input_size"] == (1, 8, 8)
    assert est.transform(X).shape == (4, 8)
    rgb = np.repeat(X[..., None], 3, axis=-1)
    with pytest.raises(ValueError, match="has 3 channels"):
        est.transform(rgb)


def test_only_intermediate_layers_stop_early(images):
    est = _resnet(layers="layer2", batch_size=4).fit()
    calls = {"layer2": 0, "layer4": 0}
    est.model_.layer2.register_forward_hook(
        lambda *a: calls.__setitem__("layer2", calls["layer2"] + 1)
    )
    est.model_.layer4.register_forward_hook(
        lambda *a: calls.__setitem__("layer4", calls["layer4"] + 1)
    )
    est.transform(images)
    assert calls == {"layer2": 2, "layer4": 0}  # 2 batches, one pass each, stopped early
    est.set_params(layers=["layer2", "penultimate"]).fit()
    counter = []
    est.model_.register_forward_hook(lambda *a: counter.append(1))
    est.transform(images)
    assert len(counter) == 2  # several layers, still one forward pass per batch


def test_every_input_form_gives_the_same_features(tmp_path, images):
    from PIL import Image

    est = _resnet(layers=["layer2", None], batch_size=4).fit()
    want = est.transform(images)
    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    forms = {
        "nchw": images.transpose(0, 3, 1, 2),
        "float": images / 255.0,
        "tensor": torch.from_numpy(images).permute(0, 3, 1, 2),
        "files": paths,
        "path_array": np.array(paths),
        "pil": [Image.open(p) for p in paths],
        "list": list(images),
    }
    for name, X in forms.items():
        np.testing.assert_allclose(est.transform(X), want, atol=1e-5, err_msg=name)
    grey = images[..., 0]
    np.testing.assert_allclose(
        est.transform(grey), est.transform(np.stack([grey] * 3, -1)), atol=1e-5
    )


def test_resizing_inputs(images):
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # 64x64
    est = _resnet(input_size=32, crop_pct=1.0).fit()
    Z = est.transform(big)
    assert Z.shape == (len(images), 512)
    # a 2x nearest-neighbour upscale downsampled back with antialiasing ~ original
    assert np.corrcoef(Z.ravel(), est.transform(images).ravel())[0, 1] > 0.95


# ----------------------------------------------------------------------------
# scikit-learn citizenship
# ----------------------------------------------------------------------------
def test_fit_attributes_and_names(images):
    est = _resnet(layers=["layer3", "penultimate"])
    assert est.fit(images) is est
    assert est.layers_ == ["layer3", "penultimate"]
    assert est.n_features_out_ == 256 + 512
    assert est.layer_slices_ == {"layer3": slice(0, 256), "penultimate": slice(256, 768)}
    names = est.get_feature_names_out()
    assert names[0] == "layer3__0" and names[-1] == "penultimate__511"
    assert est.data_config_["input_size"] == (3, 32, 32)
    with pytest.raises(ValueError, match="shape"):
        est.split_layers(np.zeros((2, 5)))
    split = est.split_layers(torch.zeros(2, 768))
    assert split["penultimate"].shape == (2, 512)


def test_unfitted_raises(images):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        _resnet().transform(images)
    with pytest.raises(NotFittedError):
        _resnet().get_feature_names_out()


@pytest.mark.parametrize(
    "check",
    [
        "check_no_attributes_set_in_init",
        "check_parameters_default_constructible",
        "check_get_params_invariance",
        "check_set_params",
        "check_estimator_repr",
        "check_estimator_cloneable",
        "check_valid_tag_types",
    ],
)
def test_sklearn_api_checks(check):
    from sklearn.utils import estimator_checks

    est = _resnet()
    getattr(estimator_checks, check)(type(est).__name__, est)


def test_tags_are_honest():
    tags = _resnet().__sklearn_tags__()
    assert not tags.input_tags.two_d_array
    assert tags.input_tags.three_d_array and tags.input_tags.string
    assert tags.requires_fit and not tags.target_tags.required
    assert tags.transformer_tags.preserves_dtype == []


def test_clone_and_params_round_trip(images):
    est = _resnet(layers=[1, "layer3"], pool="max", memory=None)
    params = est.get_params()
    twin = clone(est)
    assert twin.get_params() == params
    twin.set_params(pool="avg", batch_size=3)
    assert twin.pool == "avg" and est.pool == "max"
    fitted = clone(est).fit()
    np.testing.assert_array_equal(fitted.transform(images), clone(est).fit().transform(images))
    net = TinyNet()
    inst = BackboneFeatures(net)
    assert clone(inst).model is not net  # module parameters are deep-copied by clone


def test_random_state_controls_random_init(images):
    a = _resnet(random_state=0).fit().transform(images)
    b = _resnet(random_state=np.random.RandomState(0)).fit().transform(images)
    c = _resnet(random_state=1).fit().transform(images)
    np.testing.assert_array_equal(a, _resnet(random_state=0).fit().transform(images))
    assert b.shape == a.shape and not np.allclose(a, c)


def test_pickle_round_trip(images):
    est = _resnet(layers=["layer2", None]).fit()
    Z = est.transform(images)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.transform(images), Z)
    assert pickle.loads(pickle.dumps(_resnet())).get_params()["input_size"] == 32
    import copy

    np.testing.assert_array_equal(copy.deepcopy(est).transform(images), Z)


def test_cpu_copy_keeps_values_and_tied_weights():
    from sknc.features._backbone_features import _cpu_copy

    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 3))
    net[2].weight = net[0].weight
    net[0].bias.requires_grad_(False)
    copy_ = _cpu_copy(net, force=True)
    assert copy_ is not net and _cpu_copy(net) is net
    assert copy_[2].weight is copy_[0].weight and copy_[0].weight is not net[0].weight
    assert not copy_[0].bias.requires_grad and copy_[2].bias.requires_grad
    for a, b in zip(net.state_dict().values(), copy_.state_dict().values()):
        assert torch.equal(a, b)


def test_pipeline_cross_val_score():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X[:120] / 16.0).reshape(-1, 8, 8)
    y = y[:120]
    pipe = make_pipeline(
        BackboneFeatures(TinyNet(width=16), input_size=8, mean=0.5, std=0.5, random_state=0),
        LogisticRegression(max_iter=300),
    )
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.2  # random features, 10 classes


def test_output_torch(images):
    est = _resnet(output="torch").fit()
    Z = est.transform(images)
    assert isinstance(Z, torch.Tensor) and Z.dtype == torch.float32
    np.testing.assert_array_equal(Z.numpy(), est.set_params(output="numpy").transform(images))


def test_verbose_progress_bar(images, capsys):
    _resnet(verbose=True).fit().transform(images)
    assert "img" in capsys.readouterr().err
    _resnet(verbose=False).fit().transform(images)
    assert capsys.readouterr().err == ""


def test_amp_on_cpu_warns_and_is_ignored(images):
    with pytest.warns(IgnoredOptionWarning, match="only applies on CUDA"):
        est = _resnet(amp=True).fit()
    np.testing.assert_array_equal(est.transform(images), _resnet().fit().transform(images))


def test_channels_last_on_cpu(images):
    Z = _resnet(channels_last=True).fit().transform(images)
    np.testing.assert_allclose(Z, _resnet().fit().transform(images), atol=1e-4)


# ----------------------------------------------------------------------------
# caching
# ----------------------------------------------------------------------------
def _count_forwards(est):
    calls = []
    est.model_.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls


def _count_extracts(est):
    """Count feature extractions without touching the model (hooks enter the cache key)."""
    calls = []
    extract = est._extract
    est._extract = lambda *a, **k: calls.append(1) or extract(*a, **k)
    return calls


def test_cache_hit_does_not_call_the_model(tmp_path, images):
    est = _resnet(memory=str(tmp_path), layers=["layer3", None]).fit()
    calls = _count_forwards(est)
    Z = est.transform(images)
    assert len(calls) == 1
    np.testing.assert_array_equal(est.transform(images), Z)
    assert len(calls) == 1  # hit
    # device, batch size, verbose and output do not enter the key; a clone hits too
    other = clone(est).set_params(batch_size=2, verbose=False, device="cpu").fit()
    other_calls = _count_forwards(other)
    np.testing.assert_array_equal(other.transform(images), Z)
    assert other_calls == []
    # new input, new layers, new weights, new preprocessing: misses
    est.transform(images[:3])
    assert len(calls) == 2
    for changed in (dict(layers="layer2"), dict(random_state=1), dict(mean=0.5), dict(pool="max")):
        miss = clone(est).set_params(**changed).fit()
        miss_calls = _count_forwards(miss)
        miss.transform(images)
        assert len(miss_calls) == 1, changed


def test_cache_uses_file_size_and_mtime(tmp_path, images):
    import os

    from PIL import Image

    paths = [str(tmp_path / f"{i}.png") for i in range(len(images))]
    for p, img in zip(paths, images):
        Image.fromarray(img).save(p)
    est = _resnet(memory=tmp_path / "cache").fit()
    calls = _count_forwards(est)
    Z = est.transform(paths)
    est.transform(paths)
    assert len(calls) == 1
    Image.fromarray(images[0][::-1].copy()).save(paths[0])
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    Z2 = est.transform(paths)
    assert len(calls) == 2 and not np.allclose(Z2[0], Z[0])


def test_cache_weights_file_change_misses(tmp_path, images):
    path = tmp_path / "w.pth"
    torch.save(create_backbone("resnet18", seed=3).state_dict(), path)
    est = _resnet(weights=str(path), memory=tmp_path / "cache", random_state=None).fit()
    Z = est.transform(images)
    torch.save(create_backbone("resnet18", seed=4).state_dict(), path)
    refit = clone(est).fit()
    calls = _count_forwards(refit)
    assert not np.allclose(refit.transform(images), Z)
    assert len(calls) == 1


def test_grid_search_over_classifier_reuses_cache(tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold

    X, y = load_digits(return_X_y=True)
    X = (X[:90] / 16.0).reshape(-1, 8, 8)
    y = y[:90]
    feats = BackboneFeatures(
        TinyNet(width=16), input_size=8, mean=0.5, std=0.5, memory=str(tmp_path)
    )
    pipe = make_pipeline(feats, LogisticRegression(max_iter=200))
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.01, 0.1, 1.0]}, cv=3)
    grid.fit(X, y)
    # 3 candidates x 3 folds x (train, test) + the refit, but only 3 + 3 + 1
    # distinct inputs: the backbone ran once per distinct input
    assert len(list(tmp_path.rglob("*.npy"))) == 7
    cached = clone(feats).fit()
    calls = _count_extracts(cached)
    for train, test in StratifiedKFold(3).split(X, y):
        cached.transform(X[train])
        cached.transform(X[test])
    assert calls == []


class _Scaled(nn.Module):
    """Two instances with equal weights differ only in a Python attribute."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3)) * self.scale


def _scaled(scale, **kw):
    torch.manual_seed(0)
    return BackboneFeatures(_Scaled(scale), input_size=8, device="cpu", **kw)


def test_cache_key_covers_python_attributes(tmp_path, images):
    # issue 13, item 6: repr + state dict gave both models one key
    X = images[:, :8, :8]
    one = _scaled(1.0, memory=tmp_path).fit().transform(X)
    two = _scaled(2.0, memory=tmp_path).fit().transform(X)
    np.testing.assert_allclose(two, 2 * one, rtol=1e-6)
    assert len(list(tmp_path.rglob("*.npy"))) == 2
    # a plain tensor attribute, a non-persistent buffer, a forward hook
    for change in (
        lambda m: setattr(m, "scale", torch.tensor(3.0)),
        lambda m: m.register_buffer("shift", torch.ones(1), persistent=False),
        lambda m: m.register_forward_hook(lambda mod, i, out: out + 1),
    ):
        m = _Scaled(1.0)
        m.load_state_dict(_scaled(1.0).fit().model_.state_dict(), strict=False)
        change(m)
        est = BackboneFeatures(m, input_size=8, device="cpu", memory=tmp_path).fit()
        calls = _count_forwards(est)
        est.transform(X)
        assert len(calls) == 1
    assert len(list(tmp_path.rglob("*.npy"))) == 5


def test_cache_after_unpickling_an_estimator_of_the_old_format(tmp_path, images):
    est = _scaled(1.0, memory=tmp_path).fit()
    est._fingerprint = "0" * 40  # the weights-only key of sknc 0.1
    Z = est.transform(images[:, :8, :8])
    assert isinstance(est._fingerprint, tuple) and len(list(tmp_path.rglob("*.npy"))) == 1
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).transform(images[:, :8, :8]), Z)


class _Opaque:
    """A value that can be shared (deep-copied as itself) but never pickled or hashed."""

    __slots__ = ()

    def __reduce_ex__(self, protocol):
        raise TypeError("cannot pickle _Opaque")

    def __deepcopy__(self, memo):
        return self


def test_cache_refuses_modules_it_cannot_key(tmp_path, images):
    m = _Scaled(1.0)
    m.handle = _Opaque()
    est = BackboneFeatures(m, input_size=8, device="cpu", memory=tmp_path).fit()
    with pytest.warns(CacheWarning, match=r"does not cache this model: handle is a .*_Opaque"):
        Z = est.transform(images[:, :8, :8])
    assert not list(tmp_path.rglob("*.npy"))
    np.testing.assert_array_equal(Z, est.set_params(memory=None).transform(images[:, :8, :8]))


def test_cache_file_rewritten_with_same_size_and_mtime(tmp_path, images):
    import os

    from PIL import Image

    path = str(tmp_path / "a.bmp")  # uncompressed: equal sizes for images of equal shape
    Image.fromarray(images[0]).save(path)
    original = open(path, "rb").read()
    Image.fromarray(images[1]).save(tmp_path / "b.bmp")
    other = (tmp_path / "b.bmp").read_bytes()
    assert len(other) == len(original)
    first = os.stat(path)
    for file_key in ("stat", "content"):
        est = _resnet(memory=tmp_path / f"cache-{file_key}", file_key=file_key).fit()
        Z = est.transform([path])
        time.sleep(0.05)  # beyond the file system's timestamp granularity
        with open(path, "r+b") as f:  # rewritten in place: same size, inode and mtime
            f.write(other)
        os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
        calls = _count_forwards(est)
        assert not np.allclose(est.transform([path]), Z)
        assert len(calls) == 1, file_key
        with open(path, "r+b") as f:
            f.write(original)
        os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
    # content keys survive copying the file elsewhere
    est = _resnet(memory=tmp_path / "cache-content", file_key="content").fit()
    copy = tmp_path / "copy.bmp"
    copy.write_bytes(original)
    calls = _count_extracts(est)
    np.testing.assert_array_equal(est.transform([str(copy)]), Z)
    assert calls == []
    with pytest.raises(ValueError, match="file_key"):
        _resnet(file_key="mtime").fit()


class _Planted:
    """Unpickling it creates the file ``mark``: code run by a cache read."""

    def __init__(self, mark):
        self.mark = str(mark)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.mark),))


def test_cache_cannot_execute_planted_files(tmp_path, images):
    # issue 13, item 12: a planted joblib output.pkl ran code on the next transform
    import pickle

    mark = tmp_path / "pwned"
    cache = tmp_path / "cache"
    est = _resnet(memory=cache).fit()
    Z = est.transform(images)
    entries = list(cache.rglob("*.npy"))
    assert len(entries) == 1 and not list(cache.rglob("*.pkl"))
    # joblib's layout, with a pickle that would run code if loaded
    for pkl in [cache / "joblib" / "x" / "output.pkl", entries[0].with_suffix(".pkl")]:
        pkl.parent.mkdir(parents=True, exist_ok=True)
        pkl.write_bytes(pickle.dumps(_Planted(mark)))
    calls = _count_forwards(est)
    np.testing.assert_array_equal(est.transform(images), Z)
    assert calls == [] and not mark.exists()
    # an entry replaced by a pickle, an object array, a 0-d array, another shape: misses
    planted = [
        pickle.dumps(_Planted(mark)),
        None,
    ]
    for content in planted + ["object", "scalar", "shape", "float64"]:
        if content == "object":
            np.save(entries[0], np.array([_Planted(mark)], dtype=object), allow_pickle=True)
        elif content == "scalar":
            np.save(entries[0], np.float32(1.0))
        elif content == "shape":
            np.save(entries[0], Z[:3])
        elif content == "float64":
            np.save(entries[0], Z.astype(np.float64))
        elif content is None:
            entries[0].write_bytes(entries[0].read_bytes()[:100])  # truncated
        else:
            entries[0].write_bytes(content)
        with pytest.warns(CacheWarning, match="invalid feature-cache entry"):
            np.testing.assert_array_equal(est.transform(images), Z)
        assert not mark.exists()
        # replaced by a valid entry, read back without a forward pass
        n = len(calls)
        np.testing.assert_array_equal(est.transform(images), Z)
        assert len(calls) == n
    assert not list(cache.rglob(".tmp-*"))


def test_cache_location_that_cannot_be_used(tmp_path, images, monkeypatch):
    import os
    import tempfile

    expected = _resnet().fit().transform(images)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.warns(CacheWarning, match="not a directory.*without caching"):
        np.testing.assert_array_equal(_resnet(memory=not_a_dir).fit().transform(images), expected)
    with pytest.raises(ValueError, match="memory must be"):
        _resnet(memory=3).fit().transform(images)
    # a folder that refuses writes (simulated: root writes anywhere)
    est = _resnet(memory=tmp_path / "refusing").fit()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", refuse)
        with pytest.warns(CacheWarning, match="Could not write to the feature cache.*Permission"):
            np.testing.assert_array_equal(est.transform(images), expected)
    if os.geteuid() == 0:  # pragma: no cover - root writes anywhere
        return
    read_only = tmp_path / "ro"
    est = _resnet(memory=read_only).fit()
    est.transform(images[:2])  # one entry stored
    read_only.chmod(0o555)
    for sub in read_only.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o555)
    try:
        with pytest.warns(CacheWarning, match="Could not write to the feature cache"):
            np.testing.assert_array_equal(est.transform(images), expected)
        calls = _count_forwards(est)
        est.transform(images[:2])  # entries already there are still read
        assert calls == []
        with pytest.warns(CacheWarning, match="cannot be created"):
            _resnet(memory=read_only / "new").fit().transform(images[:2])
    finally:
        for sub in [read_only, *read_only.rglob("*")]:
            if sub.is_dir():
                sub.chmod(0o755)


@pytest.mark.slow  # ~15 s: two loky workers import torch and timm
def test_grid_search_n_jobs_2(tmp_path):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X[:60] / 16.0).reshape(-1, 8, 8)
    y = y[:60]
    pipe = make_pipeline(
        BackboneFeatures(
            TinyNet(width=8), input_size=8, mean=0.5, std=0.5, device="cpu", memory=str(tmp_path)
        ),
        LogisticRegression(max_iter=200),
    )
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=2, n_jobs=2)
    grid.fit(X, y)
    assert set(grid.cv_results_["param_logisticregression__C"]) == {0.1, 1.0}
    assert grid.predict(X[:5]).shape == (5,)


# ----------------------------------------------------------------------------
# weights and errors
# ----------------------------------------------------------------------------
def test_local_weight_file_round_trip(tmp_path, images):
    from safetensors.torch import save_file

    src = create_backbone("resnet18", seed=11)
    pth, st = tmp_path / "r18.pth", tmp_path / "r18.safetensors"
    torch.save({"state_dict": src.state_dict()}, pth)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    want = BackboneFeatures(src, input_size=32).fit().transform(images)
    for path in (pth, st):
        est = _resnet(weights=path, random_state=None).fit()
        np.testing.assert_allclose(est.transform(images), want, atol=1e-6)
    # a 1000-class checkpoint into a 10-class model: the head is skipped
    est = _resnet(weights=pth, model_kwargs={"num_classes": 10}).fit()
    np.testing.assert_allclose(est.transform(images), want, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        BackboneFeatures("resnet34", weights=pth).fit()


def _zero_scale_warnings(record):
    return [w for w in record if "all-zero scales" in str(w.message)]


def test_random_init_with_zero_scales_warns(tmp_path, images):
    from safetensors.torch import save_file

    from sknc.features._weights import zero_scale_layers

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _resnet().fit(images)
    (w,) = _zero_scale_warnings(record)
    assert w.category is RandomWeightsWarning and w.filename == __file__  # points at the caller
    assert "_resnet().fit(images)" in open(__file__).read().splitlines()[w.lineno - 1]
    message = str(w.message)
    assert "8 layer(s) with all-zero scales (layer1.0.bn2, layer1.1.bn2," in message
    assert "(+2 more)" in message and "model_kwargs={'zero_init_last': False}" in message
    assert "pretrained=True or weights=" in message
    # the zero scales are timm's zero_init_last: the last BatchNorm of every block
    module = create_backbone("resnet18")
    assert zero_scale_layers(module) == [f"layer{i}.{j}.bn2" for i in range(1, 5) for j in (0, 1)]
    assert (
        zero_scale_layers(create_backbone("resnet18", model_kwargs={"zero_init_last": False})) == []
    )
    # a factory building such a model warns too, without the timm-only hint
    with pytest.warns(RandomWeightsWarning, match="all-zero scales") as record:
        BackboneFeatures(lambda: timm.create_model("resnet18"), input_size=32).fit()
    assert "zero_init_last': False}" not in str(_zero_scale_warnings(record)[0].message)
    # no warning: no zero scales, loaded weights (whatever they hold), a module instance
    path = str(tmp_path / "zero_init.safetensors")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path)
    for quiet in (
        _resnet(model_kwargs={"zero_init_last": False}),
        _resnet(weights=path),
        BackboneFeatures(module, input_size=32),
        _vit(),
    ):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            quiet.fit(images)
        assert _zero_scale_warnings(record) == [], quiet


def test_pretrained_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="weights="):
        BackboneFeatures("resnet10t", pretrained=True).fit()
    assert time.perf_counter() - start < 20


def test_errors(tmp_path, images):
    with pytest.raises(ValueError, match="Close matches.*resnet18"):
        BackboneFeatures("resnet_18").fit()
    with pytest.raises(ValueError, match=r"Valid blocks: \['act1', 'layer1'"):
        _resnet(layers="layer7").fit()
    with pytest.raises(ValueError, match="out of range"):
        _resnet(layers=9).fit()
    with pytest.raises(ValueError, match="classifier head"):
        _resnet(layers="fc").fit()
    with pytest.raises(ValueError, match="appears twice"):
        _resnet(layers=["layer4", -1]).fit()
    with pytest.raises(ValueError, match="layers must be"):
        _resnet(layers=[]).fit()
    for bad in (
        dict(pool="mean"),
        dict(output="pandas"),
        dict(batch_size=0),
        dict(amp="fp8"),
        dict(model_kwargs=[1]),
    ):
        with pytest.raises(ValueError):
            _resnet(**bad).fit()
    est = _resnet().fit()
    with pytest.raises(ValueError, match="has 4 channels"):
        est.transform(np.zeros((2, 32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="has 2 channels"):
        est.transform(np.zeros((2, 2, 32, 32), dtype=np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    with pytest.raises(ValueError, match="bad.jpg"):
        est.transform([str(bad)])
    with pytest.raises(ValueError, match="not tabular"):
        est.transform(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="divide by 255"):
        est.transform(images.astype(np.float64))
    with pytest.raises(ValueError, match="has 4 channels"):
        _resnet().fit(np.zeros((2, 32, 32, 4), dtype=np.uint8))


def test_ambiguous_layouts_are_not_guessed(images):
    # issue 13, item 7: (N, 3, 1, 1) was read as 3 x 1 greyscale pixels and one
    # (32, 32, 3) image as 32 greyscale images
    est = _resnet().fit()
    rgb = np.random.default_rng(1).integers(0, 256, size=(4, 3, 1, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"ambiguous.*layout='NCHW' or layout='NHWC'"):
        est.transform(rgb)
    with pytest.raises(ValueError, match=r"ambiguous.*X\[None\].*layout='NHW'"):
        est.transform(images[0])
    with pytest.raises(ValueError, match="ambiguous"):
        _resnet().fit(images[0])
    with pytest.raises(ValueError, match="ambiguous"):
        est.transform([rgb[0]])  # one (3, 1, 1) item of a list
    # saying which gives the same features as the unambiguous layout
    nchw = _resnet(layout="NCHW").fit()
    nhwc = _resnet(layout="NHWC").fit()
    expected = nhwc.transform(np.ascontiguousarray(rgb.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(nchw.transform(rgb), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nchw.transform(list(rgb)), expected, rtol=1e-5, atol=1e-6)
    grey = nhwc.transform(rgb)  # 3 x 1 pixels of one channel
    assert not np.allclose(grey, expected)
    np.testing.assert_allclose(
        est.transform(images[:1]), est.transform(images[0][None]), rtol=0, atol=0
    )
    assert _resnet(layout="NHW").fit().transform(images[0]).shape == (32, 512)
    # the layout is part of the cache key
    assert _resnet(layout="NHWC").fit()._cache_key(
        check_images(rgb, layout="NHWC")
    ) != nchw._cache_key(check_images(rgb, layout="NCHW"))
    with pytest.raises(ValueError, match="layout must be"):
        _resnet(layout="HWC").fit()
    with pytest.raises(ValueError, match="3-D"):
        _resnet(layout="NHWC").fit(images[:, :, :, 0])


def test_error_messages_name_the_problem(tmp_path):
    # issue 13, item 15
    grey = _resnet(model_kwargs={"in_chans": 1}).fit()
    with pytest.raises(ValueError, match=r"has 3 channels; expected 1 \(greyscale\) channel\.$"):
        grey.transform(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is a directory.*model.safetensors"):
        _resnet(weights=folder).fit()
    est = _resnet().fit()
    big = np.zeros((2, 32, 32, 3)) + 1j
    for X in (big, torch.from_numpy(big)):
        with pytest.raises(ValueError, match="complex") as info:
            est.transform(X)
        assert len(str(info.value)) < 200
    with pytest.raises(ValueError, match="complex"):
        _resnet().fit(big)  # refused at fit too, not only when the pixels are read


def test_docstring_examples_run():
    from sknc.features import create_backbone as create
    from sknc.features import detect_layout, load_weights

    for obj in (BackboneFeatures, ImageDataset, list_layers, create, load_weights, detect_layout):
        finder = doctest.DocTestFinder(recurse=False)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in finder.find(obj, globs={}):
            with warnings.catch_warnings():
                runner.run(test)
        assert runner.failures == 0 and runner.tries > 0, obj


# ----------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ----------------------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_matches_cpu(images):
    cpu = _resnet(layers=["layer2", None]).fit()
    gpu = clone(cpu).set_params(device="cuda").fit()
    np.testing.assert_allclose(gpu.transform(images), cpu.transform(images), atol=1e-3, rtol=1e-3)
    vit_cpu, vit_gpu = _vit().fit(), _vit(device="cuda").fit()
    np.testing.assert_allclose(
        vit_gpu.transform(images), vit_cpu.transform(images), atol=1e-3, rtol=1e-3
    )


@pytest.mark.gpu
@pytest.mark.parametrize("amp", [True, "bfloat16"])
def test_cuda_amp_and_channels_last(amp, images):
    ref = _resnet(device="cuda").fit().transform(images)
    Z = _resnet(device="cuda", amp=amp, channels_last=True).fit().transform(images)
    assert Z.dtype == np.float32
    cos = (Z * ref).sum(1) / np.linalg.norm(Z, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99


@pytest.mark.gpu
def test_cuda_torch_output_stays_on_device(images):
    Z = _resnet(device="cuda", output="torch").fit().transform(images)
    assert Z.device.type == "cuda" and Z.dtype == torch.float32


@pytest.mark.gpu
def test_cuda_pickle_moves_model_to_cpu(images):
    est = _resnet(device="cuda").fit()
    Z = est.transform(images)
    assert next(est.model_.parameters()).device.type == "cuda"
    again = pickle.loads(pickle.dumps(est))
    assert next(again.model_.parameters()).device.type == "cpu"
    assert next(est.model_.parameters()).device.type == "cuda"  # original untouched
    np.testing.assert_allclose(again.transform(images), Z, atol=1e-5)
    np.testing.assert_allclose(again.set_params(device="cpu").transform(images), Z, atol=1e-3)


@pytest.mark.gpu
def test_cuda_cache_is_shared_with_cpu(tmp_path, images):
    gpu = _resnet(device="cuda", memory=str(tmp_path)).fit()
    Z = gpu.transform(images)
    cpu = clone(gpu).set_params(device="cpu").fit()
    calls = _count_forwards(cpu)
    np.testing.assert_array_equal(cpu.transform(images), Z)
    assert calls == []

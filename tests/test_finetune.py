"""Tests for sknc.finetune: FineTuneNet, FineTuningClassifier, pretrain_backbone."""

import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from torch import nn

timm = pytest.importorskip("timm")
pytest.importorskip("skorch")

from _helpers import VIT_KW as TINY_VIT_KW  # noqa: E402

from sknc.features import create_backbone, load_weights, strip_classifier  # noqa: E402
from sknc.finetune import FineTuneNet, FineTuningClassifier, pretrain_backbone  # noqa: E402
from sknc.finetune._modules import (  # noqa: E402
    SplitError,
    count_parameters,
    default_tuned_block,
    split_backbone,
)
from sknc.utils import CacheWarning  # noqa: E402

VIT_KW = dict(TINY_VIT_KW, depth=4)
RESNET_KW = dict(channels=(16, 32, 64, 128), stem_width=8)  # a narrow resnet10t
RESNET = dict(model="resnet10t", input_size=32, model_kwargs=RESNET_KW)
VIT = dict(model="vit_tiny_patch16_224", model_kwargs=VIT_KW)


class TinyNet(nn.Module):
    def __init__(self, n_classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.block2(self.block1(self.stem(x))))))


class BranchyNet(TinyNet):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        h = self.stem(x)
        if h.mean() > 1e9:
            h = h * 2
        return self.fc(self.flat(self.pool(self.block2(self.block1(h)))))


def _images(n=18, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _labels(n=18, kinds=("cat", "dog", "emu")):
    return np.array([kinds[i % len(kinds)] for i in range(n)])


def _fit(method="scl-ft", spec=RESNET, X=None, y=None, **params):
    spec = dict(spec)
    model = spec.pop("model")
    params = {"max_epochs": 2, "batch_size": 8, "random_state": 0, **spec, **params}
    X = _images() if X is None else X
    y = _labels(len(X)) if y is None else y
    return FineTuningClassifier(model, method=method, **params).fit(X, y)


def _trainable(net):
    return {n for n, p in net.named_parameters() if p.requires_grad}


def _net(method, spec=RESNET, seed=0, **kw):
    spec = dict(spec)
    model = spec.pop("model")
    torch.manual_seed(seed)
    return FineTuneNet(model, 3, method, seed=seed, **spec, **kw)


# --------------------------------------------------------------------------
# the network: freezing, BN, skip connection
# --------------------------------------------------------------------------
@pytest.mark.parametrize("spec,block", [(RESNET, "layer3.0"), (VIT, "blocks.2")])
def test_trainable_parameters_per_method(spec, block):
    names = {
        m: _trainable(_net(m, spec)) for m in ("linear-probe", "layer-ft", "scl-ft", "full-ft")
    }
    all_names = {n for n, _ in _net("scl-ft", spec).named_parameters()}
    assert names["linear-probe"] == {"head.weight", "head.bias"}
    assert names["layer-ft"] == {"head.weight", "head.bias"} | {
        n for n in all_names if n.startswith(f"backbone.{block}.")
    }
    assert any(n.startswith(f"backbone.{block}.") for n in names["layer-ft"])
    skip = {n for n in all_names if n.startswith("skip.")}
    assert skip and names["scl-ft"] == names["layer-ft"] | skip
    full = _net("full-ft", spec)
    assert names["full-ft"] == {n for n, _ in full.named_parameters()}


def test_estimator_parameter_counts_match_module():
    clf = _fit("layer-ft", max_epochs=0)
    total, trainable = count_parameters(clf.net_.module_)
    assert (clf.n_params_, clf.n_trainable_params_) == (total, trainable)
    assert clf.trainable_fraction_ == pytest.approx(trainable / total)
    opt_params = {id(p) for g in clf.net_.optimizer_.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in clf.net_.module_.parameters() if p.requires_grad}


def test_train_mode_keeps_frozen_parts_in_eval():
    net = _net("layer-ft").train()
    tuned = net.backbone.get_submodule("layer3.0")
    tuned_ids = {id(m) for m in tuned.modules()}
    for m in net.backbone.modules():
        assert m.training == (id(m) in tuned_ids)
    assert net.training and net.head.training
    full = _net("full-ft").train()
    assert all(m.training for m in full.modules())
    assert not any(m.training for m in net.eval().modules())


def _bn_buffers(module):
    return {name: b.detach().clone() for name, b in module.named_buffers() if "running_" in name}


@pytest.mark.parametrize(
    "method,cache", [("layer-ft", False), ("scl-ft", True), ("linear-probe", False)]
)
def test_frozen_batchnorm_statistics_unchanged(method, cache):
    model = create_backbone("resnet10t", model_kwargs=RESNET_KW, seed=1)
    before = _bn_buffers(model)
    clf = FineTuningClassifier(
        model,
        method=method,
        input_size=32,
        max_epochs=2,
        batch_size=6,
        cache_prefix=cache,
        random_state=0,
    ).fit(_images(), _labels())
    after = _bn_buffers(clf.net_.module_.backbone)
    tuned = f"{clf.tuned_block_}." if clf.tuned_block_ else None
    changed = set()
    for name, value in before.items():
        if not torch.equal(value, after[name]):
            changed.add(name)
    frozen_changed = {n for n in changed if tuned is None or not n.startswith(tuned)}
    assert not frozen_changed
    if tuned is not None:  # the tuned block trains in train mode: its statistics move
        assert any(n.startswith(tuned) for n in changed)
    assert _bn_buffers(model).keys() == before.keys()  # the user's module is untouched
    assert all(torch.equal(v, before[k]) for k, v in _bn_buffers(model).items())


def test_prefix_runs_without_grad_and_suffix_with_grad():
    net = _net("layer-ft").train()
    seen = {}

    def record(name):
        def hook(_m, _i, _o):
            seen[name] = torch.is_grad_enabled()

        return hook

    net.backbone.layer2.register_forward_hook(record("prefix"))
    net.backbone.layer3.get_submodule("0").register_forward_hook(record("tuned"))
    net.backbone.layer4.register_forward_hook(record("suffix"))
    out = net(torch.randn(2, 3, 32, 32))
    assert seen == {"prefix": False, "tuned": True, "suffix": True}
    assert torch.is_grad_enabled()
    out.sum().backward()
    assert net.backbone.get_submodule("layer3.0.conv1").weight.grad is not None
    assert net.backbone.layer4[0].conv1.weight.grad is None
    with torch.no_grad():  # inference stays grad-free everywhere
        net(torch.randn(2, 3, 32, 32))
    assert seen == {"prefix": False, "tuned": False, "suffix": False}


@pytest.mark.parametrize("spec", [RESNET, VIT])
@pytest.mark.parametrize("combine", ["add", "concat"])
def test_scl_ft_at_init_equals_layer_ft(spec, combine):
    x = torch.randn(3, 3, 32, 32)
    layer = _net("layer-ft", spec, seed=3).eval()
    scl = _net("scl-ft", spec, seed=3, combine=combine).eval()
    with torch.no_grad():
        ref, out = layer(x), scl(x)
    if combine == "add":  # f + 0 is f: bit-identical
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    else:  # zero columns change the summation order of the wider matmul only
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    # the skip branch is really wired in: perturbing it changes the logits
    with torch.no_grad():
        for p in scl.skip.parameters():
            p.add_(0.5)
        if combine == "concat":
            scl.head.weight[:, layer.head.in_features :] += 0.5
        assert not torch.allclose(scl(x), ref)


def test_skip_projection_options():
    net = _net("scl-ft", projection_rank=None)
    assert isinstance(net.skip.proj, nn.Linear)
    assert net.skip.proj.in_features == net.block_width == 64
    low = _net("scl-ft")  # "auto": rank min(C, D) // 4
    assert low.skip.proj.down.out_features == 64 // 4
    assert count_parameters(low.skip)[0] < count_parameters(net.skip)[0]
    cat = _net("scl-ft", combine="concat")
    assert isinstance(cat.skip.proj, nn.Identity)
    assert cat.head.in_features == cat.feature_dim + cat.block_width
    vit = _net("scl-ft", VIT, projection="identity", combine="add")
    assert vit.skip.out_features == vit.feature_dim
    with pytest.raises(ValueError, match="projection='identity'"):
        _net("scl-ft", projection="identity")
    normed = _net("scl-ft", skip_norm=True)
    assert isinstance(normed.skip.norm, nn.LayerNorm)
    assert _net("scl-ft", VIT, skip_pool="avg").block_width == VIT_KW["embed_dim"]
    with pytest.raises(ValueError, match="skip_pool='token' cannot pool"):
        _net("scl-ft", skip_pool="token")


def test_trainable_fraction_of_large_models():
    """SCL-FT tunes < 10% of ResNet-50 (one layer3 bottleneck) and ViT-B/16 (one block)."""
    r50 = FineTuneNet("resnet50", 10, "scl-ft", tuned_block="layer3.5", seed=0)
    total, trainable = count_parameters(r50)
    assert trainable / total < 0.10
    assert default_tuned_block(r50.backbone) == "layer3.5"
    del r50
    vit = FineTuneNet("vit_base_patch16_224", 10, "scl-ft", seed=0)
    assert vit.tuned_block == "blocks.7"
    total, trainable = count_parameters(vit)
    assert trainable / total < 0.10
    # ... which is also < 10% of what full fine-tuning trains (backbone + head)
    assert trainable < 0.10 * (count_parameters(vit.backbone)[0] + 768 * 10 + 10)


def test_default_and_named_tuned_blocks():
    assert _net("layer-ft").tuned_block == "layer3.0"
    assert FineTuneNet("resnet18", 3, "layer-ft", input_size=32).tuned_block == "layer3.1"
    assert _net("layer-ft", VIT).tuned_block == "blocks.2"
    assert _net("layer-ft", tuned_block=3).tuned_block == "layer3"  # list_layers index
    assert _net("layer-ft", tuned_block="layer2.0").tuned_block == "layer2.0"
    assert _net("layer-ft", VIT, tuned_block=-1).tuned_block == "blocks.3"
    tiny = FineTuneNet(TinyNet(), 3, "layer-ft", input_size=16)
    assert tiny.tuned_block == "block1"
    with pytest.raises(ValueError, match="layer3.0"):
        _net("layer-ft", tuned_block="layer9")
    with pytest.raises(ValueError, match="no parameters"):
        _net("layer-ft", tuned_block="act1")


# --------------------------------------------------------------------------
# prefix split and caching
# --------------------------------------------------------------------------
@pytest.mark.parametrize("spec,block", [(RESNET, "layer3.0"), (VIT, "blocks.1")])
def test_split_reproduces_backbone(spec, block):
    net = _net("layer-ft", spec, tuned_block=block)
    x = torch.randn(4, 3, 32, 32)
    split = split_backbone(net.backbone, block, x[:2])
    with torch.no_grad():
        cut = split.prefix(x)
        torch.testing.assert_close(split.suffix(*cut), net.backbone(x))
    assert split.n_cut == 1
    # the suffix shares the backbone's parameters
    suffix_params = {id(p) for p in split.suffix.parameters()}
    assert {id(p) for p in net.backbone.get_submodule(block).parameters()} <= suffix_params


def test_split_fails_cleanly_on_untraceable_module():
    with pytest.raises(SplitError, match="trace"):
        split_backbone(BranchyNet(), "block1", torch.randn(2, 3, 16, 16))


# tiny random-init timm models: the zero-scale warning is incidental
@pytest.mark.filterwarnings("ignore::sknc.utils.RandomWeightsWarning")
@pytest.mark.parametrize(
    "spec,method",
    [(RESNET, "scl-ft"), (RESNET, "layer-ft"), (VIT, "scl-ft"), (RESNET, "linear-probe")],
)
def test_caching_gives_the_same_trajectory(spec, method):
    X, y = _images(14), _labels(14)
    kw = dict(max_epochs=3, batch_size=4, lr=1e-2)
    cached = _fit(method, spec, X, y, cache_prefix=True, **kw)
    plain = _fit(method, spec, X, y, cache_prefix=False, **kw)
    assert cached.prefix_cached_ and not plain.prefix_cached_
    losses_c = [row["train_loss"] for row in cached.history_]
    losses_p = [row["train_loss"] for row in plain.history_]
    np.testing.assert_allclose(losses_c, losses_p, rtol=1e-5, atol=1e-7)
    assert losses_c[0] != losses_c[-1]  # it did train
    np.testing.assert_allclose(
        cached.decision_function(X), plain.decision_function(X), rtol=1e-4, atol=1e-5
    )
    assert cached.train_nc1_ == pytest.approx(plain.train_nc1_, rel=1e-4)


def test_cache_auto_and_invalid_combinations():
    assert _fit("scl-ft", max_epochs=1).prefix_cached_  # "auto" caches when valid
    assert not _fit("full-ft", max_epochs=1).prefix_cached_
    flip = _fit("layer-ft", max_epochs=1, augment=lambda img: img.flip(-1))
    assert not flip.prefix_cached_
    with pytest.raises(ValueError, match="augment"):
        _fit("layer-ft", max_epochs=1, cache_prefix=True, augment=lambda img: img)
    with pytest.raises(ValueError, match="full fine-tuning"):
        _fit("full-ft", max_epochs=1, cache_prefix=True)
    spec = dict(model=BranchyNet(), input_size=16)
    X = _images(12, size=16)
    with pytest.warns(CacheWarning, match="Prefix caching disabled"):
        est = _fit("layer-ft", spec, X=X, tuned_block="block2", max_epochs=1)
    assert not est.prefix_cached_
    with pytest.raises(ValueError, match="cannot be split"):
        _fit("layer-ft", spec, X=X, tuned_block="block2", max_epochs=1, cache_prefix=True)


def test_validation_split_and_early_stopping_with_cache():
    est = _fit(
        "scl-ft",
        X=_images(24),
        y=_labels(24),
        max_epochs=6,
        lr=0.5,
        validation_fraction=0.25,
        patience=1,
    )
    assert est.prefix_cached_
    assert "valid_loss" in est.history_[-1] and "valid_acc" in est.history_[-1]
    assert 1 <= est.n_iter_ <= 6


# --------------------------------------------------------------------------
# scikit-learn citizenship
# --------------------------------------------------------------------------
def test_labels_of_any_kind_and_outputs():
    X = _images(12)
    y = np.array(["b", "a", "c"] * 4, dtype=object)
    est = _fit("scl-ft", X=X, y=y)
    assert est.classes_.tolist() == ["a", "b", "c"]
    pred = est.predict(X)
    assert set(pred) <= {"a", "b", "c"} and pred.dtype == object
    proba = est.predict_proba(X)
    assert proba.shape == (12, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(pred, est.classes_[proba.argmax(1)])
    np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), proba, rtol=1e-6)
    assert 0.0 <= est.score(X, y) <= 1.0
    Z = est.transform(X)
    assert Z.shape == (12, est.net_.module_.head_in_features) and Z.dtype == np.float32
    assert est.get_feature_names_out()[0] == "finetuningclassifier0"
    assert est.train_nc1_ > 0
    from sknc.metrics import nc1

    assert est.train_nc1_ == pytest.approx(nc1(Z, y), rel=1e-3)


def test_clone_after_fit_starts_fresh():
    X, y = _images(), _labels()
    model = create_backbone("resnet10t", model_kwargs=RESNET_KW, seed=5)
    est = FineTuningClassifier(
        model, method="full-ft", input_size=32, max_epochs=2, batch_size=6, lr=1e-2, random_state=0
    ).fit(X, y)
    first = [row["train_loss"] for row in est.history_]
    twin = clone(est)
    assert not hasattr(twin, "net_")
    assert twin.get_params()["model"] is not est.net_.module_.backbone
    second = [row["train_loss"] for row in twin.fit(X, y).history_]
    np.testing.assert_allclose(second, first, rtol=1e-6)
    refit = [row["train_loss"] for row in est.fit(X, y).history_]  # refit restarts too
    np.testing.assert_allclose(refit, first, rtol=1e-6)


def test_random_state_reproducibility_and_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = _fit("scl-ft", random_state=7, cache_prefix=False)
    assert torch.equal(torch.get_rng_state(), state)
    b = _fit("scl-ft", random_state=7, cache_prefix=False)
    c = _fit("scl-ft", random_state=8, cache_prefix=False)
    la, lb, lc = ([row["train_loss"] for row in e.history_] for e in (a, b, c))
    assert la == lb
    assert la != lc


def test_gridsearch_over_methods_and_blocks():
    X, y = _images(12), _labels(12)
    grid = GridSearchCV(
        FineTuningClassifier(
            "resnet10t",
            input_size=32,
            model_kwargs=RESNET_KW,
            max_epochs=1,
            batch_size=6,
            random_state=0,
        ),
        {"method": ["layer-ft", "scl-ft"], "tuned_block": ["layer2.0", "layer3.0"]},
        cv=2,
    ).fit(X, y)
    assert len(grid.cv_results_["mean_test_score"]) == 4
    assert grid.best_estimator_.tuned_block_ == grid.best_params_["tuned_block"]


@pytest.mark.slow
def test_gridsearch_n_jobs_2():
    X, y = _images(12), _labels(12)
    grid = GridSearchCV(
        FineTuningClassifier(
            "resnet10t",
            input_size=32,
            model_kwargs=RESNET_KW,
            max_epochs=1,
            batch_size=6,
            random_state=0,
        ),
        {"method": ["linear-probe", "layer-ft", "scl-ft", "full-ft"]},
        cv=2,
        n_jobs=2,
    ).fit(X, y)
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))


@pytest.mark.parametrize("spec", [RESNET, VIT])
def test_pickle_round_trip(spec):
    X = _images(6)
    est = _fit("scl-ft", spec, X=X, y=_labels(6), max_epochs=1)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.decision_function(X), est.decision_function(X))
    assert again.get_params(deep=False).keys() == est.get_params(deep=False).keys()
    again.net_.module_.train()  # hooks and the BN handling survive the round trip
    assert not again.net_.module_.backbone.training


def test_device_follows_the_net_after_unpickling_without_cuda(monkeypatch):
    """A CUDA-fitted estimator unpickled where there is no CUDA reports the CPU."""
    from skorch.exceptions import DeviceWarning

    X = _images(6)
    est = _fit("layer-ft", X=X, y=_labels(6), max_epochs=1)
    assert est.device_ == torch.device("cpu")
    assert not hasattr(clone(est), "device_")  # a fitted attribute
    expected = est.decision_function(X)
    # what a fit on a GPU leaves behind (pickling moves the tensors to the CPU anyway)
    est.net_.device = "cuda"
    assert est.device_ == torch.device("cuda")
    payload = pickle.dumps(est)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(DeviceWarning):
        again = pickle.loads(payload)
    assert torch.device(again.net_.device) == torch.device("cpu")
    assert again.device_ == torch.device("cpu")
    assert {p.device.type for p in again.net_.module_.parameters()} == {"cpu"}
    np.testing.assert_array_equal(again.decision_function(X), expected)


def test_input_validation_errors():
    X = _images(6)
    with pytest.raises(ValueError, match="method must be"):
        FineTuningClassifier("resnet10t", method="vpt").fit(X, _labels(6))
    with pytest.raises(ValueError, match="2-D array"):
        FineTuningClassifier("resnet10t").fit(np.zeros((6, 10)), _labels(6))
    with pytest.raises(ValueError, match="at least 2 classes"):
        FineTuningClassifier("resnet10t").fit(X, ["a"] * 6)
    with pytest.raises(ValueError, match="labels"):
        FineTuningClassifier("resnet10t").fit(X, _labels(5))
    with pytest.raises(ValueError, match="Valid blocks"):
        _fit("layer-ft", X=X, y=_labels(6), tuned_block="layer7.0")
    with pytest.raises(ValueError, match="lr must be"):
        FineTuningClassifier("resnet10t", lr=0).fit(X, _labels(6))
    with pytest.raises(ValueError, match="channels"):
        _fit("scl-ft", X=np.zeros((6, 32, 32, 5), np.uint8), y=_labels(6))


def test_image_input_forms_agree(tmp_path):
    from PIL import Image

    X = _images(6)
    paths = []
    for i, img in enumerate(X):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(img).save(paths[-1])
    est = _fit("scl-ft", X=X, y=_labels(6), max_epochs=1)
    ref = est.decision_function(X)
    for form in (
        paths,
        [Image.fromarray(img) for img in X],
        X.transpose(0, 3, 1, 2),
        torch.from_numpy(X).float().div(255),
    ):
        np.testing.assert_allclose(est.decision_function(form), ref, rtol=1e-4, atol=1e-5)
    from_paths = _fit("scl-ft", X=paths, y=_labels(6), max_epochs=1)
    np.testing.assert_allclose(
        [r["train_loss"] for r in from_paths.history_],
        [r["train_loss"] for r in est.history_],
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="nope.png"):
        est.predict([str(tmp_path / "nope.png")])


def test_verbose_reports_progress(capsys):
    _fit("scl-ft", max_epochs=1, verbose=1)
    out = capsys.readouterr().out
    assert "train_loss" in out and "Cached prefix activations for 18 images" in out
    _fit("scl-ft", max_epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_identity_augmentation_matches_plain_preprocessing():
    X, y = _images(12, size=40), _labels(12)  # resized to 32 in both paths
    plain = _fit("layer-ft", X=X, y=y, cache_prefix=False)
    seen = []

    def identity(img):
        seen.append((img.dtype, float(img.min()), float(img.max()), tuple(img.shape)))
        return img

    aug = _fit("layer-ft", X=X, y=y, augment=identity)
    assert not aug.prefix_cached_
    assert all(
        d == torch.float32 and lo >= 0 and hi <= 1 and shape == (3, 40, 40)
        for d, lo, hi, shape in seen
    )
    np.testing.assert_allclose(
        [r["train_loss"] for r in aug.history_],
        [r["train_loss"] for r in plain.history_],
        rtol=1e-6,
    )


def test_crop_pct_and_interpolation_match_backbone_features(tmp_path):
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from sknc.features import BackboneFeatures
    from sknc.features._images import preprocess_batch

    backbone = create_backbone("resnet10t", model_kwargs=RESNET_KW, seed=0)
    path = str(tmp_path / "init.safetensors")
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, path)
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, size=(6, 48, 40, 3), dtype=np.uint8)  # oversized, not square
    y = _labels(6)
    common = dict(weights=path, input_size=32, model_kwargs=RESNET_KW)
    for crop_pct, interpolation in ((1.0, "bicubic"), (0.5, "nearest")):
        clf = FineTuningClassifier(
            "resnet10t",
            method="linear-probe",
            max_epochs=0,
            crop_pct=crop_pct,
            interpolation=interpolation,
            random_state=0,
            **common,
        ).fit(X, y)
        feats = BackboneFeatures(
            "resnet10t", crop_pct=crop_pct, interpolation=interpolation, device="cpu", **common
        ).fit(X)
        assert clf.data_config_ == feats.data_config_
        assert clf.data_config_["crop_pct"] == crop_pct
        assert clf.data_config_["interpolation"] == interpolation
        np.testing.assert_allclose(clf.transform(X), feats.transform(X), rtol=1e-5, atol=1e-6)
    # the default is the model's own data config, which crops (timm: 0.95 for resnet10t)
    default = FineTuningClassifier(
        "resnet10t", method="linear-probe", max_epochs=0, random_state=0, **common
    ).fit(X, y)
    assert default.data_config_ == BackboneFeatures("resnet10t", **common).fit().data_config_
    assert default.data_config_["crop_pct"] < 1.0
    assert not np.allclose(default.transform(X), clf.transform(X))
    # crop_pct=1.0 keeps a square image's whole field of view: a plain resize, no crop
    square = torch.from_numpy(rng.integers(0, 256, size=(2, 3, 48, 48), dtype=np.uint8))
    full = FineTuningClassifier(
        "resnet10t",
        method="linear-probe",
        max_epochs=0,
        crop_pct=1.0,
        interpolation="bilinear",
        **common,
    ).fit(X, y)
    resized = F.interpolate(
        square.float() / 255, size=(32, 32), mode="bilinear", align_corners=False, antialias=True
    )
    mean = torch.tensor(full.data_config_["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(full.data_config_["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(preprocess_batch(square, full.data_config_), (resized - mean) / std)
    cropped = preprocess_batch(square, default.data_config_)
    assert not torch.allclose(cropped, (resized - mean) / std, atol=1e-2)
    # pretrain_backbone passes them on
    est = pretrain_backbone(
        "resnet10t",
        _images(8),
        np.arange(8) % 4,
        max_epochs=1,
        batch_size=8,
        input_size=32,
        model_kwargs=RESNET_KW,
        checkpoint_dir=tmp_path,
        crop_pct=1.0,
        interpolation="nearest",
        random_state=0,
    )
    assert est.data_config_["crop_pct"] == 1.0 and est.data_config_["interpolation"] == "nearest"


def test_random_init_linear_probe_warns_about_zero_scales():
    import warnings

    X, y = _images(6), _labels(6)
    for method in ("linear-probe", "layer-ft", "scl-ft", "full-ft"):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            _fit(method, X=X, y=y, max_epochs=0)
        zero = [w for w in record if "all-zero scales" in str(w.message)]
        if method == "linear-probe":  # the only method that keeps every block frozen
            assert len(zero) == 1 and zero[0].filename == __file__
            assert "linear-probe features" in str(zero[0].message)
        else:
            assert zero == [], method
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _fit(
            "linear-probe",
            X=X,
            y=y,
            max_epochs=0,
            model_kwargs=dict(RESNET_KW, zero_init_last=False),
        )
    assert not [w for w in record if "all-zero scales" in str(w.message)]


def test_crop_pct_and_interpolation_are_validated():
    X, y = _images(6), _labels(6)
    for bad in (0, 1.5, "full", True):
        with pytest.raises(ValueError, match="crop_pct must be a number in"):
            FineTuningClassifier("resnet10t", crop_pct=bad).fit(X, y)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        FineTuningClassifier("resnet10t", interpolation="lanczos").fit(X, y)


def test_custom_module_and_augmentation():
    X = _images(12, size=20)
    est = _fit(
        "scl-ft",
        dict(model=TinyNet, input_size=16),
        X=X,
        y=_labels(12),
        model_kwargs={"n_classes": 7},
        tuned_block="block1",
        augment=lambda img: img.flip(-1),
    )
    assert est.tuned_block_ == "block1" and not est.prefix_cached_
    assert est.predict(X).shape == (12,)
    assert est.transform(X).shape == (12, 16)


# --------------------------------------------------------------------------
# checkpoints, per-epoch hooks, source pre-training
# --------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:The backbone has random weights")
def test_checkpoints_predictable_paths_and_round_trip(tmp_path):
    X, y = _images(), _labels()
    est = _fit("full-ft", X=X, y=y, max_epochs=2, save_checkpoints=True, checkpoint_dir=tmp_path)
    assert est.checkpoints_ == [str(tmp_path / f"epoch_{e:03d}.safetensors") for e in range(3)]
    assert est.checkpoint_dir_ == str(tmp_path)
    with pytest.raises(ValueError, match="already holds the checkpoints of a run"):
        est.fit(X, y)  # refuses to overwrite; the fitted estimator is kept
    assert est.checkpoints_[0].endswith("epoch_000.safetensors")
    # without checkpoint_dir every fit gets its own new temporary directory
    tmp = _fit("linear-probe", X=X, y=y, max_epochs=1, save_checkpoints=True)
    assert os.path.basename(tmp.checkpoint_dir_).startswith("sknc-ft-")
    first = tmp.checkpoint_dir_
    assert tmp.fit(X, y).checkpoint_dir_ != first
    # the last checkpoint is the trained network in timm's own layout
    timm_model = timm.create_model("resnet10t", num_classes=3, **RESNET_KW)
    load_weights(timm_model, est.checkpoints_[-1], allow_head_mismatch=False)
    with torch.no_grad():
        batch = torch.from_numpy(X[:4]).permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(est.data_config_["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(est.data_config_["std"]).view(1, 3, 1, 1)
        logits = timm_model.eval()((batch - mean) / std)
    np.testing.assert_allclose(logits.numpy(), est.decision_function(X[:4]), rtol=1e-4, atol=1e-5)
    # ... and loads as a backbone (1000-class head skipped)
    backbone = create_backbone("resnet10t", model_kwargs=RESNET_KW, weights=est.checkpoints_[0])
    assert backbone.fc.out_features == 1000


def test_scl_ft_checkpoint_holds_backbone_only(tmp_path):
    est = _fit("scl-ft", max_epochs=1, save_checkpoints=True, checkpoint_dir=tmp_path)
    from safetensors.torch import load_file

    state = load_file(est.checkpoints_[0])
    assert not any(k.startswith(("fc.", "skip.", "head.")) for k in state)
    backbone = create_backbone("resnet10t", model_kwargs=RESNET_KW)
    strip_classifier(backbone)
    backbone.load_state_dict(state)  # strict


def test_on_epoch_end_hook_sees_current_features():
    X, y = _images(12), _labels(12)
    calls = []

    def hook(est, epoch):
        calls.append(epoch)
        return float(np.abs(est.transform(X[:4])).mean())

    est = _fit("layer-ft", X=X, y=y, max_epochs=3, on_epoch_end=hook)
    assert calls == [1, 2, 3]
    values = [row["epoch_hook"] for row in est.history_]
    assert len(values) == 3 and values[0] != values[-1]
    assert values[-1] == pytest.approx(float(np.abs(est.transform(X[:4])).mean()), rel=1e-5)
    hook_cb = dict(est.net_.callbacks_)["epoch_hook"]
    assert hook_cb.estimator is None  # no reference cycle left in the fitted estimator


def test_pretrain_backbone_round_trip(tmp_path):
    X, y = _images(16), np.arange(16) % 4
    est = pretrain_backbone(
        "resnet10t",
        X,
        y,
        max_epochs=2,
        batch_size=8,
        input_size=32,
        model_kwargs=RESNET_KW,
        checkpoint_dir=tmp_path,
        random_state=0,
    )
    assert est.method == "full-ft" and est.n_iter_ == 2 and len(est.checkpoints_) == 3
    assert est.trainable_fraction_ == 1.0
    backbone = create_backbone("resnet10t", model_kwargs=RESNET_KW, weights=est.checkpoints_[-1])
    strip_classifier(backbone)
    trained = est.net_.module_.backbone
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(backbone(x), trained.cpu().eval()(x))
    try:  # the feature transformer loads the same file (once it exists)
        from sknc.features import BackboneFeatures
    except ImportError:
        return
    feats = BackboneFeatures(
        "resnet10t",
        weights=est.checkpoints_[-1],
        input_size=32,
        model_kwargs=RESNET_KW,
        device="cpu",
    ).fit_transform(X)
    np.testing.assert_allclose(feats, est.transform(X), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_cuda_amp_fit_and_predict():
    X, y = _images(16), _labels(16)
    for amp in (True, "fp16"):
        est = _fit("scl-ft", X=X, y=y, device="cuda", amp=amp, max_epochs=2)
        assert est.device_.type == "cuda"
        assert np.isfinite([row["train_loss"] for row in est.history_]).all()
        assert est.predict_proba(X).shape == (16, 3)
    plain = _fit("layer-ft", X=X, y=y, device="cuda", cache_prefix=False)
    cached = _fit("layer-ft", X=X, y=y, device="cuda", cache_prefix=True)
    np.testing.assert_allclose(
        [r["train_loss"] for r in plain.history_],
        [r["train_loss"] for r in cached.history_],
        rtol=1e-4,
    )


# --------------------------------------------------------------------------
# interrupts, failed fits, resuming, reproducibility (issue 13)
# --------------------------------------------------------------------------
class _RaiseAt(__import__("skorch").callbacks.Callback):
    """Raise ``exc`` at the first batch of epoch ``epoch`` (1-based)."""

    def __init__(self, epoch, exc=KeyboardInterrupt):
        self.epoch = epoch
        self.exc = exc

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == self.epoch:
            raise self.exc("stop here")


def _state(est):
    return {k: v.detach().clone() for k, v in est.net_.module_.state_dict().items()}


def test_ctrl_c_propagates_keeps_checkpoints_and_leaves_estimator_unfitted(tmp_path):
    est = FineTuningClassifier(
        "resnet10t",
        method="full-ft",
        input_size=32,
        model_kwargs=RESNET_KW,
        max_epochs=3,
        batch_size=8,
        random_state=0,
        save_checkpoints=True,
        checkpoint_dir=tmp_path,
        callbacks=[_RaiseAt(2)],
    )
    with pytest.raises(KeyboardInterrupt) as info:
        est.fit(_images(), _labels())
    assert not hasattr(est, "net_") and not hasattr(est, "classes_")
    assert not hasattr(est, "history_") and not hasattr(est, "checkpoint_dir_")
    note = " ".join(getattr(info.value, "__notes__", []))
    assert "1 complete epoch(s) of 3" in note and str(tmp_path) in note
    assert sorted(os.listdir(tmp_path)) == [
        "epoch_000.safetensors",
        "epoch_001.safetensors",
        "training_state.pt",
    ]


@pytest.mark.filterwarnings("ignore:The backbone has random weights")
def test_real_sigint_in_a_callback_propagates_but_early_stopping_does_not():
    import signal

    from skorch.callbacks import Callback

    class SigInt(Callback):
        def on_epoch_end(self, net, **kwargs):
            # to this thread (os.kill would target the process: any thread)
            signal.raise_signal(signal.SIGINT)

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "a handler leaked"
    with pytest.raises(KeyboardInterrupt):
        _fit("linear-probe", max_epochs=3, callbacks=[SigInt()])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # skorch's convention for stopping early is not an interrupt
    est = _fit("linear-probe", max_epochs=20, patience=1, lr=1e-6)
    assert est.n_iter_ < 20


@pytest.mark.filterwarnings("ignore:The backbone has random weights")
def test_a_swallowed_real_sigint_still_stops_the_fit():
    import signal

    from skorch.callbacks import Callback

    class SwallowedSigInt(Callback):
        """Ctrl-C lands in code that swallows KeyboardInterrupt (a __del__, a bare except)."""

        def on_epoch_end(self, net, **kwargs):
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass

    with pytest.raises(KeyboardInterrupt):
        _fit("linear-probe", max_epochs=3, callbacks=[SwallowedSigInt()])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.filterwarnings("ignore:The backbone has random weights")
def test_the_callers_sigint_handler_stays_in_force():
    import signal

    from skorch.callbacks import Callback

    class SigInt(Callback):
        def on_epoch_end(self, net, **kwargs):
            signal.raise_signal(signal.SIGINT)

    calls = []

    def ignore(signum, frame):  # a caller that chose to ignore Ctrl-C during the fit
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, ignore)
    try:
        est = _fit("linear-probe", max_epochs=2, callbacks=[SigInt()])
        assert signal.getsignal(signal.SIGINT) is ignore
    finally:
        signal.signal(signal.SIGINT, previous)
    assert est.n_iter_ == 2
    assert calls == [signal.SIGINT, signal.SIGINT]


@pytest.mark.filterwarnings("ignore:The backbone has random weights")
def test_gridsearch_stops_on_ctrl_c():
    grid = GridSearchCV(
        FineTuningClassifier(
            "resnet10t",
            method="linear-probe",
            input_size=32,
            model_kwargs=RESNET_KW,
            max_epochs=2,
            batch_size=6,
            random_state=0,
            callbacks=[_RaiseAt(1)],
        ),
        {"lr": [1e-3, 1e-2]},
        cv=2,
    )
    with pytest.raises(KeyboardInterrupt):
        grid.fit(_images(12), _labels(12))


def test_failed_fit_leaves_a_fitted_estimator_as_it_was():
    X, y = _images(12), _labels(12)
    est = _fit("layer-ft", X=X, y=y, max_epochs=1)
    before = dict(est.__dict__)
    proba = est.predict_proba(X)

    def boom(estimator, epoch):
        raise RuntimeError("hook failed")

    est.set_params(on_epoch_end=boom, max_epochs=2)
    with pytest.raises(RuntimeError, match="hook failed"):
        est.fit(X, _labels(12, kinds=("a", "b")))
    assert est.on_epoch_end is boom  # parameters are untouched
    est.set_params(on_epoch_end=None, max_epochs=1)
    after = dict(est.__dict__)
    assert after.keys() == before.keys()
    for key in before:
        if key not in ("on_epoch_end", "max_epochs"):
            assert after[key] is before[key], key
    np.testing.assert_array_equal(est.predict_proba(X), proba)
    with pytest.raises(KeyboardInterrupt):
        est.set_params(callbacks=[_RaiseAt(1)]).fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), proba)
    assert est.history_ is before["history_"]


def test_unfitted_estimator_raises_not_fitted_error():
    from sklearn.exceptions import NotFittedError

    est = FineTuningClassifier("resnet10t")
    X = _images(2)
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        with pytest.raises(NotFittedError):
            getattr(est, method)(X)
    with pytest.raises(NotFittedError):
        est.transform(X)
    assert not hasattr(est, "coef_") and not hasattr(est, "device_")
    with pytest.raises(ValueError, match="requires y to be passed"):
        est.fit(X, None)


def test_narrow_integer_labels_and_nc_scorers():
    from sknc.metrics import make_nc_scorer, nc1

    X = _images(16)
    y = np.array([-100, 0, 100, 120] * 4, dtype=np.int8)
    est = _fit("scl-ft", X=X, y=y, max_epochs=1, validation_fraction=0.5)
    assert est.classes_.dtype == np.int8
    assert est.classes_.tolist() == [-100, 0, 100, 120]
    assert set(est.predict(X).tolist()) <= {-100, 0, 100, 120}
    # NC scorers score the estimator's own head-input features
    Z = est.transform(X)
    assert make_nc_scorer("nc1")(est, X, y) == pytest.approx(-nc1(Z, y), rel=1e-9)
    assert est.coef_.shape == (4, Z.shape[1]) and est.intercept_.shape == (4,)
    np.testing.assert_allclose(
        Z @ est.coef_.T + est.intercept_, est.decision_function(X), rtol=1e-4, atol=1e-4
    )
    for metric in ("nc3", "nc4", "cdnv"):
        assert np.isfinite(make_nc_scorer(metric)(est, X, y))


@pytest.mark.filterwarnings("ignore:The backbone has random weights")
def test_nc_scorer_in_grid_search_of_fine_tuners():
    from sknc.metrics import make_nc_scorer

    X, y = _images(12), _labels(12)
    grid = GridSearchCV(
        FineTuningClassifier(
            "resnet10t",
            input_size=32,
            model_kwargs=RESNET_KW,
            max_epochs=1,
            batch_size=6,
            random_state=0,
        ),
        {"method": ["linear-probe", "layer-ft"]},
        scoring=make_nc_scorer("nc1"),
        cv=2,
    ).fit(X, y)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


def _pretrain(tmp_path, **kw):
    from skorch.callbacks import LRScheduler

    params = dict(
        max_epochs=3,
        batch_size=8,
        input_size=32,
        model_kwargs=RESNET_KW,
        checkpoint_dir=tmp_path,
        random_state=0,
        augment=lambda img: img.flip(-1) if torch.rand(()) < 0.5 else img,
        callbacks=[("cosine", LRScheduler(policy="CosineAnnealingLR", T_max=3))],
    )
    params.update(kw)
    return pretrain_backbone("resnet10t", _images(16), np.arange(16) % 4, **params)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    from skorch.callbacks import LRScheduler

    full = _pretrain(tmp_path / "full")
    cosine = ("cosine", LRScheduler(policy="CosineAnnealingLR", T_max=3))
    with pytest.raises(KeyboardInterrupt):
        _pretrain(tmp_path / "cut", callbacks=[cosine, ("stop", _RaiseAt(3))])
    assert os.path.exists(tmp_path / "cut" / "epoch_002.safetensors")
    assert not os.path.exists(tmp_path / "cut" / "epoch_003.safetensors")
    with pytest.raises(ValueError, match="resume=True"):
        _pretrain(tmp_path / "cut")  # never overwrites another run silently
    import shutil

    shutil.move(tmp_path / "cut", tmp_path / "moved")  # a run folder may move
    resumed = _pretrain(tmp_path / "moved", resume=True)
    assert resumed.resumed_from_ == 2 and resumed.n_iter_ == 3
    assert all(p.startswith(str(tmp_path / "moved")) for p in resumed.checkpoints_)
    a, b = _state(full), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in resumed.history_] == [r["train_loss"] for r in full.history_]
    assert [os.path.basename(p) for p in resumed.checkpoints_] == [
        f"epoch_{e:03d}.safetensors" for e in range(4)
    ]
    # resuming a finished run trains nothing and gives the same network
    again = _pretrain(tmp_path / "moved", resume=True)
    assert again.resumed_from_ == 3 and again.n_iter_ == 3
    assert all(torch.equal(a[k], v) for k, v in _state(again).items())
    with pytest.raises(ValueError, match="Cannot resume.*classes"):
        pretrain_backbone(
            "resnet10t",
            _images(16),
            np.arange(16) % 2,
            max_epochs=3,
            input_size=32,
            model_kwargs=RESNET_KW,
            checkpoint_dir=tmp_path / "moved",
            resume=True,
        )


def test_epoch_zero_checkpoint_holds_the_initial_weights(tmp_path):
    from safetensors.torch import load_file

    init = create_backbone("resnet10t", model_kwargs=RESNET_KW, seed=3)
    strip_classifier(init)
    path = str(tmp_path / "init.safetensors")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in init.state_dict().items()}, path)
    est = pretrain_backbone(
        "resnet10t",
        _images(8),
        np.arange(8) % 2,
        weights=path,
        max_epochs=1,
        input_size=32,
        model_kwargs=RESNET_KW,
        checkpoint_dir=tmp_path / "run",
        random_state=0,
    )
    assert est.checkpoints_[0] == str(tmp_path / "run" / "epoch_000.safetensors")
    epoch0 = load_file(est.checkpoints_[0])
    for key, value in init.state_dict().items():
        torch.testing.assert_close(epoch0[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs save_checkpoints=True"):
        FineTuningClassifier("resnet10t", resume=True).fit(_images(4), [0, 1, 0, 1])


def test_training_state_loads_without_running_code(tmp_path):
    from sknc.finetune._callbacks import load_training_state

    _pretrain(tmp_path, max_epochs=1, augment=None, callbacks=None)
    state = load_training_state(tmp_path)
    assert state["epoch"] == 1 and state["fingerprint"]["n_samples"] == 16

    class Planted:
        def __reduce__(self):
            return (os.system, ("echo planted",))

    torch.save({"version": 1, "x": Planted()}, tmp_path / "training_state.pt")
    with pytest.raises(ValueError, match="Cannot read the training state"):
        load_training_state(tmp_path)


def test_seeded_fit_is_deterministic_on_cpu():
    X, y = _images(), _labels()
    kw = dict(max_epochs=2, cache_prefix=False, validation_fraction=0.25, random_state=5)
    a, b = _fit("full-ft", X=X, y=y, **kw), _fit("full-ft", X=X, y=y, **kw)
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_no_private_skorch_internals():
    """The fine-tuner uses skorch's public API only: fail loudly if that changes."""
    import ast
    import inspect

    import skorch

    import sknc.finetune._callbacks as callbacks_module
    import sknc.finetune._estimator as estimator_module

    private_skorch = {
        name
        for cls in (skorch.NeuralNet, skorch.NeuralNetClassifier, skorch.callbacks.Callback)
        for name in dir(cls)
        if name.startswith("_") and not name.startswith("__")
    }
    used = set()
    for module in (callbacks_module, estimator_module):
        tree = ast.parse(inspect.getsource(module))
        used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not (used & private_skorch), sorted(used & private_skorch)
    # the public extension points the fine-tuner builds on
    for name in ("fit_loop", "notify", "train_step_single", "get_loss", "infer"):
        assert callable(getattr(skorch.NeuralNet, name))
    params = inspect.signature(skorch.NeuralNet.fit_loop).parameters
    assert list(params)[:4] == ["self", "X", "y", "epochs"]


def test_binary_decision_function_is_the_positive_class_score():
    """Two classes: decision_function is (n,), logit of classes_[1] minus that of
    classes_[0], as for scikit-learn's binary classifiers, so "roc_auc" scoring works."""
    from sklearn.metrics import get_scorer, roc_auc_score

    X = _images(16)
    y = np.array(["no", "yes"] * 8)
    est = _fit("full-ft", X=X, y=y, max_epochs=1)
    dec = est.decision_function(X)
    assert dec.shape == (16,) and dec.dtype == np.float32
    logits = est.transform(X) @ est.coef_.T + est.intercept_
    np.testing.assert_allclose(dec, logits[:, 1] - logits[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(est.predict(X), est.classes_[(dec > 0).astype(int)])
    proba = est.predict_proba(X)
    assert proba.shape == (16, 2)
    np.testing.assert_array_equal(np.argmax(proba, axis=1), (dec > 0).astype(int))
    auc = get_scorer("roc_auc")(est, X, y)
    assert auc == pytest.approx(roc_auc_score(y == "yes", dec))

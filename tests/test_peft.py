"""Tests for the parameter-efficient methods of sknc.finetune.

LoRA (through peft), BitFit, norm tuning, several tuned blocks / last_k, and
the tuned block chosen by collapse (``tuned_block="auto"``).
"""

import math
import pickle
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

timm = pytest.importorskip("timm")
pytest.importorskip("skorch")

from _helpers import VIT_KW  # noqa: E402

from sknc.features import create_backbone, strip_classifier  # noqa: E402
from sknc.finetune import FineTuneNet, FineTuningClassifier  # noqa: E402
from sknc.finetune._modules import (  # noqa: E402
    candidate_blocks,
    count_parameters,
    norm_modules,
    select_block_by_collapse,
)

# a narrow resnet10t whose random residual branches are not zero (zero_init_last)
RESNET_KW = dict(channels=(16, 32, 64, 128), stem_width=8, zero_init_last=False)
RESNET = dict(model="resnet10t", input_size=32, model_kwargs=RESNET_KW)
VIT = dict(model="vit_tiny_patch16_224", model_kwargs=VIT_KW)
METHODS = ("linear-probe", "layer-ft", "scl-ft", "full-ft", "lora", "bitfit", "norm")


def _images(n=18, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _labels(n=18):
    return np.array(["a", "b", "c"] * (n // 3))


def _fit(method, X=None, y=None, **kw):
    params = dict(RESNET, method=method, max_epochs=2, random_state=0, lr=1e-2)
    params.update(kw)
    X = _images() if X is None else X
    y = _labels(len(X)) if y is None else y
    return FineTuningClassifier(**params).fit(X, y)


def _plain(model, **kw):
    """The backbone as FineTuneNet builds it (classifier stripped), for counting."""
    bb = create_backbone(model, **kw)
    strip_classifier(bb)
    return bb


def _trainable(net):
    return {n for n, p in net.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------
# exact trainable parameters per method
# ---------------------------------------------------------------------------
def test_bitfit_resnet50_trains_only_biases_and_head():
    net = FineTuneNet("resnet50", n_classes=7, method="bitfit", pretrained=False)
    bb = _plain("resnet50")
    n_bias = sum(p.numel() for n, p in bb.named_parameters() if n.endswith("bias"))
    bn_shift = sum(m.bias.numel() for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert n_bias == bn_shift  # timm's resnet50 convolutions have no bias
    _, trainable = count_parameters(net)
    assert trainable == n_bias + 2048 * 7 + 7
    names = _trainable(net)
    assert all(n.endswith(".bias") for n in names if not n.startswith("head."))
    assert {"head.weight", "head.bias"} <= names


def test_norm_tuning_counts_batchnorm_and_layernorm_affine():
    net = FineTuneNet("resnet10t", n_classes=3, method="norm", input_size=32)
    bb = _plain("resnet10t")
    expected = sum(
        m.weight.numel() + m.bias.numel()
        for m in bb.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )
    assert count_parameters(net)[1] == expected + 512 * 3 + 3
    vit = FineTuneNet(n_classes=3, method="norm", **VIT)
    d, depth = VIT_KW["embed_dim"], VIT_KW["depth"]
    # two LayerNorms per block plus the final norm, weight and bias each
    assert count_parameters(vit)[1] == (2 * depth + 1) * 2 * d + d * 3 + 3
    assert len(norm_modules(vit.backbone)) == 2 * depth + 1


def test_lora_counts_on_resnet_convolutions_and_vit_qkv():
    rank = 4
    net = FineTuneNet("resnet10t", n_classes=3, method="lora", input_size=32, lora_rank=rank)
    bb = _plain("resnet10t")
    convs = {n: m for n, m in bb.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert all(m.groups == 1 for m in convs.values())
    assert sorted(net.lora_targets) == sorted(convs)
    expected = sum(
        rank * m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels * rank
        for m in convs.values()
    )
    assert count_parameters(net)[1] == expected + 512 * 3 + 3
    assert all("lora_" in n for n in _trainable(net) if not n.startswith("head."))

    vit = FineTuneNet(n_classes=3, method="lora", lora_rank=rank, **VIT)
    d, depth = VIT_KW["embed_dim"], VIT_KW["depth"]
    assert vit.lora_targets == [f"blocks.{i}.attn.qkv" for i in range(depth)]
    assert count_parameters(vit)[1] == depth * rank * (d + 3 * d) + d * 3 + 3


def test_lora_skips_depthwise_convolutions():
    bb = _plain("mobilenetv2_100")
    net = FineTuneNet("mobilenetv2_100", n_classes=3, method="lora", input_size=32)
    depthwise = [
        n for n, m in bb.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1
    ]
    assert depthwise and not set(depthwise) & set(net.lora_targets)


def test_lora_on_tf_same_padding_models():
    """timm's TF-ported models (Conv2dSame) get LoRA on their plain convolutions."""
    bb = _plain("tf_efficientnet_lite0")
    same = [n for n, m in bb.named_modules() if type(m).__name__ == "Conv2dSame"]
    assert same  # the stem and the strided convolutions pad like TensorFlow
    net = FineTuneNet("tf_efficientnet_lite0", n_classes=3, method="lora", input_size=32)
    plain = [n for n, m in bb.named_modules() if type(m) is torch.nn.Conv2d and m.groups == 1]
    assert net.lora_targets == plain and not set(same) & set(net.lora_targets)
    x = torch.zeros(2, 3, 32, 32)
    assert net(x).shape == (2, 3)
    with pytest.raises(ValueError, match="Conv2dSame"):
        FineTuneNet(
            "tf_efficientnet_lite0", n_classes=3, method="lora", input_size=32,
            lora_targets=same[:1],
        )  # fmt: skip


def test_last_k_and_block_lists_count_exactly():
    bb = _plain("resnet10t", model_kwargs=RESNET_KW)
    net = FineTuneNet(n_classes=3, method="layer-ft", last_k=2, **RESNET)
    assert net.tuned_blocks == ("layer3.0", "layer4.0")
    expected = sum(p.numel() for b in net.tuned_blocks for p in bb.get_submodule(b).parameters())
    assert count_parameters(net)[1] == expected + 128 * 3 + 3
    # a list in any order is put in forward order; the skip reads the first block
    scl = FineTuneNet(n_classes=3, method="scl-ft", tuned_block=["layer4.0", "layer2.0"], **RESNET)
    assert scl.tuned_blocks == ("layer2.0", "layer4.0") and scl.tuned_block == "layer2.0"
    assert scl.block_width == 32


def test_candidate_blocks_cover_every_stage():
    # timm's feature_info lists only blocks.0, 1, 2, 4, 6 of MobileNetV2
    blocks = candidate_blocks(timm.create_model("mobilenetv2_100"))
    assert len(blocks) == 17 and "blocks.3.0" in blocks and "blocks.5.2" in blocks
    assert blocks[0] == "blocks.0.0" and blocks[-1] == "blocks.6.0"
    assert candidate_blocks(timm.create_model("resnet18"))[-3:] == [
        "layer3.1",
        "layer4.0",
        "layer4.1",
    ]


# ---------------------------------------------------------------------------
# LoRA behaviour
# ---------------------------------------------------------------------------
def test_lora_at_initialisation_equals_frozen_model():
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    frozen = FineTuneNet(n_classes=3, method="linear-probe", seed=0, **RESNET).eval()
    torch.manual_seed(0)
    lora = FineTuneNet(n_classes=3, method="lora", seed=0, lora_dropout=0.2, **RESNET)
    lora.train()  # LoRA dropout on: the update is still zero
    with torch.no_grad():
        torch.testing.assert_close(lora(x), frozen(x), rtol=0, atol=0)
    # the estimator at max_epochs=0 gives the same logits too
    X = _images(6)
    a = _fit("linear-probe", X=X, max_epochs=0).decision_function(X)
    b = _fit("lora", X=X, max_epochs=0).decision_function(X)
    np.testing.assert_array_equal(a, b)


def test_lora_merged_and_unmerged_predict_the_same():
    X = _images()
    clf = _fit("lora", X=X, max_epochs=3, lr=5e-2)
    module = clf.net_.module_
    assert any(p.abs().max() > 0 for n, p in module.named_parameters() if "lora_B" in n)
    unmerged = clf.decision_function(X)
    module.merge_lora()
    merged = clf.decision_function(X)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-4, atol=1e-5)
    module.unmerge_lora()
    np.testing.assert_allclose(clf.decision_function(X), unmerged, rtol=1e-4, atol=1e-5)


def test_lora_pickle_clone_and_checkpoint_round_trip(tmp_path):
    X = _images()
    clf = _fit("lora", X=X, save_checkpoints=True, checkpoint_dir=tmp_path)
    expected = clf.decision_function(X)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.decision_function(X), expected)
    # clone starts from the pretrained (here: seeded random) weights, not the fit
    # (without checkpoints: a fit never overwrites the run saved in checkpoint_dir)
    refit = clone(clf).set_params(save_checkpoints=False).fit(X, _labels())
    np.testing.assert_allclose(refit.decision_function(X), expected, rtol=1e-5, atol=1e-6)
    # the checkpoint has the merged weights in timm's own layout
    from safetensors.torch import load_file

    state = load_file(clf.checkpoints_[-1])
    assert not any("lora_" in k or "base_layer" in k for k in state)
    model = timm.create_model("resnet10t", num_classes=3, **RESNET_KW)
    model.load_state_dict(state)  # strict: every key matches
    model.eval()
    from sknc.features._images import check_images, preprocess_batch

    batch = preprocess_batch(check_images(X).load(0, len(X)), clf.data_config_, device="cpu")
    with torch.no_grad():
        np.testing.assert_allclose(model(batch).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_lora_parameters_are_used():
    X = _images(6)
    a = _fit("lora", X=X, max_epochs=0, lora_rank=2, lora_targets=["layer4.0.conv2"])
    assert a.lora_targets_ == ["layer4.0.conv2"]
    assert a.n_trainable_params_ == 2 * (128 * 9) + 128 * 2 + 128 * 3 + 3
    b = _fit("lora", X=X, max_epochs=0, lora_targets=r"layer4\..*conv\d")
    assert b.lora_targets_ == ["layer4.0.conv1", "layer4.0.conv2"]
    module = _fit("lora", X=X, max_epochs=0, lora_rank=4, lora_alpha=8).net_.module_
    layer = module.backbone.get_submodule("layer1.0.conv1")
    assert layer.scaling["default"] == 2.0


def test_lora_without_peft_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft -> ImportError
    clf = FineTuningClassifier(method="lora", max_epochs=1, **RESNET)
    with pytest.raises(ImportError, match=r"pip install 'sknc\[peft\]'"):
        clf.fit(_images(6), _labels(6))
    assert not hasattr(clf, "net_")  # a failed fit leaves the estimator unfitted
    with pytest.raises(ImportError, match="peft"):
        FineTuneNet(n_classes=3, method="lora", **RESNET)
    # the other methods do not need peft
    assert _fit("bitfit", X=_images(6), max_epochs=1).n_trainable_params_ > 0


def test_core_imports_nothing_from_peft():
    # every import of peft sits inside a function of sknc/finetune/_peft.py
    import ast
    import pathlib

    import sknc

    found = []
    for path in pathlib.Path(sknc.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "peft" or n.startswith("peft.") for n in names):
                found.append((path.name, node.col_offset))
    assert found and {name for name, _ in found} == {"_peft.py"}
    assert all(col > 0 for _, col in found)  # indented: inside a function


# ---------------------------------------------------------------------------
# BitFit / norm tuning keep the frozen statistics; caching where valid
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["bitfit", "norm", "lora"])
def test_peft_methods_keep_running_statistics_and_do_not_cache(method):
    X = _images()
    clf = _fit(method, X=X, max_epochs=0)
    before = {k: v.clone() for k, v in clf.net_.module_.state_dict().items() if "running" in k}
    clf = _fit(method, X=X, max_epochs=2)
    after = {k: v for k, v in clf.net_.module_.state_dict().items() if "running" in k}
    assert before.keys() == after.keys() and before
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert clf.prefix_cached_ is False
    assert clf.seconds_per_epoch_ > 0 and math.isfinite(clf.train_nc1_)
    with pytest.raises(ValueError, match="throughout the backbone"):
        _fit(method, X=X, max_epochs=1, cache_prefix=True)


def test_several_blocks_cached_equals_uncached():
    X = _images()
    kw = dict(last_k=2, max_epochs=2, model_kwargs=dict(RESNET_KW, drop_path_rate=0.2))
    cached = _fit("scl-ft", X=X, cache_prefix=True, **kw)
    plain = _fit("scl-ft", X=X, cache_prefix=False, **kw)
    assert cached.prefix_cached_ and not plain.prefix_cached_
    assert cached.tuned_block_ == ["layer3.0", "layer4.0"]
    np.testing.assert_allclose(
        cached.decision_function(X), plain.decision_function(X), rtol=1e-4, atol=1e-5
    )


# ---------------------------------------------------------------------------
# tuned_block="auto"
# ---------------------------------------------------------------------------
def _rule_by_hand(block_nc, tol=0.1):
    names = list(block_nc)
    v = np.log10([block_nc[n] for n in names])
    total = v[0] - v.min()
    for i in range(1, len(v)):
        if v[i - 1] - v[i:].min() <= tol * total:
            return names[i]
    return names[-1]


def test_select_block_by_collapse_rule():
    nc = dict(zip("abcde", [1.0, 0.1, 0.05, 0.049, 0.048]))
    assert select_block_by_collapse(nc) == "d" == _rule_by_hand(nc)
    # collapse keeps improving to the end: the last block
    nc = dict(zip("abc", [1.0, 0.1, 0.01]))
    assert select_block_by_collapse(nc) == "c"
    # no collapse at all: the second block
    assert select_block_by_collapse(dict(zip("abc", [0.5, 0.6, 0.7]))) == "b"
    assert select_block_by_collapse({"only": 0.3}) == "only"
    with pytest.raises(ValueError, match="not a positive finite"):
        select_block_by_collapse({"a": 1.0, "b": float("nan")})


def test_auto_block_is_reproducible_and_follows_the_rule():
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = np.repeat(np.repeat((digits.images[:90] * 16).astype(np.uint8), 4, 1), 4, 2)
    y = digits.target[:90]
    kw = dict(tuned_block="auto", max_epochs=1, compute_train_nc1=False)
    a = _fit("layer-ft", X=X, y=y, **kw)
    b = _fit("layer-ft", X=X, y=y, **kw)
    assert list(a.block_nc_) == candidate_blocks(a.net_.module_.backbone)
    assert a.block_nc_ == b.block_nc_ and a.tuned_block_ == b.tuned_block_
    assert a.tuned_block_ == _rule_by_hand(a.block_nc_)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    # an explicit block leaves block_nc_ None
    assert _fit("layer-ft", X=X, y=y, max_epochs=0).block_nc_ is None


def test_auto_block_on_a_vit_ranks_its_transformer_blocks():
    # the ViT of reproduce_peft.py's study: the candidates are the transformer blocks,
    # the choice follows the rule, and SCL-FT/LoRA train on the chosen block / qkv
    X, y = _images(24), _labels(24)
    clf = FineTuningClassifier(
        method="scl-ft", tuned_block="auto", input_size=32, max_epochs=1, random_state=0,
        compute_train_nc1=False, **VIT,
    ).fit(X, y)  # fmt: skip
    depth = VIT_KW["depth"]
    assert list(clf.block_nc_) == [f"blocks.{i}" for i in range(depth)]
    assert clf.tuned_block_ == _rule_by_hand(clf.block_nc_)
    assert clf.predict(X).shape == (24,)


def test_auto_block_refuses_one_image_per_class():
    # NC1 is exactly 0 at every block when every class has one image: no ranking
    with pytest.raises(ValueError, match="two or more training images"):
        _fit("scl-ft", X=_images(3), y=_labels(3), tuned_block="auto", max_epochs=0)


def test_auto_block_nc_matches_features_of_each_block():
    from sknc.features import LayerTap
    from sknc.features._images import check_images, preprocess_batch
    from sknc.metrics import nc1

    X, y = _images(), _labels()
    # max_epochs=0: the net's backbone is the one the block NC was measured on
    clf = _fit("scl-ft", X=X, y=y, tuned_block="auto", max_epochs=0)
    block = "layer2.0"
    batch = preprocess_batch(check_images(X).load(0, len(X)), clf.data_config_, device="cpu")
    with LayerTap(clf.net_.module_.backbone, [block]) as tap, torch.no_grad():
        Z = tap(batch)[0].double().numpy()
    assert clf.block_nc_[block] == pytest.approx(nc1(Z, y), rel=1e-5)


# ---------------------------------------------------------------------------
# parameters, grid search
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "params, match",
    [
        (dict(tuned_block="layer3.0", last_k=2), "either tuned_block or last_k"),
        (dict(last_k=0), "last_k must be"),
        (dict(last_k=9), "has only 4 blocks"),
        (dict(tuned_block=[]), "empty list"),
        (dict(tuned_block=["layer3.0", "layer3.0"]), "twice"),
        (dict(tuned_block=["layer3", "layer3.0"]), "inside"),
        (dict(tuned_block=1.5), "tuned_block must be"),
        (dict(method="lora", lora_rank=0), "lora_rank must be"),
        (dict(method="lora", lora_dropout=1.0), "lora_dropout must be"),
        (dict(method="lora", lora_alpha=-1), "lora_alpha must be"),
        (dict(method="lora", lora_targets=["nope"]), "match no module"),
        (dict(method="lora", lora_targets=["layer1.0.bn1"]), "nn.Linear and nn.Conv2d"),
        (dict(method="lora", lora_targets=5), "lora_targets must be"),
    ],
)
def test_bad_parameters_raise_clear_errors(params, match):
    params = dict(dict(method="layer-ft"), **params)
    with pytest.raises(ValueError, match=match):
        _fit(X=_images(6), max_epochs=0, **params)


def test_grid_search_over_every_method():
    X, y = _images(18), _labels(18)
    base = FineTuningClassifier(
        **RESNET, max_epochs=1, lr=1e-2, compute_train_nc1=False, random_state=0
    )
    grid = [
        {"method": ["linear-probe", "full-ft", "bitfit", "norm"]},
        {"method": ["lora"], "lora_rank": [2]},
        {"method": ["layer-ft", "scl-ft"], "last_k": [1, 2]},
        {"method": ["scl-ft"], "tuned_block": ["auto"]},
    ]
    search = GridSearchCV(base, grid, cv=2, error_score="raise").fit(X, y)
    methods = [p["method"] for p in search.cv_results_["params"]]
    assert set(methods) == set(METHODS)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))

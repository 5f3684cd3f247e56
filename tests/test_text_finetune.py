"""Fine-tuning text encoders: PEFT methods, prefix caching, checkpoints, quiet loading.

A tiny random-init BERT (tests/_text_helpers.py, hidden 32, 3 layers,
intermediate 64, 4 classes here): every parameter count below is written
out from that configuration.
"""

import os
import pickle
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch
from _text_helpers import CORPUS, make_tiny_bert
from sklearn.model_selection import GridSearchCV

from sknc.finetune import FineTuningClassifier

LABELS = np.array(["pet", "pet", "fin", "fin", "wx", "wx", "sport", "sport"] * 3)
H, FF, L, K = 32, 64, 3, 4  # hidden, intermediate, layers, classes

HEAD = H * K + K
LINEAR = H * H + H
LAYER = 4 * LINEAR + (H * FF + FF) + (FF * H + H) + 2 * 2 * H  # attention, FFN, 2 LayerNorms
POOLER = LINEAR  # never reaches the head: never trainable


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(str(tmp_path_factory.mktemp("bert") / "bert"))


def _fit(bert_dir, method, **kw):
    params = {"max_epochs": 2, "lr": 1e-2, "random_state": 0, "compute_train_nc1": False}
    params.update(kw)
    return FineTuningClassifier(bert_dir, method=method, **params).fit(CORPUS, LABELS)


def _state(est):
    return {k: v.detach().clone() for k, v in est.net_.module_.state_dict().items()}


@pytest.mark.parametrize(
    "method, kw, trainable",
    [
        ("linear-probe", {}, HEAD),
        ("layer-ft", {}, LAYER + HEAD),
        ("layer-ft", {"last_k": 2}, 2 * LAYER + HEAD),
        ("layer-ft", {"tuned_block": [3, "encoder.layer.0"]}, 2 * LAYER + HEAD),
        ("full-ft", {}, None),  # everything but the pooler
        # BitFit: the biases of q, k, v, o, both FFN layers and both LayerNorms per
        # layer, and of the embeddings' LayerNorm
        ("bitfit", {}, L * (4 * H + FF + H + 2 * H) + H + HEAD),
        ("norm", {}, L * 4 * H + 2 * H + HEAD),  # LayerNorm weights and biases
        # LoRA rank 8 on query/key/value/dense (6 Linear layers per transformer layer)
        ("lora", {}, L * (4 * 8 * (H + H) + 8 * (H + FF) + 8 * (FF + H)) + HEAD),
        ("lora", {"lora_targets": ["query", "value"], "lora_rank": 2}, L * 2 * 2 * 2 * H + HEAD),
    ],
)
def test_trainable_parameter_counts_are_exact(bert_dir, method, kw, trainable):
    est = _fit(bert_dir, method, max_epochs=1, **kw)
    embeddings = sum(
        p.numel() for p in est.net_.module_.backbone.embeddings.parameters()
    )  # words, positions, token types, LayerNorm
    lora = est.n_params_ - (embeddings + L * LAYER + POOLER + HEAD)
    assert (lora > 0) == (method == "lora")
    if trainable is None:
        trainable = embeddings + L * LAYER + HEAD
    assert est.n_trainable_params_ == trainable
    names = [n for n, p in est.net_.module_.named_parameters() if p.requires_grad]
    assert not any("pooler" in n for n in names)
    if method == "lora":
        targets = est.lora_targets_
        kinds = {t.split(".", 3)[-1] for t in targets}
        if "lora_targets" in kw:
            assert kinds == {"attention.self.query", "attention.self.value"}
        else:
            assert kinds == {
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "intermediate.dense",
                "output.dense",
            }
        assert all(t.startswith("encoder.layer.") for t in targets)
    if "last_k" in kw or "tuned_block" in kw:
        assert est.tuned_block_ == [
            "encoder.layer.0" if "tuned_block" in kw else "encoder.layer.1",
            "encoder.layer.2",
        ]


def test_lora_bitfit_norm_train_and_lora_starts_at_the_frozen_model(bert_dir):
    probe = _fit(bert_dir, "linear-probe", max_epochs=0)
    lora0 = _fit(bert_dir, "lora", max_epochs=0)
    np.testing.assert_allclose(
        lora0.decision_function(CORPUS), probe.decision_function(CORPUS), rtol=1e-5, atol=1e-6
    )
    for method in ("lora", "bitfit", "norm"):
        est = _fit(bert_dir, method, max_epochs=3)
        assert not est.prefix_cached_
        moved = est.decision_function(CORPUS) - probe.decision_function(CORPUS)
        assert np.abs(moved).max() > 1e-4
        back = pickle.loads(pickle.dumps(est))
        np.testing.assert_allclose(
            back.decision_function(CORPUS), est.decision_function(CORPUS), rtol=1e-5, atol=1e-6
        )
    est.net_.module_.merge_lora()  # a no-op for norm tuning, as for images


def test_grid_search_over_methods_on_strings(bert_dir):
    base = FineTuningClassifier(bert_dir, max_epochs=1, lr=1e-2, random_state=0)
    grid = {"method": ["linear-probe", "scl-ft", "lora", "bitfit", "norm"]}
    gs = GridSearchCV(base, grid, cv=2).fit(CORPUS, LABELS)
    assert np.isfinite(gs.cv_results_["mean_test_score"]).all()
    assert gs.best_estimator_.predict(CORPUS[:2]).shape == (2,)


@pytest.mark.parametrize(
    "kw",
    [
        {"method": "layer-ft"},
        {"method": "scl-ft"},
        {"method": "scl-ft", "tuned_block": [1, 3]},
        {"method": "layer-ft", "tuned_block": "encoder.layer.0"},
    ],
)
def test_prefix_cache_trains_like_the_uncached_net(bert_dir, kw):
    a = _fit(bert_dir, max_epochs=3, compute_train_nc1=True, **kw)
    b = _fit(bert_dir, max_epochs=3, compute_train_nc1=True, cache_prefix=False, **kw)
    assert a.prefix_cached_ and not b.prefix_cached_
    sa, sb = _state(a), _state(b)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-4, atol=1e-5)
    assert a.train_nc1_ == pytest.approx(b.train_nc1_, rel=1e-4)
    # the split is not kept in the fitted estimator, and it pickles
    assert a.net_.module_.split is None
    back = pickle.loads(pickle.dumps(a))
    np.testing.assert_allclose(back.decision_function(CORPUS), a.decision_function(CORPUS))


def test_prefix_cache_refusals(bert_dir):
    for method in ("full-ft", "lora", "bitfit"):
        with pytest.raises(ValueError, match="cache_prefix=True cannot be used"):
            _fit(bert_dir, method, cache_prefix=True)
    est = _fit(bert_dir, "layer-ft", tuned_block=0)  # the embeddings: nothing frozen before
    assert est.tuned_block_ == "embeddings" and not est.prefix_cached_
    with pytest.raises(ValueError, match="embeddings are tuned"):
        _fit(bert_dir, "layer-ft", tuned_block=0, cache_prefix=True)


def test_text_parameter_errors(bert_dir):
    with pytest.raises(ValueError, match="not both"):
        _fit(bert_dir, "layer-ft", tuned_block=1, last_k=2)
    with pytest.raises(ValueError, match="only 3 transformer layers"):
        _fit(bert_dir, "layer-ft", last_k=4)
    with pytest.raises(ValueError, match="twice"):
        _fit(bert_dir, "layer-ft", tuned_block=[1, "encoder.layer.0"])
    with pytest.raises(ValueError, match="match no module"):
        _fit(bert_dir, "lora", lora_targets=["qkv"])


def test_checkpoints_use_the_folder_save_epoch_zero_and_load_safely(bert_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import BertModel

    run = tmp_path / "run"
    est = _fit(bert_dir, "lora", save_checkpoints=True, checkpoint_dir=run)
    assert est.checkpoint_dir_ == str(run)
    assert est.checkpoints_ == [str(run / f"epoch_{e:03d}.safetensors") for e in range(3)]
    initial = BertModel.from_pretrained(bert_dir).state_dict()
    epoch0 = load_file(est.checkpoints_[0])
    assert set(epoch0) == set(initial)  # the model's own layout (LoRA merged)
    for key, value in initial.items():
        torch.testing.assert_close(epoch0[key], value, rtol=0, atol=0)
    last = BertModel.from_pretrained(bert_dir)
    last.load_state_dict(load_file(est.checkpoints_[-1]), strict=True)
    est.net_.module_.merge_lora()
    merged = est.net_.module_.backbone_state_dict()
    for key, value in last.state_dict().items():
        torch.testing.assert_close(merged[key], value)
    with pytest.raises(ValueError, match="resume=True"):
        _fit(bert_dir, "lora", save_checkpoints=True, checkpoint_dir=run)


class _StopAt(__import__("skorch").callbacks.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_batch_end(self, net, training=False, **kwargs):
        if training and len(net.history) == self.epoch:
            raise KeyboardInterrupt("stop here")


@pytest.mark.parametrize("method", ["scl-ft", "lora"])
def test_interrupted_text_fit_resumes_to_the_same_weights(bert_dir, tmp_path, method):
    kw = {"max_epochs": 3, "batch_size": 8, "save_checkpoints": True}
    full = _fit(bert_dir, method, checkpoint_dir=tmp_path / "full", **kw)
    with pytest.raises(KeyboardInterrupt) as info:
        _fit(bert_dir, method, checkpoint_dir=tmp_path / "cut", callbacks=[_StopAt(3)], **kw)
    assert "resume=True" in "".join(getattr(info.value, "__notes__", []))
    assert os.path.exists(tmp_path / "cut" / "epoch_002.safetensors")
    assert not os.path.exists(tmp_path / "cut" / "epoch_003.safetensors")
    shutil.move(tmp_path / "cut", tmp_path / "moved")
    resumed = _fit(bert_dir, method, checkpoint_dir=tmp_path / "moved", resume=True, **kw)
    assert resumed.resumed_from_ == 2 and resumed.n_iter_ == 3
    a, b = _state(full), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in resumed.history_] == [r["train_loss"] for r in full.history_]
    assert [os.path.basename(p) for p in resumed.checkpoints_] == [
        f"epoch_{e:03d}.safetensors" for e in range(4)
    ]
    with pytest.raises(ValueError, match="Cannot resume.*classes"):
        FineTuningClassifier(
            bert_dir,
            method=method,
            checkpoint_dir=tmp_path / "moved",
            resume=True,
            **kw,
        ).fit(CORPUS, np.arange(len(CORPUS)) % 2)


def test_loading_is_quiet_unless_verbose_and_restores_settings(bert_dir, capfd, monkeypatch):
    import collections

    from transformers.utils import logging as hf_logging

    from sknc.features import TextFeatures
    from sknc.features import _text as text_mod

    before = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    monkeypatch.setattr(text_mod, "_LOADED", collections.OrderedDict())
    capfd.readouterr()
    TextFeatures(bert_dir).fit()
    assert "Loading weights" not in capfd.readouterr().err
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before
    monkeypatch.setattr(text_mod, "_LOADED", collections.OrderedDict())
    TextFeatures(bert_dir, verbose=True).fit()
    assert "Loading weights" in capfd.readouterr().err
    monkeypatch.setattr(text_mod, "_LOADED", collections.OrderedDict())
    with pytest.raises(RuntimeError, match="boom"), text_mod.quiet_loading():
        raise RuntimeError("boom")
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == before


def test_auto_layer_follows_the_collapse_rule(bert_dir):
    from sknc.features import TextFeatures
    from sknc.finetune._modules import select_block_by_collapse
    from sknc.metrics import nc1

    est = _fit(bert_dir, "scl-ft", tuned_block="auto", max_epochs=1)
    layers = [f"encoder.layer.{i}" for i in range(L)]
    assert list(est.block_nc_) == layers
    parts = TextFeatures(bert_dir, layers=layers, pool="avg").fit().transform_layers(CORPUS)
    for name in layers:
        assert est.block_nc_[name] == pytest.approx(nc1(parts[name], LABELS), rel=1e-6)
    assert est.tuned_block_ == select_block_by_collapse(est.block_nc_)
    assert _fit(bert_dir, "scl-ft", max_epochs=1).block_nc_ is None
    with pytest.raises(ValueError, match="two or more training texts"):
        FineTuningClassifier(bert_dir, tuned_block="auto").fit(CORPUS[:4], LABELS[[0, 2, 4, 6]])

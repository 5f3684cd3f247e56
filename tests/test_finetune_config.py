"""The configuration surface of sknc.finetune: one constraint table, routed
(skorch-style) parameters, ``amp``, ``auto_block_tolerance`` and
``pretrain_backbone`` as a thin use of the estimator."""

import inspect
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

timm = pytest.importorskip("timm")
pytest.importorskip("skorch")

from sknc.features import BackboneFeatures  # noqa: E402
from sknc.finetune import FineTuneNet, FineTuningClassifier, pretrain_backbone  # noqa: E402
from sknc.finetune._modules import select_block_by_collapse  # noqa: E402
from sknc.finetune._params import (  # noqa: E402
    NET_PARAMETER_CONSTRAINTS,
    PARAMETER_CONSTRAINTS,
    PRETRAIN_DEFAULTS,
)
from sknc.utils._options import AmpWarning, InvalidParameterError  # noqa: E402

RESNET_KW = dict(channels=(16, 32, 64, 128), stem_width=8, zero_init_last=False)
TINY = dict(input_size=32, model_kwargs=RESNET_KW, batch_size=8, random_state=0)


def _images(n=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _labels(n=12):
    return np.array(["cat", "dog", "emu"] * (n // 3))


def _clf(**params):
    params = {"method": "linear-probe", "max_epochs": 0, "compute_train_nc1": False, **params}
    return FineTuningClassifier("resnet10t", **{**TINY, **params})


# ---------------------------------------------------------------------------
# one constraint table
# ---------------------------------------------------------------------------
def test_constraint_table_covers_every_parameter_once():
    init = set(inspect.signature(FineTuningClassifier).parameters) - {"kwargs"}
    assert set(FineTuningClassifier._parameter_constraints) == init
    assert FineTuningClassifier._parameter_constraints is PARAMETER_CONSTRAINTS
    # the network's options: FineTuneNet's arguments, forwarded as module__*
    net_args = set(inspect.signature(FineTuneNet).parameters) - {"model", "n_classes", "seed"}
    assert set(NET_PARAMETER_CONSTRAINTS) == net_args
    est = _clf(skip_norm=True).fit(_images(), _labels())
    module_params = est.net_.get_params_for("module")
    for name in NET_PARAMETER_CONSTRAINTS:
        assert f"module__{name}" in vars(est.net_), name
    assert module_params["skip_norm"] is True


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(lr=True), "lr must be a number > 0, got True"),
        (dict(momentum=-0.5), "momentum must be a number >= 0"),
        (dict(max_epochs=1.5), "max_epochs must be an int >= 0"),
        (dict(batch_size=True), "batch_size must be an int >= 1"),
        (dict(cache_prefix="yes"), "cache_prefix must be one of"),
        (dict(save_checkpoints="yes"), "save_checkpoints must be a bool"),
        (dict(compute_train_nc1=1), "compute_train_nc1 must be a bool"),
        (dict(verbose=-1), "verbose must be a bool or an int >= 0"),
        (dict(amp=1), "amp must be one of"),
        (dict(amp="fp8"), "amp must be one of"),
        (dict(auto_block_tolerance=1.5), r"auto_block_tolerance must be a number in \[0, 1\]"),
        (dict(optimizer=object), "optimizer must be one of .* or a torch.optim.Optimizer subclass"),
        (dict(callbacks="early_stopping"), "callbacks must be"),
        (dict(random_state="seed"), "random_state must be"),
        (dict(skip_norm="no"), "skip_norm must be a bool"),
        (dict(tuned_block=["layer3.0", "auto"]), "tuned_block must be"),
        (dict(checkpoint_dir=3), "checkpoint_dir must be"),
    ],
)
def test_constraint_errors_name_the_parameter(params, match):
    clf = _clf(**params)
    with pytest.raises(InvalidParameterError, match=match) as info:
        clf.fit(_images(6), _labels(6))
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("FineTuningClassifier: ")
    assert not hasattr(clf, "net_")


def test_finetune_net_reads_the_same_table():
    with pytest.raises(InvalidParameterError, match="FineTuneNet: combine must be one of"):
        FineTuneNet("resnet10t", 3, combine="mul", model_kwargs=RESNET_KW)
    with pytest.raises(InvalidParameterError, match="FineTuneNet: lora_rank must be an int >= 1"):
        FineTuneNet("resnet10t", 3, method="lora", lora_rank=0, model_kwargs=RESNET_KW)
    with pytest.raises(InvalidParameterError, match="FineTuneNet: projection_rank must be"):
        FineTuneNet("resnet10t", 3, projection_rank=0, model_kwargs=RESNET_KW)


# ---------------------------------------------------------------------------
# routed parameters
# ---------------------------------------------------------------------------
def test_routed_optimizer_arguments_reach_the_optimizer():
    X, y = _images(), _labels()
    est = _clf(optimizer__betas=(0.8, 0.99), optimizer__eps=1e-6).fit(X, y)
    group = est.net_.optimizer_.param_groups[0]
    assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-6
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.0
    # routed values override the flat defaults (lr as in skorch)
    est = _clf(lr=1e-3, weight_decay=0.1, optimizer__lr=0.05, optimizer__weight_decay=0.2)
    group = est.fit(X, y).net_.optimizer_.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.2
    est = _clf(optimizer="sgd", optimizer__nesterov=True).fit(X, y)
    group = est.net_.optimizer_.param_groups[0]
    assert group["nesterov"] is True and group["momentum"] == 0.9
    assert isinstance(est.net_.optimizer_, torch.optim.SGD)


def test_routed_criterion_loader_and_callback_arguments():
    X, y = _images(), _labels()
    est = _clf(
        method="layer-ft",
        max_epochs=1,
        patience=3,
        num_workers=0,
        criterion__label_smoothing=0.1,
        iterator_train__num_workers=2,
        iterator_train__drop_last=True,
        iterator_valid__batch_size=5,
        callbacks__early_stopping__threshold=0.5,
        callbacks__print_log=None,
        cache_prefix=False,
    )
    est.set_params(iterator_train__num_workers=0)  # workers would slow the test down
    est.fit(X, y)
    net = est.net_
    assert net.criterion_.label_smoothing == 0.1
    assert net.get_params_for("iterator_train")["num_workers"] == 0
    loader = net.get_iterator(torch.utils.data.TensorDataset(torch.zeros(4, 1)), training=True)
    assert loader.num_workers == 0 and loader.batch_size == 8 and loader.drop_last
    valid = net.get_iterator(torch.utils.data.TensorDataset(torch.zeros(4, 1)), training=False)
    assert valid.batch_size == 5
    callbacks = dict(net.callbacks_)
    assert callbacks["early_stopping"].threshold == 0.5
    assert "print_log" not in callbacks
    # the flat num_workers is the default routed arguments override
    est = _clf(num_workers=0, iterator_train__num_workers=3)
    est._check_params()
    assert est._routed_params()["iterator_train__num_workers"] == 3


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(optimizer__betaz=(0.8, 0.9)), r"optimizer__betaz: AdamW has no argument 'betaz'"),
        (dict(optimizer__momentum=0.9), "optimizer__momentum: AdamW has no argument"),
        (dict(optimizer__params=[]), "optimizer__params: AdamW has no argument"),
        (dict(criterion__smoothing=0.1), "criterion__smoothing: CrossEntropyLoss"),
        (dict(iterator_train__workers=2), "iterator_train__workers: DataLoader has no"),
        (dict(iterator_valid__dataset=None), "iterator_valid__dataset: DataLoader"),
        (dict(callbacks__nope__x=1), "callbacks__nope__x: this fit has no callback named 'nope'"),
    ],
)
def test_unknown_routed_names_raise_clear_errors(params, match):
    X, y = _images(), _labels()
    clf = _clf(**params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_unknown_keywords_are_refused_at_construction():
    with pytest.raises(TypeError, match="'optimzer__lr' .*did you mean optimizer__"):
        FineTuningClassifier("resnet10t", optimzer__lr=0.1)
    with pytest.raises(TypeError, match="'module__combine'.*pass combine=... instead"):
        FineTuningClassifier("resnet10t", module__combine="concat")
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        FineTuningClassifier("resnet10t", learning_rate=0.1)
    with pytest.raises(TypeError, match="'optimizer__lr_'"):
        FineTuningClassifier("resnet10t", optimizer__lr_=0.1)
    clf = FineTuningClassifier("resnet10t")
    with pytest.raises(ValueError, match="Invalid parameter 'learning_rate'"):
        clf.set_params(learning_rate=0.1)
    with pytest.raises(ValueError, match="Invalid parameter 'optimzer'"):
        clf.set_params(optimzer__lr=0.1)


def test_routed_parameters_are_parameters():
    clf = FineTuningClassifier("resnet10t", optimizer__betas=(0.8, 0.9))
    assert clf.get_params()["optimizer__betas"] == (0.8, 0.9)
    assert clf.get_params(deep=False)["optimizer__betas"] == (0.8, 0.9)
    assert "optimizer__betas=(0.8, 0.9)" in repr(clf)
    clf.set_params(optimizer__lr=0.01, iterator_train__drop_last=True, lr=0.5)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params()
    assert twin.optimizer__lr == 0.01 and twin.lr == 0.5
    again = pickle.loads(pickle.dumps(clf))
    assert again.get_params() == clf.get_params()
    # and through a Pipeline, as GridSearchCV over a pipeline sets them
    pipe = make_pipeline(clone(clf)).set_params(finetuningclassifier__optimizer__eps=1e-5)
    assert pipe.get_params()["finetuningclassifier__optimizer__eps"] == 1e-5
    assert pipe[-1].optimizer__eps == 1e-5


def test_fitted_estimator_with_routed_parameters_pickles_and_clones():
    X, y = _images(), _labels()
    est = _clf(max_epochs=1, optimizer__betas=(0.7, 0.95)).fit(X, y)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.decision_function(X), est.decision_function(X))
    assert again.net_.optimizer_.param_groups[0]["betas"] == (0.7, 0.95)
    fresh = clone(est)
    assert not hasattr(fresh, "net_") and fresh.optimizer__betas == (0.7, 0.95)
    refit = fresh.fit(X, y)
    np.testing.assert_array_equal(refit.decision_function(X), est.decision_function(X))


def test_failed_fit_with_a_bad_routed_name_leaves_the_estimator_as_it_was():
    X, y = _images(), _labels()
    est = _clf().fit(X, y)
    net = est.net_
    est.set_params(optimizer__bogus=1)
    with pytest.raises(ValueError, match="optimizer__bogus"):
        est.fit(X, y)
    assert est.net_ is net


def test_grid_search_over_routed_optimizer_arguments():
    X, y = _images(12), _labels(12)
    base = _clf(max_epochs=1, lr=1e-3)
    search = GridSearchCV(
        base,
        {"optimizer__lr": [1e-4, 1e-2], "optimizer__betas": [(0.9, 0.999), (0.5, 0.9)]},
        cv=2,
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    best = search.best_params_
    group = search.best_estimator_.net_.optimizer_.param_groups[0]
    assert group["lr"] == best["optimizer__lr"] and group["betas"] == best["optimizer__betas"]
    assert not hasattr(base, "optimizer__lr")  # the search worked on clones


# ---------------------------------------------------------------------------
# amp: one meaning in BackboneFeatures and FineTuningClassifier
# ---------------------------------------------------------------------------
def _features(**params):
    return BackboneFeatures("resnet10t", device="cpu", **{**TINY, **params})


def _finetuner(**params):
    return _clf(device="cpu", **params)


def _text_features(**params):
    from sknc.features import TextFeatures

    return TextFeatures("sentence-transformers/all-MiniLM-L6-v2", device="cpu", **params)


def _dtype_name(dtype):
    return None if dtype is None else str(dtype).replace("torch.", "")


@pytest.mark.parametrize(
    "make", [_features, _text_features, _finetuner], ids=["features", "text", "finetune"]
)
@pytest.mark.parametrize(
    "amp, dtype",
    [
        (False, None),
        (None, None),
        (True, "float16"),
        ("float16", "float16"),
        ("fp16", "float16"),
        ("bfloat16", "bfloat16"),
        ("bf16", "bfloat16"),
    ],
)
def test_amp_means_the_same_in_both_estimators(make, amp, dtype):
    est = make(amp=amp)
    est._check_params()
    assert _dtype_name(est._amp_dtype(torch.device("cuda"))) == dtype
    assert est._amp_dtype(torch.device("cpu")) is None


@pytest.mark.parametrize("make", [_features, _finetuner], ids=["features", "finetune"])
def test_amp_off_cuda_warns_the_same_way(make):
    X, y = _images(6), _labels(6)
    with pytest.warns(AmpWarning, match=r"amp=True only applies on CUDA; on 'cpu' .* float32"):
        fitted = make(amp=True).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AmpWarning)
        plain = make(amp=False).fit(X, y)
    np.testing.assert_array_equal(fitted.transform(X), plain.transform(X))
    with pytest.raises(InvalidParameterError, match="amp must be one of"):
        make(amp="fp8").fit(X, y)


# ---------------------------------------------------------------------------
# tuned_block="auto": the tolerance is a parameter
# ---------------------------------------------------------------------------
def test_auto_block_tolerance_is_the_rule_threshold():
    X, y = _images(12), _labels(12)
    chosen = {}
    for tolerance in (0.0, 0.1, 1.0):
        est = _clf(method="scl-ft", tuned_block="auto", auto_block_tolerance=tolerance).fit(X, y)
        assert est.tuned_block_ == select_block_by_collapse(est.block_nc_, tolerance)
        chosen[tolerance] = est.tuned_block_
    blocks = list(est.block_nc_)
    assert chosen[1.0] == blocks[1]  # tolerance 1: the second candidate block
    order = [blocks.index(chosen[t]) for t in (1.0, 0.1, 0.0)]
    assert order == sorted(order)  # smaller tolerance, later block
    with pytest.raises(InvalidParameterError, match="tolerance must be a number in"):
        select_block_by_collapse({"a": 1.0, "b": 0.5}, tolerance=-0.1)


# ---------------------------------------------------------------------------
# pretrain_backbone: a thin use of the estimator
# ---------------------------------------------------------------------------
def test_pretrain_backbone_takes_an_estimator(tmp_path):
    X, y = _images(8), np.arange(8) % 4
    template = FineTuningClassifier("resnet10t", max_epochs=1, optimizer__betas=(0.8, 0.9), **TINY)
    est = pretrain_backbone(template, X, y, checkpoint_dir=tmp_path / "a")
    assert est is not template and not hasattr(template, "net_")
    assert est.method == "full-ft" and est.save_checkpoints and est.cache_prefix is False
    assert len(est.checkpoints_) == 2 and est.trainable_fraction_ == 1.0
    assert est.net_.optimizer_.param_groups[0]["betas"] == (0.8, 0.9)
    assert est.weight_decay == 0.0  # the estimator's own value, not the pretraining default
    # the keyword form: the pretraining defaults, every estimator parameter forwarded
    kw = pretrain_backbone(
        "resnet10t",
        X,
        y,
        checkpoint_dir=tmp_path / "b",
        max_epochs=1,
        optimizer__betas=(0.8, 0.9),
        **{k: v for k, v in TINY.items() if k != "batch_size"},
    )
    for name, value in PRETRAIN_DEFAULTS.items():
        if name != "max_epochs":
            assert getattr(kw, name) == value
    assert kw.net_.optimizer_.param_groups[0]["weight_decay"] == 5e-4


def test_pretrain_backbone_refuses_what_it_fixes(tmp_path):
    X, y = _images(8), np.arange(8) % 4
    for bad in (dict(method="scl-ft"), dict(save_checkpoints=False), dict(cache_prefix=True)):
        with pytest.raises(TypeError, match="pretraining is method='full-ft'"):
            pretrain_backbone("resnet10t", X, y, checkpoint_dir=tmp_path, **bad)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epochs'"):
        pretrain_backbone("resnet10t", X, y, epochs=3)


# ---------------------------------------------------------------------------
# text encoders: optimizer__* is routed, the rest refused clearly
# ---------------------------------------------------------------------------
def test_text_encoders_route_optimizer_arguments(tmp_path):
    pytest.importorskip("transformers")
    from _text_helpers import CORPUS, make_tiny_bert

    bert = make_tiny_bert(str(tmp_path / "bert"))
    labels = [i % 2 for i in range(len(CORPUS))]
    clf = FineTuningClassifier(
        bert,
        method="linear-probe",
        max_epochs=0,
        compute_train_nc1=False,
        optimizer__betas=(0.7, 0.9),
        random_state=0,
    ).fit(CORPUS, labels)
    assert clf.net_.optimizer_.param_groups[0]["betas"] == (0.7, 0.9)
    with pytest.raises(ValueError, match="iterator_train__num_workers: only optimizer__"):
        FineTuningClassifier(bert, iterator_train__num_workers=2).fit(CORPUS, labels)
    with pytest.warns(AmpWarning, match="only applies on CUDA"):
        FineTuningClassifier(
            bert,
            method="linear-probe",
            max_epochs=0,
            amp="bf16",
            device="cpu",
            compute_train_nc1=False,
        ).fit(CORPUS, labels)

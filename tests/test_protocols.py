"""Tests for the papers' protocols (sknc.experiments.measure_checkpoints,
compare_finetuning) and the PEFT verdicts of the one rule set."""

import inspect
import json
import math
import statistics

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from sknc.experiments import (
    CLAIMS,
    compare_finetuning,
    measure_checkpoints,
    verdict_auto_block,
    verdict_peft_level_with_scl,
)
from sknc.metrics import cdnv, nc1
from sknc.model_selection import (
    EpisodeSplit,
    evaluate_episodes,
    source_novel_split,
    subsample_per_class,
)
from sknc.neighbors import NearestClassCenter


# ----------------------------------------------------------------------------
# measure_checkpoints
# ----------------------------------------------------------------------------
def _data(n_classes=12, per_class=12, scale=0.7, seed=0, d=20):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    X = rng.normal(size=(len(y), d)) + scale * rng.normal(size=(n_classes, d))[y]
    groups = np.tile(np.arange(per_class), n_classes)
    split = source_novel_split(y, groups, n_novel=n_classes // 2, test_size=0.25, random_state=0)
    return X, y, split


def test_measure_checkpoints_equals_the_protocol_by_hand():
    X, y, split = _data()
    extractors = {"pca6": PCA(6), "pca20": PCA(20)}
    res = measure_checkpoints(
        extractors, X, y, split, shots={1: 4, 5: 2}, n_episodes=40, random_state=3
    )
    assert res["checkpoints"] == ["pca6", "pca20"]
    assert res["few_shot"]["n_way"] == 5 and res["few_shot"]["confidence_level"] == 95
    for i, ext in enumerate(extractors.values()):
        fitted = ext.fit(X[split.source_train], y[split.source_train])
        Z = fitted.transform(X)
        assert res["n_features"][i] == Z.shape[1]
        for part in ("source_train", "source_test", "novel"):
            idx = split[part]
            col = res["collapse"][part]
            assert math.isclose(col["cdnv"][i], cdnv(Z[idx], y[idx]), rel_tol=1e-10)
            assert math.isclose(col["nc1"][i], nc1(Z[idx], y[idx]), rel_tol=1e-10)
            expected = cdnv(Z[idx], y[idx], bias="corrected")
            assert math.isclose(col["cdnv_corrected"][i], expected, rel_tol=1e-10)
            assert col["n_classes"] == len(np.unique(y[idx]))
        ncc = NearestClassCenter().fit(Z[split.source_train], y[split.source_train])
        assert res["ncc_accuracy"][i] == ncc.score(Z[split.source_test], y[split.source_test])
        for k, q in ((1, 4), (5, 2)):
            cv = EpisodeSplit(n_way=5, n_shot=k, n_query=q, n_episodes=40, random_state=3)
            ref = evaluate_episodes(Z[split.novel], y[split.novel], cv, return_cdnv=False)
            shot = res["few_shot"]["shots"][str(k)]
            assert (shot["n_shot"], shot["n_query"]) == (k, q)
            assert shot["mean"][i] == ref.mean and shot["ci95"][i] == ref.ci95
            assert shot["std"][i] == ref.std
    json.dumps(res)  # JSON-ready


def test_measure_checkpoints_novel_order_sets_the_episodes_and_inputs_are_untouched():
    X, y, split = _data()
    X0 = X.copy()
    reordered = {
        "source_train": split.source_train,
        "source_test": split.source_test,
        "novel": split.novel[::-1],
    }
    kw = dict(shots=(1,), n_query=3, n_episodes=30, random_state=0)
    a = measure_checkpoints([PCA(8)], X, y, split, **kw)
    b = measure_checkpoints([PCA(8)], X, y, reordered, **kw)
    np.testing.assert_array_equal(X, X0)
    # order-free measures agree; the episodes follow the order of the novel indices
    assert math.isclose(
        a["collapse"]["novel"]["cdnv"][0], b["collapse"]["novel"]["cdnv"][0], rel_tol=1e-12
    )
    Z = PCA(8).fit(X[split.source_train], y[split.source_train]).transform(X)
    cv = EpisodeSplit(n_way=5, n_shot=1, n_query=3, n_episodes=30, random_state=0)
    ref = evaluate_episodes(Z[reordered["novel"]], y[reordered["novel"]], cv)
    assert b["few_shot"]["shots"]["1"]["mean"][0] == ref.mean
    assert a["checkpoints"] == [0]


def test_measure_checkpoints_leaves_singleton_classes_out_of_a_part():
    X, y, split = _data()
    novel = np.asarray(split.novel)
    lone = y[novel][0]
    keep_one = novel[(y[novel] != lone) | (np.arange(len(novel)) == 0)]
    parts = {
        "source_train": split.source_train,
        "source_test": split.source_test,
        "novel": keep_one,
    }
    res = measure_checkpoints(
        [PCA(8)],
        X,
        y,
        parts,
        shots=(1,),
        n_query=3,
        n_episodes=20,
        small_classes="skip",
        random_state=0,
    )
    col = res["collapse"]["novel"]
    assert col["n_classes"] == len(np.unique(y[novel])) - 1
    Z = PCA(8).fit(X[split.source_train], y[split.source_train]).transform(X)
    pairs = keep_one[y[keep_one] != lone]
    assert math.isclose(col["cdnv"][0], cdnv(Z[pairs], y[pairs]), rel_tol=1e-10)
    assert np.isfinite(col["cdnv_corrected"][0])
    # the episodes skip the class too small for them
    assert res["few_shot"]["shots"]["1"]["n_classes"] == col["n_classes"]


def test_measure_checkpoints_novel_classes_only_with_fitted_extractors():
    X, y, split = _data()
    idx = np.asarray(split.novel)
    res = measure_checkpoints(
        [FunctionTransformer().fit(X)],
        X[idx],
        y[idx],
        {"novel": np.arange(len(idx))},
        refit=False,
        shots=(1,),
        n_query=3,
        n_episodes=20,
        random_state=0,
    )
    assert list(res["collapse"]) == ["novel"]
    assert res["ncc_accuracy"] == [None]
    assert math.isclose(res["collapse"]["novel"]["cdnv"][0], cdnv(X[idx], y[idx]), rel_tol=1e-10)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(split={"source_train": [0, 1]}), "'novel'"),
        (dict(split={"novel": None}), "'novel'"),
        (dict(split="novel-only"), "'novel'"),
        (dict(split={"novel": np.arange(10)}, refit=True), "source_train"),
        (dict(split={"novel": [0, 10_000]}, refit=False), "outside"),
        (dict(split={"novel": np.ones(144, bool)}, refit=False), "boolean"),
        (dict(split={"novel": np.arange(12)}, refit=False), "at least 2 novel classes"),
        (dict(shots=(0, 1)), "positive"),
        (dict(extractors=[]), "must not be empty"),
    ],
)
def test_measure_checkpoints_bad_input_names_the_problem(change, match):
    X, y, split = _data()
    kw = dict(extractors=[PCA(4).fit(X)], split=split, n_episodes=5, random_state=0)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        measure_checkpoints(kw.pop("extractors"), X, y, kw.pop("split"), **kw)


def test_measure_checkpoints_refits_clones():
    X, y, split = _data()
    pca = PCA(8)
    measure_checkpoints([pca], X, y, split, shots=(1,), n_query=2, n_episodes=5, random_state=0)
    assert not hasattr(pca, "components_")  # a clone was fitted, not the caller's


# ----------------------------------------------------------------------------
# compare_finetuning
# ----------------------------------------------------------------------------
def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:400] / 16, y[:400], X[400:600] / 16, y[400:600]


METHODS = {"weak": {"C": 0.001}, "strong": {"C": 1.0}}


def test_compare_finetuning_runs_and_summary():
    X, y, X_test, y_test = _digits()
    regimes = {
        "full": 1.0,
        "scarce": {"fraction": 0.25, "params": {"max_iter": 50}, "score_train": True},
    }
    res = compare_finetuning(
        LogisticRegression(max_iter=200),
        X,
        y,
        X_test,
        y_test,
        methods=METHODS,
        regimes=regimes,
        seeds=(0, 1, 2),
        random_state=4,
    )
    runs, summary = res["runs"], res["summary"]
    assert len(runs) == 2 * 2 * 3 and len(summary) == 4
    assert res["cache"] == {"computed_runs": 12, "reused_runs": 0}
    scarce_idx = subsample_per_class(y, fraction=0.25, random_state=4)
    for row in summary:
        mine = [r for r in runs if (r["regime"], r["method"]) == (row["regime"], row["method"])]
        acc = [r["accuracy"] for r in mine]
        assert [r["seed"] for r in mine] == [0, 1, 2] == row["seeds"]
        assert row["n_seeds"] == 3 and row["accuracy_runs"] == acc
        assert math.isclose(row["accuracy"], statistics.fmean(acc), rel_tol=1e-12)
        assert math.isclose(row["accuracy_std"], statistics.stdev(acc), abs_tol=1e-12)
        assert math.isclose(
            row["accuracy_sem"], statistics.stdev(acc) / math.sqrt(3), abs_tol=1e-12
        )
        assert (
            row["params"]
            == ({"max_iter": 50} if row["regime"] == "scarce" else {}) | METHODS[row["method"]]
        )
        assert row["trainable_vs_full"] is None  # no "full-ft" method here
        if row["regime"] == "scarce":
            assert row["n_train"] == len(scarce_idx)
            assert row["train_accuracy"] is not None
            ref = LogisticRegression(max_iter=50, **METHODS[row["method"]], random_state=0)
            ref.fit(X[scarce_idx], y[scarce_idx])
            assert mine[0]["accuracy"] == ref.score(X_test, y_test)
        else:
            assert row["n_train"] == len(y) and row["train_accuracy"] is None
    json.dumps(res)


def test_compare_finetuning_one_seed_has_no_spread():
    X, y, X_test, y_test = _digits()
    res = compare_finetuning(
        LogisticRegression(max_iter=100), X, y, X_test, y_test, methods=METHODS, seeds=(0,)
    )
    row = res["summary"][0]
    assert row["accuracy_std"] is None and row["accuracy_sem"] is None


def test_compare_finetuning_cache_resumes_and_is_keyed_by_what_matters(tmp_path):
    X, y, X_test, y_test = _digits()
    path = tmp_path / "runs.json"
    est = LogisticRegression(max_iter=100)
    kw = dict(methods=METHODS, seeds=(0, 1), cache=path)
    first = compare_finetuning(est, X, y, X_test, y_test, **kw)
    assert first["cache"] == {"computed_runs": 4, "reused_runs": 0}
    stored = json.loads(path.read_text())
    assert len(stored) == 4
    assert sorted((r["method"], r["seed"]) for r in stored.values()) == [
        ("strong", 0),
        ("strong", 1),
        ("weak", 0),
        ("weak", 1),
    ]
    again = compare_finetuning(est, X, y, X_test, y_test, **kw)
    assert again["cache"] == {"computed_runs": 0, "reused_runs": 4}
    assert again["summary"] == first["summary"]
    # a different shared parameter, other data, another seed: new runs
    other = compare_finetuning(LogisticRegression(max_iter=99), X, y, X_test, y_test, **kw)
    assert other["cache"]["computed_runs"] == 4
    moved = compare_finetuning(est, X, y, X_test, y_test[::-1].copy(), **kw)
    assert moved["cache"]["computed_runs"] == 4
    more = compare_finetuning(
        est, X, y, X_test, y_test, methods=METHODS, seeds=(0, 1, 2), cache=path
    )
    assert more["cache"] == {"computed_runs": 2, "reused_runs": 4}


def test_compare_finetuning_cache_is_plain_json(tmp_path):
    path = tmp_path / "runs.json"
    path.write_text("[1, 2]")
    X, y, X_test, y_test = _digits()
    with pytest.raises(ValueError, match="not a run cache"):
        compare_finetuning(LogisticRegression(), X, y, X_test, y_test, cache=path, methods=METHODS)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the run cache"):
        compare_finetuning(LogisticRegression(), X, y, X_test, y_test, cache=path, methods=METHODS)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(methods="scl-ft"), "sequence of names or a dict"),
        (dict(methods={"a": "scl-ft"}), "dict of estimator parameters"),
        (dict(methods=()), "must not be empty"),
        (dict(regimes={"scarce": 0.0}), r"in \(0, 1\]"),
        (dict(regimes={"scarce": 1.5}), r"in \(0, 1\]"),
        (dict(regimes={"scarce": "10%"}), "must be a number"),
        (dict(regimes={"scarce": {"fraction": 0.5, "epochs": 3}}), "unknown keys"),
        (dict(regimes={}), "non-empty dict"),
        (dict(seeds=()), "seeds must not be empty"),
    ],
)
def test_compare_finetuning_bad_input_names_the_problem(change, match):
    X, y, X_test, y_test = _digits()
    kw = dict(methods=METHODS)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        compare_finetuning(LogisticRegression(), X, y, X_test, y_test, **kw)


@pytest.mark.slow
def test_compare_finetuning_with_the_fine_tuner():
    """Method names, the fine-tuner's fitted attributes and the ratio to full FT."""
    pytest.importorskip("timm")
    from sknc.finetune import FineTuningClassifier

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(24, 16, 16, 3), dtype=np.uint8)
    y = np.array(["cat", "dog", "emu"] * 8)
    base = FineTuningClassifier(
        "test_resnet",
        input_size=16,
        max_epochs=1,
        batch_size=12,
        model_kwargs={"zero_init_last": False},
    )
    res = compare_finetuning(
        base, X[:18], y[:18], X[18:], y[18:], methods=("linear-probe", "full-ft")
    )
    lp, full = res["summary"]
    assert (lp["method"], full["method"]) == ("linear-probe", "full-ft")
    assert full["trainable_vs_full"] == 1.0
    assert lp["trainable_vs_full"] == lp["n_trainable_params"] / full["n_trainable_params"] < 1
    run = res["runs"][0]
    assert run["epochs"] == 1 and run["n_params"] > run["n_trainable_params"] > 0
    assert run["seconds_per_epoch"] > 0 and run["final_train_loss"] > 0
    assert math.isfinite(run["train_nc1"])


def test_compare_finetuning_interrupt_propagates():
    class Interrupting(LogisticRegression):
        def fit(self, X, y):
            raise KeyboardInterrupt

    X, y, X_test, y_test = _digits()
    with pytest.raises(KeyboardInterrupt):
        compare_finetuning(Interrupting(), X, y, X_test, y_test, methods=METHODS)


# ----------------------------------------------------------------------------
# the PEFT claims in the one rule set
# ----------------------------------------------------------------------------
def _row(method, acc, std, regime="full", **kw):
    row = dict(backbone="bb", task="t", regime=regime, method=method, accuracy=acc)
    return {**row, "accuracy_std": std, "n_seeds": 3, **kw}


BASELINES = ("bitfit", "norm", "lora-r4", "lora-r16", "last-2")


def test_verdict_peft_level_with_scl():
    level = [_row("scl-ft-auto", 0.80, 0.01)] + [_row(b, 0.801, 0.01) for b in BASELINES]
    c = verdict_peft_level_with_scl(level, {"t": "Task"}, backbone_names={"bb": "BB"})
    assert c["status"] == "held" and c["held"] is True
    assert c["title"] == CLAIMS["peft_level_with_scl"]["title"]
    assert (
        "level in 5, clearly worse in 0 of 5" in c["verdict"]
        and "BB Task full: SCL-FT" in c["verdict"]
    )
    # one clearly worse of five: more than a quarter (5 // 4 = 1 allowed)
    one = [_row("scl-ft-auto", 0.80, 0.001)] + [
        _row(b, 0.90 if b == "norm" else 0.80, 0.001) for b in BASELINES
    ]
    assert verdict_peft_level_with_scl(one, {"t": "T"})["status"] == "partly held"
    two = [_row("scl-ft-auto", 0.80, 0.001)] + [
        _row(b, 0.90 if b in ("norm", "bitfit") else 0.80, 0.001) for b in BASELINES
    ]
    assert verdict_peft_level_with_scl(two, {"t": "T"})["status"] == "did not hold"


def test_verdict_auto_block():
    sweep = [
        dict(tuned_block="a", accuracy=0.9, accuracy_std=0.03, n_seeds=3),
        dict(tuned_block="b", accuracy=0.7, accuracy_std=0.03, n_seeds=3),
    ]
    near = _row("scl-ft-auto", 0.89, 0.01, tuned_block="b", sweep=sweep)
    far = _row("scl-ft-auto", 0.80, 0.01, regime="scarce", tuned_block="b", sweep=sweep)
    c = verdict_auto_block([near, far], {"t": "T"})
    assert c["status"] == "partly held" and c["within_one_se"] == 0.5
    assert "1 of 2 settings" in c["verdict"] and "T 10%: auto b" in c["verdict"]
    assert verdict_auto_block([near], {"t": "T"})["status"] == "held"
    assert verdict_auto_block([far], {"t": "T"})["status"] == "did not hold"


# ----------------------------------------------------------------------------
# the callers use the one protocol
# ----------------------------------------------------------------------------
def test_demo_uses_the_public_protocols():
    from sknc.experiments import _demo

    src = inspect.getsource(_demo)
    assert "measure_checkpoints(" in src and "compare_finetuning(" in src
    assert "evaluate_episodes" not in src and "collapse_report" not in src
    # the training state is read through sknc.finetune's public function
    assert "finetune._callbacks" not in src


def test_load_training_state_is_public():
    from sknc.finetune import load_training_state

    assert "load_training_state" in __import__("sknc.finetune").finetune.__all__
    assert load_training_state.__doc__ and "Examples" in load_training_state.__doc__


def _bench_module(name, monkeypatch):
    import importlib
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setattr(sys, "path", [os.path.join(root, "benchmarks"), *sys.path])
    return importlib.import_module(name)


def _peft_summary(n_seeds):
    std = 0.01 if n_seeds > 1 else None
    rows = []
    for regime in ("full", "scarce"):
        for i, method in enumerate(("linear-probe", *BASELINES, "layer-ft", "full-ft")):
            rows.append(
                _row(
                    method,
                    0.5 + 0.01 * i,
                    std,
                    regime=regime,
                    lr=1e-3,
                    n_trainable_params=10 + i,
                    trainable_vs_full=0.5,
                    seconds_per_epoch=None,
                    train_nc1=1.0 + i,
                    train_nc1_std=std,
                    tuned_block=None,
                    backbone="mobilenetv2_100",
                    task="digits",
                )
            )
        sweep = [dict(tuned_block="b1", accuracy=0.6, accuracy_std=std, n_seeds=n_seeds)]
        rows.append(
            _row(
                "scl-ft-auto",
                0.55,
                std,
                regime=regime,
                lr=1e-3,
                n_trainable_params=5,
                trainable_vs_full=0.05,
                seconds_per_epoch=0.5,
                train_nc1=0.5,
                train_nc1_std=std,
                tuned_block="b1",
                sweep=sweep,
                backbone="mobilenetv2_100",
                task="digits",
            )
        )
    for r in rows:
        r["n_seeds"] = n_seeds
    return rows


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_reproduce_peft_claims_and_table_from_a_summary(n_seeds, monkeypatch):
    """The PEFT script's verdicts and table on its results (one seed crashed before:
    the script's own formatters called helpers that did not exist)."""
    peft = _bench_module("reproduce_peft", monkeypatch)
    res = {"summary": _peft_summary(n_seeds)}
    claims = peft.claims(res)
    assert sorted(claims) == [
        "auto_block",
        "peft_level_with_scl",
        "scl_ft_collapse:mobilenetv2_100",
        "scl_ft_efficient:mobilenetv2_100",
    ]
    for key in ("auto_block", "peft_level_with_scl"):
        assert {k: claims[key][k] for k in ("paper", "title", "claim")} == CLAIMS[key]
    assert "MobileNetV2 digits full: SCL-FT" in claims["peft_level_with_scl"]["verdict"]
    table = peft.table(res["summary"])
    assert len(table.splitlines()) == 1 + len(res["summary"])

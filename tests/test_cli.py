"""Tests of the ``sknc`` command: ``sknc demo`` and ``sknc evaluate``, end to end."""

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import warnings
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image

from sknc.cli import build_parser, main
from sknc.experiments import InputError, run_evaluate
from sknc.experiments._report import FORMATTERS, REFERENCES_HEADING

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # tiny random-init timm models (no download): their zero-scale warning is incidental
    pytest.mark.filterwarnings("ignore::sknc.utils.RandomWeightsWarning"),
]

DEMO_FILES = [
    "cdnv_curves.png",
    "fewshot_vs_cdnv.png",
    "finetune_comparison.png",
    "nc_vs_accuracy.png",
    "report.md",
    "results.json",
]
METHODS = ["linear-probe", "layer-ft", "scl-ft", "full-ft"]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _json_numbers(obj):
    """Every number (not bool) anywhere in a JSON document."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _json_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _json_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?(?![\w])")


def _report_numbers(text):
    """Numbers in the prose, tables and verdicts of a report.

    Code (model names, paths, the command line), image links and the
    references (years, arXiv numbers) are left out.
    """
    body = text.split(REFERENCES_HEADING)[0]
    body = re.sub(r"```.*?```", " ", body, flags=re.S)
    body = re.sub(r"`[^`]*`", " ", body)
    body = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", body)
    return _NUMBER.findall(body)


def _check_report_matches_json(report, results):
    # the claims' fixed wording (paper, title, claim: "ICLR 2022", ">= 90%") is not a measurement
    for claim in results.get("claims", {}).values():
        for key in ("paper", "title", "claim"):
            report = report.replace(claim[key], " ")
    allowed = set()
    for value in _json_numbers(results):
        allowed.update(f(value) for f in FORMATTERS)
    found = _report_numbers(report)
    assert len(found) > 20
    stray = sorted(set(found) - allowed)
    assert not stray, f"numbers in report.md that are not in results.json: {stray}"


def _write_png(path, pixels):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """3 classes x 6 images, 16 x 16 RGB PNGs; each class has its own colour."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for k, name in enumerate(["circle", "square", "triangle"]):
        for i in range(6):
            pixels = rng.integers(0, 60, size=(16, 16, 3), dtype=np.uint8)
            pixels[4:12, 4:12, k] = 220
            _write_png(str(root / name / f"{i}.png"), pixels)
    return root


# ----------------------------------------------------------------------------
# sknc demo
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        # one torch thread: fast in the test suite even when other processes share the cores
        code = main(["demo", "--tiny", "--out", str(out), "--threads", "1"])
    assert code == 0
    with open(out / "results.json", encoding="utf-8") as f:
        results = json.load(f)
    report = (out / "report.md").read_text(encoding="utf-8")
    return SimpleNamespace(
        out=out, results=results, report=report, stdout=stdout.getvalue(), stderr=stderr.getvalue()
    )


def test_demo_writes_every_promised_file(demo_run):
    out, results, report = demo_run.out, demo_run.results, demo_run.report
    assert sorted(os.listdir(out)) == DEMO_FILES
    for name in DEMO_FILES:
        if name.endswith(".png"):
            with Image.open(out / name) as im:
                assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
    for key, name in results["figures"].items():
        assert f"]({name})" in report, key  # embedded in the report
    assert set(results["files"]) == set(DEMO_FILES)


def test_demo_report_numbers_are_those_of_results_json(demo_run):
    results, report = demo_run.results, demo_run.report
    _check_report_matches_json(report, results)
    # and the headline numbers are in the report, formatted as promised
    fs = results["few_shot"]["shots"]["5"]
    assert f"{100 * fs['mean'][-1]:.1f}% ± {100 * fs['ci95'][-1]:.1f}%" in report
    for m in results["finetune"]["methods"]:
        assert f"{100 * m['accuracy']:.1f}%" in report
        assert f"{m['n_trainable_params']:,}" in report


def test_demo_report_has_one_section_per_claim_with_verdict(demo_run):
    results, report = demo_run.results, demo_run.report
    claims = results["claims"]
    assert list(claims) == [
        "collapse_generalizes",
        "fewshot_follows_cdnv",
        "collapse_predicts_transfer",
        "scl_ft_efficient",
        "scl_ft_collapse",
    ]
    for claim in claims.values():
        assert f"## {claim['title']}" in report
        assert claim["claim"] in report
        assert f"{claim['status']}: {claim['verdict']}" in report
        assert claim["held"] is {"held": True, "did not hold": False}.get(claim["status"])
    assert report.count("**Verdict**") == 5


def test_demo_ranks_checkpoints_by_every_score_beside_nc1(demo_run):
    """Issue 15: each transferability score's weighted tau, NC1's beside them."""
    from sknc.model_selection import get_score_names, ranking_statistics

    tr = demo_run.results["transfer"]
    expected = [s for s in get_score_names() if s not in ("leep", "nce", "nleep")]
    assert list(tr["scores"]) == expected and sorted(tr["evaluation"]) == sorted(expected)
    assert tr["scores"]["nc1"] == tr["nc1"]
    for key, e in tr["evaluation"].items():
        ref = ranking_statistics(
            tr["scores"][key], tr["accuracy"], higher_is_better=key not in ("nc1", "cdnv")
        )
        assert e["n"] == ref["n"] and e["top1_regret"] == pytest.approx(ref["top1_regret"])
    report = demo_run.report
    assert "| score | weighted τ | Kendall τ | Spearman ρ | top-1 regret |" in report
    for key in expected:
        assert f"| {key} |" in report or f"| **{key.upper()}** |" in report


def test_demo_results_are_consistent(demo_run):
    results = demo_run.results
    cfg = results["config"]
    assert cfg["preset"] == "tiny" and cfg["epochs"] == 2
    assert results["environment"]["threads"] == 1
    epochs = [0, 1, 2]  # epoch 0 = the initial weights
    col = results["collapse"]
    assert col["epoch"] == epochs
    for part in ("source_train", "source_test", "novel"):
        for metric in ("cdnv", "nc1"):
            values = col[part][metric]
            assert len(values) == 3 and all(v > 0 for v in values)
    pre = results["pretraining"]
    assert pre["epoch"] == [1, 2] and len(pre["train_loss"]) == 2
    fs = results["few_shot"]
    assert fs["epoch"] == epochs and fs["novel_cdnv"] == col["novel"]["cdnv"]
    assert fs["n_way"] == 5 and fs["n_episodes"] == 20
    for k, shot in fs["shots"].items():
        assert shot["n_shot"] == int(k)
        assert all(0 <= a <= 1 for a in shot["mean"]) and all(c >= 0 for c in shot["ci95"])
    tr = results["transfer"]
    assert tr["epoch"] == epochs and tr["n_checkpoints"] == 3
    assert all(0 <= a <= 1 for a in tr["accuracy"])
    assert sorted(tr["rank_by_nc1"]) == [1, 2, 3]
    assert np.argmin(tr["nc1"]) == tr["rank_by_nc1"].index(1)
    assert set(tr["correlations"]) == {"nc1", "cdnv"}
    ft = results["finetune"]
    assert [m["method"] for m in ft["methods"]] == METHODS
    params = [m["n_trainable_params"] for m in ft["methods"]]
    assert params == sorted(params) and params[0] < params[-1]
    assert ft["methods"][-1]["trainable_vs_full"] == 1.0
    assert ft["methods"][2]["tuned_block"] == ft["methods"][1]["tuned_block"] is not None
    data = results["data"]
    assert data["scarce"]["n_train"] < 0.2 * data["scarce"]["n_train_full"]
    assert data["novel"]["n_classes"] + data["source"]["n_classes"] == data["glyphs"]["n_classes"]
    timing = results["timing"]
    assert timing["total"] >= sum(v for k, v in timing.items() if k != "total") - 1e-6


def test_demo_verdicts_follow_the_numbers(demo_run):
    """The demo's verdicts are sknc.experiments' rules applied to its numbers."""
    results = demo_run.results
    col = results["collapse"]
    n_fell = sum(
        col[p]["cdnv"][-1] < col[p]["cdnv"][0] for p in ("source_train", "source_test", "novel")
    )
    status = results["claims"]["collapse_generalizes"]["status"]
    assert status == {3: "held", 0: "did not hold"}.get(n_fell, "partly held")
    rows = {m["method"]: m for m in results["finetune"]["methods"]}
    scl, full = rows["scl-ft"], rows["full-ft"]
    expected = "did not hold"
    if scl["trainable_vs_full"] <= 0.1:  # one seed: any difference counts
        expected = "held" if scl["accuracy"] >= full["accuracy"] else "did not hold"
    assert results["claims"]["scl_ft_efficient"]["status"] == expected
    fs = results["few_shot"]
    ok = all(
        s["mean"][-1] > s["mean"][0]
        and fs["correlations"][k]["spearman"] is not None
        and fs["correlations"][k]["spearman"] < 0
        for k, s in fs["shots"].items()
    )
    assert results["claims"]["fewshot_follows_cdnv"]["held"] is ok


def test_collapse_verdict_compares_sets_with_the_bias_corrected_cdnv():
    from sknc.experiments import verdict_collapse_generalizes

    labels = {"source_train": "train", "source_test": "test", "novel": "novel"}
    plugin = {"source_train": [2.0, 1.0], "source_test": [2.0, 0.5], "novel": [3.0, 2.0]}
    corrected = {"source_train": [2.2, 1.1], "source_test": [2.4, 2.2], "novel": [3.1, 2.2]}
    claim = verdict_collapse_generalizes([0, 1], plugin, labels, corrected)
    assert claim["status"] == "held" and claim["held"] is True
    assert (
        "novel bias-corrected CDNV is 2.0x and the test bias-corrected CDNV 2.0x"
        in (claim["verdict"])
    )
    corrected["source_test"][-1] = None  # infinite: too close for the sample sizes
    claim = verdict_collapse_generalizes([0, 1], plugin, labels, corrected)
    assert "novel CDNV is 2.0x and the test CDNV 0.5x" in claim["verdict"]
    plugin["novel"] = [1.0, 2.0]
    assert verdict_collapse_generalizes([0, 1], plugin, labels)["status"] == "partly held"


def test_demo_and_reproductions_share_the_verdict_rules():
    """One rule set: the demo and benchmarks/reproduce_*.py call the same functions."""
    import inspect

    from sknc.experiments import _demo

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for script in ("reproduce_galanti.py", "reproduce_li.py"):
        with open(os.path.join(root, "benchmarks", script), encoding="utf-8") as f:
            source = f.read()
        assert "from sknc.experiments import" in source and "verdict_" in source
        assert "CLAIMS = {" not in source and '["status"] = ' not in source
    assert "verdict_scl_ft_efficient(" in inspect.getsource(_demo._claims)


def test_demo_json_is_strict(demo_run):
    out = demo_run.out
    text = (out / "results.json").read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_demo_rerun_overwrites_in_place(tmp_path, monkeypatch):
    """Same folder twice: same files, no leftovers; --keep-checkpoints adds the weights."""
    from sknc.experiments import _demo

    # a smaller tiny: 1 epoch, 5 episodes
    tiny = _demo.PRESETS["tiny"]
    monkeypatch.setitem(_demo.PRESETS, "tiny", type(tiny)(**{**tiny.__dict__, "n_episodes": 5}))
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for _ in range(2):
        assert (
            main(
                [
                    "demo",
                    "--tiny",
                    "--epochs",
                    "1",
                    "--out",
                    str(out),
                    "-q",
                    "--threads",
                    "1",
                    "--keep-checkpoints",
                    "--downstream",
                    "digits",
                ]
            )
            == 0
        )
    assert sorted(os.listdir(out)) == sorted(DEMO_FILES + ["checkpoints", "notes.txt"])
    assert sorted(os.listdir(out / "checkpoints")) == [
        "epoch_000.safetensors",
        "epoch_001.safetensors",
    ]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["transfer"]["downstream"] == "scikit-learn digits"
    assert results["claims"]["collapse_predicts_transfer"]["held"] is None  # 2 checkpoints
    assert results["claims"]["collapse_predicts_transfer"]["status"] == "inconclusive"
    assert "could be computed" in results["claims"]["collapse_predicts_transfer"]["verdict"]
    _check_report_matches_json((out / "report.md").read_text(encoding="utf-8"), results)
    # a checkpoint is usable by sknc evaluate's feature extractor
    from sknc.features import BackboneFeatures

    weights = str(out / "checkpoints" / "epoch_001.safetensors")
    feats = BackboneFeatures("test_resnet", weights=weights, input_size=16).fit()
    assert feats.transform(np.zeros((2, 16, 16), dtype=np.uint8)).shape[0] == 2


def test_demo_progress_goes_to_stderr_summary_to_stdout(demo_run):
    results, out, err = demo_run.results, demo_run.stdout, demo_run.stderr
    for i in range(1, 7):
        assert f"[{i}/6]" in err
    assert "pre-training" in err and "checkpoints" in err  # the progress bars
    lines = out.splitlines()
    assert lines[0].startswith("sknc demo: report written to") and lines[0].endswith(" s)")
    assert lines[1:] == [f"  {c['title']}: {c['status']}" for c in results["claims"].values()]


def test_quiet_runs_print_no_progress(tmp_path, image_folder, capsys):
    assert (
        main(
            [
                "evaluate",
                "--model",
                "test_resnet",
                "--data",
                str(image_folder),
                "--input-size",
                "16",
                "--episodes",
                "5",
                "--out",
                str(tmp_path),
                "-q",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("sknc evaluate: report written to")
    assert "suggested SCL-FT tuned_block" in captured.out


# ----------------------------------------------------------------------------
# sknc evaluate
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluate_run(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "out"
    code = main(
        [
            "evaluate",
            "--model",
            "test_resnet",
            "--data",
            str(image_folder),
            "--input-size",
            "16",
            "--episodes",
            "30",
            "--out",
            str(out),
            "-q",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return out, results, (out / "report.md").read_text(encoding="utf-8")


def test_evaluate_writes_report_figure_and_json(evaluate_run):
    out, results, report = evaluate_run
    assert sorted(os.listdir(out)) == ["layerwise_nc.png", "report.md", "results.json"]
    with Image.open(out / "layerwise_nc.png") as im:
        assert im.format == "PNG"
    assert "](layerwise_nc.png)" in report
    _check_report_matches_json(report, results)


def test_evaluate_results(evaluate_run, image_folder):
    _, results, report = evaluate_run
    from sknc.features import list_layers

    layers = [row["layer"] for row in results["layers"]]
    assert layers == list_layers("test_resnet") + ["penultimate"]
    for row in results["layers"]:
        assert row["nc1"] > 0 and row["cdnv"] > 0 and row["nc2"] >= 0
    data = results["data"]
    assert data["n_images"] == 18 and data["n_classes"] == 3
    assert data["class_names"] == ["circle", "square", "triangle"]
    assert data["min_class_size"] == data["max_class_size"] == 6
    assert results["config"]["input_size"] == [16, 16]
    blocks = [r for r in results["layers"] if r["layer"] != "penultimate"]
    best = min(blocks, key=lambda r: r["nc1"])
    assert results["most_collapsed_block"]["layer"] == best["layer"]
    earlier = min(blocks[:-1], key=lambda r: r["nc1"])
    assert results["suggested_tuned_block"]["layer"] == earlier["layer"]
    assert f'tuned_block="{earlier["layer"]}"' in report
    lp = results["linear_probe"]
    assert lp["n_splits"] == 5 and len(lp["fold_accuracy"]) == 5
    assert lp["accuracy"] == pytest.approx(np.mean(lp["fold_accuracy"]))
    fs = results["few_shot"]
    # capped: 3 classes -> 3-way; 6 images per class -> 5 shots leave 1 query
    assert fs["n_way"] == 3 and fs["n_query"] == 1
    assert sorted(int(k) for k in fs["shots"]) == [1, 5]
    assert len(fs["notes"]) == 2 and all(note in report for note in fs["notes"])
    assert "3-way" in fs["notes"][0]


def test_evaluate_features_match_backbone_features(image_folder, tmp_path):
    """The per-layer metrics are those of BackboneFeatures + collapse_report."""
    from sknc.datasets import load_image_folder
    from sknc.features import BackboneFeatures
    from sknc.metrics import collapse_report

    res = run_evaluate(
        "test_resnet",
        image_folder,
        layers="layer2,-1",
        input_size=16,
        n_episodes=10,
        out_dir=tmp_path,
        progress=False,
        seed=3,
        threads=1,
    )
    assert [r["layer"] for r in res["layers"]] == ["layer2", "layer4", "penultimate"]
    files, y = load_image_folder(image_folder, return_X_y=True)
    Z = (
        BackboneFeatures(
            "test_resnet", layers=["layer2", -1, "penultimate"], input_size=16, random_state=3
        )
        .fit()
        .transform_layers(files)
    )
    for row in res["layers"]:
        rep = collapse_report(Z[row["layer"]], y)
        assert row["nc1"] == pytest.approx(rep.nc1, rel=1e-5)
        assert row["cdnv"] == pytest.approx(rep.cdnv, rel=1e-5)
        assert row["nc2"] == pytest.approx(rep.nc2, rel=1e-5)


def test_evaluate_with_weights_file(image_folder, tmp_path):
    from safetensors.torch import save_file

    from sknc.features import create_backbone

    path = str(tmp_path / "w.safetensors")
    module = create_backbone("test_resnet", seed=7)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path)
    a = run_evaluate(
        "test_resnet",
        image_folder,
        weights=path,
        input_size=16,
        n_episodes=5,
        out_dir=tmp_path / "a",
        progress=False,
        seed=0,
        threads=1,
    )
    b = run_evaluate(
        "test_resnet",
        image_folder,
        weights=path,
        input_size=16,
        n_episodes=5,
        out_dir=tmp_path / "b",
        progress=False,
        seed=1,
        threads=1,
    )
    # the seed does not matter once the weights are given
    assert [r["nc1"] for r in a["layers"]] == [r["nc1"] for r in b["layers"]]
    assert a["config"]["weights"] == path
    assert "weights=" in (tmp_path / "a" / "report.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------
# errors: message on stderr, exit status 2, no traceback
# ----------------------------------------------------------------------------
def _expect_usage_error(argv, capsys, *fragments):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_error_missing_folder(tmp_path, capsys):
    err = _expect_usage_error(
        [
            "evaluate",
            "--model",
            "test_resnet",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
        "does not exist",
    )
    assert err.splitlines()[-1].startswith("sknc evaluate: error:")
    assert not (tmp_path / "o").exists()


def test_error_empty_class(tmp_path, capsys):
    _write_png(str(tmp_path / "data" / "cat" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    _write_png(str(tmp_path / "data" / "cat" / "b.png"), np.zeros((8, 8, 3), np.uint8))
    os.makedirs(tmp_path / "data" / "dog")
    (tmp_path / "data" / "dog" / "readme.txt").write_text("no images here")
    _expect_usage_error(
        ["evaluate", "--model", "test_resnet", "--data", str(tmp_path / "data")],
        capsys,
        "without images",
        "dog",
    )


def test_error_class_with_one_image_and_single_class(tmp_path, capsys):
    for name, n in (("cat", 3), ("dog", 1)):
        for i in range(n):
            _write_png(str(tmp_path / "d" / name / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    _expect_usage_error(
        ["evaluate", "--model", "test_resnet", "--data", str(tmp_path / "d")],
        capsys,
        "single image",
        "'dog'",
    )
    for i in range(2):
        _write_png(str(tmp_path / "one" / "cat" / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    _expect_usage_error(
        ["evaluate", "--model", "test_resnet", "--data", str(tmp_path / "one")],
        capsys,
        "single class folder",
    )


def test_error_unknown_model(image_folder, tmp_path, capsys):
    _expect_usage_error(
        ["evaluate", "--model", "resnet_does_not_exist", "--data", str(image_folder)],
        capsys,
        "Unknown timm model name",
    )
    _expect_usage_error(
        ["demo", "--model", "resnet_does_not_exist", "--out", str(tmp_path)],
        capsys,
        "Unknown timm model name",
        "sknc demo: error:",
    )


def test_error_model_that_cannot_take_the_image_size(tmp_path, capsys):
    _expect_usage_error(
        ["demo", "--model", "test_vit", "--size", "24", "--out", str(tmp_path)],
        capsys,
        "does not run on 24 x 24 images",
    )


def test_error_unknown_layer_and_bad_weights(image_folder, tmp_path, capsys):
    _expect_usage_error(
        ["evaluate", "--model", "test_resnet", "--data", str(image_folder), "--layers", "layer9"],
        capsys,
        "layer9",
    )
    _expect_usage_error(
        [
            "evaluate",
            "--model",
            "test_resnet",
            "--data",
            str(image_folder),
            "--weights",
            str(tmp_path / "missing.safetensors"),
        ],
        capsys,
        "missing.safetensors",
    )


def test_error_bad_options(capsys):
    _expect_usage_error(["demo", "--epochs", "0"], capsys, "positive integer")
    _expect_usage_error(["demo", "--quick", "--tiny"], capsys, "exclude each other")
    _expect_usage_error(["demo", "--downstream", "imagenet"], capsys, "invalid choice")
    _expect_usage_error(["evaluate", "--data", "x"], capsys, "--model")
    _expect_usage_error([], capsys)


def test_run_evaluate_docstring_example():
    import doctest

    from sknc.experiments import _evaluate

    result = doctest.testmod(_evaluate, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_python_api_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run_evaluate("test_resnet", tmp_path / "nope", progress=False)
    assert issubclass(InputError, ValueError)


def test_python_dash_m_sknc_in_a_subprocess(tmp_path):
    """The real process: help works, and a bad folder gives status 2 without a traceback."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ok = subprocess.run(
        [sys.executable, "-m", "sknc", "demo", "--help"], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0 and "--quick" in ok.stdout and "--tiny" not in ok.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "sknc",
            "evaluate",
            "--model",
            "resnet18",
            "--data",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "does not exist" in bad.stderr


def test_parser_defaults():
    args = build_parser().parse_args(["demo"])
    assert args.out == os.path.join("sknc_results", "demo").replace(os.sep, "/")
    assert (args.quick, args.tiny, args.epochs, args.model, args.size) == (
        False,
        False,
        None,
        None,
        None,
    )
    assert args.progress is True and args.downstream == "novel" and args.device == "auto"
    args = build_parser().parse_args(["evaluate", "--model", "m", "--data", "d", "-q"])
    assert args.out == "sknc_results/evaluate" and args.progress is False
    assert args.batch_size == 64 and args.episodes == 600 and args.layers is None


def test_report_formatters_handle_missing_values():
    for f in FORMATTERS:
        assert f(None) == "n/a" and f(math.nan) == "n/a"


def test_results_json_conversion(tmp_path):
    from sknc.experiments._common import to_jsonable, write_json

    obj = {
        1: np.float32(0.5),
        "inf": np.inf,
        "nan": float("nan"),
        "flag": np.bool_(True),
        "n": np.int64(3),
        "scalar": np.array(2.5),
        "int0d": np.array(7),
        "rows": np.array([[1, 2], [3, 4]]),
        "mixed": (np.nan, "a", None),
    }
    expected = {
        "1": 0.5,
        "inf": None,
        "nan": None,
        "flag": True,
        "n": 3,
        "scalar": 2.5,
        "int0d": 7,
        "rows": [[1, 2], [3, 4]],
        "mixed": [None, "a", None],
    }
    assert to_jsonable(obj) == expected
    assert type(to_jsonable(np.array(7))) is int  # 0-d arrays become scalars
    path = write_json(tmp_path / "results.json", obj)
    with open(path, encoding="utf-8") as fh:
        assert json.load(fh) == expected


# ----------------------------------------------------------------------------
# nothing lost: Ctrl-C, output folder, atomic reports (issue 13, items 8 and 10)
# ----------------------------------------------------------------------------
def _snapshot(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_demo_interrupt_keeps_earlier_report_and_checkpoints(demo_run, tmp_path, monkeypatch):
    """Ctrl-C while the report is being written: exit 130, earlier report byte-identical,
    completed checkpoints kept, and the message says so."""
    import shutil

    import sknc.plotting

    out = tmp_path / "out"
    shutil.copytree(demo_run.out, out)
    before = _snapshot(out)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    # the third of four figures: two new figures are already written by then
    monkeypatch.setattr(sknc.plotting, "plot_nc_vs_accuracy", interrupt)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(["demo", "--tiny", "--out", str(out), "-q", "--threads", "1"])
    assert code == 130
    message = stderr.getvalue()
    assert "interrupted while writing the report" in message
    assert "left untouched" in message
    kept = out / "interrupted_checkpoints"
    assert str(kept) in message
    ckpts = [f"epoch_{e:03d}.safetensors" for e in range(3)]
    assert set(ckpts) <= set(os.listdir(kept))
    assert "--resume" in message
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("interrupted_")} == before
    assert not [p for p in os.listdir(out) if p.startswith(".sknc-staging")]


def test_demo_interrupt_during_finetuning(tmp_path, monkeypatch, capsys):
    """An interrupt in fine-tuning propagates (exit 130) and no report is written."""
    from sknc.finetune import FineTuningClassifier

    original, calls = FineTuningClassifier.fit, []

    def interrupt(self, X, y, **kwargs):
        calls.append(self.method)
        if len(calls) > 1:  # the first fit is the source pre-training
            raise KeyboardInterrupt
        return original(self, X, y, **kwargs)

    monkeypatch.setattr(FineTuningClassifier, "fit", interrupt)
    out = tmp_path / "out"
    code = main(["demo", "--tiny", "--epochs", "1", "--out", str(out), "-q", "--threads", "1"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted while fine-tuning" in err and "no report was written" in err
    assert sorted(os.listdir(out)) == ["interrupted_checkpoints"]
    kept = set(os.listdir(out / "interrupted_checkpoints"))
    assert {"epoch_000.safetensors", "epoch_001.safetensors"} <= kept


def test_demo_resume_continues_from_the_kept_checkpoints(tmp_path, monkeypatch, capsys):
    """--resume pre-trains in OUT/interrupted_checkpoints with resume=True."""
    import sknc.finetune

    calls = []

    def fake_pretrain(*args, **kwargs):
        calls.append(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(sknc.finetune, "pretrain_backbone", fake_pretrain)
    out = tmp_path / "out"
    kept = out / "interrupted_checkpoints"
    argv = ["demo", "--tiny", "--epochs", "1", "--out", str(out), "-q", "--threads", "1"]
    assert main(argv + ["--resume"]) == 130  # nothing to resume yet: starts afresh
    assert calls[-1]["resume"] is False and not kept.exists()
    kept.mkdir(parents=True)
    assert main(argv + ["--resume"]) == 130
    assert calls[-1]["resume"] is True
    assert os.path.abspath(calls[-1]["checkpoint_dir"]) == str(kept)
    assert "interrupted while pre-training" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_interrupted_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    """Ctrl-C in the last pre-training epoch, then --resume: the same weights and numbers."""
    import sknc.finetune

    argv = ["demo", "--tiny", "-q", "--threads", "1", "--keep-checkpoints"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv + ["--out", str(tmp_path / "whole")]) == 0
        original = sknc.finetune.pretrain_backbone

        def interrupted(*args, on_epoch_end=None, **kwargs):
            def hook(est, epoch):
                on_epoch_end(est, epoch)
                if epoch == 2:  # after its checkpoint, before its training state
                    raise KeyboardInterrupt

            return original(*args, on_epoch_end=hook, **kwargs)

        monkeypatch.setattr(sknc.finetune, "pretrain_backbone", interrupted)
        out = tmp_path / "resumed"
        assert main(argv + ["--out", str(out)]) == 130
        assert (out / "interrupted_checkpoints").is_dir()
        monkeypatch.setattr(sknc.finetune, "pretrain_backbone", original)
        assert main(argv + ["--out", str(out), "--resume"]) == 0
    assert not (out / "interrupted_checkpoints").exists()
    from safetensors.numpy import load_file

    for name in sorted(os.listdir(tmp_path / "whole" / "checkpoints")):
        a = load_file(str(tmp_path / "whole" / "checkpoints" / name))
        b = load_file(str(out / "checkpoints" / name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    whole = json.loads((tmp_path / "whole" / "results.json").read_text(encoding="utf-8"))
    resumed = json.loads((out / "results.json").read_text(encoding="utf-8"))
    # a seeded demo is deterministic on CPU (same threads): every figure equal
    for key in ("collapse", "few_shot", "transfer", "claims"):
        assert resumed[key] == whole[key], key
    for a, b in zip(resumed["finetune"]["methods"], whole["finetune"]["methods"]):
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds"
        }
    assert resumed["pretraining"]["resumed_from_epoch"] == 1


def test_demo_refuses_a_fit_cut_short_by_a_swallowed_interrupt():
    """skorch catches Ctrl-C inside fit; fewer epochs than asked is an interrupt."""
    from sknc.experiments._demo import _check_trained

    est = SimpleNamespace(history_=[{}, {}])
    _check_trained(est, 2, "pre-training")
    with pytest.raises(KeyboardInterrupt, match="stopped after 2 of 3 epochs"):
        _check_trained(est, 3, "pre-training")


def test_staged_output_is_all_or_nothing(tmp_path):
    from sknc.experiments._common import save_figure, staged_output, write_text

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("old")
    with pytest.raises(RuntimeError), staged_output(out) as stage:
        write_text(os.path.join(stage, "report.md"), "new")
        raise RuntimeError("failed half way")
    assert sorted(os.listdir(out)) == ["report.md"]
    assert (out / "report.md").read_text() == "old"
    from matplotlib.figure import Figure

    with staged_output(out) as stage:
        write_text(os.path.join(stage, "report.md"), "new")
        os.makedirs(os.path.join(stage, "checkpoints"))
        save_figure(Figure(), os.path.join(stage, "fig.png"))
    assert sorted(os.listdir(out)) == ["checkpoints", "fig.png", "report.md"]
    assert (out / "report.md").read_text() == "new"


@pytest.mark.parametrize("command", ["evaluate", "demo"])
def test_out_validated_before_any_work(command, image_folder, tmp_path, capsys, monkeypatch):
    from sknc.experiments import _demo, _evaluate

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(_evaluate, "_load_folder", no_work)
    monkeypatch.setattr(_demo, "_load_data", no_work)
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    base = (
        ["evaluate", "--model", "test_resnet", "--data", str(image_folder)]
        if command == "evaluate"
        else ["demo", "--tiny"]
    )
    _expect_usage_error(base + ["--out", str(a_file)], capsys, "is an existing file")
    _expect_usage_error(
        base + ["--out", str(a_file / "sub")], capsys, "cannot be created", "is a file"
    )
    assert a_file.read_text() == "not a folder"


def test_check_out_dir_permissions(tmp_path):
    from sknc.experiments._common import check_out_dir

    assert check_out_dir(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # nothing created
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            check_out_dir(locked / "out")
        with pytest.raises(InputError, match="not writable"):
            check_out_dir(locked)
    finally:
        locked.chmod(0o700)


# ----------------------------------------------------------------------------
# degenerate data and the metrics' warnings (issue 13, items 14 and 17)
# ----------------------------------------------------------------------------
def _identical_classes_folder(root, n_classes, distinct=()):
    """Classes whose images are identical (same 4 images), except those in ``distinct``."""
    for c in range(n_classes):
        for i in range(4):
            seed = 100 * (c + 1) + i if c in distinct else i
            pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
            _write_png(str(root / f"class{c}" / f"{i}.png"), pixels)
    return root


def test_evaluate_identical_classes_is_a_usage_error(tmp_path, capsys):
    data = _identical_classes_folder(tmp_path / "data", 3)
    argv = ["evaluate", "--model", "test_resnet", "--data", str(data), "--input-size", "16"]
    argv += ["--episodes", "5", "--out", str(tmp_path / "out"), "-q", "--threads", "1"]
    _expect_usage_error(argv, capsys, "class means coincide", "look the same")
    assert not (tmp_path / "out").exists()


def test_evaluate_reports_degenerate_metric_with_its_warning(tmp_path):
    from sknc.metrics import NCDegenerateWarning

    data = _identical_classes_folder(tmp_path / "data", 3, distinct=(2,))
    with pytest.warns(NCDegenerateWarning, match="identical means"):
        res = run_evaluate(
            "test_resnet",
            data,
            input_size=16,
            n_episodes=5,
            out_dir=tmp_path / "out",
            progress=False,
            threads=1,
        )
    for row in res["layers"]:
        assert row["cdnv"] is None  # infinite: null in JSON, "n/a" in the report
        assert any("identical means" in w for w in row["warnings"])
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Warnings of the metrics" in report and "identical means" in report


def test_narrow_blocks_are_flagged_and_not_chosen():
    from sknc.experiments._evaluate import _choose_blocks, _layer_row

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 10)
    wide = rng.normal(size=(60, 12)) + 3 * np.eye(12)[y]
    narrow = wide[:, :5] * 10  # 5 = K - 1 features
    with warnings.catch_warnings():  # the metrics may warn about the narrow block
        warnings.simplefilter("ignore")
        rows = [
            _layer_row(0, "narrow", narrow, y, 6),
            _layer_row(1, "wide_a", wide, y, 6),
            _layer_row(2, "wide_b", wide[:, ::-1] * 2, y, 6),
            _layer_row(3, "penultimate", wide, y, 6),
        ]
    assert [r["nc1_comparable"] for r in rows] == [False, True, True, True]
    best, suggested, metric = _choose_blocks(rows, 6)
    assert metric == "nc1"
    assert best["layer"] != "narrow" and suggested["layer"] == "wide_a"
    # no block wide enough: CDNV decides
    best, _, metric = _choose_blocks([rows[0], rows[3]], 6)
    assert (best["layer"], metric) == ("narrow", "cdnv")


def test_evaluate_report_marks_narrow_blocks(evaluate_run):
    from sknc.experiments._report import render_evaluate_report

    _, results, _ = evaluate_run
    results = json.loads(json.dumps(results))
    results["layers"][0]["nc1_comparable"] = False
    report = render_evaluate_report(results)
    assert "† Not comparable" in report
    layer = re.escape(results["layers"][0]["layer"])
    assert re.search(rf"\| `{layer}` \| [\d,]+ \| [^|]*† \|", report)


def test_cli_messages_show_plain_strings(tmp_path, capsys):
    _write_png(str(tmp_path / "data" / "alpha" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    _write_png(str(tmp_path / "data" / "beta" / "0.png"), np.ones((8, 8, 3), np.uint8))
    _write_png(str(tmp_path / "data" / "beta" / "1.png"), np.ones((8, 8, 3), np.uint8))
    argv = ["evaluate", "--model", "test_resnet", "--data", str(tmp_path / "data")]
    err = _expect_usage_error(argv + ["--out", str(tmp_path / "o")], capsys, "'alpha' (1)")
    assert "np.str_" not in err


# ----------------------------------------------------------------------------
# preprocessing options (issue 13, item 20)
# ----------------------------------------------------------------------------
def test_evaluate_small_input_is_not_cropped_and_preprocessing_is_recorded(evaluate_run):
    _, results, report = evaluate_run
    prep = results["config"]["preprocessing"]
    assert prep["input_size"] == [3, 16, 16]
    assert prep["crop_pct"] == 1.0  # no silent border crop at 16 px
    assert set(prep) >= {"interpolation", "mean", "std", "crop_mode"}
    assert any("No border crop" in note for note in results["notes"])
    assert "Preprocessing:" in report
    code = re.search(r"```python\n(.*?)```", report, flags=re.S).group(1)
    assert "input_size=16" in code and "crop_pct=1.0" in code
    namespace = {}
    exec(code, namespace)  # the suggested line runs and matches the evaluation
    params = namespace["clf"].get_params()
    assert params["input_size"] == 16 and params["crop_pct"] == 1.0
    assert list(params["mean"]) == prep["mean"] and list(params["std"]) == prep["std"]
    assert params["interpolation"] == prep["interpolation"]


def test_evaluate_preprocessing_options(image_folder, tmp_path):
    from sknc.features import BackboneFeatures

    out = tmp_path / "out"
    argv = ["evaluate", "--model", "test_resnet", "--data", str(image_folder)]
    argv += ["--input-size", "16", "--crop-pct", "0.5", "--mean", "0.4", "--std", "0.2,0.3,0.4"]
    argv += ["--interpolation", "nearest", "--model-kwargs", '{"zero_init_last": false}']
    argv += ["--layers", "penultimate", "--episodes", "5", "--out", str(out), "-q"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv + ["--threads", "1"]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    prep = res["config"]["preprocessing"]
    assert prep["crop_pct"] == 0.5 and prep["interpolation"] == "nearest"
    assert prep["mean"] == [0.4] * 3 and prep["std"] == [0.2, 0.3, 0.4]
    assert res["config"]["model_kwargs"] == {"zero_init_last": False}
    assert "--crop-pct 0.5" in res["command_line"] and "--model-kwargs" in res["command_line"]
    feats = BackboneFeatures(
        "test_resnet",
        input_size=16,
        crop_pct=0.5,
        mean=0.4,
        std=(0.2, 0.3, 0.4),
        interpolation="nearest",
        model_kwargs={"zero_init_last": False},
        random_state=0,
    ).fit()
    from sknc.datasets import load_image_folder
    from sknc.metrics import nc1

    folder = load_image_folder(image_folder)
    Z = feats.transform(folder.filenames)
    assert res["layers"][-1]["nc1"] == pytest.approx(nc1(Z, folder.target), rel=1e-6)


@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--crop-pct", "1.5", "expected a number in (0, 1]"),
        ("--mean", "0.1,0.2", "expected one number or three"),
        ("--model-kwargs", "[1]", "expected a JSON object"),
        ("--model-kwargs", "{oops", "expected a JSON object"),
        ("--interpolation", "lanczos", "invalid choice"),
    ],
)
def test_evaluate_bad_preprocessing_options(option, value, fragment, capsys):
    argv = ["evaluate", "--model", "test_resnet", "--data", ".", option, value]
    _expect_usage_error(argv, capsys, fragment)


# ----------------------------------------------------------------------------
# OpenMP wait policy (issue 13, item 22)
# ----------------------------------------------------------------------------
def test_empty_omp_wait_policy_counts_as_unset(tmp_path):
    from sknc.cli import _omp_wait_policy_set

    assert not _omp_wait_policy_set({"OMP_WAIT_POLICY": ""})
    assert not _omp_wait_policy_set({"OMP_WAIT_POLICY": "  "})
    assert not _omp_wait_policy_set({})
    assert _omp_wait_policy_set({"OMP_WAIT_POLICY": "active"})
    code = (
        "from sknc.cli import _load_torch_with_passive_openmp as f; f()\n"
        "import os, torch; torch.ones(64, 64) @ torch.ones(64, 64)\n"
        "print(repr(os.environ['OMP_WAIT_POLICY']))\n"
    )
    env = dict(os.environ, OMP_WAIT_POLICY="", PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "Invalid value" not in proc.stderr
    assert proc.stdout.strip() == "''"  # the user's (empty) value is put back

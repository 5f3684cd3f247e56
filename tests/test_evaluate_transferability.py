"""``sknc evaluate`` reports the transferability scores of its backbone beside NC1/CDNV."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from sknc.cli import main
from sknc.datasets import load_image_folder
from sknc.experiments import run_evaluate
from sknc.features import BackboneFeatures
from sknc.metrics import etran_parts, gbc, hscore, logme, ncti_parts, pactran, parc, sfda
from sknc.model_selection import get_score_names

pytestmark = pytest.mark.filterwarnings("ignore:The backbone has random weights")


def _folder(root, n_classes=3, n_images=6):
    rng = np.random.default_rng(0)
    for k in range(n_classes):
        os.makedirs(root / f"c{k}")
        for i in range(n_images):
            pixels = rng.integers(0, 60, size=(16, 16, 3), dtype=np.uint8)
            pixels[4:12, 4:12, k % 3] = 120 + 40 * (k // 3)
            Image.fromarray(pixels).save(root / f"c{k}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("tr_folder"))


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("tr_eval") / "out"
    res = run_evaluate(
        "test_resnet",
        folder,
        layers="-1",
        input_size=16,
        n_episodes=5,
        out_dir=out,
        progress=False,
        seed=3,
        threads=1,
    )
    return res, (out / "report.md").read_text(encoding="utf-8")


def test_scores_equal_the_metrics_on_the_penultimate_features(run, folder):
    res, _ = run
    tr = res["transferability"]
    files, y = load_image_folder(folder, return_X_y=True)
    Z = (
        BackboneFeatures("test_resnet", layers=["penultimate"], input_size=16, random_state=3)
        .fit()
        .transform(files)
    )
    expected = [k for k in get_score_names() if k not in ("leep", "nce", "ncti", "etran")]
    assert list(tr["scores"]) == expected
    penultimate = res["layers"][-1]
    assert tr["scores"]["nc1"] == penultimate["nc1"]
    assert tr["scores"]["cdnv"] == penultimate["cdnv"]
    assert tr["higher_is_better"]["nc1"] is False and tr["higher_is_better"]["logme"] is True
    rel = 1e-5  # float32 features of two forward passes
    assert tr["scores"]["logme"] == pytest.approx(logme(Z, y), rel=rel)
    assert tr["scores"]["hscore"] == pytest.approx(hscore(Z, y), rel=rel)
    assert tr["scores"]["sfda"] == pytest.approx(sfda(Z, y), rel=rel)
    assert tr["scores"]["gbc"] == pytest.approx(gbc(Z, y), rel=rel)
    assert tr["scores"]["parc"] == pytest.approx(parc(Z, y, random_state=3), rel=rel)
    # seeded by the run's seed
    assert tr["scores"]["pactran"] == pytest.approx(pactran(Z, y, random_state=3), rel=1e-4)
    assert tr["parts"]["ncti"] == pytest.approx(ncti_parts(Z, y), rel=rel)
    assert tr["parts"]["etran"] == pytest.approx(etran_parts(Z, y), rel=rel)
    # NC1 and CDNV come from the collapse step (the per-layer table), the rest is timed here
    assert tr["seconds"]["nc1"] is None and tr["seconds"]["cdnv"] is None
    assert all(v >= 0 for k, v in tr["seconds"].items() if k not in ("nc1", "cdnv"))
    assert tr["undefined"] == {} and tr["seed"] == 3
    assert res["config"]["transferability"] is True
    assert res["timing"]["transferability"] > 0


def test_report_shows_every_score_from_results(run):
    res, report = run
    section = report.split("## Transferability scores of the penultimate features")[1]
    section = section.split("## Files and timing")[0]
    from sknc.experiments._format import num

    for label, key in (("LogME", "logme"), ("SFDA", "sfda"), ("NC1", "nc1")):
        assert f"| {label} | {num(res['transferability']['scores'][key])} |" in section
    for part, value in res["transferability"]["parts"]["ncti"].items():
        assert f"NCTI part `{part}` | {num(value)} |" in section
    assert "sknc rank" in section


def test_undefined_score_is_none_with_its_reason(tmp_path):
    # 2 classes x 2 images: k-NN with 5 neighbours needs 6 samples
    root = _folder(tmp_path / "data", n_classes=2, n_images=2)
    with pytest.warns(UserWarning, match="Score 'knn' is undefined"):
        res = run_evaluate(
            "test_resnet",
            root,
            layers="-1",
            input_size=16,
            n_episodes=5,
            out_dir=tmp_path / "out",
            progress=False,
            threads=1,
        )
    tr = res["transferability"]
    assert tr["scores"]["knn"] is None
    assert "n_neighbors=5 needs at least 6 samples" in tr["undefined"]["knn"]
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Scores undefined on these features" in report and "- k-NN" in report


def test_no_transferability_on_the_command_line(folder, tmp_path):
    out = tmp_path / "out"
    argv = ["evaluate", "--model", "test_resnet", "--data", str(folder), "--input-size", "16"]
    argv += ["--layers", "-1", "--episodes", "5", "--out", str(out), "-q", "--threads", "1"]
    assert main(argv + ["--no-transferability"]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert res["transferability"] is None and res["config"]["transferability"] is False
    assert "transferability" not in res["timing"]
    assert res["command_line"].endswith("--no-transferability")
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "Transferability scores" not in report


def test_failing_pool_part_leaves_the_other_scores(folder, tmp_path, monkeypatch):
    import sknc.metrics

    def broken(X, y):
        raise ValueError("degenerate within-class scatter")

    monkeypatch.setattr(sknc.metrics, "ncti_parts", broken)
    with pytest.warns(UserWarning, match="NCTI parts are undefined"):
        res = run_evaluate(
            "test_resnet",
            folder,
            layers="-1",
            input_size=16,
            n_episodes=5,
            out_dir=tmp_path / "out",
            progress=False,
            threads=1,
        )
    tr = res["transferability"]
    assert "ncti" not in tr["parts"] and "etran" in tr["parts"]
    assert "degenerate within-class scatter" in tr["undefined"]["ncti"]
    assert tr["scores"]["logme"] is not None
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "- NCTI: `NCTI parts are undefined" in report

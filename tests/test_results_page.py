"""The docs' results page shows exactly what the real-data reproductions wrote.

``docs/results.rst`` is rendered by ``benchmarks/reproduce_results_page.py``
from ``docs/results/{galanti,li,transferability,peft}.json`` (copies of the
``results.json`` of ``benchmarks/reproduce_galanti.py``, ``reproduce_li.py``,
``reproduce_transferability.py`` and ``reproduce_peft.py``). These tests
re-render it and compare, check that the verdicts and summaries follow from
the stored numbers with the scripts' own rules, and that the figures exist.
They read small committed files only (no data, no model), so they take a few
seconds.
"""

import copy
import math
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
DOCS = ROOT / "docs"

sys.path.insert(0, str(BENCH))

page = pytest.importorskip("reproduce_results_page")


@pytest.fixture(scope="module")
def results():
    return page.load_assets()


def test_page_matches_results(results):
    text = (DOCS / "results.rst").read_text(encoding="utf-8")
    assert text == page.render(results), (
        "docs/results.rst differs from what docs/results/*.json render to; run "
        "`python benchmarks/reproduce_results_page.py`."
    )


def _command(res):
    return res.get("command") or res["command_line"]


def test_release_runs_only(results):
    assert set(results) == set(page.EXPERIMENTS)
    for name in page.RELEASE_ONLY:
        res = results[name]
        assert res["experiment"] == name
        assert res["config"]["preset"] == "release", name
        assert "--quick" not in res["command"]
    # the transferability and PEFT runs are reduced scales, but never the smoke test
    for name in set(page.EXPERIMENTS) - set(page.RELEASE_ONLY):
        res = results[name]
        assert res["config"]["preset"] not in ("quick", None), name
        assert "--quick" not in _command(res), name
        assert f"``{res['config']['preset']}``" in page.render(results), name


def test_collect_refuses_quick_runs(tmp_path):
    src = tmp_path / "transferability"
    src.mkdir()
    (src / "results.json").write_text('{"config": {"preset": "quick"}}', encoding="utf-8")
    with pytest.raises(ValueError, match="--quick"):
        page.collect({"transferability": str(src)}, folder=str(tmp_path / "assets"))
    (src / "results.json").write_text(
        '{"config": {"preset": "medium", "subset": true}}', encoding="utf-8"
    )
    with pytest.raises(ValueError, match="subset"):
        page.collect({"transferability": str(src)}, folder=str(tmp_path / "assets"))
    (src / "results.json").write_text('{"config": {"preset": "reduced"}}', encoding="utf-8")
    with pytest.raises(ValueError, match="release runs only"):
        page.collect({"li": str(src)}, folder=str(tmp_path / "assets"))


def test_figures_exist(results):
    text = (DOCS / "results.rst").read_text(encoding="utf-8")
    shown = set(re.findall(r"\.\. figure:: results/(\S+)", text))
    expected = page.page_figures(results)
    assert {"transferability.png", "peft.png"} <= expected
    assert shown == expected
    for fig in shown:
        path = DOCS / "results" / fig
        assert path.is_file(), fig
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
        assert path.stat().st_size < 300_000, f"{fig} is not a small PNG"


def test_commands_on_page(results):
    text = (DOCS / "results.rst").read_text(encoding="utf-8")
    for res in results.values():
        assert _command(res).startswith("python benchmarks/reproduce_")
        assert f"   {_command(res)}\n" in text
    assert f"   {page.PAGE_COMMAND}\n" in text


def test_verdicts_follow_from_numbers(results):
    import reproduce_galanti
    import reproduce_li
    import reproduce_peft

    for module, res in (
        (reproduce_galanti, results["galanti"]),
        (reproduce_li, results["li"]),
        (reproduce_peft, results["peft"]),
    ):
        recomputed = module.claims(copy.deepcopy(res))
        assert set(recomputed) == set(res["claims"])
        for key, claim in recomputed.items():
            assert claim["status"] == res["claims"][key]["status"], key
            assert claim["verdict"] == res["claims"][key]["verdict"], key
            assert claim["status"] in ("held", "partly held", "did not hold")


def test_fewshot_intervals_are_95_percent(results):
    g = results["galanti"]
    n = g["config"]["episodes"]
    rows = []
    for s in g["fewshot"].values():
        rows += list(zip(s["std"], s["ci95"]))
    rows += [(f["std"], f["ci95"]) for r in g["feature_sets"] for f in r["fewshot"].values()]
    assert rows
    for std, ci in rows:
        assert math.isclose(ci, 1.96 * std / math.sqrt(n), rel_tol=1e-9)


def test_rank_correlations_match_tables(results):
    from scipy import stats

    for task, r in results["li"]["ranking"].items():
        nc1 = [row["nc1"] for row in r["table"]]
        acc = [row["accuracy"] for row in r["table"]]
        assert nc1 == sorted(nc1), task  # the table is ranked by NC1
        rho, p = stats.spearmanr(nc1, acc)
        tau, p_tau = stats.kendalltau(nc1, acc)
        c = r["correlations"]["nc1"]
        assert math.isclose(c["spearman"], rho, abs_tol=1e-12)
        assert math.isclose(c["kendall"], tau, abs_tol=1e-12)
        assert math.isclose(c["kendall_pvalue"], p_tau, abs_tol=1e-12)


def test_finetune_summary_matches_runs(results):
    import statistics

    li = results["li"]
    n_seeds = len(li["config"]["ft_seeds"])
    for task, rows in li["finetune"].items():
        for row in rows:
            runs = [
                r
                for r in li["finetune_runs"][task]
                if (r["regime"], r["method"]) == (row["regime"], row["method"])
            ]
            assert len(runs) == row["n_seeds"] == n_seeds
            acc = [r["accuracy"] for r in runs]
            assert math.isclose(row["accuracy"], statistics.fmean(acc), rel_tol=1e-12)
            if n_seeds > 1:
                assert math.isclose(row["accuracy_std"], statistics.stdev(acc), rel_tol=1e-9)


def test_finetune_parameter_counts(results):
    for _task, rows in results["li"]["finetune"].items():
        by = {(r["regime"], r["method"]): r for r in rows}
        for regime in ("full", "scarce"):
            full = by[(regime, "full-ft")]
            assert full["n_trainable_params"] == full["n_params"]
            for method in ("linear-probe", "layer-ft", "scl-ft"):
                r = by[(regime, method)]
                assert r["n_trainable_params"] < full["n_trainable_params"]
                assert math.isclose(
                    r["trainable_vs_full"], r["n_trainable_params"] / full["n_trainable_params"]
                )


def test_results_page_in_toctree():
    index = (DOCS / "index.rst").read_text(encoding="utf-8")
    toctree = index[index.index(".. toctree::") :]
    assert re.search(r"^\s+results\s*$", toctree, flags=re.M)


# ----------------------------------------------------------------------------
# transferability scores (issue 15)
# ----------------------------------------------------------------------------
def _nan(x):
    return float("nan") if x is None else x


def _stored_evaluation(ev):
    from sknc.model_selection._ranking import RankingEvaluation

    def fix(d):
        return {k: (fix(v) if isinstance(v, dict) else _nan(v)) for k, v in d.items()}

    return RankingEvaluation(fix(ev["per_dataset"]), fix(ev["mean"]))


def _same(a, b):
    a, b = _nan(a), _nan(b)
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_transferability_evaluation_matches_scores(results):
    """The stored weighted tau / regret follow from the stored scores and accuracies."""
    from sknc.model_selection import evaluate_rankings

    t = results["transferability"]
    scores = {
        s: {task: {m: _nan(v) for m, v in per.items()} for task, per in per_task.items()}
        for s, per_task in t["scores"].items()
    }
    for key, truth in (
        ("evaluation_linear_probe", "linear_probe_accuracy"),
        ("evaluation_finetuned", "finetuned_accuracy"),
    ):
        ev = evaluate_rankings(scores, t[truth])
        for s, per in t[key]["per_dataset"].items():
            for task, st in per.items():
                for stat, value in st.items():
                    assert _same(ev.per_dataset[s][task][stat], value), (key, s, task, stat)
        for s, st in t[key]["mean"].items():
            for stat, value in st.items():
                assert _same(ev.mean[s][stat], value), (key, s, stat)


def test_transferability_verdict_and_pool(results):
    import reproduce_transferability

    t = results["transferability"]
    recomputed = reproduce_transferability._verdict(
        _stored_evaluation(t["evaluation_linear_probe"]),
        _stored_evaluation(t["evaluation_finetuned"]),
    )
    assert recomputed == t["verdict"]
    claim = reproduce_transferability._claim(
        _stored_evaluation(t["evaluation_linear_probe"]),
        _stored_evaluation(t["evaluation_finetuned"]),
    )
    assert claim == t["claim"]
    assert claim["status"] in ("held", "partly held", "did not hold")
    # how often fine-tuning beats the probe, as stored, from the two accuracy tables
    assert t["ft_vs_lp"] == reproduce_transferability.ft_vs_lp(
        t["linear_probe_accuracy"], t["finetuned_accuracy"]
    )
    assert f"in {t['ft_vs_lp']['ft_better']} of the {t['ft_vs_lp']['pairs']}" in page.render(
        results
    )
    # the issue's scale: >= 10 candidates, >= 4 data sets, both ground truths,
    # every score with its wall time
    assert len(t["models"]) >= 10
    assert len(t["tasks"]) >= 4
    assert set(t["finetuned_accuracy"]) == set(t["linear_probe_accuracy"]) == set(t["tasks"])
    assert {"nc1", "cdnv"} <= set(t["scores"])
    assert set(t["score_seconds"]) >= set(t["scores"])


def test_transferability_records_the_code_that_ran(results):
    """The published run names a clean commit of this repository's history (taken at its start).

    An earlier run recorded a commit that a rebase later rewrote (not in the
    history) and took it at the end of the run, not the start.
    """
    import shutil
    import subprocess

    t = results["transferability"]
    rev = t.get("revision")
    assert rev is not None, "transferability.json does not record the revision that ran"
    assert rev["changed"] == [] and not rev["git"].endswith("+dirty"), rev["changed"]
    assert "at_end" not in rev, "the code changed while the run ran"
    assert t["environment"]["git"] == rev["git"]
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ancestor = subprocess.run(
        ["git", "merge-base", "--is-ancestor", rev["commit"], "HEAD"], cwd=ROOT, capture_output=True
    )
    assert ancestor.returncode == 0, f"{rev['commit']} is not in this checkout's history"


def test_nc1_place_on_page_agrees_with_verdict(results):
    """The page's "Where NC1 stands" ranks NC1 as the script's verdict does."""
    t = results["transferability"]
    places = page.nc1_places(t)
    ranks = re.findall(r"\(rank (\d+) of (\d+) scores\)", t["verdict"])
    assert len(ranks) == 2
    for (rank, n), key in zip(ranks, ("linear_probe", "finetuned")):
        assert places[key]["mean"][:2] == (int(rank), int(n))
    text = page.render(results)
    assert f"NC1's mean weighted τ ranks {places['linear_probe']['mean'][0]} of" in text


def test_full_preset_estimate_by_hand():
    import reproduce_transferability

    full = reproduce_transferability.PRESETS["full"]
    cfg = dict(full, preset="small", size=full["size"] // 2, n_train=full["n_train"] // 2,
               n_test=full["n_test"] // 2, ft_train=full["n_train"] // 2,
               pretrain_epochs=full["pretrain_epochs"] // 2)  # fmt: skip
    t = {
        "config": cfg,
        "score_seconds": {"nc1": 10.0, "logme": 20.0},
        "phase_seconds": {"load_data": 36.0, "pretrain_own_checkpoints": 60.0,
                          "rank a": 50.0, "rank b": 50.0, "finetune a": 100.0,
                          "finetune b": 200.0},
    }  # fmt: skip
    # 36 + 60*2 + (100-30)*4*2 + 30*2**2 + 300*4*2*1 = 36 + 120 + 560 + 120 + 2400
    assert page.full_preset_estimate(t) == pytest.approx(3236 / 3600)
    assert page.full_preset_estimate({**t, "config": dict(cfg, preset="full")}) is None
    assert page.full_preset_estimate({**t, "phase_seconds": None}) is None


def test_nc1_places_by_hand():
    t = {
        "tasks": {"a": {}},
        "evaluation_linear_probe": {
            "mean": {"nc1": {"weighted_tau": 0.2}, "logme": {"weighted_tau": 0.5},
                     "knn": {"weighted_tau": None}, "gbc": {"weighted_tau": -0.1}},
            "per_dataset": {"nc1": {"a": {"weighted_tau": 0.9}},
                            "logme": {"a": {"weighted_tau": 0.9}},
                            "knn": {"a": {"weighted_tau": 1.0}},
                            "gbc": {"a": {"weighted_tau": None}}},
        },
    }  # fmt: skip
    places = page.nc1_places(t)["linear_probe"]
    assert places["mean"] == (2, 3, ["logme"])
    assert places["a"] == (2, 3, ["knn"])  # a tie counts in NC1's favour


# ----------------------------------------------------------------------------
# PEFT (issue 16)
# ----------------------------------------------------------------------------
ISSUE_16_METHODS = {
    "linear-probe", "bitfit", "norm", "lora-r4", "lora-r16", "layer-ft",
    "scl-ft-auto", "scl-ft-best", "last-2", "full-ft",
}  # fmt: skip


def test_peft_covers_the_issue(results):
    p = results["peft"]
    cfg = p["config"]
    assert "mobilenetv2_100" in cfg["backbones"]
    missing = [b for b in page.ISSUE_16_BACKBONES if b not in cfg["backbones"]]
    if missing:  # the page says so, plainly
        text = page.render(results)
        for b in missing:
            assert f"**Not in this run:** {page.BACKBONE_NAMES[b]}" in text
    assert len(p["data"]) >= 3
    assert len(cfg["seeds"]) >= 3
    settings = {(r["backbone"], r["task"], r["regime"]) for r in p["summary"]}
    # every backbone on every set, or on the sets config's backbone_tasks names (the page says so)
    per_backbone = cfg.get("backbone_tasks") or {b: list(p["data"]) for b in cfg["backbones"]}
    assert set(per_backbone) == set(cfg["backbones"])
    assert settings == {
        (b, t, regime)
        for b in cfg["backbones"]
        for t in per_backbone[b]
        for regime in ("full", "scarce")
    }
    for b, tasks in per_backbone.items():
        if set(tasks) != set(p["data"]):
            assert f"**{page.BACKBONE_NAMES[b]} on fewer data sets:**" in page.render(results)
    for setting in settings:
        methods = {
            r["method"] for r in p["summary"] if (r["backbone"], r["task"], r["regime"]) == setting
        }
        assert methods == ISSUE_16_METHODS, setting
    # the same learning-rate grid for every method
    for r in p["summary"]:
        if r["method"] != "scl-ft-best":
            assert sorted(map(float, r["validation_accuracy"])) == sorted(cfg["lr_grid"])
            assert r["lr"] in cfg["lr_grid"]


def test_peft_summary_matches_runs(results):
    import statistics

    p = results["peft"]
    for r in p["summary"]:
        assert len(r["accuracy_runs"]) == r["n_seeds"] == len(p["config"]["seeds"])
        assert math.isclose(r["accuracy"], statistics.fmean(r["accuracy_runs"]), rel_tol=1e-12)
        assert math.isclose(r["accuracy_std"], statistics.stdev(r["accuracy_runs"]), rel_tol=1e-9)
        full = next(
            f
            for f in p["summary"]
            if (f["backbone"], f["task"], f["regime"], f["method"])
            == (r["backbone"], r["task"], r["regime"], "full-ft")
        )
        assert full["n_trainable_params"] == full["n_params"]
        assert math.isclose(
            r["trainable_vs_full"], r["n_trainable_params"] / full["n_trainable_params"]
        )
        if r["method"] not in ("full-ft",):
            assert r["n_trainable_params"] < full["n_trainable_params"], r["method"]


def test_peft_auto_block_check(results):
    """The auto-block verdict's count is the sweep table's, within one standard error."""
    p = results["peft"]
    hits = []
    for r in p["summary"]:
        if r["method"] != "scl-ft-auto":
            continue
        assert any(s["tuned_block"] == r["tuned_block"] for s in r["sweep"])
        best = max(r["sweep"], key=lambda s: s["accuracy"])
        hits.append(
            r["accuracy"] >= best["accuracy"] - best["accuracy_std"] / math.sqrt(best["n_seeds"])
        )
        oracle = next(
            o
            for o in p["summary"]
            if (o["backbone"], o["task"], o["regime"], o["method"])
            == (r["backbone"], r["task"], r["regime"], "scl-ft-best")
        )
        assert oracle["accuracy"] == best["accuracy"]
    c = p["claims"]["auto_block"]
    assert c["within_one_se"] == pytest.approx(sum(hits) / len(hits))
    assert f"in {sum(hits)} of {len(hits)} settings" in c["verdict"]


def test_peft_vit_pretraining_on_page(results):
    """The ViT of the study: its pretraining is described, never called missing."""
    res = copy.deepcopy(results)
    p = res["peft"]
    if page.ISSUE_16_VIT not in p["config"]["backbones"]:
        assert "a ViT trained on source classes" in page.render(res)
        return
    vit = p["vit_pretraining"]
    # pretrained on source emoji only: the downstream emoji task's emoji left out
    assert vit["excluded_emoji"] >= p["data"]["emoji_category"]["n_emoji"] > 0
    text = page.render(res)
    assert "trained from random weights by :func:`~sknc.finetune.pretrain_backbone`" in text
    assert f"{page.count(vit['n_images'])} source emoji images" in text
    assert "a ViT trained on source classes" not in text
    assert f"{page.BACKBONE_NAMES[page.ISSUE_16_VIT]}, " in text  # its tables


def test_peft_vit_cache_key_is_the_same_in_every_invocation(tmp_path, monkeypatch):
    """The study's ViT is fully determined by its weights file (cached fits are reused)."""
    import reproduce_peft
    import timm
    import torch
    from safetensors.torch import save_file

    from sknc.experiments._protocols import _fingerprint

    kw = dict(depth=2, embed_dim=32, num_heads=2)
    monkeypatch.setattr(reproduce_peft, "VIT_KWARGS", kw)
    cfg = dict(imagenet_size=32)
    # a pretrained checkpoint as pretrain_backbone writes it: with its source head
    torch.manual_seed(0)
    source = timm.create_model(
        reproduce_peft.VIT_MODEL, num_classes=7, **reproduce_peft.vit_kwargs(cfg)
    )
    path = str(tmp_path / "vit.safetensors")
    save_file(source.state_dict(), path)
    monkeypatch.setattr(reproduce_peft, "pretrain_vit", lambda cfg: (path, {}))
    digests = []
    for seed in (1, 2):  # two invocations, the global torch random state elsewhere
        torch.manual_seed(seed)
        runner = reproduce_peft.Runner(cfg, str(tmp_path))
        digests.append(_fingerprint(runner.module(reproduce_peft.VIT)))
    assert digests[0] == digests[1]


def test_peft_merged_invocations_on_page(results):
    """Results merged from invocations on disjoint backbones name each invocation."""
    res = copy.deepcopy(results)
    p = res["peft"]
    if not p.get("invocations"):  # make it a merge of two invocations
        p["invocations"] = [
            dict(
                backbones=[b],
                command=f"python benchmarks/reproduce_peft.py --reduced --backbones {b}",
                git=f"rev{i}",
                wall_seconds=60.0 * (i + 1),
                cache={"computed_runs": 5, "reused_runs": i},
            )
            for i, b in enumerate(p["config"]["backbones"])
        ]
    invs = p["invocations"]
    assert sorted(b for inv in invs for b in inv["backbones"]) == sorted(p["config"]["backbones"])
    text = page.render(res)
    assert "these results merge invocations on different backbones" in text
    for inv in invs:
        assert f"``{inv['command']}`` at git ``{inv['git']}``" in text
    assert f"   {p['command']}\n" in text
    # every ImageNet backbone in the run: the missing ViT is still named
    p["config"]["backbones"] = list(page.ISSUE_16_BACKBONES)
    assert "**Not in this run:** a ViT trained on source classes" in page.render(res)

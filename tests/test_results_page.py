"""The docs' results page shows exactly what the real-data reproductions wrote.

``docs/results.rst`` is rendered by ``benchmarks/reproduce_results_page.py``
from ``docs/results/{galanti,li}.json`` (copies of the ``results.json`` of
``benchmarks/reproduce_galanti.py`` and ``benchmarks/reproduce_li.py``). These
tests re-render it and compare, check that the verdicts follow from the
stored numbers with the scripts' own rules, and that the figures exist. They
read small committed files only (no data, no torch), so they take a second.
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


def test_release_runs_only(results):
    for name, res in results.items():
        assert res["experiment"] == name
        assert res["config"]["preset"] == "release", name
        assert "--quick" not in res["command"]


def test_figures_exist(results):
    text = (DOCS / "results.rst").read_text(encoding="utf-8")
    shown = set(re.findall(r"\.\. figure:: results/(\S+)", text))
    expected = {f"{name}_{fig}" for name, res in results.items() for fig in res["figures"].values()}
    assert shown == expected
    for fig in shown:
        path = DOCS / "results" / fig
        assert path.is_file(), fig
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
        assert path.stat().st_size < 300_000, f"{fig} is not a small PNG"


def test_commands_on_page(results):
    text = (DOCS / "results.rst").read_text(encoding="utf-8")
    for res in results.values():
        assert res["command"].startswith("python benchmarks/reproduce_")
        assert f"   {res['command']}\n" in text
    assert f"   {page.PAGE_COMMAND}\n" in text


def test_verdicts_follow_from_numbers(results):
    import reproduce_galanti
    import reproduce_li

    for module, res in ((reproduce_galanti, results["galanti"]), (reproduce_li, results["li"])):
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

"""The rule of Li et al.'s claim against the field's scores (``verdict_nc1_among_scores``)."""

import math

import pytest

from sknc.experiments import CLAIMS, verdict_nc1_among_scores


def _taus(nc1, others):
    return {"nc1": nc1, **{f"s{i}": t for i, t in enumerate(others)}}


@pytest.mark.parametrize(
    "lp, ft, status",
    [
        # 8 scores: top quarter = ranks 1-2, top half = ranks 1-4
        (_taus(0.9, [0.95, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]), _taus(0.5, [0.1] * 7), "held"),
        (_taus(0.9, [0.95, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
         _taus(0.5, [0.6, 0.7, 0.8, 0.1, 0.1, 0.1, 0.1]), "partly held"),
        (_taus(0.2, [0.3, 0.4, 0.5, 0.6, 0.1, 0.1, 0.1]),
         _taus(0.2, [0.3, 0.4, 0.5, 0.6, 0.1, 0.1, 0.1]), "did not hold"),
        (_taus(float("nan"), [0.3, 0.4]), _taus(None, [0.3]), "inconclusive"),
    ],
)  # fmt: skip
def test_status(lp, ft, status):
    c = verdict_nc1_among_scores({"linear-probe": lp, "fine-tuned": ft})
    assert c["status"] == status
    assert {k: c[k] for k in ("paper", "title", "claim")} == CLAIMS["nc1_among_scores"]


def test_ties_count_for_nc1_and_missing_scores_are_left_out():
    taus = {"nc1": 0.5, "a": 0.5, "b": None, "c": math.nan, "d": 0.7, "e": 0.1, "f": 0.0}
    c = verdict_nc1_among_scores({"linear-probe": taus}, {"d": "D-score"})
    # finite: nc1, a, d, e, f -> NC1 is 2nd of 5 (tie with a in its favour)
    assert "NC1 ranks 2 of 5 scores" in c["verdict"]
    assert "NC1 loses to D-score" in c["verdict"]
    assert c["status"] == "held"  # the top quarter of 5 is ranks 1 and 2 (ceil(5 / 4))


def test_nc1_without_tau_under_one_truth_is_not_held():
    c = verdict_nc1_among_scores(
        {"linear-probe": {"nc1": 0.9, "a": 0.1}, "fine-tuned": {"nc1": None, "a": 0.1}}
    )
    assert c["status"] == "partly held"
    assert "against fine-tuned accuracy NC1 has no finite weighted τ" in c["verdict"]

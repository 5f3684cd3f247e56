"""Episodic few-shot splitter, fast episode evaluation, backbone ranking, rank correlations."""

from ._episodes import EpisodeSplit
from ._fewshot import FewShotResult, evaluate_episodes
from ._ranking import (
    BackboneRanking,
    RankingEvaluation,
    evaluate_rankings,
    get_score_names,
    rank_backbones,
    rank_correlation,
    ranking_statistics,
)

__all__ = [
    "BackboneRanking",
    "RankingEvaluation",
    "EpisodeSplit",
    "FewShotResult",
    "evaluate_episodes",
    "rank_backbones",
    "rank_correlation",
    "ranking_statistics",
    "evaluate_rankings",
    "get_score_names",
]

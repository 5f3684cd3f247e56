"""Episodic few-shot splitter, fast episode evaluation, backbone ranking, rank correlations."""

from ._episodes import EpisodeSplit
from ._fewshot import FewShotResult, evaluate_episodes
from ._ranking import BackboneRanking, rank_backbones, rank_correlation

__all__ = [
    "BackboneRanking",
    "EpisodeSplit",
    "FewShotResult",
    "evaluate_episodes",
    "rank_backbones",
    "rank_correlation",
]

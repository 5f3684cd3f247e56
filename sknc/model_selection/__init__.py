"""Episodic few-shot splitter, fast episode evaluation, backbone ranking."""

from ._episodes import EpisodeSplit
from ._fewshot import FewShotResult, evaluate_episodes
from ._ranking import BackboneRanking, rank_backbones

__all__ = [
    "BackboneRanking",
    "EpisodeSplit",
    "FewShotResult",
    "evaluate_episodes",
    "rank_backbones",
]

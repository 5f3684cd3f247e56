"""Class-level splits, episodic few-shot splitter, fast episode evaluation, backbone ranking.

Splits for transfer experiments (:func:`split_classes`, :func:`source_novel_split`,
:func:`subsample_per_class`) sit beside :class:`EpisodeSplit`, where scikit-learn's
splitters are; they were in :mod:`sknc.datasets` before 0.2 (deprecated aliases
remain there for one release).
"""

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
from ._splits import source_novel_split, split_classes, subsample_per_class

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
    "source_novel_split",
    "split_classes",
    "subsample_per_class",
]

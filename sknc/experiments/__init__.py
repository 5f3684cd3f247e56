"""End-to-end experiments behind the ``sknc`` command, callable from Python.

:func:`run_demo` is ``sknc demo``: the embedded default experiment testing
Galanti et al.'s and Li et al.'s claims on the glyph data, written to a
folder as ``results.json``, PNG figures and ``report.md``.
:func:`run_evaluate` is ``sknc evaluate``: collapse per block, linear-probe
and few-shot accuracy of a backbone's frozen features on an image folder.
:func:`run_rank` is ``sknc rank``: every transferability score of several
backbones on an image folder, optionally judged against a linear probe.
Both raise :class:`InputError` (a ``ValueError``) for what the user asked
wrongly (missing folder, empty class, unknown model), and
:class:`Interrupted` (a ``KeyboardInterrupt``) after Ctrl-C, leaving an
earlier report untouched.

The papers' protocols as functions: :func:`measure_checkpoints` (Galanti
et al.'s collapse and few-shot accuracy per checkpoint) and
:func:`compare_finetuning` (fine-tuning methods x data regimes x seeds).

The papers' claims and the one rule set that judges them (used by the
demo and by the real-data reproductions in ``benchmarks/``):
:data:`CLAIMS`, :func:`make_claim`, :func:`compare_over_seeds` and one
``verdict_*`` function per claim, each returning the claim schema
(``paper``, ``title``, ``claim``, ``status``, ``held``, ``verdict``).
"""

from ._common import InputError, Interrupted
from ._demo import PRESETS, run_demo
from ._evaluate import run_evaluate
from ._protocols import compare_finetuning, measure_checkpoints
from ._rank import run_rank
from ._verdicts import (
    CLAIMS,
    PEFT_BASELINES,
    STATUSES,
    compare_over_seeds,
    make_claim,
    verdict_auto_block,
    verdict_collapse_generalizes,
    verdict_collapse_predicts_transfer,
    verdict_fewshot_follows_cdnv,
    verdict_nc1_among_scores,
    verdict_peft_level_with_scl,
    verdict_scl_ft_collapse,
    verdict_scl_ft_efficient,
    verdict_source_training_helps,
)

__all__ = [
    "CLAIMS",
    "InputError",
    "Interrupted",
    "PEFT_BASELINES",
    "PRESETS",
    "STATUSES",
    "compare_finetuning",
    "compare_over_seeds",
    "make_claim",
    "measure_checkpoints",
    "run_demo",
    "run_evaluate",
    "run_rank",
    "verdict_auto_block",
    "verdict_collapse_generalizes",
    "verdict_collapse_predicts_transfer",
    "verdict_fewshot_follows_cdnv",
    "verdict_nc1_among_scores",
    "verdict_peft_level_with_scl",
    "verdict_scl_ft_collapse",
    "verdict_scl_ft_efficient",
    "verdict_source_training_helps",
]

"""End-to-end experiments behind the ``sknc`` command, callable from Python.

:func:`run_demo` is ``sknc demo``: the embedded default experiment testing
Galanti et al.'s and Li et al.'s claims on the glyph data, written to a
folder as ``results.json``, PNG figures and ``report.md``.
:func:`run_evaluate` is ``sknc evaluate``: collapse per block, linear-probe
and few-shot accuracy of a backbone's frozen features on an image folder.
:func:`run_rank` is ``sknc rank``: every transferability score of several
backbones on an image folder, optionally judged against a linear probe.
Both raise :class:`InputError` (a ``ValueError``) for what the user asked
wrongly (missing folder, empty class, unknown model).
"""

from ._common import InputError, Interrupted
from ._demo import PRESETS, run_demo
from ._evaluate import run_evaluate
from ._rank import run_rank

__all__ = ["InputError", "Interrupted", "PRESETS", "run_demo", "run_evaluate", "run_rank"]

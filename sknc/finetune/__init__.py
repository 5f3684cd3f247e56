"""Fine-tuning as scikit-learn estimators built on skorch.

Linear probe, Layer FT, SCL-FT (Li et al., TMLR 2024) and full fine-tuning
in one estimator, plus source pre-training with per-epoch checkpoints
(Galanti et al., ICLR 2022). The pure-torch network (:class:`FineTuneNet`)
lives apart from the estimators; it is imported (with torch) on first use.
"""

from ._callbacks import load_training_state
from ._estimator import FineTuningClassifier
from ._pretrain import pretrain_backbone

__all__ = ["FineTuneNet", "FineTuningClassifier", "load_training_state", "pretrain_backbone"]


def __getattr__(name):
    if name == "FineTuneNet":
        from ._modules import FineTuneNet

        return FineTuneNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

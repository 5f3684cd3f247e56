"""
======================================================
Which backbone will transfer? Every score side by side
======================================================

The field of *transferability estimation* ranks candidate feature
extractors for a downstream task without training a classifier on each:
LogME, H-score, NLEEP, TransRate, GBC, PARC, SFDA, PACTran, a k-NN
baseline, NCTI and ETran -- and Li et al.'s NC1. This example computes all
of them from **one** feature extraction per candidate with
:func:`sknc.model_selection.rank_backbones`, and judges each score by the
field's protocol: the weighted Kendall tau between the score's ranking and
the candidates' actual linear-probe accuracy, and the top-1 regret (the
accuracy lost by trusting the top-ranked candidate). A "prior" per
candidate -- here a plain guess from its number of features, the way
ImageNet top-1 accuracy is a prior for pretrained models -- is the baseline
every score has to beat.

So that the example runs in seconds the candidates are cheap feature maps
of the digits (PCA, random projections, kernel features) instead of
pretrained networks; with real backbones they are
:class:`~sknc.features.BackboneFeatures` objects (or use ``sknc rank`` on an
image folder).
"""

# %%
# One extraction per candidate, every score
# -----------------------------------------

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import Nystroem, RBFSampler
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.random_projection import GaussianRandomProjection

from sknc.model_selection import get_score_names, rank_backbones

X, y = load_digits(return_X_y=True)
X = X / 16.0

candidates = {
    "PCA 8": PCA(8, random_state=0),
    "PCA 16": PCA(16, random_state=0),
    "PCA 32": PCA(32, random_state=0),
    "pixels": FunctionTransformer(),
    "random projection 16": GaussianRandomProjection(16, random_state=0),
    "random projection 48": GaussianRandomProjection(48, random_state=0),
    "random Fourier 100": RBFSampler(gamma=0.02, n_components=100, random_state=0),
    "Nystroem 0.02": Nystroem(gamma=0.02, n_components=100, random_state=0),
    "Nystroem 0.1": Nystroem(gamma=0.1, n_components=100, random_state=0),
}
# the prior: "more features transfer better" -- a guess, like ImageNet top-1
width = {"PCA 8": 8, "PCA 16": 16, "PCA 32": 32, "pixels": 64, "random projection 16": 16}
width.update({"random projection 48": 48, "random Fourier 100": 100})
width.update({"Nystroem 0.02": 100, "Nystroem 0.1": 100})
prior = {name: float(np.log(width[name])) for name in candidates}

# NLEEP's mixture is slow; LEEP and NCE need a pretrained classifier head
scores = [s for s in get_score_names() if s not in ("nleep", "leep", "nce")]
ranking = rank_backbones(
    candidates,
    X,
    y,
    probe=make_pipeline(StandardScaler(), RidgeClassifier()),
    cv=3,
    scores=scores,
    prior=prior,
    rank_by="logme",
    random_state=0,
)
print(ranking)

# %%
# How well does each score rank the candidates?
# ---------------------------------------------
# Weighted Kendall tau (higher is better, 1 = the accuracy order) and top-1
# regret (lower is better) of every score, NC1 and CDNV included, against
# the measured linear-probe accuracy; the prior's values are the bar.

names = list(ranking.evaluation)
tau = np.array([ranking.evaluation[n]["weighted_tau"] for n in names])
regret = np.array([100 * ranking.evaluation[n]["top1_regret"] for n in names])
order = np.argsort(-tau)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
colors = ["tab:red" if names[i] == "prior" else "tab:blue" for i in order]
axes[0].barh([names[i] for i in order], tau[order], color=colors)
axes[0].invert_yaxis()
axes[0].set_xlabel("weighted Kendall tau vs linear-probe accuracy")
axes[1].barh([names[i] for i in order], regret[order], color=colors)
axes[1].invert_yaxis()
axes[1].set_xlabel("top-1 regret (accuracy points)")
fig.suptitle("Transferability scores on the digits (red: the prior baseline)")
plt.show()

# %%
# Reading the result
# ------------------
# The ranking a score gives is what matters, not its value; a score that
# does not beat the prior is not worth its cost on this pool. Pools, data
# sets and benchmarks change the order of the scores -- on the published
# SFDA benchmark, ranking ImageNet models by their ImageNet top-1 accuracy
# alone beats LogME -- so judge them on a pool like yours
# (:func:`sknc.model_selection.evaluate_rankings` does it over a table of
# data sets). The time each score took:

for name, seconds in sorted(ranking.score_time.items(), key=lambda kv: kv[1]):
    print(f"{name:18s} {seconds:7.3f} s")

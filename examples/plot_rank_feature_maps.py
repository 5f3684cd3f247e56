"""
==================================================
Ranking feature extractors by collapse (NC1)
==================================================

Li et al. (TMLR 2024) observe that, across pretrained models, the more the
frozen features collapse on the **downstream training data** (the lower
their NC1), the higher the accuracy of a linear probe trained on them. NC1
can therefore rank candidate backbones for a task without training a probe
on each.

:func:`sknc.model_selection.rank_backbones` runs that comparison for any
set of scikit-learn transformers. With real backbones the candidates are
:class:`~sknc.features.BackboneFeatures` objects; here, so that the example
runs in seconds, they are cheap feature maps of the digits (PCA, random
projections, random Fourier features, Nyström kernel features), and the
linear probe is a ridge classifier on standardised features.

The example also shows a pitfall: NC1 is only comparable between feature
spaces in which the class means can span all :math:`K - 1` directions of
their between-class subspace, i.e. with at least :math:`K - 1` features.
"""

# %%
# Rank the candidates
# -------------------
# ``rank_backbones`` transforms the training data once per candidate,
# computes NC1 and CDNV of the features, measures the probe's accuracy
# (here by 3-fold cross-validation) and sorts the candidates by NC1.

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.kernel_approximation import Nystroem, RBFSampler
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.random_projection import GaussianRandomProjection

from sknc.model_selection import rank_backbones

X, y = load_digits(return_X_y=True)
X = X / 16.0
n_classes = len(np.unique(y))

candidates = {
    "PCA 4": PCA(4, random_state=0),
    "PCA 8": PCA(8, random_state=0),
    "PCA 16": PCA(16, random_state=0),
    "PCA 32": PCA(32, random_state=0),
    "pixels": FunctionTransformer(),
    "random projection 16": GaussianRandomProjection(16, random_state=0),
    "random projection 32": GaussianRandomProjection(32, random_state=0),
    "random Fourier 100": RBFSampler(gamma=0.02, n_components=100, random_state=0),
    "Nystroem, gamma 0.02": Nystroem(gamma=0.02, n_components=100, random_state=0),
    "Nystroem, gamma 0.1": Nystroem(gamma=0.1, n_components=100, random_state=0),
}
probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
ranking = rank_backbones(candidates, X, y, probe=probe, cv=3, random_state=0)
print(ranking)

# %%
# The pitfall: fewer features than classes
# ----------------------------------------
# The 4-dimensional PCA comes out *first*, although its probe is the least
# accurate. NC1 measures the within-class variance only along the (at most
# :math:`d`) directions in which the class means differ, so with fewer than
# :math:`K - 1` features its value depends on how those few directions happen
# to be spread: the 4-dimensional PCA looks well collapsed although most
# classes overlap, the 8-dimensional one looks the least collapsed of all.
# Among the candidates with at least :math:`K - 1 = 9` features, lower NC1
# does go with higher accuracy. ``rank_backbones`` warns about this: its
# ``UserWarning`` above names the two narrow candidates.

table = ranking.table
names = [row["backbone"] for row in table]
nc1 = np.array([row["nc1"] for row in table])
accuracy = np.array([row["accuracy"] for row in table])
full = np.array([row["n_features"] >= n_classes - 1 for row in table])

rho_all = ranking.correlations["nc1"]["spearman"]
rho_full, _ = spearmanr(nc1[full], accuracy[full])
print(
    f"Spearman correlation of NC1 and accuracy, all candidates: {rho_all:.2f}; "
    f"candidates with d >= K - 1: {rho_full:.2f}"
)

fig, ax = plt.subplots(figsize=(8, 5))
ax.scatter(nc1[full], accuracy[full], s=50, label="d ≥ K - 1")
ax.scatter(nc1[~full], accuracy[~full], s=50, facecolors="none", edgecolors="C1", label="d < K - 1")
for k, (name, xi, ai) in enumerate(zip(names, nc1, accuracy)):
    # alternate label positions so that close points stay readable
    ax.annotate(
        name, (xi, ai), textcoords="offset points", xytext=(5, 4 if k % 2 else -11), fontsize=8
    )
ax.set_xscale("log")
ax.set_xlabel("NC1 on the training data (log scale, lower is more collapse)")
ax.set_ylabel("linear-probe accuracy (3-fold CV)")
ax.set_title(f"Spearman correlation: {rho_full:.2f} over d ≥ K - 1, {rho_all:.2f} over all")
ax.legend()
fig.tight_layout()
plt.show()

"""
======================================================
Few-shot transfer to novel classes follows their CDNV
======================================================

Galanti, György and Hutter (ICLR 2022) explain why features learned on many
*source* classes let a nearest-class-centre (NCC) classifier learn *novel*
classes from one or five examples: if the features of the novel classes are
collapsed (a small class-distance normalised variance, CDNV), a few samples
locate each class centre well enough.

This example runs their protocol on the glyph dataset of
:func:`sknc.datasets.load_glyphs` (170 characters, each drawn by 15 to 23
typefaces) with linear feature maps cheap enough to fit in a second, instead
of a deep network:

1. split the characters into 120 source and 50 novel classes, and hold out a
   quarter of the typefaces of the source classes;
2. learn feature maps on the source-train glyphs only: PCA, and linear
   discriminant analysis (LDA) with several amounts of shrinkage;
3. measure the CDNV on source-train glyphs, on source glyphs by held-out
   typefaces, and on novel glyphs;
4. evaluate 5-way 1-shot and 5-shot NCC episodes on the novel classes.

Steps 2 to 4 are :func:`sknc.experiments.measure_checkpoints`, the protocol
``sknc demo`` runs on every epoch of a network's training.

The glyphs are rendered from matplotlib's fonts on first use (a few seconds)
and cached.
"""

# %%
# Source and novel classes
# ------------------------

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sknc.datasets import load_glyphs
from sknc.experiments import measure_checkpoints
from sknc.metrics import NCNotComparableWarning
from sknc.model_selection import source_novel_split

glyphs = load_glyphs(size=32)
X = glyphs.data / 255.0  # flattened 32 x 32 pixels
y = glyphs.target
split = source_novel_split(y, groups=glyphs.typeface, n_novel=50, test_size=0.25, random_state=0)
print(
    f"{len(split.source_classes)} source classes: {len(split.source_train)} training "
    f"glyphs, {len(split.source_test)} glyphs by held-out typefaces; "
    f"{len(split.novel_classes)} novel classes: {len(split.novel)} glyphs"
)
print("held-out typefaces:", ", ".join(split.test_groups))

# %%
# Feature maps learned on the source classes
# ------------------------------------------
# LDA is the linear map that minimises within-class scatter relative to
# between-class scatter on its training data: it *induces* variability
# collapse on the source classes. On the 1,024 raw pixels, with about 15
# glyphs per class, it can collapse the source-train glyphs almost
# perfectly, which is overfitting. On 100 PCA components, and more so with
# its within-class covariance shrunk towards a multiple of the identity, it
# learns directions that also separate characters it never saw.

features = {
    "pixels": FunctionTransformer(),
    "PCA": PCA(100, random_state=0),
    "LDA on pixels": LinearDiscriminantAnalysis(solver="eigen", shrinkage=1e-4, n_components=40),
    "LDA": make_pipeline(PCA(100, random_state=0), LinearDiscriminantAnalysis(n_components=40)),
}
for shrinkage in (0.1, 0.5, 0.9):
    features[f"LDA, shrinkage {shrinkage}"] = make_pipeline(
        PCA(100, random_state=0),
        LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage, n_components=40),
    )

# %%
# CDNV and few-shot accuracy
# --------------------------
# :func:`~sknc.experiments.measure_checkpoints` runs Galanti et al.'s
# protocol on each feature map, as it would on each checkpoint of a
# network: it fits the map on the source-train glyphs, measures the CDNV of
# the three parts and evaluates 600 5-way episodes on the novel classes
# (:func:`~sknc.model_selection.evaluate_episodes`); with the same
# ``random_state`` every feature map sees the same episodes.

with warnings.catch_warnings():
    # NC1 of 40 LDA directions for 120 classes is not comparable with that of
    # wider features (sknc warns); this example reads only the CDNV
    warnings.simplefilter("ignore", NCNotComparableWarning)
    res = measure_checkpoints(
        features, X, y, split, shots=(1, 5), n_query=10, n_episodes=600, random_state=0
    )
parts = ["source_train", "source_test", "novel"]
names = res["checkpoints"]
cdnv = {part: res["collapse"][part]["cdnv"] for part in parts}
shots = res["few_shot"]["shots"]
for i, name in enumerate(names):
    print(
        f"{name:<20} CDNV source-train {cdnv['source_train'][i]:.2f}, held-out typefaces "
        f"{cdnv['source_test'][i]:.2f}, novel {cdnv['novel'][i]:.2f} | 5-way 1-shot "
        f"{shots['1']['mean'][i]:.1%} ± {shots['1']['ci95'][i]:.1%}, 5-shot "
        f"{shots['5']['mean'][i]:.1%} ± {shots['5']['ci95'][i]:.1%}"
    )

# %%
# Collapse on the three parts
# ---------------------------
# LDA on raw pixels collapses the source-train glyphs the most, and the
# novel classes the least. The other maps collapse the three parts more
# evenly. (The held-out typefaces have about four glyphs per class, against
# about fifteen in training; the CDNV of small classes is biased low, since
# their variances are underestimated, so compare bars of the same colour.)

width = 0.27
positions = np.arange(len(names))
labels = {
    "source_train": "source classes, training typefaces",
    "source_test": "source classes, held-out typefaces",
    "novel": "novel classes",
}
fig, ax = plt.subplots(figsize=(10, 4))
for k, part in enumerate(parts):
    ax.bar(positions + (k - 1) * width, cdnv[part], width, label=labels[part])
ax.set_xticks(positions, names, rotation=15)
ax.set_ylabel("CDNV (lower is more collapse)")
ax.legend()
fig.tight_layout()

# %%
# Few-shot accuracy against collapse
# ----------------------------------
# Across feature maps, NCC accuracy on the novel classes falls as their CDNV
# rises (left), as Galanti et al.'s analysis predicts. Collapse on the
# source-train glyphs (right) is no such guide: the map that collapses them
# most transfers worst. Error bars are 95% confidence intervals over 600
# episodes.

fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
for ax, part in zip(axes, ["novel", "source_train"]):
    for n_shot, marker in [("1", "o"), ("5", "s")]:
        x, acc = cdnv[part], shots[n_shot]["mean"]
        err = shots[n_shot]["ci95"]
        ax.errorbar(x, acc, yerr=err, fmt=marker, capsize=3, label=f"5-way {n_shot}-shot")
        if n_shot == "1":
            for xi, ai, n in zip(x, acc, names):
                ax.annotate(n, (xi, ai), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"CDNV, {labels[part]} (log scale)")
axes[0].set_ylabel("NCC accuracy on novel classes")
axes[0].legend()
fig.tight_layout()
plt.show()

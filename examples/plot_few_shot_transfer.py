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

The glyphs are rendered from matplotlib's fonts on first use (a few seconds)
and cached.
"""

# %%
# Source and novel classes
# ------------------------

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from sknc.datasets import load_glyphs
from sknc.metrics import cdnv
from sknc.model_selection import EpisodeSplit, evaluate_episodes, source_novel_split

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

pca = PCA(100, random_state=0).fit(X[split.source_train])
P = pca.transform(X)

features = {"pixels": X, "PCA": P}
lda_pixels = LinearDiscriminantAnalysis(solver="eigen", shrinkage=1e-4, n_components=40)
features["LDA on pixels"] = lda_pixels.fit(X[split.source_train], y[split.source_train]).transform(
    X
)
lda_variants = {"LDA": LinearDiscriminantAnalysis(n_components=40)}
for shrinkage in (0.1, 0.5, 0.9):
    lda_variants[f"LDA, shrinkage {shrinkage}"] = LinearDiscriminantAnalysis(
        solver="eigen", shrinkage=shrinkage, n_components=40
    )
for name, lda in lda_variants.items():
    # on the PCA components
    features[name] = lda.fit(P[split.source_train], y[split.source_train]).transform(P)

# %%
# CDNV and few-shot accuracy
# --------------------------
# :func:`~sknc.model_selection.evaluate_episodes` evaluates the 600 episodes
# of an :class:`~sknc.model_selection.EpisodeSplit` at once; with the same
# ``random_state`` every feature map sees the same episodes.

parts = ["source_train", "source_test", "novel"]
results = {}
for name, Z in features.items():
    row = {part: cdnv(Z[split[part]], y[split[part]]) for part in parts}
    for n_shot in (1, 5):
        episodes = EpisodeSplit(
            n_way=5,
            n_shot=n_shot,
            n_query=10,
            n_episodes=600,
            classes=split.novel_classes,
            random_state=0,
        )
        row[n_shot] = evaluate_episodes(Z, y, episodes, return_cdnv=False)
    results[name] = row
    print(
        f"{name:<20} CDNV source-train {row['source_train']:.2f}, held-out typefaces "
        f"{row['source_test']:.2f}, novel {row['novel']:.2f} | 5-way 1-shot "
        f"{row[1].mean:.1%} ± {row[1].ci95:.1%}, 5-shot {row[5].mean:.1%} ± "
        f"{row[5].ci95:.1%}"
    )

# %%
# Collapse on the three parts
# ---------------------------
# LDA on raw pixels collapses the source-train glyphs the most, and the
# novel classes the least. The other maps collapse the three parts more
# evenly. (The held-out typefaces have about four glyphs per class, against
# about fifteen in training; the CDNV of small classes is biased low, since
# their variances are underestimated, so compare bars of the same colour.)

names = list(results)
width = 0.27
positions = np.arange(len(names))
labels = {
    "source_train": "source classes, training typefaces",
    "source_test": "source classes, held-out typefaces",
    "novel": "novel classes",
}
fig, ax = plt.subplots(figsize=(10, 4))
for k, part in enumerate(parts):
    ax.bar(
        positions + (k - 1) * width, [results[n][part] for n in names], width, label=labels[part]
    )
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
    for n_shot, marker in [(1, "o"), (5, "s")]:
        x = [results[n][part] for n in names]
        acc = [results[n][n_shot].mean for n in names]
        err = [results[n][n_shot].ci95 for n in names]
        ax.errorbar(x, acc, yerr=err, fmt=marker, capsize=3, label=f"5-way {n_shot}-shot")
        if n_shot == 1:
            for xi, ai, n in zip(x, acc, names):
                ax.annotate(n, (xi, ai), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"CDNV, {labels[part]} (log scale)")
axes[0].set_ylabel("NCC accuracy on novel classes")
axes[0].legend()
fig.tight_layout()
plt.show()

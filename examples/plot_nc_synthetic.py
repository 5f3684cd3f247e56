"""
=====================================================
Neural-collapse metrics from scattered to collapsed
=====================================================

This example builds synthetic features whose geometry moves, step by step,
from an uncollapsed state to the neural-collapse state described by Papyan,
Han and Donoho (2020), and follows every metric of :mod:`sknc.metrics` along
the way:

* the class means move from random positions to the vertices of a simplex
  equiangular tight frame (ETF): NC2, equinorm and equiangularity go to 0;
* the within-class spread shrinks: NC1 and CDNV go to 0;
* a logistic regression trained on the features becomes aligned with the
  centred class means (NC3) and agrees with the nearest-class-mean rule
  (NC4).

Everything runs in well under a second.
"""

# %%
# Features along a path to collapse
# ---------------------------------
# ``t = 0`` is the scattered start, ``t = 1`` the collapsed end. The class
# means interpolate between random Gaussian means and a scaled simplex ETF
# (K unit vectors with pairwise cosines ``-1/(K-1)``). The within-class noise
# has an anisotropic covariance, the same for every class, and its scale
# shrinks geometrically from 4 to 0.01.

import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from sknc.metrics import collapse_report

n_classes, n_features, n_per_class = 6, 16, 60
rng = np.random.default_rng(0)

# a simplex ETF: the centred standard basis of R^K, embedded in R^d
etf = np.eye(n_classes) - 1.0 / n_classes
etf /= np.linalg.norm(etf, axis=1, keepdims=True)
basis, _ = np.linalg.qr(rng.normal(size=(n_features, n_classes)))
etf_means = 4.0 * etf @ basis.T  # (K, d), pairwise cosines -1/(K-1)
random_means = rng.normal(scale=1.5, size=(n_classes, n_features))
mixing = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
mixing *= np.geomspace(3.0, 0.1, n_features)[:, None]  # anisotropic noise
noise = rng.normal(size=(n_classes * n_per_class, n_features)) @ mixing
y = np.repeat(np.arange(n_classes), n_per_class)


def features_at(t):
    """Features at position t in [0, 1] along the path to collapse."""
    means = (1 - t) * random_means + t * etf_means
    spread = 4.0 * (0.01 / 4.0) ** t
    return means[y] + spread * noise


# %%
# What the features look like
# ---------------------------
# A two-dimensional PCA view of three points of the path. Crosses mark the
# class means.

fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, t in zip(axes, [0.0, 0.6, 1.0]):
    X = features_at(t)
    pca = PCA(n_components=2).fit(X)
    Z = pca.transform(X)
    ax.scatter(Z[:, 0], Z[:, 1], c=y, s=6, cmap="tab10", vmax=9, alpha=0.6)
    centres = pca.transform(np.array([X[y == c].mean(0) for c in range(n_classes)]))
    ax.scatter(
        centres[:, 0],
        centres[:, 1],
        c=np.arange(n_classes),
        cmap="tab10",
        vmax=9,
        marker="X",
        s=120,
        edgecolor="k",
    )
    ax.set_title(f"t = {t:.1f}")
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("Features on the path to neural collapse (PCA view)")
fig.tight_layout()

# %%
# Every metric at every step
# --------------------------
# :func:`~sknc.metrics.collapse_report` computes all metrics in two passes
# over the data. With the weights and intercepts of a linear classifier it
# adds NC3 (self-duality) and NC4 (agreement with the nearest class mean).

ts = np.linspace(0.0, 1.0, 11)
rows = []
for t in ts:
    X = features_at(t)
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(X, y)
    report = collapse_report(X, y, clf.coef_, clf.intercept_)
    rows.append(report.as_dict())

print(report)

# %%
# All metrics decrease towards 0 (lower is more collapse). NC1 and CDNV
# follow the shrinking within-class spread; NC2, equinorm, equiangularity and
# NC3 only reach 0 once the means themselves form the simplex. NC4, the share
# of samples on which the logistic regression and the nearest class mean
# disagree, drops to exactly 0 early, which a log scale cannot show, so it
# gets its own panel: with anisotropic noise the best linear classifier
# differs from the nearest-mean rule until the spread is small.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for name, style in [
    ("nc1", "o-"),
    ("cdnv", "s-"),
    ("nc2", "^-"),
    ("nc3", "v-"),
    ("equinorm", "--"),
    ("equiangularity", ":"),
]:
    ax1.semilogy(ts, [r[name] for r in rows], style, label=name)
ax1.set_xlabel("t (0: scattered, 1: collapsed)")
ax1.set_ylabel("metric (log scale)")
ax1.legend(ncol=2, fontsize="small")
ax1.set_title("NC1-NC3, CDNV and the NC2 components")
ax2.plot(ts, [r["nc4"] for r in rows], "o-", color="C5")
ax2.set_xlabel("t (0: scattered, 1: collapsed)")
ax2.set_ylabel("share of samples")
ax2.set_title("NC4: linear head vs nearest class mean")
fig.tight_layout()

# %%
# The same numbers from mergeable statistics
# ------------------------------------------
# :class:`~sknc.metrics.NCStatistics` accumulates per-class counts, sums and
# the within-class scatter batch by batch (and merges across workers), so the
# metrics of data that do not fit in memory come out identical.

from sknc.metrics import NCStatistics, nc1

X = features_at(0.3)
stats = NCStatistics()
for batch in np.array_split(np.arange(len(y)), 7):
    stats.update(X[batch], y[batch])
print(f"streamed NC1 {stats.nc1():.6f}, in-memory NC1 {nc1(X, y):.6f}")

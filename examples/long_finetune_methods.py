"""
=========================================================
Linear probe, Layer FT, SCL-FT and full FT on scarce data
=========================================================

Li et al. (TMLR 2024) fine-tune a pretrained network on a downstream task
with few labelled images and compare four methods: a linear probe, tuning
one block (Layer FT), tuning one block with a skip connection to the
penultimate features (SCL-FT), and full fine-tuning. This example runs the
comparison with :class:`sknc.finetune.FineTuningClassifier` on real data:

* backbone: torchvision's ImageNet-1k MobileNetV2, loaded as a timm model by
  :func:`sknc.datasets.load_pretrained_backbone`;
* downstream task: Fashion-MNIST with 20 training images per class, tested
  on 2,000 images of the official test set.

For each method it reports test accuracy, trained parameters, training time
and the NC1 of the head's input features on the training and the test
images (lower is more collapse).

.. note::

   This is a *long* example: it is not run when the documentation is built
   normally, but with ``SKNC_DOCS_EXECUTE_ALL=1`` before a release of numbers.
   It needs the data fetched by ``python benchmarks/fetch_data.py`` (point
   ``SKNC_DATA`` at its data folder, by default ``benchmarks/data``) and
   takes 10 to 15 minutes on a 2-core CPU (a few on a GPU).
"""

# %%
# Data and backbone
# -----------------
# Images are resized to 128 x 128 pixels (instead of MobileNetV2's native
# 224) to keep the CPU time reasonable.

import os

import matplotlib.pyplot as plt
import numpy as np

from sknc.datasets import (
    load_fashion_mnist,
    load_pretrained_backbone,
    subsample_per_class,
)
from sknc.finetune import FineTuningClassifier
from sknc.metrics import nc1
from sknc.plotting import plot_finetune_comparison

data_home = os.environ.get("SKNC_DATA", os.path.join("..", "benchmarks", "data"))
backbone, data_config = load_pretrained_backbone("mobilenetv2_100", data_home=data_home)

train = load_fashion_mnist(data_home=data_home, subset="train")
test = load_fashion_mnist(data_home=data_home, subset="test")
keep = subsample_per_class(train.target, n_per_class=20, random_state=0)
X_train, y_train = train.images[keep], train.target[keep]
rng = np.random.default_rng(0)
test_idx = rng.choice(len(test.target), size=2000, replace=False)
X_test, y_test = test.images[test_idx], test.target[test_idx]
print(
    f"{len(y_train)} training images, {len(y_test)} test images, {len(train.target_names)} classes"
)

# %%
# Four methods, one estimator
# ---------------------------
# Every method starts from the same ImageNet weights (the module is
# deep-copied at each fit) and gets the same new head. Full fine-tuning
# updates every weight and uses a smaller learning rate, as is usual; the
# others train a few percent of the weights at ``lr=1e-3``. Without
# augmentation the frozen part before the tuned block is computed once and
# cached (``prefix_cached_``).

methods = ["linear-probe", "layer-ft", "scl-ft", "full-ft"]
rows = []
for method in methods:
    clf = FineTuningClassifier(
        backbone,
        method=method,
        max_epochs=15,
        batch_size=32,
        lr=3e-4 if method == "full-ft" else 1e-3,
        input_size=128,
        random_state=0,
    ).fit(X_train, y_train)
    rows.append(
        {
            "method": method,
            "tuned block": clf.tuned_block_,
            "accuracy": clf.score(X_test, y_test),
            "trainable": clf.n_trainable_params_,
            "fraction": clf.trainable_fraction_,
            "seconds": clf.fit_time_,
            "cached": clf.prefix_cached_,
            "train NC1": clf.train_nc1_,
            "test NC1": nc1(clf.transform(X_test), y_test),
        }
    )
    row = rows[-1]
    print(
        f"{method:<13} accuracy {row['accuracy']:.1%}  trained {row['fraction']:.2%} of "
        f"{clf.n_params_:,} parameters  {row['seconds']:.0f} s  (prefix cached: "
        f"{row['cached']})  NC1 train {row['train NC1']:.3f}, test {row['test NC1']:.3f}"
    )

# %%
# Accuracy, size and time
# -----------------------

fig = plot_finetune_comparison(
    methods,
    [r["accuracy"] for r in rows],
    [r["trainable"] for r in rows],
    [r["seconds"] for r in rows],
)

# %%
# Collapse of the head's input features
# -------------------------------------
# Li et al. find that the methods that transfer best make the features the
# head sees collapse more on the downstream data; SCL-FT is designed to do
# so while training few parameters.

fig, ax = plt.subplots(figsize=(6, 4))
positions = np.arange(len(methods))
ax.bar(positions - 0.2, [r["train NC1"] for r in rows], 0.4, label="training images")
ax.bar(positions + 0.2, [r["test NC1"] for r in rows], 0.4, label="test images")
ax.set_xticks(positions, methods)
ax.set_yscale("log")
ax.set_ylabel("NC1 of the head's input (log scale)")
ax.legend()
fig.tight_layout()
plt.show()

"""
==============================================
Collapse layer by layer in a ResNet
==============================================

Neural collapse is usually measured on the penultimate features, but the
same metrics can be computed on the output of every block of a network.
:class:`~sknc.features.BackboneFeatures` taps several layers in **one forward
pass** (``layers=[...]``), and :meth:`~sknc.features.BackboneFeatures.transform_layers`
returns one feature matrix per layer.

Here a small timm ResNet looks at scikit-learn's handwritten digits (upscaled
to 32 x 32 pixels), once with random weights and once after two epochs of
training on 500 digits with :func:`~sknc.finetune.pretrain_backbone`. NC1
and CDNV are measured after each stage, on the training digits and on 600
held-out digits.

Training runs on the CPU in about ten seconds.
"""

# %%
# Data and layers
# ---------------

import tempfile

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from sknc.datasets import load_digits_images
from sknc.features import BackboneFeatures, list_layers
from sknc.finetune import pretrain_backbone
from sknc.metrics import cdnv, nc1

images, y = load_digits_images(size=32, return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    images, y, train_size=500, test_size=600, stratify=y, random_state=0
)

model = "resnet10t"
# timm initialises the last BatchNorm of every residual block to zero, which
# makes the blocks of a *random* ResNet identity maps; turn that off so that
# the random network is a fair baseline.
model_kwargs = {"zero_init_last": False}
layers = list_layers(model)
print(layers)

# %%
# Random weights
# --------------
# One forward pass gives the features of every stage; ``random_state`` fixes
# the random initialisation.


def per_layer_metrics(extractor):
    rows = {}
    for part, X, labels in [("train", X_train, y_train), ("test", X_test, y_test)]:
        blocks = extractor.transform_layers(X)
        rows[part] = {
            "nc1": [nc1(blocks[name], labels) for name in layers],
            "cdnv": [cdnv(blocks[name], labels) for name in layers],
        }
    return rows


random_net = BackboneFeatures(
    model, layers=layers, input_size=32, model_kwargs=model_kwargs, random_state=0
).fit(X_train)
print({name: block.shape[1] for name, block in random_net.transform_layers(X_test[:1]).items()})
random_metrics = per_layer_metrics(random_net)

# %%
# Two epochs of training
# ----------------------
# :func:`~sknc.finetune.pretrain_backbone` trains the same architecture as a
# plain classifier and writes a checkpoint after every epoch; the last one
# is loaded into the feature extractor with ``weights=`` (the classifier head
# it contains is ignored).

with tempfile.TemporaryDirectory() as checkpoints:
    trained = pretrain_backbone(
        model,
        X_train,
        y_train,
        max_epochs=2,
        input_size=32,
        model_kwargs=model_kwargs,
        checkpoint_dir=checkpoints,
        random_state=0,
    )
    print("training loss per epoch:", np.round(trained.history_[:, "train_loss"], 3))
    trained_net = BackboneFeatures(
        model,
        weights=trained.checkpoints_[-1],
        layers=layers,
        input_size=32,
        model_kwargs=model_kwargs,
    ).fit(X_train)
    trained_metrics = per_layer_metrics(trained_net)

# %%
# Collapse through the network
# ----------------------------
# Lower is more collapse. With random weights the features already separate
# the digits better with depth. Training makes the deeper stages collapse
# much further, on the training digits and, to a lesser degree, on the
# held-out ones: the gap between the solid and dashed red lines is the part
# of the collapse that does not generalise.

fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
positions = np.arange(len(layers))
for ax, metric in zip(axes, ["nc1", "cdnv"]):
    for metrics, colour, label in [
        (random_metrics, "C0", "random weights"),
        (trained_metrics, "C3", "trained 2 epochs"),
    ]:
        ax.semilogy(
            positions,
            metrics["train"][metric],
            "o-",
            color=colour,
            label=f"{label}, training digits",
        )
        ax.semilogy(
            positions,
            metrics["test"][metric],
            "s--",
            color=colour,
            label=f"{label}, held-out digits",
        )
    ax.set_xticks(positions, layers)
    ax.set_xlabel("layer")
    ax.set_title(metric.upper())
axes[0].set_ylabel("metric (log scale)")
axes[1].legend(fontsize="small")
fig.tight_layout()
plt.show()

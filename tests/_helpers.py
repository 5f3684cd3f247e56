"""Small models shared by the test modules (imported as ``_helpers``; not a test file).

The per-module setting of one torch thread lives in ``conftest.py`` as an
autouse fixture.
"""

import importlib.util
import os

from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A vision transformer small enough for unit tests: timm's ViT-Tiny layout at
# 32 x 32 pixels, 8 x 8 patches, three blocks of width 48.
VIT_KW = dict(img_size=32, patch_size=8, depth=3, embed_dim=48, num_heads=2)

# timm's ImageNet preprocessing at 32 x 32 pixels (resize, centre crop, normalise)
CONFIG_32 = {
    "input_size": (3, 32, 32),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    "crop_mode": "center",
}


class TinyNet(nn.Module):
    """A two-convolution classifier: conv, act, block, pool, flat, fc (the head)."""

    def __init__(self, in_chans=3, width=8, n_classes=5):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.block(self.act(self.conv(x))))))


def load_benchmark(filename):
    """A fresh module object of ``benchmarks/<filename>`` (the benchmarks are not a package)."""
    name = f"{os.path.splitext(filename)[0]}_under_test"
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

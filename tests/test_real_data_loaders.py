"""Tests for the loaders of fetched real data (IDX, emoji, pretrained weights).

The fast tests write tiny synthetic files; the tests that need the files of
``benchmarks/fetch_data.py`` (in ``$SKNC_DATA`` or ``benchmarks/data``) are
marked slow and skipped when the files are absent.
"""

import gzip
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sknc.datasets import (
    load_emoji,
    load_fashion_mnist,
    load_pretrained_backbone,
    read_idx,
)
from sknc.features import convert_efficientnet_lite, convert_torchvision_mobilenet_v2

REAL_DATA = Path(
    os.environ.get("SKNC_DATA") or Path(__file__).resolve().parents[1] / "benchmarks" / "data"
)

# --------------------------------------------------------------------------- IDX


def _write_idx(path, array, code):
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    big = array.astype(array.dtype.newbyteorder(">"))
    blob = header + big.tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(blob)


@pytest.mark.parametrize(
    "dtype, code, suffix",
    [
        (np.uint8, 0x08, ".gz"),
        (np.int32, 0x0C, ""),
        (np.float32, 0x0D, ".gz"),
        (np.int16, 0x0B, ""),
    ],
)
def test_read_idx_roundtrip(tmp_path, dtype, code, suffix):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / f"x-idx3{suffix}"
    _write_idx(path, array, code)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert np.array_equal(out, array)


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    good = tmp_path / "trunc.gz"
    _write_idx(good, np.arange(10, dtype=np.uint8), 0x08)
    raw = gzip.open(good).read()
    with gzip.open(good, "wb") as fh:
        fh.write(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(good)
    notgz = tmp_path / "plain.gz"
    notgz.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(notgz)


def _fake_fashion(folder, n_train=5, n_test=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    parts = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(folder / f"{part}-images-idx3-ubyte.gz", x, 0x08)
        _write_idx(folder / f"{part}-labels-idx1-ubyte.gz", y, 0x08)
        parts[part] = (x, y)
    return parts


def test_load_fashion_mnist_synthetic(tmp_path):
    parts = _fake_fashion(tmp_path / "fashion-mnist")
    train = load_fashion_mnist(data_home=tmp_path)
    assert np.array_equal(train.images, parts["train"][0])
    assert np.array_equal(train.target, parts["train"][1])
    assert train.target.dtype == np.int64 and train.data.shape == (5, 784)
    assert train.target_names[9] == "Ankle boot"
    X, y = load_fashion_mnist(tmp_path / "fashion-mnist", subset="all", return_X_y=True)
    assert X.shape == (8, 28, 28) and np.array_equal(X[5:], parts["t10k"][0])
    with pytest.raises(ValueError, match="subset"):
        load_fashion_mnist(tmp_path / "fashion-mnist", subset="validation")


def test_load_fashion_mnist_missing_and_mismatched(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch_data.py"):
        load_fashion_mnist(tmp_path / "nowhere")
    folder = tmp_path / "fm"
    _fake_fashion(folder)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), 0x08)
    with pytest.raises(ValueError, match="do not match"):
        load_fashion_mnist(folder)


# --------------------------------------------------------------------------- emoji


def _fake_emoji(root):
    """3 emoji; vendor 'google' draws all, 'twitter' two, 'openmoji' one (all different)."""
    meta = [
        {
            "unified": "1F600",
            "image": "1f600.png",
            "name": "GRINNING FACE",
            "sort_order": 1,
            "category": "Smileys & Emotion",
            "subcategory": "face-smiling",
        },
        {
            "unified": "1F34C",
            "image": "1f34c.png",
            "name": "BANANA",
            "sort_order": 3,
            "category": "Food & Drink",
            "subcategory": "food-fruit",
        },
        {
            "unified": "2764-FE0F",
            "image": "2764-fe0f.png",
            "name": "RED HEART",
            "sort_order": 2,
            "category": "Smileys & Emotion",
            "subcategory": "heart",
        },
    ]
    root.mkdir(parents=True)
    (root / "emoji.json").write_text(json.dumps(meta))
    colours = {
        "google": (255, 0, 0, 255),
        "twitter": (0, 0, 255, 128),
        "openmoji": (0, 255, 0, 255),
    }
    drawn = {
        "google": ["1f600", "1f34c", "2764-fe0f"],
        "twitter": ["1f600", "2764-fe0f"],
        "openmoji": ["1f34c"],
    }
    shift = {"1f600": 0, "1f34c": 2, "2764-fe0f": 4}  # no two drawings of a vendor coincide
    for vendor, codes in drawn.items():
        (root / vendor).mkdir()
        for code in codes:
            im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # transparent background
            im.paste(Image.new("RGBA", (32, 32), colours[vendor]), (16 + shift[code], 16))
            im.save(root / vendor / f"{code}.png")
    (root / "_cache").mkdir()  # folders starting with '_' or '.' are not vendors
    return meta


def test_load_emoji_join_by_code_point(tmp_path):
    _fake_emoji(tmp_path / "emoji")
    e = load_emoji(data_home=tmp_path, min_vendors=2)
    # ordered by sort_order; BANANA is drawn by google + openmoji
    assert list(e.target_names) == ["GRINNING FACE", "RED HEART", "BANANA"]
    assert list(e.emoji) == ["\U0001f600", "\u2764\ufe0f", "\U0001f34c"]
    assert list(e.unified) == ["1F600", "2764-FE0F", "1F34C"]
    assert list(e.target) == [0, 0, 1, 1, 2, 2]
    assert list(e.vendor) == ["google", "twitter", "google", "twitter", "google", "openmoji"]
    assert list(e.category) == ["Smileys & Emotion"] * 4 + ["Food & Drink"] * 2
    assert e.subcategory[-1] == "food-fruit"
    assert e.images.shape == (6, 64, 64, 3) and e.images.dtype == np.uint8
    # transparent -> white; opaque red stays red; half-transparent blue is blended on white
    assert tuple(e.images[0, 0, 0]) == (255, 255, 255)
    assert tuple(e.images[0, 32, 32]) == (255, 0, 0)
    r, g, b = e.images[1, 32, 32]
    assert b == 255 and 120 <= r <= 135 and r == g


def test_load_emoji_options_and_errors(tmp_path):
    _fake_emoji(tmp_path / "emoji")
    path = tmp_path / "emoji"
    e3 = load_emoji(path, min_vendors=1, vendors=["openmoji", "google"], size=16)
    assert list(e3.target_names) == ["GRINNING FACE", "RED HEART", "BANANA"]
    assert e3.images.shape == (4, 16, 16, 3)
    assert list(e3.vendor) == ["google", "google", "openmoji", "google"]  # vendors in given order
    X, y = load_emoji(path, min_vendors=2, return_X_y=True, size=16)
    assert X.shape == (6, 16, 16, 3) and len(y) == 6
    with pytest.raises(ValueError, match="apple"):
        load_emoji(path, vendors=["apple"])
    with pytest.raises(ValueError, match="min_vendors=4"):
        load_emoji(path, min_vendors=4)
    with pytest.raises(ValueError, match="no emoji"):
        load_emoji(path, vendors=["twitter", "openmoji"], min_vendors=2)
    with pytest.raises(FileNotFoundError, match="fetch_data.py"):
        load_emoji(tmp_path / "nothing")


def _fake_emoji_with_duplicates(root):
    """5 emoji; some vendors draw two of them with the very same image.

    google: A and B identical; twitter: B and C identical (so A, B, C are one
    group); openmoji draws D exactly like google draws E, which links nothing
    (different vendors). Returns the meta entries in emoji order.
    """
    names = ["A", "B", "C", "D", "E"]
    meta = [
        {
            "unified": f"1F60{i}",
            "image": f"1f60{i}.png",
            "name": n,
            "sort_order": i,
            "category": "cat" + n,
            "subcategory": "sub" + n,
        }
        for i, n in enumerate(names)
    ]
    root.mkdir(parents=True)
    (root / "emoji.json").write_text(json.dumps(meta))

    def square(value, at):
        im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        im.paste(Image.new("RGBA", (20, 20), value), (at, at))
        return im

    drawings = {  # vendor -> emoji -> (colour, offset)
        "google": {
            "A": ((255, 0, 0, 255), 5),
            "B": ((255, 0, 0, 255), 5),
            "C": ((0, 0, 255, 255), 9),
            "D": ((9, 9, 9, 255), 3),
            "E": ((7, 7, 7, 255), 30),
        },
        "twitter": {
            "A": ((1, 2, 3, 255), 5),
            "B": ((0, 255, 0, 255), 7),
            "C": ((0, 255, 0, 255), 7),
            "D": ((50, 50, 50, 255), 4),
            "E": ((60, 60, 60, 255), 4),
        },
        "openmoji": {"B": ((100, 0, 0, 255), 11), "D": ((7, 7, 7, 255), 30)},
    }
    for vendor, drawn in drawings.items():
        (root / vendor).mkdir()
        for name, (colour, at) in drawn.items():
            square(colour, at).save(root / vendor / f"1f60{names.index(name)}.png")
    return meta


def test_load_emoji_dedupe(tmp_path):
    path = tmp_path / "emoji"
    _fake_emoji_with_duplicates(path)
    full = load_emoji(path, dedupe=False)
    assert list(full.target_names) == ["A", "B", "C", "D", "E"]
    assert full.duplicates_dropped == [] and "kept (dedupe=False)" in full.DESCR
    assert np.array_equal(np.bincount(full.target), [2, 3, 2, 3, 2])
    e = load_emoji(path)  # dedupe=True is the default
    assert list(e.target_names) == ["A", "D", "E"]
    assert e.duplicates_dropped == ["B", "C"]
    assert "2 emoji drawn by some vendor exactly like another emoji were dropped" in e.DESCR
    # the kept emoji keep all of their own samples, target is re-encoded 0 .. 2
    keep = np.isin(full.target, [0, 3, 4])
    assert np.array_equal(e.images, full.images[keep])
    assert np.array_equal(e.target, np.searchsorted([0, 3, 4], full.target[keep]))
    assert e.target.dtype == np.int64
    for key in ("vendor", "category", "subcategory"):
        assert np.array_equal(e[key], full[key][keep]), key
    assert list(e.unified) == ["1F600", "1F603", "1F604"]
    assert list(e.emoji) == ["\U0001f600", "\U0001f603", "\U0001f604"]
    assert list(e.category[e.target == 1]) == ["catD"] * 3
    X, y = load_emoji(path, return_X_y=True)
    assert np.array_equal(X, e.images) and np.array_equal(y, e.target)
    # every vendor's drawings of the kept emoji differ now
    for v in np.unique(e.vendor):
        flat = e.images[e.vendor == v].reshape(int(np.sum(e.vendor == v)), -1)
        assert len(np.unique(flat, axis=0)) == len(flat)
    # only the selected vendors count: without google, A and B are no longer linked
    tw = load_emoji(path, vendors=["twitter", "openmoji"], min_vendors=1)
    assert list(tw.target_names) == ["A", "B", "D", "E"] and tw.duplicates_dropped == ["C"]
    with pytest.raises(ValueError, match="dedupe must be True or False"):
        load_emoji(path, dedupe="yes")


# --------------------------------------------------------------------------- pretrained


def test_mobilenet_v2_converter_matches_torchvision(tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for mod in ref.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    weights = tmp_path / "mnv2.pth"
    torch.save(ref.state_dict(), weights)
    model, cfg = load_pretrained_backbone("mobilenet_v2", path=weights)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), ref(x).numpy(), rtol=1e-4, atol=1e-5)
    assert not model.training
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bilinear"
    import timm

    assert timm.data.resolve_model_data_config(model)["mean"] == cfg["mean"]


def test_pretrained_errors(tmp_path):
    torch = pytest.importorskip("torch")
    import timm

    with pytest.raises(ValueError, match="unknown pretrained backbone"):
        load_pretrained_backbone("resnet9000")
    with pytest.raises(FileNotFoundError, match="fetch_data.py"):
        load_pretrained_backbone("efficientnet_lite0", data_home=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained_backbone("efficientnet_lite0", path=tmp_path / "x.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"_conv_stem.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not an EfficientNet-Lite state dict"):
        load_pretrained_backbone("efficientnet_lite0", path=bad)
    lite = timm.create_model("tf_efficientnet_lite0")
    with pytest.raises(ValueError, match="blocks"):
        convert_efficientnet_lite({"_blocks.0._bn1.weight": 0, "_blocks.3._bn1.weight": 0}, lite)
    mnv2 = timm.create_model("mobilenetv2_100")
    with pytest.raises(ValueError, match="not a torchvision MobileNetV2"):
        convert_torchvision_mobilenet_v2({"fc.weight": 0}, mnv2)


# --------------------------------------------------------------------------- real files

_needs_fashion = pytest.mark.skipif(
    not (REAL_DATA / "fashion-mnist" / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not fetched (python benchmarks/fetch_data.py)",
)
_needs_emoji = pytest.mark.skipif(
    not (REAL_DATA / "emoji" / "emoji.json").exists(),
    reason="emoji not fetched (python benchmarks/fetch_data.py)",
)
_needs_weights = pytest.mark.skipif(
    not (REAL_DATA / "reference" / "efficientnet_lite_pytorch" / "model.py").exists(),
    reason="weights not fetched (python benchmarks/fetch_data.py)",
)


@pytest.mark.slow
@_needs_fashion
def test_real_fashion_mnist():
    train = load_fashion_mnist(data_home=REAL_DATA)
    test = load_fashion_mnist(data_home=REAL_DATA, subset="test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.array_equal(np.bincount(train.target), [6000] * 10)
    assert np.array_equal(np.bincount(test.target), [1000] * 10)


@pytest.mark.slow
@_needs_emoji
def test_real_emoji():
    e = load_emoji(data_home=REAL_DATA, vendors=["google", "twitter"], size=16)
    assert len(e.target_names) >= 1800
    assert len(np.unique(e.category)) == 10
    assert len(np.unique(e.subcategory)) >= 90
    assert set(e.vendor) == {"google", "twitter"}


@pytest.mark.slow
@_needs_weights
@pytest.mark.parametrize(
    "name, res",
    [
        ("mobilenetv2_100", 224),
        ("tf_efficientnet_lite0", 224),
        ("tf_efficientnet_lite1", 240),
        ("tf_efficientnet_lite2", 260),
    ],
)
def test_real_pretrained_matches_reference_code(name, res):
    torch = pytest.importorskip("torch")
    import torchvision

    model, cfg = load_pretrained_backbone(name, data_home=REAL_DATA)
    assert cfg["input_size"] == (3, res, res)
    weights = model.pretrained_cfg["file"]
    if name.startswith("mobilenet"):
        ref = torchvision.models.mobilenet_v2()
        ref.load_state_dict(torch.load(weights, weights_only=True))
    else:
        sys.path.insert(0, str(REAL_DATA / "reference"))
        try:
            from efficientnet_lite_pytorch import EfficientNet
        finally:
            sys.path.pop(0)
        ref = EfficientNet.from_pretrained(f"efficientnet-lite{name[-1]}", weights_path=weights)
    ref.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        out, expected = model(x), ref(x)
    assert out.shape == (2, 1000)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)

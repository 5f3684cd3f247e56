"""Tests for the shared backbone core: sknc.features._hub, _create, _weights, _layers, _images."""

import os
import time

import numpy as np
import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

from _helpers import VIT_KW, TinyNet  # noqa: E402

from sknc.features import (  # noqa: E402
    LayerTap,
    classifier_name,
    create_backbone,
    list_layers,
    load_weights,
    pool_features,
    read_state_dict,
    resolve_layer,
    strip_classifier,
    token_info,
)
from sknc.features._images import (  # noqa: E402
    ImageDataset,
    ImageNormalizer,
    check_images,
    fingerprint_images,
    iter_batches,
    load_image,
    preprocess_batch,
    resolve_data_config,
)
from sknc.features._layers import PENULTIMATE  # noqa: E402
from sknc.features._weights import weights_fingerprint  # noqa: E402


@pytest.fixture(scope="module")
def resnet():
    return create_backbone("resnet18", seed=0)


@pytest.fixture(scope="module")
def vit():
    return create_backbone("vit_tiny_patch16_224", model_kwargs=VIT_KW, seed=0)


# ----------------------------------------------------------------------------
# create_backbone
# ----------------------------------------------------------------------------
def test_create_from_name_eval_cpu_and_seeded(resnet):
    assert not resnet.training
    assert next(resnet.parameters()).device.type == "cpu"
    again = create_backbone("resnet18", seed=0)
    other = create_backbone("resnet18", seed=1)
    assert weights_fingerprint(again) == weights_fingerprint(resnet)
    assert weights_fingerprint(other) != weights_fingerprint(resnet)


def test_create_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_backbone(TinyNet, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_create_from_instance_is_a_copy():
    net = TinyNet().train()
    out = create_backbone(net)
    assert out is not net and net.training and not out.training
    strip_classifier(out)
    assert isinstance(net.fc, nn.Linear)


def test_create_from_class_and_factory():
    assert isinstance(create_backbone(TinyNet, model_kwargs={"width": 4}), TinyNet)
    assert create_backbone(lambda: TinyNet(width=2)).conv.out_channels == 2
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        create_backbone(lambda: 3)
    with pytest.raises(ValueError, match="model_kwargs only apply"):
        create_backbone(TinyNet(), model_kwargs={"width": 3})
    with pytest.raises(TypeError, match="timm model name"):
        create_backbone(3.5)


def test_unknown_timm_name_lists_close_matches():
    with pytest.raises(ValueError, match="resnet18"):
        create_backbone("resnet181")


def test_pretrained_offline_fails_fast(monkeypatch):
    import huggingface_hub.constants as hf_constants

    # the variable set after huggingface_hub was imported is honoured too
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="weights="):
        create_backbone("resnet10t", pretrained=True)
    assert time.perf_counter() - start < 20


def test_pretrained_unreachable_hub_fails_fast(monkeypatch):
    """Without HF_HUB_OFFLINE, a failed connectivity probe switches to offline mode."""
    import huggingface_hub.constants as hf_constants

    from sknc.features import _hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_hub, "hub_reachable", lambda timeout=None: False)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="not reachable"):
        create_backbone("resnet10t", pretrained=True)
    assert time.perf_counter() - start < 20
    assert hf_constants.HF_HUB_OFFLINE is False  # restored


def test_hub_probe_has_a_timeout(monkeypatch):
    import socket

    from sknc.features import _hub

    def hang(*args, **kwargs):  # e.g. a DNS lookup that never answers
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(_hub, "_PROBE_CACHE", {})
    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert _hub.hub_reachable(timeout=0.3) is False
    assert time.perf_counter() - start < 2


def test_hub_probe_refused(monkeypatch):
    import socket

    from sknc.features import _hub

    with socket.socket() as s:  # a port that is surely closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(_hub, "_PROBE_CACHE", {})
    assert _hub.hub_address() == ("127.0.0.1", port)
    assert _hub.hub_reachable(timeout=1) is False


def test_pretrained_needs_a_name():
    with pytest.raises(ValueError, match="timm model names"):
        create_backbone(TinyNet(), pretrained=True)


# ----------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------
def test_weights_round_trip_safetensors_and_pth(tmp_path, resnet):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in resnet.state_dict().items()}
    st, pth = tmp_path / "w.safetensors", tmp_path / "w.pth"
    save_file(sd, str(st))
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, pth)
    for path in (st, pth, str(pth)):
        m = create_backbone("resnet18", weights=path, seed=7)
        assert weights_fingerprint(m) == weights_fingerprint(resnet)


def test_weights_head_mismatch_is_skipped(tmp_path, resnet):
    path = tmp_path / "w.pth"
    torch.save(resnet.state_dict(), path)
    m = create_backbone("resnet18", weights=path, model_kwargs={"num_classes": 3})
    assert m.fc.out_features == 3
    for key in ("conv1.weight", "layer4.1.bn2.running_var"):
        assert torch.equal(m.state_dict()[key], resnet.state_dict()[key])
    headless = create_backbone("resnet18", weights=path, model_kwargs={"num_classes": 0})
    assert torch.equal(headless.conv1.weight, resnet.conv1.weight)
    # and a headless file into a model with a head
    torch.save({k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}, path)
    create_backbone("resnet18", weights=path)


def test_weights_that_do_not_fit(tmp_path, resnet):
    path = tmp_path / "w.pth"
    torch.save(resnet.state_dict(), path)
    with pytest.raises(ValueError, match="shape mismatches: conv1.weight"):
        create_backbone("resnet18", weights=path, model_kwargs={"in_chans": 1})
    with pytest.raises(ValueError, match="missing keys: layer1.2"):
        create_backbone("resnet34", weights=path)
    with pytest.raises(ValueError, match="unexpected keys: layer1.2"):
        load_weights(create_backbone("resnet18"), create_backbone("resnet34").state_dict())
    sd = dict(resnet.state_dict())
    sd.pop("layer1.0.conv1.weight")
    with pytest.raises(ValueError, match="missing keys: layer1.0.conv1.weight"):
        load_weights(create_backbone("resnet18"), sd)
    with pytest.raises(ValueError, match="does not exist"):
        create_backbone("resnet18", weights=tmp_path / "nope.pth")


def test_weights_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": TinyNet}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(path)


def test_weights_into_plain_module(tmp_path):
    src = TinyNet(n_classes=5)
    path = tmp_path / "tiny.pth"
    torch.save({"model": src.state_dict()}, path)
    out = create_backbone(TinyNet, model_kwargs={"n_classes": 2}, weights=path)
    assert torch.equal(out.conv.weight, src.conv.weight)
    assert out.fc.out_features == 2


# ----------------------------------------------------------------------------
# classifier, layers
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet18", {}),
        ("vit_tiny_patch16_224", VIT_KW),
        ("convnext_atto", {}),
        ("vit_tiny_patch16_224", dict(VIT_KW, class_token=False, global_pool="avg")),
    ],
)
def test_strip_classifier_gives_pre_logits(name, kwargs):
    ref = create_backbone(name, model_kwargs=kwargs, seed=0)
    m = create_backbone(name, model_kwargs=kwargs, seed=0)
    width = strip_classifier(m)
    size = 32 if "vit" in name else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        got = m(x)
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
    assert got.shape == (2, width) and width == ref.head_hidden_size
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_head_hidden_size_differs_from_num_features():
    ref = create_backbone("convnext_atto", model_kwargs={"head_hidden_size": 20}, seed=0)
    m = create_backbone("convnext_atto", model_kwargs={"head_hidden_size": 20}, seed=0)
    assert m.num_features == 320
    assert strip_classifier(m) == 20
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref.forward_head(ref.forward_features(x), pre_logits=True))


def test_classifier_and_layers_of_plain_modules():
    net = TinyNet()
    assert classifier_name(net) == "fc"
    assert list_layers(net) == ["conv", "act", "block", "pool", "flat"]
    nested = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    wrapped = nn.Module()
    wrapped.net = nested
    assert classifier_name(wrapped) == "net.3"
    assert list_layers(wrapped) == ["net.0", "net.1", "net.2"]
    assert strip_classifier(net) == 16 and isinstance(net.fc, nn.Identity)
    with pytest.raises(ValueError, match="no nn.Linear"):
        strip_classifier(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_list_and_resolve_layers(resnet, vit):
    assert list_layers(resnet) == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert list_layers(vit) == ["blocks.0", "blocks.1", "blocks.2"]
    assert classifier_name(vit) == "head"
    assert resolve_layer(resnet, 0) == "act1"
    assert resolve_layer(resnet, np.int64(-2)) == "layer3"
    assert resolve_layer(resnet, "layer3.1.conv2") == "layer3.1.conv2"
    with pytest.raises(ValueError, match=r"Valid blocks: \['act1'"):
        resolve_layer(resnet, "layer9")
    with pytest.raises(ValueError, match="out of range"):
        resolve_layer(resnet, 5)
    with pytest.raises(ValueError, match="int or a str"):
        resolve_layer(resnet, True)


# ----------------------------------------------------------------------------
# pooling and taps
# ----------------------------------------------------------------------------
def test_pool_features_shapes_and_modes():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    torch.testing.assert_close(pool_features(maps), maps.mean(dim=(2, 3)))
    torch.testing.assert_close(pool_features(maps, pool="max"), maps.amax(dim=(2, 3)))
    assert pool_features(maps, pool="flatten").shape == (2, 60)
    nhwc = maps.permute(0, 2, 3, 1)
    torch.testing.assert_close(pool_features(nhwc, fmt="NHWC"), maps.mean(dim=(2, 3)))
    tokens = torch.randn(2, 7, 4)
    torch.testing.assert_close(pool_features(tokens, num_prefix_tokens=1), tokens[:, 0])
    torch.testing.assert_close(pool_features(tokens, 1, "avg"), tokens[:, 1:].mean(1))
    torch.testing.assert_close(pool_features(tokens, 0), tokens.mean(1))
    torch.testing.assert_close(pool_features((tokens, None), 2, "max"), tokens[:, 2:].amax(1))
    flat = torch.randn(2, 3)
    assert pool_features([flat]) is flat
    with pytest.raises(ValueError, match="class token"):
        pool_features(tokens, 0, "token")
    with pytest.raises(ValueError, match="3-D token"):
        pool_features(maps, pool="token")
    with pytest.raises(ValueError, match="pool must be one of"):
        pool_features(maps, pool="mean")


def test_token_info(vit, resnet):
    assert token_info(vit) == (1, True, "NCHW")
    assert token_info(resnet) == (0, False, "NCHW")
    reg = create_backbone(
        "vit_tiny_patch16_224",
        model_kwargs=dict(VIT_KW, class_token=False, reg_tokens=2, global_pool="avg"),
    )
    assert token_info(reg) == (2, False, "NCHW")


def test_layer_tap_matches_forward_intermediates_cnn(resnet):
    m = create_backbone("resnet18", seed=0)
    strip_classifier(m)
    x = torch.randn(2, 3, 64, 64)
    tap = LayerTap(m, ["layer2", PENULTIMATE, "act1"])
    with torch.no_grad():
        got = tap(x)
        inter = resnet.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
        want_pen = resnet.forward_head(resnet.forward_features(x), pre_logits=True)
    torch.testing.assert_close(got[0], inter[1].mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want_pen, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[2], inter[0].mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
    tap.remove()
    assert all(not mod._forward_hooks for mod in m.modules())


def test_layer_tap_matches_forward_intermediates_vit(vit):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        spatial, prefix = zip(
            *vit.forward_intermediates(
                x, indices=[1], return_prefix_tokens=True, output_fmt="NLC", intermediates_only=True
            )
        )
        with LayerTap(vit, ["blocks.1"]) as tap:
            (tok,) = tap(x)
        with LayerTap(vit, ["blocks.1"], pool="avg") as tap:
            (avg,) = tap(x)
    torch.testing.assert_close(tok, prefix[0][:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(avg, spatial[0].mean(1), atol=1e-5, rtol=1e-5)


def test_layer_tap_stops_early_and_keeps_gradients():
    net = TinyNet()
    calls = []
    net.fc.register_forward_hook(lambda *a: calls.append(1))
    tap = LayerTap(net, ["block"])
    x = torch.randn(2, 3, 8, 8)
    (feat,) = tap(x)
    assert calls == []  # the forward pass stopped after 'block'
    feat.sum().backward()
    assert net.conv.weight.grad is not None
    net(x)  # an idle tap does not interfere with plain calls ...
    assert calls == [1]
    block, logits = LayerTap(net, ["block", PENULTIMATE])(x)  # ... nor with other taps
    assert calls == [1, 1] and logits.shape == (2, 5)
    strip_classifier(net)
    block, pen = LayerTap(net, ["block", PENULTIMATE])(x)
    assert block.shape == (2, 16) and pen.shape == (2, 16)
    torch.testing.assert_close(block, pen)
    with pytest.raises(ValueError, match="Duplicate"):
        LayerTap(net, ["block", "block"])
    with pytest.raises(ValueError, match="no module"):
        LayerTap(net, ["nope"])


# ----------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------
def test_resolve_data_config_fixes_and_overrides(resnet, vit):
    cfg = resolve_data_config(vit)
    assert cfg["input_size"] == (3, 32, 32)
    assert resolve_data_config(resnet)["input_size"] == (3, 224, 224)
    cfg = resolve_data_config(
        resnet, input_size=48, mean=0.5, std=(0.2, 0.3, 0.4), crop_pct=1.0, interpolation="bilinear"
    )
    assert cfg["input_size"] == (3, 48, 48) and cfg["mean"] == (0.5, 0.5, 0.5)
    assert cfg["std"] == (0.2, 0.3, 0.4) and cfg["crop_pct"] == 1.0
    grey = create_backbone("resnet18", model_kwargs={"in_chans": 1})
    cfg = resolve_data_config(grey)
    assert cfg["input_size"][0] == 1 and len(cfg["mean"]) == 1
    plain = resolve_data_config(TinyNet(in_chans=1), input_size=(8, 8))
    assert plain["input_size"] == (1, 8, 8) and plain["mean"] == (0.5,)
    with pytest.raises(ValueError, match="3 channels"):
        resolve_data_config(grey, input_size=(3, 8, 8))
    with pytest.raises(ValueError, match="interpolation"):
        resolve_data_config(resnet, interpolation="cubic")
    with pytest.raises(ValueError, match="crop_pct"):
        resolve_data_config(resnet, crop_pct=0)


def _config(size=16, **kw):
    cfg = {
        "input_size": (3, size, size),
        "mean": (0.5, 0.4, 0.3),
        "std": (0.2, 0.25, 0.3),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "crop_mode": "center",
    }
    cfg.update(kw)
    return cfg


def test_preprocess_exact_size_is_normalisation_only(rng):
    x = rng.integers(0, 256, (3, 3, 16, 16), dtype=np.uint8)
    cfg = _config()
    out = preprocess_batch(torch.from_numpy(x), cfg)
    mean = np.array(cfg["mean"])[:, None, None]
    std = np.array(cfg["std"])[:, None, None]
    np.testing.assert_allclose(out.numpy(), (x / 255.0 - mean) / std, atol=1e-5)
    grey = preprocess_batch(torch.from_numpy(x[:, :1]), cfg)
    np.testing.assert_allclose(grey.numpy(), (x[:, :1] / 255.0 - mean) / std, atol=1e-5)


def test_preprocess_resize_and_crop_like_timm_eval(rng):
    from PIL import Image

    x = rng.integers(0, 256, (1, 3, 40, 30), dtype=np.uint8)
    cfg = _config(size=16, crop_pct=0.8)  # shorter side -> 20, crop 16
    out = preprocess_batch(torch.from_numpy(x), cfg, memory_format=torch.channels_last)
    assert out.shape == (1, 3, 16, 16) and out.is_contiguous(memory_format=torch.channels_last)
    tf = timm.data.create_transform(
        input_size=(3, 16, 16),
        crop_pct=0.8,
        interpolation="bilinear",
        mean=cfg["mean"],
        std=cfg["std"],
    )
    want = tf(Image.fromarray(x[0].transpose(1, 2, 0)))
    # same geometry as timm's PIL pipeline; pixels differ only by PIL's rounding
    assert np.abs(out[0].numpy() - want.numpy()).mean() < 0.03
    squash = preprocess_batch(torch.from_numpy(x), _config(size=16, crop_mode="squash"))
    assert squash.shape == (1, 3, 16, 16)


def test_preprocess_rejects_bad_channels_and_ranges():
    cfg = _config()
    with pytest.raises(ValueError, match="has 4 channels"):
        preprocess_batch(torch.zeros(1, 4, 16, 16, dtype=torch.uint8), cfg)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        preprocess_batch(torch.full((1, 3, 16, 16), 2.0), cfg)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        preprocess_batch(torch.full((1, 3, 16, 16), float("nan")), cfg)


def _png_files(tmp_path, images, mode="RGB"):
    from PIL import Image

    paths = []
    for i, img in enumerate(images):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img).convert(mode).save(p)
        paths.append(str(p))
    return paths


def test_every_input_form_gives_the_same_pixels(tmp_path, rng):
    from PIL import Image

    nhwc = rng.integers(0, 256, (5, 20, 24, 3), dtype=np.uint8)
    cfg = _config(size=16)

    def run(X):
        return torch.cat([b for _, _, b in iter_batches(X, cfg, batch_size=2)]).numpy()

    want = run(nhwc)
    forms = {
        "nchw": nhwc.transpose(0, 3, 1, 2).copy(),
        "float": nhwc.astype(np.float32) / 255.0,
        "int64": nhwc.astype(np.int64),
        "tensor": torch.from_numpy(nhwc),
        "files": _png_files(tmp_path, nhwc),
        "path_array": np.array(_png_files(tmp_path, nhwc), dtype=object),
        "pil": [Image.fromarray(a) for a in nhwc],
        "list": list(nhwc),
        "mixed": [Image.fromarray(nhwc[0]), nhwc[1], *_png_files(tmp_path, nhwc)[2:]],
    }
    for name, X in forms.items():
        np.testing.assert_allclose(run(X), want, atol=1e-5, err_msg=name)
    grey = nhwc[..., 0]
    want_grey = run(grey)
    for X in (grey[..., None], _png_files(tmp_path, grey, mode="L"), list(grey)):
        np.testing.assert_allclose(run(X), want_grey, atol=1e-5)
    assert np.allclose(want_grey[:, 0] * 0.2 + 0.5, want_grey[:, 1] * 0.25 + 0.4, atol=1e-5)


def test_mixed_sizes_and_rgba_files(tmp_path, rng):
    from PIL import Image

    cfg = _config(size=16)
    shapes = [(16, 16, 3), (30, 20, 3), (16, 16, 3)]
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    rgba = tmp_path / "rgba.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA").save(rgba)
    X = imgs + [str(rgba)]
    out = torch.cat([b for _, _, b in iter_batches(X, cfg, batch_size=4)])
    assert out.shape == (4, 3, 16, 16)
    single = [preprocess_batch(load_image(x)[None], cfg)[0] for x in X]
    torch.testing.assert_close(out, torch.stack(single), atol=1e-5, rtol=1e-5)


def test_input_errors(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        list(iter_batches([str(bad)], _config()))
    with pytest.raises(ValueError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="has 4 channels.*RGBA"):
        check_images(np.zeros((2, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="has 2 channels"):
        check_images(np.zeros((2, 2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="not tabular"):
        check_images(np.zeros((5, 64)))
    with pytest.raises(ValueError, match="no images"):
        check_images([])
    with pytest.raises(ValueError, match=r"X\[1\] is a int"):
        check_images(["a.png", 3])
    with pytest.raises(ValueError, match=r"divide by 255"):
        list(iter_batches(np.full((2, 8, 8), 16.0), _config()))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        list(iter_batches(np.full((2, 8, 8), 300), _config()))


def test_image_dataset(tmp_path, rng):
    X = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    cfg = _config(size=16)
    ds = ImageDataset(X, y=np.array([3, 1, 2, 0]), data_config=cfg)
    assert len(ds) == 4
    x, y = ds[2]
    want = next(iter_batches(X, cfg, batch_size=4))[2]
    torch.testing.assert_close(x, want[2])
    assert y == 2
    assert isinstance(ImageDataset(X, data_config=cfg)[0], torch.Tensor)
    x, y = ImageDataset(X, data_config=cfg, return_pairs=True)[0]
    assert torch.isnan(y)
    raw = ImageDataset(X, data_config=cfg, pixels="float")[1]
    torch.testing.assert_close(raw, torch.from_numpy(X[1]).permute(2, 0, 1).float() / 255)
    as_bytes = ImageDataset(X, data_config=cfg, pixels="uint8")[1]
    assert torch.equal(as_bytes, torch.from_numpy(X[1]).permute(2, 0, 1))
    torch.testing.assert_close(ImageNormalizer(cfg)(as_bytes[None])[0], want[1])
    resized = ImageDataset(X, data_config=_config(size=12), pixels="uint8")[0]
    assert resized.dtype == torch.uint8 and resized.shape == (3, 12, 12)
    with pytest.raises(ValueError, match="pixels must be"):
        ImageDataset(X, data_config=cfg, pixels="bytes")
    seen = []

    def transform(img):
        seen.append(img.size)
        return torch.zeros(3, 8, 8)

    ds = ImageDataset(_png_files(tmp_path, X), data_config=cfg, transform=transform)
    assert ds[0].shape == (3, 8, 8) and seen == [(16, 16)]
    tensor_ds = ImageDataset(
        X, data_config=cfg, transform=lambda t: t * 2, transform_input="tensor"
    )
    assert float(tensor_ds[0].max()) <= 2.0
    loader = torch.utils.data.DataLoader(
        ImageDataset(X, [0, 1, 0, 1], data_config=cfg), batch_size=3
    )
    xb, yb = next(iter(loader))
    assert xb.shape == (3, 3, 16, 16) and yb.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="4 images but y has 3"):
        ImageDataset(X, y=[0, 1, 2], data_config=cfg)


def test_image_normalizer_matches_preprocess(rng):
    x = torch.from_numpy(rng.integers(0, 256, (2, 1, 16, 16), dtype=np.uint8))
    cfg = _config(size=16)
    norm = ImageNormalizer(cfg)
    torch.testing.assert_close(norm(x), preprocess_batch(x, cfg))
    torch.testing.assert_close(norm(x.float() / 255), preprocess_batch(x, cfg))


def test_fingerprint_images(tmp_path, rng):
    X = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert fingerprint_images(X) == fingerprint_images(X.copy())
    Y = X.copy()
    Y[0, 0, 0, 0] ^= 1
    assert fingerprint_images(X) != fingerprint_images(Y)
    paths = _png_files(tmp_path, X)
    before = fingerprint_images(paths)
    assert before == fingerprint_images(list(paths))
    st = os.stat(paths[0])
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint_images(paths) != before


# ----------------------------------------------------------------------------
# high bit-depth images are read at their real range (issue 13, item 4)
def test_16_bit_png_is_read_at_its_real_range(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, size=(12, 10), dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode == "I;16"
    expected = a.astype(np.float32) / 65535
    for n_channels in (3, 1):
        x = load_image(str(path), n_channels=n_channels)
        assert x.dtype == torch.float32
        np.testing.assert_allclose(x[0].numpy(), expected, rtol=1e-6)
    # the same pixels as float arrays, and a 16-bit PIL image in a list
    cfg = resolve_data_config(nn.Conv2d(3, 4, 3), input_size=(12, 10))
    ref = preprocess_batch(torch.from_numpy(expected)[None, None], cfg)
    for src in ([str(path)], [Image.open(path)], expected[None]):
        (_, _, batch), *_ = iter_batches(src, cfg)
        torch.testing.assert_close(batch, ref)
    # a uint16 array beyond 8 bits is refused with the way out
    with pytest.raises(ValueError, match="65535"):
        check_images(a[None]).load(0, 1)


def test_32_bit_integer_and_float_images(tmp_path):
    from PIL import Image

    f = np.linspace(0, 1, 80, dtype=np.float32).reshape(8, 10)
    Image.fromarray(f).save(tmp_path / "f.tiff")
    np.testing.assert_allclose(load_image(str(tmp_path / "f.tiff"))[0].numpy(), f)
    Image.fromarray(f * 300).save(tmp_path / "f300.tiff")
    with pytest.raises(ValueError, match=r"f300.tiff.*mode 'F'.*\[0, 300\]"):
        load_image(str(tmp_path / "f300.tiff"))
    small = np.arange(80, dtype=np.int32).reshape(8, 10)
    x = load_image(Image.fromarray(small))
    assert x.dtype == torch.uint8 and np.array_equal(x[0].numpy(), small)
    with pytest.raises(ValueError, match=r"mode 'I'.*\[0, 4000\]"):
        load_image(Image.fromarray((small * 50 + (small == 79) * 50).astype(np.int32)))


# ----------------------------------------------------------------------------
# foreign weight layouts are converted by timm name (issue 13, item 19)
def _torchvision_mobilenet_v2_file(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for mod in ref.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "mobilenet_v2-tv.pth"
    torch.save(ref.state_dict(), path)  # torchvision's key layout
    return ref, path


def test_torchvision_mobilenet_v2_weights_load_by_timm_name(tmp_path):
    from sknc.features import BackboneFeatures, detect_layout

    ref, path = _torchvision_mobilenet_v2_file(tmp_path)
    assert detect_layout(read_state_dict(path)) == "torchvision_mobilenet_v2"
    model = create_backbone("mobilenetv2_100", weights=path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    # the feature transformer (what `sknc evaluate --weights` builds) takes the file too
    X = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    feats = BackboneFeatures("mobilenetv2_100", weights=str(path), input_size=32, device="cpu")
    mine = BackboneFeatures(ref, input_size=32, device="cpu").fit().transform(X)
    np.testing.assert_allclose(feats.fit_transform(X), mine, rtol=1e-4, atol=1e-5)
    # a 10-class head: the ImageNet classifier is skipped
    ten = create_backbone("mobilenetv2_100", model_kwargs={"num_classes": 10})
    assert load_weights(ten, path) == ["classifier.bias", "classifier.weight"]


def test_foreign_layout_into_another_model_names_the_way(tmp_path):
    _, path = _torchvision_mobilenet_v2_file(tmp_path)
    with pytest.raises(ValueError, match=r"MobileNetV2.*'mobilenetv2_100'.*convert_torchvision"):
        create_backbone("resnet18", weights=path)
    with pytest.raises(ValueError, match=r"MobileNetV2 .*does not fit.*blocks"):
        create_backbone("efficientnet_b0", weights=path)
    lite = {"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "_blocks.0._bn1.weight": torch.ones(1)}
    with pytest.raises(ValueError, match=r"EfficientNet-Lite.*tf_efficientnet_lite0"):
        create_backbone("resnet18", weights=lite)


def test_converters_moved_with_a_deprecated_alias():
    from sknc.datasets import _pretrained
    from sknc.features import convert_torchvision_mobilenet_v2
    from sknc.utils import SkncFutureWarning

    mnv2 = timm.create_model("mobilenetv2_100")
    state = convert_torchvision_mobilenet_v2(
        {"features.0.0.weight": torch.zeros(1), "features.18.0.weight": torch.zeros(1)}, mnv2
    )
    assert set(state) == {"conv_stem.weight", "conv_head.weight"}
    with pytest.warns(SkncFutureWarning, match="moved to sknc.features"):
        old = _pretrained.convert_torchvision_mobilenet_v2(
            {"features.0.0.weight": torch.zeros(1), "features.18.0.weight": torch.zeros(1)}, mnv2
        )
    assert set(old) == set(state)


def test_torch_classes_are_defined_at_module_level():
    # issue 14: no classes built in factories, no module __getattr__
    import importlib

    for name, classes in [
        ("sknc.features._layers", ["LayerTap"]),
        ("sknc.features", ["LayerTap", "ImageNormalizer"]),
        ("sknc.features._images", ["ImageDataset", "ImageNormalizer"]),
        ("sknc.features", ["ImageDataset"]),
    ]:
        module = importlib.import_module(name)
        assert "__getattr__" not in vars(module), name
        for cls in classes:
            assert isinstance(vars(module)[cls], type), (name, cls)
    from sknc.features import ImageDataset
    from sknc.features._images import ImageNormalizer

    assert LayerTap.__qualname__ == "LayerTap" and issubclass(LayerTap, nn.Module)
    assert ImageDataset.__module__ == "sknc.features._images"
    assert issubclass(ImageNormalizer, nn.Module)


def test_backbone_core_is_public_and_imported_by_its_public_names():
    # issue 14: a public backbone core; no other part of sknc (nor the benchmarks)
    # imports a private module of sknc.features for a name that is public
    import ast
    import importlib
    from pathlib import Path

    import sknc
    import sknc.features as features

    for name in [
        "create_backbone",
        "load_weights",
        "read_state_dict",
        "classifier_name",
        "strip_classifier",
        "list_layers",
        "resolve_layer",
        "pool_features",
        "token_info",
        "LayerTap",
        "resolve_data_config",
        "ImageNormalizer",
    ]:
        assert name in features.__all__, name
        assert callable(getattr(features, name)), name
        assert "Examples" in getattr(features, name).__doc__, name
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("sknc.features._backbone")

    root = Path(sknc.__file__).parent
    files = [p for p in root.rglob("*.py") if p.parent.name != "features"]
    files += sorted((root.parent / "benchmarks").glob("*.py"))
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            parts = node.module.split(".")
            if "features" not in parts or parts[-1] == "features":
                continue
            if not parts[-1].startswith("_"):
                continue
            public = [a.name for a in node.names if a.name in features.__all__]
            if public:
                offenders.append(f"{path.relative_to(root.parent)}: {node.module} {public}")
    assert not offenders, offenders


def test_failed_fit_leaves_backbone_features_as_it_was():
    # a model that cannot run on the asked input size: a clear error, and the
    # estimator keeps its previous fit (nothing half-updated)
    from sknc.features import BackboneFeatures

    est = BackboneFeatures("vit_tiny_patch16_224", model_kwargs=VIT_KW, random_state=0).fit()
    before = dict(vars(est))
    est.set_params(input_size=48)
    with pytest.raises(ValueError, match=r"does not run on a \(3, 48, 48\) input"):
        est.fit()
    after = vars(est)
    assert after.keys() == before.keys() | {"input_size"}
    assert all(after[k] is v for k, v in before.items() if k != "input_size")
    assert est.data_config_["input_size"] == (3, 32, 32)

    fresh = BackboneFeatures("vit_tiny_patch16_224", model_kwargs=VIT_KW, input_size=48)
    with pytest.raises(ValueError, match="does not run on"):
        fresh.fit()
    assert not [k for k in vars(fresh) if k.endswith("_") and not k.startswith("_")]

"""Tests for sknc.datasets: glyphs, splits, digits images, image folders, data home."""

import os
import time

import numpy as np
import pytest
from PIL import Image

from sknc.datasets import (
    GLYPH_DROPPED,
    clear_data_home,
    get_data_home,
    load_digits_images,
    load_glyphs,
    load_image_folder,
)
from sknc.model_selection import (
    source_novel_split,
    split_classes,
    subsample_per_class,
)

# --------------------------------------------------------------------------- glyphs


@pytest.fixture(scope="module")
def glyph_home(tmp_path_factory):
    return str(tmp_path_factory.mktemp("glyph_home"))


@pytest.fixture(scope="module")
def glyphs(glyph_home):
    t0 = time.perf_counter()
    bunch = load_glyphs(data_home=glyph_home)
    bunch.cold_seconds = time.perf_counter() - t0
    return bunch


def _faces_per_class(bunch):
    return np.array(
        [len(np.unique(bunch.typeface[bunch.target == k])) for k in range(len(bunch.target_names))]
    )


def test_glyphs_promised_numbers(glyphs):
    n_classes = len(glyphs.target_names)
    assert n_classes >= 150
    assert len(np.unique(glyphs.target_names)) == n_classes
    assert set(np.unique(glyphs.target)) == set(range(n_classes))
    # one sample per typeface per class, at least 15 distinct typefaces per class
    faces = _faces_per_class(glyphs)
    assert faces.min() >= 15
    assert np.array_equal(np.bincount(glyphs.target), faces)
    assert len(glyphs.typeface_names) >= 20
    assert set(glyphs.script) == {"latin", "greek", "cyrillic", "digit", "symbol"}
    assert len(glyphs.script) == n_classes == len(glyphs.char_names)
    # every script has a reasonable share
    for s, low in [("latin", 50), ("greek", 25), ("cyrillic", 30), ("digit", 10), ("symbol", 15)]:
        assert np.sum(glyphs.script == s) >= low, s


def test_glyphs_arrays(glyphs):
    n = len(glyphs.target)
    assert glyphs.images.shape == (n, 32, 32)
    assert glyphs.images.dtype == np.uint8
    assert glyphs.data.shape == (n, 32 * 32)
    assert np.shares_memory(glyphs.data, glyphs.images)
    assert glyphs.typeface.shape == (n,)
    assert glyphs.target.dtype.kind == "i"
    assert glyphs.char_names[list(glyphs.target_names).index("A")] == "LATIN CAPITAL LETTER A"
    # every sample has real ink
    assert (glyphs.images.reshape(n, -1).max(axis=1) > 100).all()
    assert "Number of classes" in glyphs.DESCR


def test_glyphs_homoglyphs_dropped(glyphs):
    names = set(glyphs.target_names)
    assert not names & set(GLYPH_DROPPED)
    # one of each look-alike group stays
    assert {"A", "O", "Γ", "Π", "3", "I"} <= names
    assert not {"Α", "А", "О", "ο", "Г", "П", "З", "l"} & names


def test_glyphs_cached_and_deterministic(glyphs, glyph_home):
    files = os.listdir(os.path.join(glyph_home, "glyphs"))
    assert len(files) == 1 and files[0].endswith(".npz")
    t0 = time.perf_counter()
    again = load_glyphs(data_home=glyph_home)
    warm = time.perf_counter() - t0
    assert np.array_equal(again.images, glyphs.images)
    assert np.array_equal(again.typeface, glyphs.typeface)
    fresh = load_glyphs(data_home=glyph_home, cache=False)
    assert np.array_equal(fresh.images, glyphs.images)
    assert glyphs.cold_seconds < 60
    assert warm < glyphs.cold_seconds


def test_glyphs_random_state_changes_jitter(glyph_home):
    a = load_glyphs(scripts="digit", random_state=1, cache=False)
    b = load_glyphs(scripts="digit", random_state=2, cache=False)
    assert a.images.shape == b.images.shape
    assert not np.array_equal(a.images, b.images)
    assert np.array_equal(a.target, b.target)


def test_glyphs_script_subset_matches_full_set(glyphs, glyph_home):
    greek = load_glyphs(scripts=["greek"], cache=False)  # renders Greek only
    full_mask = glyphs.script[glyphs.target] == "greek"
    assert np.array_equal(greek.images, glyphs.images[full_mask])
    assert list(greek.target_names) == list(glyphs.target_names[glyphs.script == "greek"])
    assert greek.target.min() == 0 and greek.target.max() == len(greek.target_names) - 1


def test_glyphs_clean_rendering_is_centred(tmp_path):
    clean = load_glyphs(scripts=["latin", "digit"], jitter=0, noise=0, cache=False)
    imgs = clean.images.astype(float)
    # nothing touches the border
    assert imgs[:, 0, :].max() == 0 and imgs[:, -1, :].max() == 0
    assert imgs[:, :, 0].max() == 0 and imgs[:, :, -1].max() == 0
    # ink box centred horizontally
    cols = imgs.max(axis=1) > 30
    left = cols.argmax(axis=1)
    right = 31 - cols[:, ::-1].argmax(axis=1)
    assert np.abs((left + right) / 2 - 15.5).max() <= 1.5
    # baseline kept: capital 'H' is taller than lower-case 'n' in every typeface
    rows = imgs.max(axis=2) > 30
    height = rows.sum(axis=1)
    names = list(clean.target_names)
    h_cap = height[clean.target == names.index("H")]
    h_low = height[clean.target == names.index("n")]
    assert h_cap.min() > 0 and h_low.min() > 0
    assert np.median(h_cap) > 1.2 * np.median(h_low)


def test_glyphs_options(tmp_path):
    two = load_glyphs(scripts="digit", samples_per_typeface=2, size=16, rgb=True, cache=False)
    one = load_glyphs(scripts="digit", size=16, data_home=tmp_path)  # cached: all scripts
    assert two.images.shape == (2 * len(one.target), 16, 16, 3)
    assert np.array_equal(two.images[..., 0], two.images[..., 2])
    # the two renderings of a (char, typeface) pair differ
    assert not np.array_equal(two.images[0], two.images[1])
    assert two.typeface[0] == two.typeface[1]
    X, y = load_glyphs(scripts="digit", size=16, return_X_y=True, data_home=tmp_path)
    assert np.array_equal(X, one.images) and np.array_equal(y, one.target)
    big = load_glyphs(scripts="digit", size=64, cache=False)
    assert big.images.shape[1:] == (64, 64)
    assert list(big.target_names) == list(one.target_names)


def test_glyphs_random_state_none_not_cached(tmp_path):
    load_glyphs(scripts="digit", random_state=None, size=16, data_home=tmp_path)
    assert not os.path.exists(os.path.join(tmp_path, "glyphs"))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scripts": "klingon"}, "unknown script"),
        ({"scripts": []}, "unknown script"),
        ({"size": 4}, "at least 8"),
        ({"samples_per_typeface": 0}, "positive int"),
        ({"jitter": -1}, "jitter"),
        ({"noise": float("nan")}, "noise"),
        ({"samples_per_typeface": 2, "jitter": 0, "noise": 0}, "identical"),
        ({"random_state": -3}, "random_state"),
    ],
)
def test_glyphs_bad_parameters(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        load_glyphs(data_home=tmp_path, **kwargs)


def test_glyphs_size_must_be_int(tmp_path):
    with pytest.raises(TypeError, match="size"):
        load_glyphs(size=32.0, data_home=tmp_path)


# --------------------------------------------------------------------------- splits


def test_split_classes_basic():
    y = np.repeat(np.arange(10), 3)
    src, nov = split_classes(y, n_novel=3, random_state=0)
    assert len(nov) == 3 and len(src) == 7
    assert set(src) | set(nov) == set(range(10)) and not set(src) & set(nov)
    src2, nov2 = split_classes(y, n_novel=3, random_state=0)
    assert np.array_equal(nov, nov2)
    draws = {tuple(split_classes(y, n_novel=3, random_state=s)[1]) for s in range(10)}
    assert len(draws) > 1
    _, nov_f = split_classes(y, n_novel=0.25, random_state=0)
    assert len(nov_f) == 3  # round(2.5) -> 3 with floor(x + 0.5)
    _, nov_s = split_classes(np.array(list("abcdef")), n_novel=2, random_state=0)
    assert nov_s.dtype.kind == "U"


def test_split_classes_strata():
    y = np.arange(10)
    strata = np.array(["a"] * 6 + ["b"] * 4)
    for seed in range(5):
        _, nov = split_classes(y, n_novel=5, strata=strata, random_state=seed)
        assert np.sum(nov < 6) == 3 and np.sum(nov >= 6) == 2


@pytest.mark.parametrize(
    "y, kwargs, match",
    [
        ([1, 1, 1], {}, "at least 2"),
        ([0, 1, 2], {"n_novel": 3}, "between 1 and 2"),
        ([0, 1, 2], {"n_novel": 0}, "between 1 and 2"),
        ([0, 1, 2], {"n_novel": 1.5}, r"\[0, 1\)"),
        ([0, 0, 1], {"strata": ["a", "b", "a"]}, "several strata"),
        ([0, 1, 2], {"strata": ["a", "b"]}, "one value per sample"),
        ([], {}, "empty"),
    ],
)
def test_split_classes_errors(y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_classes(y, **kwargs)


def test_source_novel_split_with_groups(glyphs):
    y, groups = glyphs.target, glyphs.typeface
    sp = source_novel_split(y, groups, n_novel=0.2, test_size=0.25, random_state=0)
    all_idx = np.concatenate([sp.source_train, sp.source_test, sp.novel])
    assert np.array_equal(np.sort(all_idx), np.arange(len(y)))  # a partition
    assert set(y[sp.novel]) == set(sp.novel_classes)
    assert set(y[sp.source_train]) == set(sp.source_classes)  # every source class trains
    assert not set(groups[sp.source_train]) & set(groups[sp.source_test])  # unseen typefaces
    assert set(groups[sp.source_test]) <= set(sp.test_groups)
    assert len(sp.test_groups) == round(0.25 * len(np.unique(groups)))
    # same novel classes as split_classes with the same seed
    assert np.array_equal(split_classes(y, n_novel=0.2, random_state=0)[1], sp.novel_classes)


def test_source_novel_split_stratified_by_script(glyphs):
    strata = glyphs.script[glyphs.target]
    sp = source_novel_split(glyphs.target, n_novel=40, strata=strata, random_state=0)
    novel_scripts = glyphs.script[sp.novel_classes]
    for s in np.unique(glyphs.script):
        share = np.mean(glyphs.script == s)
        assert abs(np.sum(novel_scripts == s) - 40 * share) <= 1


def test_source_novel_split_without_groups():
    y = np.repeat(np.arange(6), 5)
    sp = source_novel_split(y, n_novel=2, test_size=0.4, random_state=1)
    assert sp.test_groups is None
    for c in sp.source_classes:
        assert np.sum(y[sp.source_test] == c) == 2
        assert np.sum(y[sp.source_train] == c) == 3
    sp1 = source_novel_split(y, n_novel=2, test_size=1, random_state=1)
    assert len(sp1.source_test) == 4
    sp0 = source_novel_split(y, n_novel=2, test_size=0, random_state=1)
    assert len(sp0.source_test) == 0


def test_source_novel_split_refuses_empty_training_class():
    y = np.array([0, 0, 1, 1, 2, 2])
    groups = np.array(["a", "b", "a", "b", "a", "a"])  # class 2 is drawn by 'a' only
    with pytest.raises(ValueError, match="without training samples"):
        for seed in range(20):  # some draw holds out 'a' with class 2 in the source set
            source_novel_split(y, groups, n_novel=1, test_size=1, random_state=seed)


def test_subsample_per_class():
    y = np.repeat([0, 1, 2], [10, 20, 3])
    idx = subsample_per_class(y, fraction=0.1, random_state=0)
    assert list(np.bincount(y[idx])) == [1, 2, 1]
    idx = subsample_per_class(y, n_per_class=3, random_state=0)
    assert list(np.bincount(y[idx])) == [3, 3, 3]
    assert np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, subsample_per_class(y, n_per_class=3, random_state=0))
    with pytest.raises(ValueError, match="fewer samples"):
        subsample_per_class(y, n_per_class=4)
    with pytest.raises(ValueError, match="exactly one"):
        subsample_per_class(y)
    with pytest.raises(ValueError, match="fraction"):
        subsample_per_class(y, fraction=1.5)


# --------------------------------------------------------------------------- digits


def test_load_digits_images():
    from sklearn.datasets import load_digits

    raw = load_digits()
    d = load_digits_images(size=32)
    assert d.images.shape == (1797, 32, 32) and d.images.dtype == np.uint8
    assert d.data.shape == (1797, 1024)
    assert np.array_equal(d.target, raw.target)
    assert list(d.target_names) == list(range(10))
    assert d.images.max() > 200
    small = load_digits_images(size=8)
    assert np.array_equal(small.images, np.round(raw.images * 255 / 16).astype(np.uint8))
    # upscaling keeps the picture: downscaled back it correlates with the original
    back = np.stack(
        [np.asarray(Image.fromarray(im).resize((8, 8), Image.BOX)) for im in d.images[:50]]
    )
    r = np.corrcoef(back.ravel().astype(float), small.images[:50].ravel().astype(float))[0, 1]
    assert r > 0.95
    X, y = load_digits_images(size=16, rgb=True, return_X_y=True)
    assert X.shape == (1797, 16, 16, 3) and y.shape == (1797,)


# --------------------------------------------------------------------------- image folders


def _img(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)


def test_load_image_folder_layout(tmp_path):
    _img(tmp_path / "dog" / "b.png")
    _img(tmp_path / "dog" / "a.JPG")
    _img(tmp_path / "cat" / "deep" / "c.png")
    _img(tmp_path / "cat" / ".hidden.png")
    _img(tmp_path / "cat" / ".cache" / "d.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    _img(tmp_path / ".git" / "x.png")
    (tmp_path / "README.md").write_text("top-level file, not a class")
    f = load_image_folder(tmp_path)
    assert list(f.target_names) == ["cat", "dog"]
    assert [os.path.relpath(p, tmp_path) for p in f.filenames] == [
        os.path.join("cat", "deep", "c.png"),
        os.path.join("dog", "a.JPG"),
        os.path.join("dog", "b.png"),
    ]
    assert list(f.target) == [0, 1, 1]
    assert f.filenames.dtype.kind == "U"
    paths, y = load_image_folder(str(tmp_path), extensions="png", return_X_y=True)
    assert len(paths) == 2 and list(y) == [0, 1]


def test_load_image_folder_follows_links_without_loops(tmp_path):
    # issue 13, item 5: a link loop multiplied 4 images into 164
    _img(tmp_path / "cat" / "a.png")
    _img(tmp_path / "cat" / "sub" / "b.png")
    _img(tmp_path / "dog" / "c.png")
    _img(tmp_path / "outside" / "d.png")
    os.symlink(tmp_path / "cat", tmp_path / "cat" / "sub" / "loop")  # a cycle
    os.symlink(tmp_path / "cat" / "sub", tmp_path / "cat" / "again")  # listed already
    os.symlink(tmp_path / "dog", tmp_path / "dog" / "self")  # a cycle at the top
    os.symlink(tmp_path / "outside", tmp_path / "dog" / "linked")  # a new folder: followed
    f = load_image_folder(tmp_path, allow_empty=False)
    rel = [os.path.relpath(p, tmp_path) for p in f.filenames]
    assert sorted(rel) == sorted(
        [
            os.path.join("cat", "a.png"),
            os.path.join("cat", "sub", "b.png"),
            os.path.join("dog", "c.png"),
            os.path.join("dog", "linked", "d.png"),
            os.path.join("outside", "d.png"),
        ]
    )
    assert list(f.target_names) == ["cat", "dog", "outside"]


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        load_image_folder(tmp_path / "missing-folder")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        load_image_folder(tmp_path / "file.png")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    _img(tmp_path / "full" / "a.png")
    (tmp_path / "empty_one").mkdir()
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"empty_one.*only_text"):
        load_image_folder(tmp_path)
    f = load_image_folder(tmp_path, allow_empty=True)
    assert list(f.target_names) == ["empty_one", "full", "only_text"]
    assert list(f.target) == [1]
    with pytest.raises(ValueError, match="extensions"):
        load_image_folder(tmp_path, extensions=[""])


# --------------------------------------------------------------------------- data home


def test_get_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SKNC_DATA", str(tmp_path / "from_env"))
    assert get_data_home() == str(tmp_path / "from_env")
    assert os.path.isdir(tmp_path / "from_env")
    monkeypatch.delenv("SKNC_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert get_data_home() == str(tmp_path / "home" / "sknc_data")
    explicit = get_data_home(tmp_path / "explicit")
    assert explicit == str(tmp_path / "explicit")
    clear_data_home(explicit)
    assert not os.path.exists(explicit)


def test_split_functions_moved_to_model_selection_with_deprecated_aliases():
    # issue 14: class-level splits live beside EpisodeSplit; the old names warn
    import sknc.datasets
    import sknc.model_selection

    y = np.repeat(np.arange(6), 4)
    for name, kwargs in [
        ("split_classes", {"n_novel": 2, "random_state": 0}),
        ("source_novel_split", {"n_novel": 2, "test_size": 1, "random_state": 0}),
        ("subsample_per_class", {"n_per_class": 2, "random_state": 0}),
    ]:
        assert name in sknc.model_selection.__all__ and name not in sknc.datasets.__all__
        new = getattr(sknc.model_selection, name)(y, **kwargs)
        with pytest.warns(FutureWarning, match=f"sknc.model_selection.{name}"):
            old = getattr(sknc.datasets, name)(y, **kwargs)
        if isinstance(new, tuple):
            for a, b in zip(new, old):
                np.testing.assert_array_equal(a, b)
        elif isinstance(new, dict):
            assert new.keys() == old.keys()
            for key in new:
                np.testing.assert_array_equal(new[key], old[key])
        else:
            np.testing.assert_array_equal(new, old)

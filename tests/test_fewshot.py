"""Tests for sknc.model_selection.evaluate_episodes (the NCC fast path)."""

import doctest
import itertools

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import KFold, cross_val_score

from sknc.metrics import cdnv
from sknc.model_selection import EpisodeSplit, FewShotResult, _fewshot, evaluate_episodes
from sknc.neighbors import NearestClassCenter

METRICS = ["euclidean", "cosine"]
NORMALIZE = [None, "l2", "center+l2"]


def _slow(X, y, cv, metric="euclidean", normalize=None):
    est = NearestClassCenter(metric=metric, normalize=normalize)
    return cross_val_score(est, X, y, cv=cv, error_score="raise")


def _gaussian(rng, n_classes=12, per_class=25, d=10, spread=0.8, dtype=np.float64):
    means = rng.normal(size=(n_classes, d)) * spread
    y = np.repeat(np.arange(n_classes), per_class)
    return (means[y] + rng.normal(size=(y.size, d))).astype(dtype), y


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("normalize", NORMALIZE)
@pytest.mark.parametrize("n_shot", [1, 5])
def test_equals_cross_val_score(metric, normalize, n_shot, rng):
    X, y = _gaussian(rng, dtype=np.float32)
    cv = EpisodeSplit(5, n_shot, 6, n_episodes=120, random_state=0)
    res = evaluate_episodes(X, y, cv, metric=metric, normalize=normalize, return_cdnv=False)
    np.testing.assert_array_equal(res.scores, _slow(X, y, cv, metric, normalize))
    assert 0.2 < res.mean < 1.0  # a real few-shot problem, not a trivial one


def _tie_dataset(name, rng):
    y = np.repeat(np.arange(6), 10)
    if name == "int-grid":  # small integers: many exact ties between centres
        return rng.integers(-1, 2, size=(60, 2)).astype(np.float64), y
    if name == "binary-float32":
        return rng.integers(0, 2, size=(60, 3)).astype(np.float32), y
    if name == "constant":  # every point identical: every query is a tie
        return np.ones((60, 4)), y
    if name == "midpoints":  # queries at (ulp-perturbed) midpoints of other classes' points
        base = rng.normal(size=(6, 3))
        X = np.repeat(base, 10, axis=0)
        mids = (base + np.roll(base, 1, axis=0)) / 2
        X[4::10] = mids
        X[5::10] = mids + 1e-15 * rng.normal(size=mids.shape)
        X[6::10] = mids * (1 + 1e-14)
        return X, y
    if name == "midpoints-float32":
        base = rng.normal(size=(6, 8)).astype(np.float32)
        X = np.repeat(base, 10, axis=0)
        mids = (base + np.roll(base, 1, axis=0)) / np.float32(2)
        X[4::10] = mids
        X[5::10] = np.nextafter(mids, np.float32(np.inf))
        X[6::10] = np.nextafter(mids, np.float32(-np.inf))
        return X + np.float32(3), y
    if name == "zeros-duplicates":
        X = rng.normal(size=(60, 3))
        X[::4] = 0.0
        X[1::9] = X[2::9][: X[1::9].shape[0]]
        return X, y
    if name == "offset":  # a huge common offset
        return rng.normal(size=(60, 3)) + 1e7, y
    if name == "offset-float32":
        return (rng.normal(size=(60, 3)) + 1e4).astype(np.float32), y
    if name == "offset-midpoints-float32":
        # float32 rounding of the centring point matters at this offset
        base = (3000 + 0.01 * rng.normal(size=(6, 8))).astype(np.float32)
        X = np.repeat(base, 10, axis=0) + (0.003 * rng.normal(size=(60, 8))).astype(np.float32)
        mids = (base + np.roll(base, 1, axis=0)) / np.float32(2)
        X[4::10] = mids
        X[5::10] = np.nextafter(mids, np.float32(np.inf))
        return X, y
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    [
        "int-grid",
        "binary-float32",
        "constant",
        "midpoints",
        "midpoints-float32",
        "zeros-duplicates",
        "offset",
        "offset-float32",
        "offset-midpoints-float32",
    ],
)
def test_equals_cross_val_score_with_exact_and_near_ties(name, rng):
    X, y = _tie_dataset(name, rng)
    n_exact = 0
    for metric, normalize, n_shot in itertools.product(METRICS, NORMALIZE, [1, 3]):
        cv = EpisodeSplit(4, n_shot, 3, n_episodes=25, random_state=1)
        res = evaluate_episodes(X, y, cv, metric=metric, normalize=normalize, return_cdnv=False)
        np.testing.assert_array_equal(
            res.scores, _slow(X, y, cv, metric, normalize), err_msg=f"{metric} {normalize}"
        )
        n_exact += res.n_exact
    if name.endswith("float32") and name != "binary-float32":
        # near-ties for the float32 first pass, settled by the float64 second
        return
    assert n_exact > 0  # exact ties: settled by NearestClassCenter itself


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_fallback_path_gives_the_same_accuracies(dtype, rng, monkeypatch):
    """With no decision trusted, every re-check path runs, and results stay equal.

    evaluate_episodes and NearestClassCenter share their decision margin
    (sknc.utils._rounding.safe_margin); with an infinite margin the float32
    pass defers every query to the float64 pass, which leaves every episode
    to NearestClassCenter, which recomputes every distance directly.
    """
    from sknc.model_selection import _ncc_kernel
    from sknc.neighbors import _nearest_class_center

    X, y = _gaussian(rng, n_classes=8, per_class=12, d=6, dtype=dtype)
    cv = EpisodeSplit(4, 2, 3, n_episodes=12, random_state=2)
    expected = {
        (metric, normalize): _slow(X, y, cv, metric, normalize)
        for metric, normalize in itertools.product(METRICS, NORMALIZE)
    }
    never = lambda err64, err32=0.0: err64 * float("inf")  # noqa: E731
    monkeypatch.setattr(_ncc_kernel, "safe_margin", never)
    monkeypatch.setattr(_nearest_class_center, "safe_margin", never)
    for (metric, normalize), slow in expected.items():
        res = evaluate_episodes(X, y, cv, metric=metric, normalize=normalize, return_cdnv=False)
        assert res.n_exact == cv.n_episodes
        np.testing.assert_array_equal(res.scores, slow)
        np.testing.assert_array_equal(_slow(X, y, cv, metric, normalize), slow)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_spurious_near_ties_on_ordinary_data(dtype, rng):
    X, y = _gaussian(rng, n_classes=10, per_class=30, d=64, spread=0.3)
    X = np.maximum(X + 1.0, 0.0).astype(dtype)  # ReLU-like features with an offset
    for metric, normalize in itertools.product(METRICS, NORMALIZE):
        cv = EpisodeSplit(5, 5, 10, n_episodes=100, random_state=0)
        res = evaluate_episodes(X, y, cv, metric=metric, normalize=normalize, return_cdnv=False)
        assert res.n_exact <= 2, (metric, normalize, res.n_exact)


def test_result_summary_and_repr(rng):
    X, y = _gaussian(rng)
    cv = EpisodeSplit(4, 2, 5, n_episodes=50, classes=np.arange(8), random_state=3)
    res = evaluate_episodes(X, y, cv)
    assert isinstance(res, FewShotResult)
    assert res.scores.shape == (50,) and res.scores.dtype == np.float64
    assert res.mean == pytest.approx(res.scores.mean())
    assert res.std == pytest.approx(np.std(res.scores, ddof=0))
    assert res.ci95 == pytest.approx(1.96 * np.std(res.scores) / np.sqrt(50))
    assert (res.n_episodes, res.n_way, res.n_shot, res.n_query) == (50, 4, 2, 5)
    np.testing.assert_array_equal(res.classes, np.arange(8))
    novel = np.isin(y, np.arange(8))
    assert res.cdnv == pytest.approx(cdnv(X[novel], y[novel]), rel=1e-12)
    text = repr(res)
    assert text == (
        "FewShotResult(n_episodes=50, n_query=5)\n"
        f"  4-way 2-shot: {100 * res.mean:.1f}% \u00b1 {100 * res.ci95:.1f}% (CDNV {res.cdnv:.3g})"
    )
    d = res.as_dict()
    assert d["scores"] == res.scores.tolist() and d["cdnv"] == res.cdnv
    res = evaluate_episodes(X, y, cv, return_cdnv=False)
    assert res.cdnv is None and "CDNV" not in repr(res)


def test_lower_cdnv_goes_with_higher_accuracy(rng):
    # the paper's claim, in one call each: tighter classes, lower CDNV, better NCC
    y = np.repeat(np.arange(10), 30)
    means = rng.normal(size=(10, 16))
    noise = rng.normal(size=(300, 16))
    cv = EpisodeSplit(5, 1, 10, n_episodes=200, random_state=0)
    loose = evaluate_episodes(means[y] + 1.5 * noise, y, cv)
    tight = evaluate_episodes(means[y] + 0.5 * noise, y, cv)
    assert tight.cdnv < loose.cdnv
    assert tight.mean > loose.mean


def test_string_labels_classes_and_int_features(rng):
    X, y = _gaussian(rng, n_classes=9, per_class=12)
    X = np.round(X * 3).astype(np.int64)
    labels = np.array([f"c{c}" for c in y])
    cv = EpisodeSplit(3, 2, 4, n_episodes=60, classes=["c1", "c4", "c5", "c8"], random_state=0)
    res = evaluate_episodes(X, labels, cv, normalize="l2")
    np.testing.assert_array_equal(res.scores, _slow(X, labels, cv, normalize="l2"))
    np.testing.assert_array_equal(res.classes, ["c1", "c4", "c5", "c8"])


def test_torch_tensor_input(rng):
    torch = pytest.importorskip("torch")
    X, y = _gaussian(rng, dtype=np.float32)
    cv = EpisodeSplit(5, 3, 4, n_episodes=80, random_state=2)
    res = evaluate_episodes(torch.from_numpy(X), torch.from_numpy(y), cv, normalize="center+l2")
    np.testing.assert_array_equal(res.scores, _slow(X, y, cv, normalize="center+l2"))
    assert res.cdnv == pytest.approx(cdnv(X, y), rel=1e-6)


def test_explicit_device_copies_only_the_drawn_classes(rng):
    # "cpu:0" differs from the array's "cpu" device: the rows of the drawn
    # classes are copied there and indexed through a remapping
    X, y = _gaussian(rng, dtype=np.float32)
    novel = [1, 4, 7, 8, 10]
    cv = EpisodeSplit(4, 3, 5, n_episodes=60, classes=novel, random_state=6)
    res = evaluate_episodes(X, y, cv, normalize="l2", device="cpu:0")
    np.testing.assert_array_equal(res.scores, _slow(X, y, cv, normalize="l2"))
    mask = np.isin(y, novel)
    assert res.cdnv == pytest.approx(cdnv(X[mask], y[mask]), rel=1e-6)
    # the tie fallback indexes the original X, not the copy
    Xi = rng.integers(-1, 2, size=X.shape).astype(np.float32)
    res = evaluate_episodes(Xi, y, cv, device="cpu:0", return_cdnv=False)
    assert res.n_exact > 0
    np.testing.assert_array_equal(res.scores, _slow(Xi, y, cv))


@pytest.mark.parametrize("batch_size, n_jobs", [(1, 1), (7, 1), (1000, 1), (3, 2), (None, -1)])
def test_batching_and_threads_do_not_change_results(batch_size, n_jobs, rng, monkeypatch):
    monkeypatch.setattr(_fewshot, "_BATCH_ELEMENTS", 2000)  # several default batches
    X, y = _gaussian(rng)
    cv = EpisodeSplit(3, 2, 3, n_episodes=50, random_state=4)
    ref = _slow(X, y, cv, "cosine", "l2")
    res = evaluate_episodes(
        X,
        y,
        cv,
        metric="cosine",
        normalize="l2",
        batch_size=batch_size,
        n_jobs=n_jobs,
        return_cdnv=False,
    )
    np.testing.assert_array_equal(res.scores, ref)


@pytest.mark.parametrize("flush_every, n_jobs", [(1, 1), (7, 2), (10**6, 2)])
def test_second_pass_flushes(flush_every, n_jobs, rng, monkeypatch):
    # float32 near-ties queued for the float64 pass, settled every few
    # queries or at the end, by one thread or several
    monkeypatch.setattr(_fewshot, "_PENDING_QUERIES", flush_every)
    X, y = _tie_dataset("midpoints-float32", rng)  # near-ties, settled in float64
    grid = np.zeros_like(X)
    grid[:, 0] = rng.integers(-1, 2, size=X.shape[0])  # exact ties
    X = np.vstack([X, grid])
    y = np.concatenate([y, y + 6])
    cv = EpisodeSplit(4, 2, 3, n_episodes=80, random_state=0)
    for normalize in NORMALIZE:
        res = evaluate_episodes(
            X, y, cv, normalize=normalize, batch_size=5, n_jobs=n_jobs, return_cdnv=False
        )
        np.testing.assert_array_equal(res.scores, _slow(X, y, cv, normalize=normalize))
        assert res.n_exact > 0


def test_many_episodes_across_sampler_chunks(monkeypatch, rng):
    from sknc.model_selection import _episodes

    monkeypatch.setattr(_episodes, "_CHUNK_EPISODES", 64)
    X, y = _gaussian(rng, n_classes=8, per_class=10, d=4)
    cv = EpisodeSplit(4, 1, 2, n_episodes=300, random_state=9)
    res = evaluate_episodes(X, y, cv, batch_size=50, return_cdnv=False)
    np.testing.assert_array_equal(res.scores, _slow(X, y, cv))


def test_torch_threads_restored(rng):
    torch = pytest.importorskip("torch")
    X, y = _gaussian(rng)
    before = torch.get_num_threads()
    evaluate_episodes(X, y, EpisodeSplit(3, 1, 1, n_episodes=5, random_state=0))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("as_tensor", [False, True])
def test_every_step_runs_inside_the_thread_policy(as_tensor, rng, monkeypatch):
    """Kernel and CDNV run within n_jobs threads, whatever torch's setting (issue 19)."""
    torch = pytest.importorskip("torch")
    from threadpoolctl import threadpool_limits

    import sknc.metrics
    from sknc.utils import blas_threads

    X, y = _gaussian(rng, dtype=np.float32)
    seen = []
    real_cdnv = sknc.metrics.cdnv

    def spy(*args, **kwargs):
        seen.append((torch.get_num_threads(), blas_threads(), type(args[0]).__module__))
        return real_cdnv(*args, **kwargs)

    monkeypatch.setattr(sknc.metrics, "cdnv", spy)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threadpool_limits(2, user_api="blas"):
            Xin = torch.from_numpy(X) if as_tensor else X
            cv = EpisodeSplit(3, 1, 1, n_episodes=5, random_state=0)
            res = evaluate_episodes(Xin, y, cv, n_jobs=1)
            assert torch.get_num_threads() == 2 and blas_threads() == 2
    finally:
        torch.set_num_threads(old)
    # CPU features go through the (faster) numpy path of cdnv, on one thread here
    assert seen == [(1, 1, "numpy")]
    assert res.cdnv == pytest.approx(real_cdnv(X, y), rel=1e-12)


def test_verbose_progress_bar(capsys, rng):
    X, y = _gaussian(rng)
    evaluate_episodes(X, y, EpisodeSplit(3, 1, 1, n_episodes=20, random_state=0), verbose=True)
    assert "episodes" in capsys.readouterr().err


def test_digits_end_to_end():
    X, y = load_digits(return_X_y=True)
    cv = EpisodeSplit(5, 5, 15, n_episodes=200, classes=[5, 6, 7, 8, 9], random_state=0)
    res = evaluate_episodes(X, y, cv, normalize="center+l2")
    np.testing.assert_array_equal(res.scores, _slow(X, y, cv, normalize="center+l2"))
    assert res.mean > 0.85 and 0 < res.ci95 < 0.02


def test_errors(rng):
    X, y = _gaussian(rng)
    cv = EpisodeSplit(3, 1, 1, n_episodes=5, random_state=0)
    with pytest.raises(TypeError, match="cv must be an EpisodeSplit"):
        evaluate_episodes(X, y, KFold(3))
    with pytest.raises(ValueError, match="metric must be one of"):
        evaluate_episodes(X, y, cv, metric="l1")
    with pytest.raises(ValueError, match="normalize must be one of"):
        evaluate_episodes(X, y, cv, normalize="zscore")
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_episodes(X, y, cv, batch_size=0)
    with pytest.raises(ValueError, match="n_jobs"):
        evaluate_episodes(X, y, cv, n_jobs=0)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_episodes(Xn, y, cv)
    with pytest.raises(ValueError, match="2D array"):
        evaluate_episodes(X[:, 0], y, cv)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        evaluate_episodes(X[:-1], y, cv)
    with pytest.raises(ValueError, match="needs the class labels y"):
        evaluate_episodes(X, None, cv)
    with pytest.raises(ValueError, match="fewer than n_shot"):
        evaluate_episodes(X, y, EpisodeSplit(3, 20, 20, n_episodes=5))
    torch = pytest.importorskip("torch")
    Xt = torch.from_numpy(X)
    Xt[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinity"):
        evaluate_episodes(Xt, y, cv)
    with pytest.raises(ValueError, match="2-D"):
        evaluate_episodes(Xt[:, 0], y, cv)


def test_docstring_examples():
    result = doctest.testmod(_fewshot, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.gpu
@pytest.mark.parametrize("normalize", NORMALIZE)
def test_cuda_tensors(normalize, rng):
    torch = pytest.importorskip("torch")
    X, y = _gaussian(rng, n_classes=12, per_class=40, d=32, dtype=np.float32)
    novel = np.arange(6, 12)
    cv = EpisodeSplit(5, 5, 10, n_episodes=300, classes=novel, random_state=0)
    ref = _slow(X, y, cv, "euclidean", normalize)
    # data already on the GPU: computed there
    Xc = torch.from_numpy(X).cuda()
    res = evaluate_episodes(Xc, torch.from_numpy(y).cuda(), cv, normalize=normalize)
    np.testing.assert_array_equal(res.scores, ref)
    mask = np.isin(y, novel)
    assert res.cdnv == pytest.approx(cdnv(X[mask], y[mask]), rel=1e-5)
    # numpy input sent to the GPU (only the rows of the novel classes)
    res = evaluate_episodes(X, y, cv, normalize=normalize, device="cuda")
    np.testing.assert_array_equal(res.scores, ref)
    assert res.cdnv == pytest.approx(cdnv(X[mask], y[mask]), rel=1e-5)
    # ties on the GPU
    Xi = rng.integers(-1, 2, size=X.shape).astype(np.float32)
    Xi_gpu = torch.from_numpy(Xi).cuda()
    res = evaluate_episodes(Xi_gpu, y, cv, metric="cosine", normalize=normalize)
    np.testing.assert_array_equal(res.scores, _slow(Xi, y, cv, "cosine", normalize))


def test_integer_torch_tensor(rng):
    torch = pytest.importorskip("torch")
    X, y = _gaussian(rng)
    Xi = np.round(X * 4).astype(np.int32)
    cv = EpisodeSplit(4, 2, 3, n_episodes=40, random_state=0)
    res = evaluate_episodes(torch.from_numpy(Xi), y, cv, metric="cosine", return_cdnv=False)
    np.testing.assert_array_equal(res.scores, _slow(Xi, y, cv, "cosine"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_tensors(dtype, rng):
    torch = pytest.importorskip("torch")
    X, y = _gaussian(rng)
    X[: X.shape[0] // 2] = 0.0  # half the rows on an integer grid: exact ties
    X[: X.shape[0] // 2, :2] = rng.integers(-1, 2, size=(X.shape[0] // 2, 2))
    Xh = torch.from_numpy(X).to(getattr(torch, dtype))
    X_exact = Xh.to(torch.float64).numpy()  # the same values, as numpy sees them
    cv = EpisodeSplit(4, 1, 3, n_episodes=60, random_state=0)
    n_exact = 0
    for normalize in NORMALIZE:
        res = evaluate_episodes(Xh, y, cv, normalize=normalize, return_cdnv=False)
        np.testing.assert_array_equal(res.scores, _slow(X_exact, y, cv, normalize=normalize))
        n_exact += res.n_exact
    assert n_exact > 0  # ties settled by NearestClassCenter on the half-precision rows


def test_offset_features_leave_few_queries_to_the_float64_pass(rng, monkeypatch):
    """A large common offset does not widen the float32 bound of the score differences.

    The product of a query with the support mean ``a`` only enters the
    bound on ``||q - a||``; charging its error (``||q|| ||a||``, huge with
    an offset) to every score would leave nearly every query undecided.
    """
    from sknc.model_selection._ncc_kernel import _EpisodeKernel

    X, y = _gaussian(rng, n_classes=10, per_class=40, d=64, spread=1.0)
    X = (X + 1e4).astype(np.float32)
    queued = []
    original = _EpisodeKernel._queue_undecided

    def spy(self, undecided, *args, **kwargs):
        queued.append(int(undecided.sum()))
        return original(self, undecided, *args, **kwargs)

    monkeypatch.setattr(_EpisodeKernel, "_queue_undecided", spy)
    cv = EpisodeSplit(5, 5, 15, n_episodes=100, random_state=0)
    res = evaluate_episodes(X, y, cv, return_cdnv=False)
    assert sum(queued) <= 0.05 * cv.n_episodes * 5 * 15, sum(queued)
    np.testing.assert_array_equal(res.scores, _slow(X, y, cv))


@pytest.mark.parametrize("normalize", [None, "l2"])
@pytest.mark.parametrize("n_shot", [1, 2, 5, 7])
def test_float32_class_sums_stay_within_their_bound(normalize, n_shot, rng):
    """The first pass's float32 class means are within ``delta`` of the exact ones.

    ``delta`` bounds the distance of the centres the first pass uses to the
    exact centres (those of ``NearestClassCenter``); without the float32
    term it would be ``gamma * max ||x||`` (about 1e-12 relative), far below
    the rounding of a float32 sum. Rows with a large common offset and
    norms spread over six orders of magnitude make that rounding large.
    """
    torch = pytest.importorskip("torch")
    from sknc.model_selection._ncc_kernel import _EpisodeKernel, _row_norms

    W, d = 4, 33
    scale = 10.0 ** rng.uniform(-3, 3, size=(400, 1))
    X = (scale * (50.0 + rng.normal(size=(400, d)))).astype(np.float32)
    Xt = torch.from_numpy(X)
    kernel = _EpisodeKernel(Xt, _row_norms(Xt), W, n_shot, 3, 64, "euclidean", normalize)
    assert kernel.sums32
    support = torch.from_numpy(rng.integers(0, 400, size=(64, W, n_shot)))
    with torch.inference_mode():
        M32, ep = kernel._centres32(support)
    rows = X[support.numpy()].astype(np.float64)  # (B, W, K, d)
    if normalize == "l2":
        rows /= np.linalg.norm(rows, axis=3, keepdims=True)
        used = M32[:, :W].double().numpy()  # the centres themselves
    else:  # the centres a + v, with a the last row of M32
        used = (M32[:, :W].double() + M32[:, W:].double()).numpy()
    error = np.linalg.norm(used - rows.mean(axis=2), axis=2).max(axis=1)
    delta = ep["delta"].numpy()
    assert (error <= delta).all(), (error / delta).max()
    assert (error > 1e3 * kernel.gamma * delta / (kernel.gamma + kernel.err_sums32)).any()


def test_float32_class_sums_with_offset_and_near_ties(rng, monkeypatch):
    """The float32-sums first pass, then the float64 pass, equal cross_val_score.

    A common offset 30 times the spread (the first pass still sums in
    float32) and queries on the float32 midpoints between two classes'
    points: the first pass leaves them undecided, the float64 pass
    recomputes the exact centres of their episodes.
    """
    from sknc.model_selection._ncc_kernel import _EpisodeKernel

    calls = {"sums32": 0, "queued": 0}
    centres32, queue = _EpisodeKernel._centres32, _EpisodeKernel._queue_undecided

    def spy_centres(self, *args):
        calls["sums32"] += 1
        return centres32(self, *args)

    def spy_queue(self, undecided, *args):
        calls["queued"] += int(undecided.sum())
        return queue(self, undecided, *args)

    monkeypatch.setattr(_EpisodeKernel, "_centres32", spy_centres)
    monkeypatch.setattr(_EpisodeKernel, "_queue_undecided", spy_queue)
    base = rng.normal(size=(6, 8)).astype(np.float32)
    X = np.repeat(base, 10, axis=0) + (0.3 * rng.normal(size=(60, 8))).astype(np.float32)
    mids = (base + np.roll(base, 1, axis=0)) / np.float32(2)
    X[4::10] = mids
    X[5::10] = np.nextafter(mids, np.float32(np.inf))
    X += np.float32(30.0)
    y = np.repeat(np.arange(6), 10)
    for metric, normalize in itertools.product(METRICS, [None, "l2"]):
        cv = EpisodeSplit(4, 3, 3, n_episodes=40, random_state=1)
        res = evaluate_episodes(X, y, cv, metric=metric, normalize=normalize, return_cdnv=False)
        np.testing.assert_array_equal(res.scores, _slow(X, y, cv, metric, normalize))
    assert calls["sums32"] > 0 and calls["queued"] > 0


def test_offset_ratio_picks_float64_sums_for_offset_features(rng):
    torch = pytest.importorskip("torch")
    from sknc.model_selection._ncc_kernel import _SUMS32_MAX_OFFSET, _offset_ratio

    X, _ = _gaussian(rng, d=16, dtype=np.float32)
    assert _offset_ratio(torch.from_numpy(X)) < 2
    assert _offset_ratio(torch.from_numpy(X + 1e4)) > _SUMS32_MAX_OFFSET
    assert _offset_ratio(torch.from_numpy(X + 1e4), rows=np.arange(5, 50)) > 1e3
    assert _offset_ratio(torch.ones(5, 3)) == float("inf")


def test_offset_ratio_sample_stays_small_for_wide_rows():
    from sknc.model_selection._ncc_kernel import _sample_rows

    assert _sample_rows(1024, 512) == 1024
    assert _sample_rows(1024, 8192) == 256  # 16 MB of float64
    assert _sample_rows(1024, 10**7) == 16


def test_cdnv_alongside_the_episodes_on_two_workers(rng, monkeypatch):
    """With n_jobs=2 the CDNV runs in a worker on one thread, beside the batches."""
    torch = pytest.importorskip("torch")
    import threading

    import sknc.metrics
    from sknc.utils import blas_threads

    monkeypatch.setattr(_fewshot, "_BATCH_ELEMENTS", 2000)  # several batches
    X, y = _gaussian(rng, dtype=np.float32)
    seen = []
    real_cdnv = sknc.metrics.cdnv

    def spy(*args, **kwargs):
        main = threading.current_thread() is threading.main_thread()
        seen.append((torch.get_num_threads(), blas_threads(), main))
        return real_cdnv(*args, **kwargs)

    monkeypatch.setattr(sknc.metrics, "cdnv", spy)
    # two workers whatever the machine's cores and load
    monkeypatch.setattr(_fewshot, "thread_budget", lambda n_jobs, idle=False: 2)
    cv = EpisodeSplit(4, 2, 3, n_episodes=60, classes=np.arange(1, 9), random_state=0)
    res = evaluate_episodes(X, y, cv, n_jobs=2)
    assert seen == [(1, 1, False)]
    mask = np.isin(y, np.arange(1, 9))
    assert res.cdnv == pytest.approx(real_cdnv(X[mask], y[mask]), rel=1e-12)
    np.testing.assert_array_equal(res.scores, _slow(X, y, cv))


@pytest.mark.parametrize("classes", [None, np.arange(2, 9)])
def test_row_norms_in_parts_equal_one_pass(classes, rng):
    from concurrent.futures import ThreadPoolExecutor

    X, y = _gaussian(rng, dtype=np.float32)
    rows = None if classes is None else np.flatnonzero(np.isin(y, classes))
    feats = _fewshot._Features.place(X, rows, None)
    with ThreadPoolExecutor(3) as pool:
        parts = feats.norms(pool, 3).numpy()
    np.testing.assert_array_equal(parts, feats.norms().numpy())
    expected = np.linalg.norm(X.astype(np.float64), axis=1)
    if rows is not None:
        expected[np.setdiff1d(np.arange(len(X)), rows)] = 0.0
    np.testing.assert_allclose(parts, expected, rtol=1e-14)


def test_one_worker_on_a_busy_machine(rng, tmp_path, monkeypatch):
    """n_jobs counts only the cores idle when the call starts (sknc's thread policy)."""
    pytest.importorskip("torch")
    import threading

    import sknc.metrics
    from sknc.utils import _threads

    X, y = _gaussian(rng, dtype=np.float32)
    threads = []
    real_cdnv = sknc.metrics.cdnv

    def spy(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return real_cdnv(*args, **kwargs)

    monkeypatch.setattr(sknc.metrics, "cdnv", spy)
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("5.10 4.50 3.20 9/200 4242\n")  # 9 threads running
    monkeypatch.setattr(_threads, "_LOADAVG", str(loadavg))
    cv = EpisodeSplit(4, 2, 3, n_episodes=30, random_state=0)
    res = evaluate_episodes(X, y, cv, n_jobs=-1)
    assert threads == [True]  # one worker: the calling thread computes the CDNV
    np.testing.assert_array_equal(res.scores, _slow(X, y, cv))

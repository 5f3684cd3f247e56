"""Tests for sknc.parallel: Dask extraction, map-reduce NC statistics, grid searches.

Two groups:

* fast tests (default run) on Dask's local schedulers: exactness of the
  map-reduce against the in-memory metrics for every input form, input
  validation, import hygiene, doctests;
* ``@pytest.mark.dask`` tests on a real ``dask.distributed.LocalCluster`` with
  two worker processes on loopback, started and closed here (run by CI with
  ``pytest -m dask``): grid searches and cross-validation under
  ``joblib.parallel_config(backend="dask")``, partitioned extraction (the
  model deserialised once per worker), NC statistics that never move the
  features, the feature cache across processes, GPU-resource routing, and the
  code of the "Scaling out" user-guide page.

Worker processes import this module by name (``test_dask``) to unpickle the
counting network below, whose counters live in each worker process.
"""

import doctest
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

dask = pytest.importorskip("dask")
torch = pytest.importorskip("torch")
pytest.importorskip("timm")

import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402
from dask.delayed import Delayed  # noqa: E402
from sklearn.base import BaseEstimator, ClassifierMixin  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from sknc.features import BackboneFeatures  # noqa: E402
from sknc.metrics import (  # noqa: E402
    NC4Counter,
    NCStatistics,
    cdnv,
    collapse_report,
    equiangularity,
    equinorm,
    get_scorer,
    nc1,
    nc2,
    nc3,
    nc4,
)
from sknc.parallel import (  # noqa: E402
    collapse_report_from_partitions,
    extract_features,
    nc4_counter_from_partitions,
    nc_statistics_from_partitions,
)

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-10


# ----------------------------------------------------------------------------
# helpers that run in the worker processes (imported there as ``test_dask``)
# ----------------------------------------------------------------------------
_COUNTS = {"unpickled": 0, "forward": 0}


class CountingNet(torch.nn.Module):
    """A tiny CNN that counts, per process, its unpicklings and forward passes."""

    def __init__(self, width=8, n_classes=3):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.flat = torch.nn.Flatten()
        self.fc = torch.nn.Linear(width, n_classes)

    def forward(self, x):
        _COUNTS["forward"] += 1
        return self.fc(self.flat(self.pool(self.act(self.conv(x)))))

    def __setstate__(self, state):
        super().__setstate__(state)
        _COUNTS["unpickled"] += 1


def _counts():
    return dict(_COUNTS, pid=os.getpid())


def _worker_counts(client):
    return client.run(_counts)


def _delta(before, after, key):
    return {w: after[w][key] - before[w][key] for w in after}


def _transform_on_worker(est, X):
    """``est.transform(X)`` and the forward passes it cost in this process."""
    start = _COUNTS["forward"]
    Z = est.transform(X)
    return Z, _COUNTS["forward"] - start


class WhereFitted(ClassifierMixin, BaseEstimator):
    """Records the Dask worker that fitted it."""

    def fit(self, X, y):
        from distributed import get_worker

        self.worker_ = get_worker().address
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def _clear_transfer_log(dask_worker):
    dask_worker.transfer_incoming_log.clear()


def _transferred_keys(dask_worker):
    return [key for entry in dask_worker.transfer_incoming_log for key in entry["keys"]]


async def _set_gpu_resource(dask_worker, amount=1):
    await dask_worker.set_resources(GPU=amount)


def _pair_block(seed, n, d, offset):
    """An (X_block, y_block) pair made on a worker (for the no-gathering test)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(np.array(["ant", "bee", "cat", "dog", "eel"]), n)
    codes = np.searchsorted(np.array(["ant", "bee", "cat", "dog", "eel"]), y)
    X = offset + 3.0 * np.eye(5, d)[codes] + rng.normal(size=(n, d))
    return X, y


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def _features(n=2400, d=12, k=6, seed=0, offset=0.0, labels=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = offset + 2.0 * rng.normal(size=(k, d))[y] + rng.normal(size=(n, d))
    if labels is not None:
        y = np.asarray(labels)[y]
    return X, y


def _assert_stats_match(stats, X, y, W=None, b=None):
    assert stats.n_samples_ == len(y)
    np.testing.assert_array_equal(stats.classes_, np.unique(y))
    np.testing.assert_allclose(stats.nc1(), nc1(X, y), rtol=RTOL)
    np.testing.assert_allclose(stats.cdnv(), cdnv(X, y), rtol=RTOL)
    np.testing.assert_allclose(
        stats.cdnv(variant="asymmetric"), cdnv(X, y, variant="asymmetric"), rtol=RTOL
    )
    np.testing.assert_allclose(stats.nc2(), nc2(X, y), rtol=RTOL)
    np.testing.assert_allclose(stats.equinorm(), equinorm(X, y), rtol=RTOL)
    np.testing.assert_allclose(stats.equiangularity(), equiangularity(X, y), rtol=RTOL)
    if W is not None:
        np.testing.assert_allclose(stats.nc3(W), nc3(X, y, W), rtol=RTOL)


def _write_pngs(folder, images, labels=None):
    from PIL import Image

    paths = []
    for i, img in enumerate(images):
        sub = Path(folder) if labels is None else Path(folder) / str(labels[i])
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{i:04d}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
    return paths


def _images(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _counting_features(**kw):
    kw.setdefault("input_size", 16)
    kw.setdefault("mean", 0.5)
    kw.setdefault("std", 0.5)
    kw.setdefault("batch_size", 4)
    kw.setdefault("random_state", 0)
    return BackboneFeatures(CountingNet, **kw)


# ============================================================================
# fast tests: local schedulers
# ============================================================================
def test_importing_sknc_imports_no_dask():
    code = (
        "import sys, sknc, sknc.metrics, sknc.features, sknc.neighbors, sknc.model_selection\n"
        "import sknc.finetune, sknc.datasets, sknc.parallel\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_statistics_of_a_dask_array_equal_in_memory_metrics(scheduler, split_every):
    X, y = _features()
    Xd = da.from_array(X, chunks=(300, 12))
    with dask.config.set(scheduler=scheduler):
        stats = nc_statistics_from_partitions(
            Xd, da.from_array(y, chunks=300), split_every=split_every
        )
    assert isinstance(stats, NCStatistics)
    _assert_stats_match(stats, X, y, W=np.random.default_rng(1).normal(size=(6, 12)))


def test_statistics_handle_uneven_chunks_column_chunks_and_in_memory_labels():
    X, y = _features(n=1000, labels=np.array(["a", "b", "c", "d", "e", "f"]))
    # row chunks of different sizes, split along the features too; labels in memory
    Xd = da.from_array(X, chunks=((100, 400, 7, 493), (5, 7)))
    with dask.config.set(scheduler="sync"):
        _assert_stats_match(nc_statistics_from_partitions(Xd, y), X, y)
        # dask labels chunked differently from X are aligned to X's blocks
        y_other = da.from_array(y, chunks=250)
        _assert_stats_match(nc_statistics_from_partitions(Xd, y_other), X, y)


def test_statistics_of_bags_and_delayed_lists():
    X, y = _features(n=900)
    with dask.config.set(scheduler="sync"):
        # a bag of (row, label) pairs
        rows = db.from_sequence(list(zip(X, y)), npartitions=7)
        _assert_stats_match(nc_statistics_from_partitions(rows), X, y)
        # a bag of (block, labels) pairs
        blocks = db.from_sequence(
            [(X[i : i + 100], y[i : i + 100]) for i in range(0, 900, 100)], npartitions=4
        )
        _assert_stats_match(nc_statistics_from_partitions(blocks), X, y)
        # a bag of rows and a bag of labels partitioned alike
        _assert_stats_match(
            nc_statistics_from_partitions(
                db.from_sequence(list(X), npartitions=5), db.from_sequence(list(y), npartitions=5)
            ),
            X,
            y,
        )
        # delayed (X_block, y_block) pairs, and separate delayed blocks
        pairs = [dask.delayed((X[i : i + 200], y[i : i + 200])) for i in range(0, 900, 200)]
        _assert_stats_match(nc_statistics_from_partitions(pairs), X, y)
        xs = [dask.delayed(X[i : i + 300]) for i in range(0, 900, 300)]
        ys = [dask.delayed(y[i : i + 300]) for i in range(0, 900, 300)]
        _assert_stats_match(nc_statistics_from_partitions(xs, ys), X, y)


def test_statistics_skip_empty_partitions_and_align_missing_classes():
    X, y = _features(n=600, k=4)
    order = np.argsort(y, kind="stable")  # partitions hold one or two classes each
    X, y = X[order], y[order]
    rows = db.from_sequence(list(zip(X, y)), npartitions=6).filter(lambda p: p[1] != 2)
    keep = y != 2
    with dask.config.set(scheduler="sync"):
        stats = nc_statistics_from_partitions(rows, split_every=2)
    _assert_stats_match(stats, X[keep], y[keep])


def test_statistics_of_torch_blocks_and_float32_offsets():
    X, y = _features(n=800, offset=1e4)
    X32 = X.astype(np.float32)
    pairs = [
        dask.delayed((torch.from_numpy(X32[i : i + 200]), torch.from_numpy(y[i : i + 200])))
        for i in range(0, 800, 200)
    ]
    with dask.config.set(scheduler="sync"):
        stats = nc_statistics_from_partitions(pairs)
    local = NCStatistics().update(X32, y)
    np.testing.assert_allclose(stats.nc1(), local.nc1(), rtol=1e-6)
    np.testing.assert_allclose(stats.cdnv(), local.cdnv(), rtol=1e-6)


def test_dask_dataframes(tmp_path):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    X, y = _features(n=700, labels=np.array(list("uvwxyz")))
    columns = [f"f{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=columns).assign(label=y)
    ddf = dd.from_pandas(frame, npartitions=4)
    images = _images(12)
    paths = _write_pngs(tmp_path, images)
    est = _counting_features().fit()
    with dask.config.set(scheduler="sync"):
        stats = nc_statistics_from_partitions(ddf[columns], ddf["label"], split_every=2)
        index = dd.from_pandas(pd.DataFrame({"path": paths}), npartitions=3)
        Z = extract_features(index["path"], est).compute()
    _assert_stats_match(stats, X, y)
    np.testing.assert_array_equal(Z, est.transform(paths))


def test_nc4_and_collapse_report_equal_in_memory():
    X, y = _features(n=1200, k=5)
    # a classifier that disagrees with the nearest class mean on some samples
    rng = np.random.default_rng(3)
    clf = LogisticRegression(max_iter=300).fit(X[:300], rng.permutation(y[:300]))
    Xd = da.from_array(X, chunks=(150, 12))
    yd = da.from_array(y, chunks=150)
    with dask.config.set(scheduler="sync"):
        stats = nc_statistics_from_partitions(Xd, yd)
        counter = stats.nc4_counter(clf.coef_, clf.intercept_)
        filled = nc4_counter_from_partitions(counter, Xd, yd, split_every=3)
        # y=None with a dask array: features alone; with a bag: (row, label) pairs
        alone = nc4_counter_from_partitions(counter, Xd)
        pairs = nc4_counter_from_partitions(
            counter, db.from_sequence(list(zip(X, y)), npartitions=5)
        )
        report = collapse_report_from_partitions(Xd, yd, clf.coef_, clf.intercept_, split_every=2)
    expected = nc4(X, y, clf.coef_, clf.intercept_)
    assert 0 < expected < 1
    assert counter.n_samples_ == 0  # the given counter is not modified
    for c in (filled, alone, pairs):
        assert c.n_samples_ == len(y) and c.value == expected
    local = collapse_report(X, y, clf.coef_, clf.intercept_)
    for key, value in local.as_dict().items():
        if isinstance(value, float):
            np.testing.assert_allclose(getattr(report, key), value, rtol=RTOL, err_msg=key)
        elif not isinstance(value, np.ndarray):
            assert getattr(report, key) == value, key


def test_lazy_results_compute_later():
    X, y = _features(n=400)
    lazy = nc_statistics_from_partitions(da.from_array(X, chunks=100), y, compute=False)
    assert isinstance(lazy, Delayed)
    with dask.config.set(scheduler="sync"):
        (stats,) = dask.compute(lazy)
    _assert_stats_match(stats, X, y)


def test_statistics_input_errors():
    X, y = _features(n=200)
    Xd = da.from_array(X, chunks=50)
    with pytest.raises(ValueError, match="y is required"):
        nc_statistics_from_partitions(Xd)
    with pytest.raises(ValueError, match="200 rows but y has 199"):
        nc_statistics_from_partitions(Xd, y[:-1])
    with pytest.raises(ValueError, match="partitioned like X"):
        nc_statistics_from_partitions(db.from_sequence(list(X), npartitions=2), y)
    with pytest.raises(ValueError, match="4 partitions but y has 3"):
        nc_statistics_from_partitions(Xd, [dask.delayed(y[:70])] * 3)
    with pytest.raises(TypeError, match="must be a dask.array"):
        nc_statistics_from_partitions(X, y)
    with pytest.raises(ValueError, match="empty list"):
        nc_statistics_from_partitions([], y)
    with pytest.raises(ValueError, match="split_every"):
        nc_statistics_from_partitions(Xd, y, split_every=1)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match="Partition 1: X has 50 rows but y has 40"):
            nc_statistics_from_partitions(
                [dask.delayed(X[:50]), dask.delayed(X[50:100])],
                [dask.delayed(y[:50]), dask.delayed(y[50:90])],
            )
        bad = X.copy()
        bad[130, 2] = np.nan
        with pytest.raises(ValueError, match="Partition 2: .*NaN"):
            nc_statistics_from_partitions(da.from_array(bad, chunks=50), y)
        with pytest.raises(ValueError, match="must be \\(features, label\\) pairs"):
            nc_statistics_from_partitions(db.from_sequence(list(range(10)), npartitions=2))
        with pytest.raises(ValueError, match="must compute to an \\(X, y\\) pair"):
            nc_statistics_from_partitions([dask.delayed(X[:10])])
    counter = NCStatistics().update(X, y).nc4_counter(np.eye(6, 12))
    with pytest.raises(TypeError, match="NC4Counter"):
        nc4_counter_from_partitions(NCStatistics(), Xd)
    counter.update(X[:5])
    with pytest.raises(ValueError, match="must be empty"):
        nc4_counter_from_partitions(counter, Xd)
    with pytest.raises(ValueError, match="intercept was given without coef"):
        collapse_report_from_partitions(Xd, y, intercept=np.zeros(6))


def _never_computed():
    raise AssertionError("a partition was computed")


@pytest.mark.parametrize(
    "option", [{"center": "median"}, {"cdnv_variant": "squared"}, {"nc3_variant": "other"}]
)
def test_collapse_report_from_partitions_checks_options_before_any_pass(option):
    parts = [dask.delayed(_never_computed)() for _ in range(2)]
    with pytest.raises(ValueError, match=next(iter(option))):
        collapse_report_from_partitions(parts, **option)


def test_extract_features_local_scheduler_equals_transform(tmp_path):
    images = _images(20)
    paths = _write_pngs(tmp_path, images)
    est = _counting_features().fit()
    expected = est.transform(paths)
    with dask.config.set(scheduler="threads"):
        # bag of paths (row counts unknown), 1-D dask array of paths, image array
        Z_bag = extract_features(db.from_sequence(paths, npartitions=5), est)
        assert Z_bag.shape[1] == est.n_features_out_ and np.isnan(Z_bag.shape[0])
        np.testing.assert_array_equal(Z_bag.compute(), expected)
        Z_arr = extract_features(da.from_array(np.array(paths), chunks=8), est)
        assert Z_arr.chunks == ((8, 8, 4), (est.n_features_out_,))
        np.testing.assert_allclose(Z_arr.compute(), expected, rtol=1e-6, atol=1e-6)
        Z_img = extract_features(da.from_array(images, chunks=(4, 8, 8, 3)), est, dtype=np.float64)
        assert Z_img.dtype == np.float64
        np.testing.assert_array_equal(Z_img.compute(), expected.astype(np.float64))
        # delayed partitions, one of them empty
        parts = [dask.delayed(paths[:12]), dask.delayed([]), dask.delayed(paths[12:])]
        np.testing.assert_array_equal(extract_features(parts, est).compute(), expected)


def test_every_feature_cache_directory_gets_its_entries(tmp_path):
    # one process filling several cache directories: each gets a complete
    # entry that any other process (a Dask worker) can read
    images = _images(4)
    for name in ("first", "second", "third"):
        _counting_features(memory=str(tmp_path / name)).fit().transform(images)
        assert len(list((tmp_path / name).rglob("*.npy"))) == 1, name


def test_extract_features_errors():
    est = _counting_features()
    with pytest.raises(Exception, match="not fitted"):
        extract_features(db.from_sequence(["a.png"]), est)
    est.fit()
    with pytest.raises(TypeError, match="must be a dask.array"):
        extract_features(["a.png", "b.png"], est)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match="Partition 0: .*missing.png"):
            extract_features(db.from_sequence(["missing.png"]), est).compute()

    class NoWidth(BaseEstimator):
        def fit(self, X=None, y=None):
            self.fitted_ = True
            return self

        def transform(self, X):
            return np.zeros((len(X), 2))

    with pytest.raises(ValueError, match="n_features_out_ attribute or get_feature_names_out"):
        extract_features(db.from_sequence([1, 2]), NoWidth().fit())


# the examples use random-init backbones (no download)
@pytest.mark.filterwarnings("ignore::sknc.utils.RandomWeightsWarning")
def test_doctests():
    from sknc.parallel import _dask

    with dask.config.set(scheduler="sync"):
        result = doctest.testmod(_dask, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20 and result.failed == 0


# ============================================================================
# LocalCluster tests (pytest -m dask)
# ============================================================================
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    # Work stealing off: a task must run where its data lives, so that the
    # "features never move" test checks sknc's graph, not a scheduling choice.
    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        )
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        client.close()
        cluster.close()


def _digits(n=90):
    X, y = load_digits(return_X_y=True)
    return (X[:n] / 16.0).reshape(-1, 8, 8), y[:n]


def _comparable(cv_results):
    return {k: v for k, v in cv_results.items() if not k.endswith("_time")}


def _assert_cv_results_equal(a, b):
    a, b = _comparable(a), _comparable(b)
    assert a.keys() == b.keys()
    for key in a:
        if key == "params":
            assert a[key] == b[key]
        elif np.asarray(a[key]).dtype.kind == "f":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# digits through the 8-feature test backbone: 8 features for 10 classes, so NC1 says
# it is not comparable with wider features (it is still a number, compared below)
@pytest.mark.filterwarnings("ignore::sknc.metrics.NCNotComparableWarning")
@pytest.mark.dask
def test_grid_search_on_dask_equals_local_run(client, tmp_path):
    import joblib

    X, y = _digits()
    scoring = {
        "accuracy": "accuracy",
        "neg_nc1": get_scorer("neg_nc1"),
        "neg_cdnv": get_scorer("neg_cdnv"),
    }

    def grid(memory=None):
        pipe = make_pipeline(
            _counting_features(input_size=8, memory=memory), LogisticRegression(max_iter=300)
        )
        return GridSearchCV(
            pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3, scoring=scoring, refit="accuracy"
        )

    local = grid().fit(X, y)
    before = _worker_counts(client)
    # the feature cache lives in a directory every worker process sees
    with joblib.parallel_config(backend="dask"):
        remote = grid(memory=str(tmp_path / "cache")).fit(X, y)
    forwards = _delta(before, _worker_counts(client), "forward")
    assert sum(forwards.values()) > 0  # the backbone ran on the workers
    _assert_cv_results_equal(local.cv_results_, remote.cv_results_)
    for key in ("mean_test_accuracy", "mean_test_neg_nc1", "mean_test_neg_cdnv"):
        assert np.isfinite(local.cv_results_[key]).all(), key  # equal, and not NaN = NaN
    assert remote.best_params_ == local.best_params_
    # 3 folds x (train, test) distinct inputs computed on the workers, + the local refit
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 7
    np.testing.assert_array_equal(remote.predict(X), local.predict(X))


@pytest.mark.dask
def test_finetuning_cross_validate_on_dask_equals_local_run(client):
    import joblib

    from sknc.finetune import FineTuningClassifier

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    y = np.array(["a", "b", "c"] * 4)
    est = FineTuningClassifier(
        "resnet10t",
        method="scl-ft",
        input_size=32,
        max_epochs=1,
        batch_size=6,
        random_state=0,
        device="auto",
        model_kwargs=dict(channels=(16, 32, 64, 128), stem_width=8),
    )
    kw = dict(cv=2, scoring=["accuracy", "neg_log_loss"], return_estimator=True)
    local = cross_validate(est, X, y, **kw)
    with joblib.parallel_config(backend="dask"):
        remote = cross_validate(est, X, y, **kw)
    for key in ("test_accuracy", "test_neg_log_loss"):
        np.testing.assert_allclose(remote[key], local[key], rtol=1e-6)
    # the fitted estimators came back from the workers by pickle and still work
    for a, b in zip(local["estimator"], remote["estimator"]):
        assert b.device_.type == "cpu" and b.net_.device == "cpu"
        np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.train_nc1_, a.train_nc1_, rtol=1e-6)


@pytest.mark.dask
def test_partitioned_extraction_equals_single_process_and_loads_once_per_worker(client, tmp_path):
    paths = _write_pngs(tmp_path, _images(32))
    est = _counting_features(device="auto").fit()
    expected = est.transform(paths)
    bag = db.from_sequence(paths, npartitions=8)  # 8 partitions of 4 = batch_size
    before = _worker_counts(client)
    Z = extract_features(bag, est)
    Z = Z.persist()
    result = Z.compute()
    after = _worker_counts(client)
    np.testing.assert_array_equal(result, expected)
    unpickled = _delta(before, after, "unpickled")
    forwards = _delta(before, after, "forward")
    # every worker deserialised the model exactly once, for 8 partitions
    assert unpickled == {w: 1 for w in after}, unpickled
    assert sum(forwards.values()) == 8  # one batch per partition, no repeat
    assert all(n > 0 for n in forwards.values())  # both workers extracted
    # a dask array of paths with uneven chunks: known row counts, same features
    Z2 = extract_features(da.from_array(np.array(paths, dtype=object), chunks=12), est)
    assert Z2.chunks[0] == (12, 12, 8)
    np.testing.assert_allclose(Z2.compute(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.dask
def test_statistics_on_the_cluster_equal_in_memory_and_never_gather_features(client):
    from dask.utils import key_split

    n, d = 600, 64
    futures = [client.submit(_pair_block, seed, n, d, 100.0, pure=False) for seed in range(8)]
    blocks = client.gather(futures)  # the reference, copied to the test process only
    X = np.concatenate([b[0] for b in blocks])
    y = np.concatenate([b[1] for b in blocks])
    W = np.random.default_rng(0).normal(size=(5, d))
    feature_keys = {f.key for f in futures}

    lazy = nc_statistics_from_partitions(futures, split_every=3, compute=False)
    client.run(_clear_transfer_log)
    stats = client.compute(lazy).result()
    # the per-partition tasks ran where their block lives: no block moved
    moved = {k for keys in client.run(_transferred_keys).values() for k in keys}
    assert not feature_keys & moved
    assert any(key_split(k) == "partition_statistics" for k in moved)  # statistics did
    _assert_stats_match(stats, X, y, W=W)

    counter = stats.nc4_counter(W)
    lazy_nc4 = nc4_counter_from_partitions(counter, futures, split_every=3, compute=False)
    # in both graphs, the features are read only by per-partition tasks, one block each
    for graph, reader in ((lazy, "partition_statistics"), (lazy_nc4, "partition_nc4")):
        dsk = dict(graph.__dask_graph__())
        readers = {k: set(dsk[k].dependencies) & feature_keys for k in dsk}
        readers = {k: v for k, v in readers.items() if v}
        assert len(readers) == 8
        assert all(len(v) == 1 and key_split(k) == reader for k, v in readers.items())
    filled = client.compute(lazy_nc4).result()
    assert filled.n_samples_ == len(y)
    assert filled.value == nc4(X, y, W)
    # the dask.array form on the cluster
    Xd = da.from_array(X, chunks=(1000, 16))
    yd = da.from_array(y, chunks=700)
    _assert_stats_match(nc_statistics_from_partitions(Xd, yd), X, y, W=W)


@pytest.mark.dask
def test_feature_cache_hit_from_another_worker_process(client, tmp_path):
    workers = sorted(client.scheduler_info()["workers"])
    images = _images(12, seed=3)
    est = _counting_features(memory=str(tmp_path / "cache")).fit()
    Z_a, forwards_a = client.submit(
        _transform_on_worker, est, images, workers=[workers[0]], pure=False
    ).result()
    Z_b, forwards_b = client.submit(
        _transform_on_worker, est, images, workers=[workers[1]], pure=False
    ).result()
    pids = {w: c["pid"] for w, c in _worker_counts(client).items()}
    assert pids[workers[0]] != pids[workers[1]]
    assert forwards_a == 3 and forwards_b == 0  # computed in one process, read in the other
    np.testing.assert_array_equal(Z_a, Z_b)
    np.testing.assert_array_equal(Z_b, est.transform(images))


@pytest.mark.dask
def test_gpu_resource_routes_joblib_and_extraction_tasks(client, tmp_path):
    import joblib

    gpu_worker = sorted(client.scheduler_info()["workers"])[0]
    client.run(_set_gpu_resource, workers=[gpu_worker])
    try:
        X, y = _digits(60)
        with joblib.parallel_config(backend="dask", resources={"GPU": 1}):
            res = cross_validate(WhereFitted(), X.reshape(60, -1), y, cv=4, return_estimator=True)
        assert {e.worker_ for e in res["estimator"]} == {gpu_worker}

        paths = _write_pngs(tmp_path, _images(16))
        est = _counting_features().fit()
        before = _worker_counts(client)
        Z = client.persist(
            extract_features(db.from_sequence(paths, npartitions=4), est), resources={"GPU": 1}
        )
        np.testing.assert_array_equal(Z.compute(), est.transform(paths))
        forwards = _delta(before, _worker_counts(client), "forward")
        assert forwards[gpu_worker] == 4 and sum(forwards.values()) == 4, forwards
    finally:
        client.run(_set_gpu_resource, workers=[gpu_worker], amount=0)


def test_estimators_pickle_for_transport():
    # what travels to and from the workers: unfitted and fitted estimators, scorers
    est = _counting_features(device="auto").fit()
    again = pickle.loads(pickle.dumps(est))
    assert all(p.device.type == "cpu" for p in again.model_.parameters())
    images = _images(4)
    np.testing.assert_array_equal(again.transform(images), est.transform(images))
    for name in ("neg_nc1", "neg_cdnv", "neg_nc2", "neg_nc4"):
        assert repr(pickle.loads(pickle.dumps(get_scorer(name)))) == repr(get_scorer(name))
    counter = NC4Counter([[0.0], [4.0]], coef=[[-1.0], [1.0]])
    assert pickle.loads(pickle.dumps(counter.update(np.array([[1.0], [3.0]])))).n_samples_ == 2


# ----------------------------------------------------------------------------
# the user-guide page runs as written
# ----------------------------------------------------------------------------
_SKIP = ".. scaling-test: skip"


def _page_blocks():
    text = (ROOT / "docs" / "user_guide" / "scaling.rst").read_text()
    blocks = []
    pattern = re.compile(
        r"((?:\.\. scaling-test: skip\n\n)?)\.\. code-block:: python\n\n"
        r"((?:(?:   .*)?\n)+)"
    )
    for match in pattern.finditer(text):
        code = "\n".join(line[3:] for line in match.group(2).splitlines())
        blocks.append((bool(match.group(1)), code))
    return blocks


@pytest.mark.dask
def test_scaling_page_code_runs(client, tmp_path, monkeypatch):
    blocks = _page_blocks()
    run = [code for skip, code in blocks if not skip]
    assert len(run) >= 4 and any(skip for skip, _ in blocks)
    import tempfile

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the page's cache and folder
    namespace = {"client": client}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for code in run:
            exec(compile(code, "scaling.rst", "exec"), namespace)
    assert 0 < namespace["report"].nc1 < np.inf
    assert list((tmp_path / "sknc-feature-cache").rglob("*.npy"))

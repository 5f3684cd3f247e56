import os
import sys

import numpy as np
import pytest

# Keep tests deterministic and light on the shared 2-core machines: tests never
# reach a model hub, and torch runs one intra-op thread per process (tiny models
# are slower with more threads, and parallel test processes oversubscribe cores).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def _cuda_available():
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One torch intra-op thread in every test module, restored afterwards.

    Tiny models gain nothing from more threads, and on a shared 2-core machine
    oversubscribed OpenMP threads spin: convolutions then run 10-100x slower.
    """
    torch = sys.modules.get("torch")
    if torch is None:  # torch is not installed
        yield
        return
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


@pytest.fixture(autouse=True)
def _fresh_idle_cores():
    """No test sees an ``idle_cores`` answer that an earlier test cached."""
    from sknc.utils import _threads

    _threads._IDLE_LAST[0] = None
    yield
    _threads._IDLE_LAST[0] = None


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def two_threads():
    """torch and BLAS at 2 threads for the test (restored after)."""
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    with threadpool_limits(2, user_api="blas"):
        yield
    torch.set_num_threads(old)

"""CPU preprocessing runs on one torch thread (sknc.utils' thread policy).

Splitting the element-wise work of preprocessing over torch's threads gains
little, and on a busy machine every step then waits for the slowest thread
(issue 19: 2-thread feature extraction and fine-tuning stalled). Results are
the same bits at any thread count.
"""

import numpy as np
import pytest
import torch
from _helpers import CONFIG_32

from sknc.features import ImageDataset
from sknc.features import _images as images_module
from sknc.features._images import iter_batches, preprocess_batch

CONFIG = CONFIG_32


def _record_threads(monkeypatch):
    seen = []
    original = images_module.preprocess_batch

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(images_module, "preprocess_batch", recording)
    return seen


def test_iter_batches_preprocesses_on_one_thread(monkeypatch, two_threads):
    X = np.random.default_rng(0).integers(0, 256, (10, 40, 40, 3), dtype=np.uint8)
    seen = _record_threads(monkeypatch)
    batches = [b for _, _, b in iter_batches(X, CONFIG, batch_size=4, device="cpu")]
    assert seen == [1, 1, 1]
    assert torch.get_num_threads() == 2  # restored for the forward passes
    assert torch.equal(
        torch.cat(batches), preprocess_batch(torch.from_numpy(X).permute(0, 3, 1, 2), CONFIG)
    )


def test_image_dataset_preprocesses_on_one_thread(monkeypatch, two_threads):
    X = np.random.default_rng(1).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    seen = _record_threads(monkeypatch)
    ds = ImageDataset(X, [0, 1, 0], data_config=CONFIG)
    items = [ds[i][0] for i in range(3)]
    assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    expected = preprocess_batch(torch.from_numpy(X).permute(0, 3, 1, 2), CONFIG)
    assert torch.equal(torch.stack(items), expected)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_preprocessing_is_the_same_bits_on_one_and_two_threads(interpolation, two_threads):
    config = dict(CONFIG, input_size=(3, 224, 224), interpolation=interpolation)
    x = torch.from_numpy(
        np.random.default_rng(2).integers(0, 256, (4, 3, 300, 260), dtype=np.uint8)
    )
    on_two = preprocess_batch(x, config)
    torch.set_num_threads(1)
    assert torch.equal(preprocess_batch(x, config), on_two)

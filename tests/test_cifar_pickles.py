"""CIFAR-10 batches are read with a restricted unpickler: a data file cannot run code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from advrepro.data import DatasetSpec, load_split
from advrepro.errors import DataCorruptError

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _fake_cifar(root, protocol: int = 4):
    """A well-formed (if tiny) CIFAR-10 folder: 4 images per batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in BATCHES:
        batch = {"batch_label": name, "labels": [0, 1, 2, 3],
                 "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 "filenames": [f"{i}.png" for i in range(4)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


@pytest.mark.parametrize("protocol", [2, 4])
def test_plain_batches_load(tmp_path, protocol):
    _fake_cifar(tmp_path, protocol)
    x, y = load_split(DatasetSpec("cifar10", str(tmp_path), download=False,
                                  verify_checksum=False), "train")
    assert x.shape == (20, 3, 32, 32) and y.tolist() == [0, 1, 2, 3] * 5


@pytest.mark.parametrize("name", ["test_batch", "batches.meta"])
def test_a_pickle_that_runs_a_command_is_refused_before_it_runs(tmp_path, name):
    folder = _fake_cifar(tmp_path / "data")
    marker = tmp_path / "pwned"
    evil = {"data": _RunsACommand(marker), "labels": [0]}
    (folder / name).write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DataCorruptError) as err:
        load_split(DatasetSpec("cifar10", str(tmp_path / "data"), download=False,
                               verify_checksum=False), "test")
    message = str(err.value)
    assert "\n" not in message and str((folder / name).resolve()) in message
    assert "posix.system" in message or "os.system" in message
    assert not marker.exists()

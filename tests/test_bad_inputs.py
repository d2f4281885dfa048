"""Each bad input gives a one-line error naming the culprit, and leaves nothing behind.

"Nothing written" means: no model directory, no result, no data directory created. The
inter-process lock files (``.<model>.lock``, see advrepro.locking) are the one exception: a
lock file cannot be removed safely while another process may be waiting on it.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import pytest

from advrepro.data import DatasetSpec, load_split
from advrepro.errors import UserError
from conftest import ROOT, TINY_DATA, compose_cfg, tiny_overrides


def _written(tmp_path) -> list[str]:
    """Files and empty directories under ``tmp_path``, lock files excepted."""
    out = []
    for path in tmp_path.rglob("*"):
        if path.name.endswith(".lock"):
            continue
        if path.is_file() or (path.is_dir() and not any(path.iterdir())):
            out.append(str(path.relative_to(tmp_path)))
    return sorted(out)


def _mnist_root(tmp_path, damage):
    root = tmp_path / "data"
    shutil.copytree(TINY_DATA / "MNIST", root / "MNIST")
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    return root, path


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def modified_mnist_file(tmp_path):
    root, path = _mnist_root(tmp_path, _flip_last_byte)
    return _train_classifier(tmp_path, root), [str(path.resolve()), "does not match"]


def truncated_idx_file(tmp_path):
    root, path = _mnist_root(tmp_path, lambda b: b[:5000])
    return _train_classifier(tmp_path, root), [str(path.resolve()), "truncated"]


def zeroed_idx_header(tmp_path):
    root, path = _mnist_root(tmp_path, lambda b: bytes(16) + b[16:])
    return _train_classifier(tmp_path, root), [str(path.resolve()), "header (00000000)"]


def cifar_pickle_running_a_command(tmp_path):
    import numpy as np

    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    plain = {"labels": [0], "data": np.zeros((1, 3072), dtype=np.uint8)}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(plain))
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _RunsACommand(marker)}))

    def run():
        try:
            load_split(DatasetSpec("cifar10", str(tmp_path / "data"), download=False,
                                   verify_checksum=False), "test")
        finally:
            assert not marker.exists(), "the pickle ran its command"

    return run, [str((folder / "test_batch").resolve()), "system"]


def truncated_model_metadata(tmp_path):
    from test_cache import _request

    from advrepro.training import ModelCache

    cache = ModelCache(tmp_path / "models", accelerator="cpu", progress=False)
    request = _request(epochs=1)
    cache.get(request)
    meta = cache.directory(request) / "meta.json"
    meta.write_text(meta.read_text()[:30])
    return lambda: cache.metadata(request), [str(meta), "truncated"]


def download_into_a_missing_root(tmp_path):
    from urllib.error import URLError

    import torchvision.datasets.mnist as mnist

    def offline(*args, **kwargs):
        raise URLError("no network")

    def run():
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(mnist, "download_and_extract_archive", offline)
            load_split(DatasetSpec("mnist", str(tmp_path / "new" / "root"), download=True),
                       "train")

    return run, ["downloading it failed", "no network"]


def _train_classifier(tmp_path, root):
    from advrepro.experiments.workbench import Workbench

    cfg = compose_cfg("train", tiny_overrides(tmp_path / "out",
                                              [f"paths.data_root={root}"]))
    return lambda: Workbench(cfg).classifier()


CASES = [modified_mnist_file, truncated_idx_file, zeroed_idx_header,
         cifar_pickle_running_a_command, truncated_model_metadata, download_into_a_missing_root]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, case):
    run, says = case(tmp_path)
    before = _written(tmp_path)
    with pytest.raises(UserError) as err:
        run()
    message = str(err.value)
    assert "\n" not in message, message
    for part in says:
        assert part in message, message
    assert _written(tmp_path) == before


def test_unknown_config_group_option_gives_a_summary_first_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"),
                          *tiny_overrides(tmp_path / "out", ["model=nosuch"])],
                         capture_output=True, text=True, timeout=120)
    first = out.stderr.splitlines()[0]
    assert first.startswith("error: In 'train': Could not find 'model/nosuch'; available "
                            "options in 'model': adam_lenet, "), out.stderr
    assert not (tmp_path / "out").exists()

"""MNIST is verified at load like CIFAR-10; a dataset's fingerprint names its actual data."""

from __future__ import annotations

import shutil

import pytest

from advrepro.data import DatasetSpec, data_fingerprint, load_split
from advrepro.errors import DataCorruptError
from conftest import SHARED_DATA, TINY_DATA, compose_cfg, shared_data_available, tiny_overrides


def _tiny_copy(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(TINY_DATA / "MNIST", root / "MNIST")
    return root


def _flip_a_pixel(root):
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed
    path.write_bytes(bytes(data))
    return path


def test_the_shipped_subset_is_verified_by_its_checksum_list():
    spec = DatasetSpec("mnist", str(TINY_DATA), download=False)
    x, y = load_split(spec, "train")
    assert x.shape == (300, 1, 28, 28)
    fingerprint = data_fingerprint(spec)
    assert fingerprint.startswith("mnist-") and len(fingerprint) == len("mnist-") + 12


def test_a_modified_file_is_refused_naming_it(tmp_path):
    root = _tiny_copy(tmp_path)
    path = _flip_a_pixel(root)
    with pytest.raises(DataCorruptError) as err:
        load_split(DatasetSpec("mnist", str(root), download=False), "test")
    message = str(err.value)
    assert "\n" not in message and str(path.resolve()) in message
    assert "verify_checksum=false" in message
    # an explicit opt-out reads it, and its fingerprint tells it from the shipped subset
    spec = DatasetSpec("mnist", str(root), download=False, verify_checksum=False)
    assert load_split(spec, "train")[0].shape == (300, 1, 28, 28)
    assert data_fingerprint(spec) != data_fingerprint(DatasetSpec("mnist", str(TINY_DATA)))


def test_fingerprint_depends_on_the_data_not_on_the_root_spelling(tmp_path, monkeypatch):
    root = _tiny_copy(tmp_path)
    monkeypatch.chdir(tmp_path)
    spellings = [str(root), "data", "./data/", str(tmp_path / "data" / ".." / "data")]
    assert len({data_fingerprint(DatasetSpec("mnist", s)) for s in spellings}) == 1
    assert data_fingerprint(DatasetSpec("mnist", "data")) == \
        data_fingerprint(DatasetSpec("mnist", str(TINY_DATA)))


@pytest.mark.skipif(not shared_data_available(), reason="no shared MNIST copy")
def test_official_mnist_is_fingerprinted_by_its_name():
    from advrepro.data.datasets import mnist_identity

    spec = DatasetSpec("mnist", str(SHARED_DATA), download=False)
    assert mnist_identity(spec) == "official"
    assert data_fingerprint(spec) == "mnist"


def test_mnist_checksum_can_be_skipped_from_the_environment(tmp_path, monkeypatch):
    assert compose_cfg("train", tiny_overrides(tmp_path)).dataset.verify_checksum is True
    monkeypatch.setenv("ADVREPRO_VERIFY_CHECKSUM", "false")
    assert compose_cfg("train", tiny_overrides(tmp_path)).dataset.verify_checksum is False


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("damage, says", [
    (lambda b: b[:1000], "truncated or corrupt: 1000 bytes where its header"),
    (lambda b: b"\0" * 16 + b[16:], "is corrupt: its header (00000000)"),
])
def test_a_damaged_idx_file_is_named_as_corrupt(tmp_path, damage, says, verify):
    root = _tiny_copy(tmp_path)
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataCorruptError) as err:
        load_split(DatasetSpec("mnist", str(root), download=False, verify_checksum=verify),
                   "test")
    message = str(err.value)
    assert "\n" not in message and says in message and str(path.resolve()) in message
    assert "not found" not in message and "download=true" not in message


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_a_failed_download_leaves_a_missing_root_missing(tmp_path, monkeypatch, name):
    from urllib.error import URLError

    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.mnist as mnist

    from advrepro.errors import DataNotFoundError

    def offline(*args, **kwargs):
        raise URLError("offline")

    monkeypatch.setattr(mnist, "download_and_extract_archive", offline)
    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    root = tmp_path / "new" / "data"
    with pytest.raises(DataNotFoundError) as err:
        load_split(DatasetSpec(name, str(root), download=True), "train")
    message = str(err.value)
    assert "\n" not in message and "downloading it failed" in message and "offline" in message
    assert list(tmp_path.iterdir()) == []

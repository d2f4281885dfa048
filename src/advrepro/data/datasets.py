"""MNIST and CIFAR-10 as tensors in [0, 1], loaded through torchvision.

The data root comes from the config (``paths.data_root``, which defaults to the environment
variable ``ADVREPRO_DATA`` and falls back to ``data/``). A dataset absent from the root is
downloaded the way torchvision does when ``download`` is true; otherwise a
:class:`~advrepro.errors.DataNotFoundError` says where it looked and how to provide it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from advrepro.errors import ConfigError, DataNotFoundError, require_choice

SUPPORTED = ("mnist", "cifar10")


@dataclass(frozen=True)
class DatasetSpec:
    """Which dataset, where it lives and how to read it."""

    name: str
    root: str
    download: bool = True
    verify_checksum: bool = True
    train_limit: int | None = None
    eval_pool: int | None = None

    def __post_init__(self) -> None:
        require_choice("dataset.name", self.name, SUPPORTED)
        if self.train_limit is not None and self.train_limit <= 0:
            raise ConfigError(f"dataset.train_limit must be positive, got {self.train_limit}")
        if self.eval_pool is not None and self.eval_pool <= 0:
            raise ConfigError(f"dataset.eval_pool must be positive, got {self.eval_pool}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, 28, 28) if self.name == "mnist" else (3, 32, 32)

    @property
    def num_classes(self) -> int:
        return 10


def _missing(spec: DatasetSpec, why: str) -> DataNotFoundError:
    root = Path(spec.root).resolve()
    folder = "MNIST/raw/" if spec.name == "mnist" else "cifar-10-batches-py/"
    if spec.name == "cifar10" and (root / folder).is_dir() and spec.verify_checksum:
        return DataNotFoundError(
            f"cifar10 files under {root / folder} do not match the official checksums ({why}). "
            f"Re-download them, or, for a deliberately rebuilt local copy, skip the check with "
            f"dataset.verify_checksum=false (or ADVREPRO_VERIFY_CHECKSUM=false)."
        )
    return DataNotFoundError(
        f"{spec.name} not found under {root} ({why}). Either allow the download "
        f"(dataset.download=true, needs internet) or place torchvision's layout there "
        f"({folder}) and point the root at it: paths.data_root=/path or ADVREPRO_DATA=/path."
    )


def _torchvision_dataset(spec: DatasetSpec, train: bool):
    from torchvision import datasets

    root = os.fspath(spec.root)
    if spec.name == "mnist":
        try:
            return datasets.MNIST(root, train=train, download=spec.download)
        except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True"
            raise _missing(spec, str(err).splitlines()[0]) from None
        except OSError as err:  # download attempted without network
            raise _missing(spec, f"download failed: {err}") from None

    class _CIFAR10(datasets.CIFAR10):
        # The checksum is skipped only on explicit request (dataset.verify_checksum=false),
        # e.g. for a locally rebuilt copy whose bytes differ from the official archive.
        def _check_integrity(self) -> bool:  # noqa: D401
            if spec.verify_checksum:
                return super()._check_integrity()
            base = Path(self.root) / self.base_folder
            names = [n for n, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all((base / name).is_file() for name in names)

        def _load_meta(self) -> None:
            if spec.verify_checksum:
                return super()._load_meta()
            import pickle

            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    try:
        return _CIFAR10(root, train=train, download=spec.download)
    except RuntimeError as err:
        raise _missing(spec, str(err).splitlines()[0]) from None
    except OSError as err:
        raise _missing(spec, f"download failed: {err}") from None


_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}


def load_split(spec: DatasetSpec, split: str) -> tuple[Tensor, Tensor]:
    """Return ``(images, labels)`` of ``split`` ("train" or "test") as float32 in [0, 1], NCHW.

    ``train_limit`` keeps the first N training images; ``eval_pool`` keeps the first N test images
    (the pool the papers' 100-image samples are drawn from).
    """
    require_choice("split", split, ("train", "test"))
    key = (spec, split)
    if key not in _CACHE:
        ds = _torchvision_dataset(spec, train=split == "train")
        data = torch.as_tensor(ds.data)
        if data.ndim == 3:  # MNIST: N x H x W
            data = data.unsqueeze(1)
        else:  # CIFAR: N x H x W x C
            data = data.permute(0, 3, 1, 2)
        images = data.contiguous().float().div_(255.0)
        labels = torch.as_tensor(ds.targets, dtype=torch.long)
        limit = spec.train_limit if split == "train" else spec.eval_pool
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        _CACHE[key] = (images, labels)
    return _CACHE[key]

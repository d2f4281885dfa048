"""MNIST and CIFAR-10 as tensors in [0, 1], loaded through torchvision.

The data root comes from the config (``paths.data_root``, which defaults to the environment
variable ``ADVREPRO_DATA`` and falls back to ``data/``). A dataset absent from the root is
downloaded the way torchvision does when ``download`` is true; otherwise a
:class:`~advrepro.errors.DataNotFoundError` says where it looked and how to provide it.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from advrepro.errors import ConfigError, DataCorruptError, DataNotFoundError, require_choice

SUPPORTED = ("mnist", "cifar10")

#: sha256 of the official MNIST release's four uncompressed IDX files (the official gzip files
#: have md5s f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...; torchvision checks those when it
#: downloads, and these after decompression)
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
#: a checksum list (``sha256sum`` format) beside non-official IDX files declares them a known
#: local copy, e.g. the tiny subset the tests ship; they are verified against it instead
LOCAL_SUMS = "SHA256SUMS"

_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, remembered per (path, size, mtime) within the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, algorithm)
    if key not in _DIGESTS:
        h = hashlib.new(algorithm)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _read_sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[Path(name.lstrip("*")).name] = digest.lower()
    return sums


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
    if spec.download:
        return DataNotFoundError(
            f"{spec.name} not found under {root} and downloading it failed ({why}). Place "
            f"torchvision's layout there ({folder}) and point the root at it: "
            f"paths.data_root=/path or ADVREPRO_DATA=/path."
        )
    return DataNotFoundError(
        f"{spec.name} not found under {root} ({why}). Either allow the download "
        f"(dataset.download=true, needs internet) or place torchvision's layout there "
        f"({folder}) and point the root at it: paths.data_root=/path or ADVREPRO_DATA=/path."
    )


def _remove_empty_dirs(top: Path) -> None:
    for dirpath, _, _ in os.walk(top, topdown=False):
        try:
            Path(dirpath).rmdir()
        except OSError:  # not empty: a download wrote something, keep it
            pass


def _torchvision(spec: DatasetSpec, make):
    """``make()`` (a torchvision dataset, which downloads when ``spec.download``), its failures
    as one-line :class:`DataNotFoundError`; directories it created for a failed download are
    removed again, so a missing root is left missing."""
    top = Path(spec.root).absolute()
    while not top.parent.exists():
        top = top.parent
    created = not top.exists()
    try:
        return make()
    except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found...", no network
        if created:
            _remove_empty_dirs(top)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        why = " ".join(dict.fromkeys(lines[:1] + lines[-1:])) or type(err).__name__
        raise _missing(spec, why) from None


def _mnist_folder(spec: DatasetSpec) -> Path:
    return Path(spec.root) / "MNIST" / "raw"


def check_idx(path: Path) -> None:
    """Raise a one-line :class:`DataCorruptError` naming ``path`` unless it is a well-formed MNIST
    IDX file: an unsigned-byte header with 3 dimensions (N x 28 x 28) for images or 1 for
    labels, and exactly the size its header announces."""
    ndim = 1 if "labels" in path.name else 3
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(4 + 4 * ndim)
    where = path.resolve()
    if len(header) < 4 + 4 * ndim or header[:4] != bytes((0, 0, 0x08, ndim)):
        raise DataCorruptError(
            f"MNIST file {where} is corrupt: its header ({header[:4].hex() or 'empty'}) is not "
            f"that of an IDX file of {ndim} unsigned-byte dimension(s); re-download it")
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected = 4 + 4 * ndim + math.prod(dims)
    if (ndim == 3 and dims[1:] != (28, 28)) or size != expected:
        raise DataCorruptError(
            f"MNIST file {where} is truncated or corrupt: {size} bytes where its header "
            f"({' x '.join(map(str, dims))}) announces {expected}; re-download it")


def mnist_identity(spec: DatasetSpec) -> str:
    """Check the four MNIST IDX files under ``spec.root`` and say what they are: "official"
    (the official checksums) or "local" (a checksum list beside them, see :data:`LOCAL_SUMS`,
    lists them with their actual checksums); a file matching neither raises a one-line
    :class:`DataCorruptError` naming it."""
    folder = _mnist_folder(spec)
    digests = {name: file_digest(folder / name) for name in MNIST_SHA256}
    if digests == MNIST_SHA256:
        return "official"
    sums_file = folder / LOCAL_SUMS
    local = _read_sums(sums_file) if sums_file.is_file() else {}
    for name, digest in digests.items():
        if digest != MNIST_SHA256[name] and local.get(name) != digest:
            against = (f"the official checksum or {sums_file}" if local
                       else "the official checksum")
            raise DataCorruptError(
                f"MNIST file {(folder / name).resolve()} does not match {against} (sha256 "
                f"{digest[:12]}...): it is modified or corrupt. Re-download it, or skip the check "
                f"with dataset.verify_checksum=false (or ADVREPRO_VERIFY_CHECKSUM=false)."
            )
    return "local"


def data_fingerprint(spec: DatasetSpec) -> str:
    """The identity of the data under ``spec.root``, independent of how the root is spelled:
    the dataset's name for the official files, otherwise the name and a short sha256 of the
    actual files (e.g. ``"cifar10-3f0a9c21d4e7"`` for a locally rebuilt copy)."""
    if spec.name == "mnist":
        folder = _mnist_folder(spec)
        names = sorted(MNIST_SHA256)
        official = dict(MNIST_SHA256)
    else:
        from torchvision import datasets

        folder = Path(spec.root) / datasets.CIFAR10.base_folder
        md5s = dict(datasets.CIFAR10.train_list + datasets.CIFAR10.test_list)
        md5s[datasets.CIFAR10.meta["filename"]] = datasets.CIFAR10.meta["md5"]
        names = sorted(md5s)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise _missing(spec, f"no {missing[0]} in {folder.resolve()}")
    if spec.name == "mnist":
        if all(file_digest(folder / n) == official[n] for n in names):
            return spec.name
    elif all(file_digest(folder / n, "md5") == md5s[n] for n in names):
        return spec.name
    blob = "".join(f"{file_digest(folder / n)}  {n}\n" for n in names)
    return f"{spec.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _mnist(spec: DatasetSpec, train: bool):
    """torchvision's MNIST, its files verified first (see :func:`mnist_identity`)."""
    from torchvision import datasets

    present = all((_mnist_folder(spec) / n).is_file() for n in MNIST_SHA256)
    if present:  # before torchvision reads them
        for name in MNIST_SHA256:
            check_idx(_mnist_folder(spec) / name)
        if spec.verify_checksum:
            mnist_identity(spec)
    ds = _torchvision(spec, lambda: datasets.MNIST(os.fspath(spec.root), train=train,
                                                   download=spec.download))
    if not present:  # just downloaded
        for name in MNIST_SHA256:
            check_idx(_mnist_folder(spec) / name)
        if spec.verify_checksum:
            mnist_identity(spec)
    return ds


#: the only globals a CIFAR-10 batch pickle may name: numpy's array reconstruction (under its
#: numpy 1 and numpy 2 module names) and the codec Python 2 strings are pickled with
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain containers, strings, numbers and numpy arrays, nothing else: a data file
    naming any other global (``os.system``, ``builtins.eval``, ...) is refused before it runs."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}")
        if module.endswith("multiarray"):
            import numpy

            core = getattr(numpy, "_core", None) or numpy.core
            return getattr(core.multiarray, name)
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> dict:
    """A CIFAR-10 batch (or ``batches.meta``) read with :class:`_BatchUnpickler`; anything but
    a dict of plain data raises a one-line :class:`DataCorruptError` naming the file."""
    try:
        with open(path, "rb") as fh:
            entry = _BatchUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        raise DataCorruptError(
            f"{path.resolve()} is not a CIFAR-10 batch: refused to unpickle it "
            f"({str(err).splitlines()[0] if str(err) else 'malformed pickle'})"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise DataCorruptError(f"{path.resolve()} is truncated or not a CIFAR-10 batch "
                               f"({type(err).__name__})") from None
    if not isinstance(entry, dict):
        raise DataCorruptError(f"{path.resolve()} is not a CIFAR-10 batch (a "
                               f"{type(entry).__name__}, not a dict)")
    return entry


def _cifar10(spec: DatasetSpec, train: bool) -> tuple[Tensor, list[int]]:
    """CIFAR-10's images (N x 3 x 32 x 32, uint8) and labels, read from torchvision's layout."""
    import numpy as np
    from torchvision import datasets

    official = dict(datasets.CIFAR10.train_list + datasets.CIFAR10.test_list)
    meta = datasets.CIFAR10.meta
    official[meta["filename"]] = meta["md5"]
    folder = Path(spec.root) / datasets.CIFAR10.base_folder
    if not all((folder / name).is_file() for name in official):
        if not spec.download:
            raise _missing(spec, f"no complete {datasets.CIFAR10.base_folder} folder")
        # downloads the official archive (md5-checked), then reads it
        _torchvision(spec, lambda: datasets.CIFAR10(os.fspath(spec.root), train=train,
                                                    download=True))
    if spec.verify_checksum:
        for name, md5 in official.items():
            if file_digest(folder / name, "md5") != md5:
                raise DataCorruptError(
                    f"cifar10 file {(folder / name).resolve()} does not match the official "
                    f"checksum (md5 {file_digest(folder / name, 'md5')}). Re-download it, or, for "
                    f"a deliberately rebuilt local copy, skip the check with "
                    f"dataset.verify_checksum=false (or ADVREPRO_VERIFY_CHECKSUM=false)."
                )
    names = [n for n, _ in (datasets.CIFAR10.train_list if train
                            else datasets.CIFAR10.test_list)]
    images, labels = [], []
    for name in names:
        entry = read_cifar_batch(folder / name)
        data, targets = entry.get("data"), entry.get("labels")
        if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
                or data.shape[1] != 3 * 32 * 32 or not isinstance(targets, list)
                or len(targets) != len(data)):
            raise DataCorruptError(f"{(folder / name).resolve()} is not a CIFAR-10 batch (no "
                                   f"uint8 'data' of 3072 columns with one label per row)")
        images.append(data)
        labels.extend(int(t) for t in targets)
    read_cifar_batch(folder / meta["filename"])  # the class names: must be plain data too
    return torch.from_numpy(np.vstack(images).reshape(-1, 3, 32, 32)), labels


_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}


def load_split(spec: DatasetSpec, split: str) -> tuple[Tensor, Tensor]:
    """Return ``(images, labels)`` of ``split`` ("train" or "test") as float32 in [0, 1], NCHW.

    ``train_limit`` keeps the first N training images; ``eval_pool`` keeps the first N test images
    (the pool the papers' 100-image samples are drawn from).
    """
    require_choice("split", split, ("train", "test"))
    key = (spec, split)
    if key not in _CACHE:
        if spec.name == "mnist":
            ds = _mnist(spec, train=split == "train")
            data, targets = torch.as_tensor(ds.data).unsqueeze(1), ds.targets  # N x 1 x H x W
        else:
            data, targets = _cifar10(spec, train=split == "train")
        images = data.contiguous().float().div_(255.0)
        labels = torch.as_tensor(targets, dtype=torch.long)
        limit = spec.train_limit if split == "train" else spec.eval_pool
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        _CACHE[key] = (images, labels)
    return _CACHE[key]

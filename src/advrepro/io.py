"""Atomic file writes and safe checkpoint loading shared by the cache and the result store."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from advrepro.errors import CheckpointError


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.
    The file gets the mode of any newly created file (0666 less the umask), not the 0600 of
    the temporary file it is written through."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | os.PathLike, remedy: str = "delete it") -> Any:
    """The JSON document in ``path``; a truncated or malformed one raises a one-line
    :class:`CheckpointError` naming it, with ``remedy``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is truncated or not JSON ({type(err).__name__}: "
                              f"{str(err).splitlines()[0]}); {remedy}") from None


def safe_torch_load(path: str | os.PathLike, remedy: str = "delete it to retrain") -> Any:
    """``torch.load(..., weights_only=True)`` with a clear error for missing or corrupt files;
    ``remedy`` tells the user what to do about a corrupt one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, unpickling error, foreign object, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); {remedy}"
        ) from None

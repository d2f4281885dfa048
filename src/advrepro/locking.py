"""Inter-process locks, so that two identical commands share work instead of both doing it.

    with exclusive(models_dir / ".mnist-CarliniWagnerMNIST-1a2b3c.lock", "model mnist-..."):
        if not done():
            do_it()

The lock is an OS file lock (the ``filelock`` package): it is released when its holder exits or
dies, so a killed process never leaves a stale lock behind. A process that finds the lock held
says so in one log line and waits. After acquiring, re-check whether the work is still to be done:
the holder it waited for has usually done it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger("advrepro")


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file guarding ``path`` (a file or directory): a hidden sibling ``.<name>.lock``,
    so that locking never creates ``path`` itself."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextmanager
def exclusive(path: str | os.PathLike, what: str | None = None) -> Iterator[None]:
    """Hold the inter-process lock of ``path`` (see :func:`lock_path`) for the ``with`` block,
    waiting for another process holding it; ``what`` names the work in the waiting message."""
    lock_file = lock_path(path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for another process working on %s (lock %s)",
                    what or Path(path).name, lock_file)
        start = time.time()
        lock.acquire()
        log.warning("lock %s acquired after %.0f s", lock_file, time.time() - start)
    try:
        yield
    finally:
        lock.release()

"""Resumable attacks: an attack's state saved after every binary-search step.

A paper-budget C&W cell (9 x 1000 iterations, he2017 §2.4, restarts of §3.1.1) runs for more
than an hour on a CPU. Inside :func:`resumable`, every :class:`~advrepro.attacks.cw.
CarliniWagnerL2` call saves its binary-search state (constants, bounds, best examples, random
generator states) after each step; a rerun of the same cell in the same directory continues
from the last finished step and gives the same result as an uninterrupted run (bit for bit on
a CPU; GPU kernels need not be deterministic). Calls are told
apart by their order within the cell and by a digest of their inputs and settings, so an
attack made of several C&W calls (the two-phase attack of cw2017 §5.2) resumes each of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from advrepro.io import atomic_torch_save, safe_torch_load


@dataclass
class ResumeSession:
    """The attacks of one cell: where their states live, how many calls so far, and how much
    attack time earlier (interrupted) runs spent on the steps that were reused."""

    directory: Path
    key: str = ""
    calls: int = 0
    resumed_seconds: float = 0.0


_SESSION: ContextVar[ResumeSession | None] = ContextVar("advrepro_attack_resume", default=None)


@contextmanager
def resumable(directory: str | Path, key: str = "") -> Iterator[ResumeSession]:
    """Attacks run inside keep their state under ``directory`` and resume from it.

    A state is reused when the call comes at the same position in the cell, with the same
    inputs (values and device), attack settings and ``key`` (what else identifies the attacked
    system, e.g. the classifier's cache key). Code changes that keep all of these do not void
    a state, just as they do not void a finished cell."""
    session = ResumeSession(Path(directory), key)
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)


def _digest(tensors: list[Tensor], settings: dict[str, Any], key: str) -> str:
    """sha256 of the settings, ``key``, and each tensor's shape, dtype, device type and bytes."""
    h = hashlib.sha256(repr((sorted(settings.items()), key)).encode())
    for t in tensors:
        h.update(str((tuple(t.shape), t.dtype, t.device.type)).encode())
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class AttackCheckpoint:
    """The state file of one attack call in the current :func:`resumable` session. Restores
    the global RNG (CPU, and the input's GPU when the attack runs on one) with the state."""

    def __init__(self, path: Path, session: ResumeSession, device: torch.device) -> None:
        self.path = path
        self.session = session
        self.cuda = device if device.type == "cuda" else None

    def load(self) -> dict[str, Any] | None:
        """The saved state (the global RNG restored to it), or None when there is none."""
        if not self.path.is_file():
            return None
        state = safe_torch_load(self.path, remedy="delete it to restart this attack")
        torch.set_rng_state(state["cpu_rng"])
        if self.cuda is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.cuda)
        self.session.resumed_seconds += float(state["seconds"])
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Save ``state`` (tensors and numbers) with the global RNG, atomically."""
        rng = {"cpu_rng": torch.get_rng_state()}
        if self.cuda is not None:
            rng["cuda_rng"] = torch.cuda.get_rng_state(self.cuda)
        atomic_torch_save(self.path, {**state, **rng})


def attack_checkpoint(inputs: list[Tensor], settings: dict[str, Any]) -> AttackCheckpoint | None:
    """The state file for the next attack call on ``inputs`` with ``settings`` (numbers and
    strings), or None outside :func:`resumable`."""
    session = _SESSION.get()
    if session is None:
        return None
    name = f"call{session.calls}_{_digest(inputs, settings, session.key)}.pt"
    session.calls += 1
    return AttackCheckpoint(session.directory / name, session, inputs[0].device)

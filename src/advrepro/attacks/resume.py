"""Resumable attacks: an attack's state saved after every binary-search step.

A paper-budget C&W cell (9 x 1000 iterations, he2017 §2.4, restarts of §3.1.1) runs for more
than an hour on a CPU. Inside :func:`resumable`, every :class:`~advrepro.attacks.cw.
CarliniWagnerL2` call saves its binary-search state (constants, bounds, best examples, random
generator states) after each step; a rerun of the same cell in the same directory continues
from the last finished step and gives the same result as an uninterrupted run. Calls are told
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
class _Session:
    directory: Path
    calls: int = 0
    resumed_seconds: float = 0.0


_SESSION: ContextVar[_Session | None] = ContextVar("advrepro_attack_resume", default=None)


@contextmanager
def resumable(directory: str | Path) -> Iterator[_Session]:
    """Attacks run inside keep their state under ``directory`` and resume from it.

    The yielded session's ``resumed_seconds`` is the attack time spent by earlier, interrupted
    runs whose steps were reused."""
    session = _Session(Path(directory))
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)


def _digest(tensors: list[Tensor], settings: dict[str, Any]) -> str:
    h = hashlib.sha256(repr(sorted(settings.items())).encode())
    for t in tensors:
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class AttackState:
    """The state file of one attack call in the current :func:`resumable` session."""

    def __init__(self, path: Path, session: _Session) -> None:
        self.path = path
        self.session = session

    def load(self) -> dict[str, Any] | None:
        """The saved state (the global RNG restored to it), or None when there is none."""
        if not self.path.is_file():
            return None
        state = safe_torch_load(self.path, remedy="delete it to restart this attack")
        torch.set_rng_state(state["cpu_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.session.resumed_seconds += float(state["seconds"])
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Save ``state`` (tensors and numbers) with the global RNG, atomically."""
        extra = {"cpu_rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            extra["cuda_rng"] = torch.cuda.get_rng_state_all()
        atomic_torch_save(self.path, {**state, **extra})


def attack_state(inputs: list[Tensor], settings: dict[str, Any]) -> AttackState | None:
    """The state file for the next attack call on ``inputs`` with ``settings`` (numbers and
    strings), or None outside :func:`resumable`."""
    session = _SESSION.get()
    if session is None:
        return None
    name = f"call{session.calls}_{_digest(inputs, settings)}.pt"
    session.calls += 1
    return AttackState(session.directory / name, session)

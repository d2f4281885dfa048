"""Result type shared by every attack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor


@dataclass
class AttackResult:
    """Per-image outcome of an attack on a batch.

    ``adversarial`` holds the best successful example of each image (the original where the
    attack failed); ``success`` says whether the exact system was fooled; ``l2``/``linf`` are
    distances to the original (``inf`` where it failed); ``const`` and ``restart`` record which
    C&W constant and random restart produced the kept example.
    """

    original: Tensor
    adversarial: Tensor
    success: Tensor
    const: Tensor = field(default_factory=lambda: torch.empty(0))
    restart: Tensor = field(default_factory=lambda: torch.empty(0))
    iterations: int = 0

    @property
    def l2(self) -> Tensor:
        d = (self.adversarial - self.original).flatten(1).norm(dim=1)
        return torch.where(self.success, d, torch.full_like(d, float("inf")))

    @property
    def linf(self) -> Tensor:
        d = (self.adversarial - self.original).flatten(1).abs().amax(dim=1)
        return torch.where(self.success, d, torch.full_like(d, float("inf")))

    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self.success) else float("nan")

    def mean_l2(self) -> float:
        """Mean L2 over the successful examples (the papers' "Avg L2")."""
        l2 = self.l2[self.success]
        return float(l2.mean()) if len(l2) else float("nan")


class Attack(Protocol):
    """What the runner asks of every attack: run it on a system (a
    :class:`~advrepro.defenses.system.DefendedSystem`, or anything with its ``logits``,
    ``predict`` and ``objective``) for images ``x`` with true labels, or target labels when
    ``targeted``; return the per-image outcome."""

    def run(self, system: Any, x: Tensor, labels: Tensor, targeted: bool) -> AttackResult: ...

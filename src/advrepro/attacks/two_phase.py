"""The two-phase attack of cw2017 §5.2 (used there against the kernel-density detector).

Phase one solves plain C&W against the bare classifier, giving x̂, which the detector
typically flags. Phase two starts the defense-aware optimisation at x̂ (distortion still
measured from the original) with a binary search over c of its own, so that the constant that
makes an example and the constant that hides it from the detector are chosen separately.
"""

from __future__ import annotations

import torch
from torch import Tensor

from typing import Any

from advrepro.attacks.base import AttackResult
from advrepro.attacks.cw import CarliniWagnerL2
from advrepro.attacks.objectives import ClassifierObjective


class TwoPhaseCarliniWagnerL2:
    """``first`` on the system's bare classifier, then ``second`` on the system's own objective
    starting from the first phase's examples (from the original where phase one failed)."""

    def __init__(self, first: CarliniWagnerL2, second: CarliniWagnerL2) -> None:
        self.first = first
        self.second = second

    def run(self, system: Any, x: Tensor, labels: Tensor, targeted: bool) -> AttackResult:
        """``system``: a defended system with a bare ``classifier`` and an ``objective``."""
        bare = ClassifierObjective(system.classifier, targeted, self.first.confidence)
        found = self.first(bare, x, labels)
        keep = found.success.view((-1,) + (1,) * (x.ndim - 1))
        start = torch.where(keep, found.adversarial, x)
        result = self.second(system.objective(targeted, self.second.confidence), x, labels,
                             start=start)
        result.iterations += found.iterations
        return result

"""A defended system: preprocessing -> classifier, plus detectors and a decision rule.

Every system offers the *exact* behaviour (``predict``: labels, -1 for "rejected as
adversarial"; ``detector_scores``: each detector's logit, > 0 meaning adversarial) and the
*attack objective* an adaptive (perfect-knowledge) adversary optimises (``objective``), which may
differ from the exact system through a differentiable surrogate (he2017 §3.1.1, App. A;
cw2017 §3, §5.2, §6.1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from advrepro.attacks.objectives import ClassifierObjective, Objective

REJECTED = -1


class DefendedSystem(nn.Module):
    """Base class: an undefended classifier. Subclasses override what their defense changes."""

    #: True when ``logits`` is differentiable and no detector takes part in the decision, so the
    #: attack can decide success from the logits it already computed.
    surrogate_is_exact = True

    def __init__(self, classifier: nn.Module, name: str = "undefended") -> None:
        super().__init__()
        self.classifier = classifier
        self.name = name

    def logits(self, x: Tensor) -> Tensor:
        """Class logits of the exact system (after any preprocessing)."""
        return self.classifier(x)

    def detector_scores(self, x: Tensor) -> dict[str, Tensor]:
        """Logit of every detector of the system (empty when there is none)."""
        return {}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Exact decision: predicted label, or -1 when any detector flags the input."""
        labels = self.logits(x).argmax(1)
        scores = self.detector_scores(x)
        if scores:
            flagged = torch.stack(list(scores.values())).amax(0) > 0
            labels = torch.where(flagged, torch.full_like(labels, REJECTED), labels)
        return labels

    def extra_records(self, original: Tensor, adversarial: Tensor, true_labels: Tensor,
                      targets: Tensor | None) -> dict[str, Tensor]:
        """Per-example values this defense's paper reports beside L2 (none by default)."""
        return {}

    def describe(self) -> dict:
        """What was built for this system (e.g. data-derived class sets), kept in the summary."""
        return {}

    def objective(self, targeted: bool, kappa: float = 0.0) -> Objective:
        """The adaptive attack's objective; by default C&W's margin on the exact logits."""
        exact = None if self.surrogate_is_exact else self.predict
        return ClassifierObjective(self.logits, targeted, kappa, exact=exact)


def batched(fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 500) -> Tensor:
    """Apply ``fn`` to ``x`` in chunks (no gradient), concatenating the results."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

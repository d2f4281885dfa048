"""Input-transformation defenses: a squeezer in front of the classifier (he2017 §3.1)."""

from __future__ import annotations

from torch import Tensor, nn

from advrepro.attacks.objectives import ClassifierObjective, Objective
from advrepro.defenses.squeezers import BitDepthReduction
from advrepro.defenses.system import DefendedSystem


class SqueezedClassifier(DefendedSystem):
    """classifier(squeeze(x)).

    The adaptive attack differentiates through the squeezer when it has useful gradients
    (median filter, he2017 §3.1.2). For bit-depth reduction, whose gradient is zero almost
    everywhere, it optimises the classifier *without* the squeezer and accepts only candidates
    that the exact, squeezed system misclassifies (he2017 §3.1.1).
    """

    def __init__(self, classifier: nn.Module, squeezer: nn.Module, differentiable: bool,
                 name: str) -> None:
        super().__init__(classifier, name)
        self.squeezer = squeezer
        self.differentiable = differentiable
        self.surrogate_is_exact = differentiable

    def logits(self, x: Tensor) -> Tensor:
        return self.classifier(self.squeezer(x))

    def extra_records(self, original: Tensor, adversarial: Tensor, true_labels: Tensor,
                      targets: Tensor | None) -> dict[str, Tensor]:
        """he2017 Table 4 "L2 bound": distance from each original to its own rounded version."""
        if not isinstance(self.squeezer, BitDepthReduction):
            return {}
        return {"l2_bound": (self.squeezer(original) - original).flatten(1).norm(dim=1)}

    def objective(self, targeted: bool, kappa: float = 0.0) -> Objective:
        if self.differentiable:
            return super().objective(targeted, kappa)
        return ClassifierObjective(self.classifier, targeted, kappa, exact=self.predict)

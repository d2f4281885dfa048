"""adam2018 §3.2: the concordance detector (classifier vs. triplet network) and §5.2's joint
classifier-and-detector system attacked through G(x).

    k = argmax p_c(y|x),  Delta = |p_c(y=k|x) - p_t(y=k|x)|,  D = 1 if Delta >= eta else 0

with p_c the defended classifier's softmax and p_t the triplet network's KNN-softmax
(:class:`advrepro.models.triplet.KNNSoftmaxClassifier`); eta = 0.4 in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrepro.attacks.objectives import ClassifierObjective, Objective, with_detector_class
from advrepro.defenses.system import REJECTED, DefendedSystem

#: adam2018 §3.2: "In our experiments we set the threshold eta = 0.4".
ETA = 0.4


def concordance_delta(p_classifier: Tensor, p_auxiliary: Tensor) -> Tensor:
    """Delta = |p_c(y=k|x) - p_t(y=k|x)| with k = argmax p_c (adam2018 §3.2)."""
    k = p_classifier.argmax(1, keepdim=True)
    return (p_classifier.gather(1, k) - p_auxiliary.gather(1, k)).abs().squeeze(1)


def concordance_flags(p_classifier: Tensor, p_auxiliary: Tensor, eta: float = ETA) -> Tensor:
    """D(Delta) = 1 (adversarial) iff Delta >= eta."""
    return concordance_delta(p_classifier, p_auxiliary) >= eta


class ConcordanceDetector(nn.Module):
    """The detector as a module: ``forward(x, classifier_logits)`` is the detector logit
    Z_D(x) = Delta(x) - eta, positive when flagged (Delta = eta, flagged by the paper's rule,
    gives 0; :meth:`flags` applies the rule exactly). The paper calls Z_D "the logit output by
    the detector" without defining it for this thresholded detector; Delta - eta is the choice
    for which argmax G(x) = N+1 exactly when the detector fires (given max_j Z_F(x)_j > 0)."""

    def __init__(self, auxiliary: nn.Module, eta: float = ETA) -> None:
        super().__init__()
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        self.auxiliary = auxiliary
        self.eta = eta

    def delta(self, x: Tensor, classifier_logits: Tensor) -> Tensor:
        return concordance_delta(classifier_logits.softmax(1), self.auxiliary(x).softmax(1))

    def forward(self, x: Tensor, classifier_logits: Tensor) -> Tensor:
        return self.delta(x, classifier_logits) - self.eta

    def flags(self, x: Tensor, classifier_logits: Tensor) -> Tensor:
        return self.delta(x, classifier_logits) >= self.eta


class ConcordanceDefense(DefendedSystem):
    """A (possibly VAE-defended) classifier plus the concordance detector (adam2018 §5).

    ``base`` is a :class:`DefendedSystem` (its ``logits``; a stochastic one is queried once per
    call and that same draw gives both the label and p_c) or a plain logits module. ``predict``
    returns -1 where the detector fires. The adaptive attack of §5.2 is C&W on
    G(x) = [Z_F(x), (Z_D(x) + 1) * max_j Z_F(x)_j] (cw2017's construction), success judged by
    the exact system.
    """

    surrogate_is_exact = False

    def __init__(self, base: nn.Module, auxiliary: nn.Module, eta: float = ETA,
                 name: str = "concordance") -> None:
        super().__init__(base, name)
        self.detector = ConcordanceDetector(auxiliary, eta)

    def logits(self, x: Tensor) -> Tensor:
        base = self.classifier
        return base.logits(x) if isinstance(base, DefendedSystem) else base(x)

    def detector_scores(self, x: Tensor) -> dict[str, Tensor]:
        return {"concordance": self.detector(x, self.logits(x))}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        logits = self.logits(x)
        labels = logits.argmax(1)
        flagged = self.detector.flags(x, logits)
        return torch.where(flagged, torch.full_like(labels, REJECTED), labels)

    def g_logits(self, x: Tensor) -> Tensor:
        """G(x) of adam2018 §5.2: N class logits and the "adversarial" logit N+1."""
        logits = self.logits(x)
        return with_detector_class(logits, self.detector(x, logits))

    def objective(self, targeted: bool, kappa: float = 0.0) -> Objective:
        return ClassifierObjective(self.g_logits, targeted, kappa, exact=self.predict,
                                   reject_class=-1)

    def describe(self) -> dict:
        return {"eta": self.detector.eta}

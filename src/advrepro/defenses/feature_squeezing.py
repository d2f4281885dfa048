"""Xu et al.'s joint feature-squeezing detector and its adaptive attack (he2017 §3.2)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from advrepro.attacks.objectives import Objective, is_fooled, margin_loss
from advrepro.defenses.squeezers import BitDepthReduction, MedianFilter
from advrepro.defenses.system import DefendedSystem, batched


class FeatureSqueezingDetector(DefendedSystem):
    """Three branches: the classifier on x, on bit-depth-reduced x and on median-filtered x.

    L1 score = the largest L1 distance between any pair of the three softmax vectors; the input
    is flagged when it exceeds ``threshold`` (0.3076 for MNIST, he2017 §3.2). The detector logit
    is ``score - threshold``.
    """

    surrogate_is_exact = False

    def __init__(self, classifier: nn.Module, bits: int, median: tuple[int, int],
                 threshold: float, name: str = "feature_squeezing") -> None:
        super().__init__(classifier, name)
        self.bit_depth = BitDepthReduction(bits)
        self.median = MedianFilter(*median)
        self.threshold = threshold

    def l1_score(self, x: Tensor) -> Tensor:
        probs = [self.classifier(b).softmax(1) for b in (x, self.bit_depth(x), self.median(x))]
        dists = [(p - q).abs().sum(1) for p, q in itertools.combinations(probs, 2)]
        return torch.stack(dists).amax(0)

    def detector_scores(self, x: Tensor) -> dict[str, Tensor]:
        return {"feature_squeezing": self.l1_score(x) - self.threshold}

    def extra_records(self, original: Tensor, adversarial: Tensor, true_labels: Tensor,
                      targets: Tensor | None) -> dict[str, Tensor]:
        """The L1 score of every adversarial example and of its original (he2017 §3.2)."""
        return {"l1_score": batched(self.l1_score, adversarial),
                "clean_l1_score": batched(self.l1_score, original)}

    def objective(self, targeted: bool, kappa: float = 0.0) -> Objective:
        """he2017 §3.2: gradients from the original and the median-filtered branch, equally; the
        bit-depth branch enters only the exact L1 check (it has no useful gradient)."""

        def objective(x_adv: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
            loss = margin_loss(self.classifier(x_adv), labels, targeted, kappa) + margin_loss(
                self.classifier(self.median(x_adv)), labels, targeted, kappa
            )
            with torch.no_grad():
                success = is_fooled(self.predict(x_adv.detach()), labels, targeted)
            return loss, success

        return objective

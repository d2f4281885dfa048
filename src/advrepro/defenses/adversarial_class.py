"""Grosse et al.'s defense: the classifier retrained with an extra (N+1)-th class for
adversarial examples (cw2017 §3.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from advrepro.attacks.objectives import ClassifierObjective, Objective
from advrepro.defenses.detector_data import adversarial_training_set, detector_data_key
from advrepro.defenses.system import REJECTED, DefendedSystem
from advrepro.config import to_container
from advrepro.training.recipe import recipe_from


class AdversarialClassClassifier(DefendedSystem):
    """An (N+1)-class network whose last class means "adversarial": such inputs are rejected.

    Its perfect-knowledge attack is plain C&W on the N+1 logits, the extra class counting as a
    class to avoid (cw2017 §3.1: "we use C&W's attack on F_secured").
    """

    def __init__(self, classifier: nn.Module, num_classes: int, name: str = "grosse") -> None:
        super().__init__(classifier, name)
        self.reject_class = num_classes

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        labels = self.classifier(x).argmax(1)
        return torch.where(labels == self.reject_class, torch.full_like(labels, REJECTED), labels)

    def detector_scores(self, x: Tensor) -> dict[str, Tensor]:
        z = self.classifier(x)
        return {"grosse": z[:, self.reject_class] - z[:, : self.reject_class].amax(1)}

    def objective(self, targeted: bool, kappa: float = 0.0) -> Objective:
        return ClassifierObjective(self.classifier, targeted, kappa,
                                   reject_class=self.reject_class)


@dataclass
class Grosse:
    """Train F_secured on the training set plus C&W examples of it labelled N+1 (cw2017 §3.1:
    steps 1-4); the adversarial examples are the detectors' training data (``cfg.scale``)."""

    recipe: dict[str, Any] = field(default_factory=dict)
    name: str = "grosse"

    def build(self, bench) -> DefendedSystem:
        classes = 10
        model_cfg = {**to_container(bench.cfg.model), "num_classes": classes + 1}

        def make_data():
            x, y = bench.train_set()
            _, adversarial = adversarial_training_set(bench)
            xt, yt = bench.test_set()
            labels = torch.full((len(adversarial),), classes, dtype=torch.long)
            return torch.cat([x, adversarial]), torch.cat([y, labels]), xt, yt

        recipe = recipe_from(self.recipe or bench.cfg.train)
        secured = bench.train("grosse-secured", model_cfg, recipe, make_data,
                              {"defense": "grosse", "adversarial_data": detector_data_key(bench)})
        return AdversarialClassClassifier(secured, classes, self.name)

"""The attack engine: batched C&W L2, gradient attacks and adaptive-attack building blocks."""

from advrepro.attacks.base import AttackResult
from advrepro.attacks.cw import CarliniWagnerL2
from advrepro.attacks.gradient import FGSM, IterativeFGSM, LeastLikelyFGSM, RandFGSM
from advrepro.attacks.objectives import (
    ClassifierObjective,
    Objective,
    margin_loss,
    with_detector_class,
)
from advrepro.attacks.parameterizations import GumbelQuantized, TanhBox

__all__ = [
    "AttackResult",
    "CarliniWagnerL2",
    "FGSM",
    "IterativeFGSM",
    "LeastLikelyFGSM",
    "RandFGSM",
    "ClassifierObjective",
    "Objective",
    "margin_loss",
    "with_detector_class",
    "GumbelQuantized",
    "TanhBox",
]

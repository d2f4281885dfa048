"""The attack engine: batched C&W L2, gradient attacks and adaptive-attack building blocks."""

from advrepro.attacks.base import Attack, AttackResult
from advrepro.attacks.cw import CarliniWagnerL2
from advrepro.attacks.gradient import FGSM, IterativeFGSM, LeastLikelyFGSM, RandFGSM
from advrepro.attacks.objectives import (
    ClassifierObjective,
    Objective,
    margin_loss,
    with_detector_class,
)
from advrepro.attacks.parameterizations import GumbelQuantized, TanhBox
from advrepro.attacks.two_phase import TwoPhaseCarliniWagnerL2

__all__ = [
    "FGSM",
    "Attack",
    "AttackResult",
    "CarliniWagnerL2",
    "ClassifierObjective",
    "GumbelQuantized",
    "IterativeFGSM",
    "LeastLikelyFGSM",
    "Objective",
    "RandFGSM",
    "TanhBox",
    "TwoPhaseCarliniWagnerL2",
    "margin_loss",
    "with_detector_class",
]

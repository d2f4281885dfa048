"""L-infinity gradient attacks of tramer2017 §2.2 and §4.1, batched, clipped to [0, 1].

All take a logits function ``model``; ``labels`` are the true labels. With
``use_predicted_labels`` the model's own predictions replace the true labels, which avoids the
label leaking effect of tramer2017 §2.3 (Kurakin et al.).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from advrepro.attacks.base import AttackResult
from advrepro.attacks.objectives import is_fooled

LogitsFn = Callable[[Tensor], Tensor]


def _loss_gradient(model: LogitsFn, x: Tensor, labels: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _result(model: LogitsFn, x: Tensor, x_adv: Tensor, labels: Tensor, targeted: bool,
            target: Tensor | None = None) -> AttackResult:
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    success = pred == target if targeted else pred != labels
    return AttackResult(x, x_adv.detach(), success)


def fgsm(model: LogitsFn, x: Tensor, labels: Tensor, epsilon: float) -> Tensor:
    """One FGSM step, x* = clip(x + eps * sign(grad_x J(x, labels))), detached."""
    return (x + epsilon * _loss_gradient(model, x, labels).sign()).clamp(0, 1).detach()


def predicted_labels(model: LogitsFn, x: Tensor) -> Tensor:
    """The model's own labels (tramer2017 §3.1: FGSM on them avoids label leaking)."""
    with torch.no_grad():
        return model(x).argmax(1)


class _GradientAttack:
    def __init__(self, epsilon: float, use_predicted_labels: bool = False) -> None:
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = epsilon
        self.use_predicted_labels = use_predicted_labels

    def run(self, system, x: Tensor, labels: Tensor, targeted: bool) -> AttackResult:
        """Attack a system through its (exact) logits; these attacks are untargeted."""
        if targeted:
            from advrepro.errors import ConfigError

            raise ConfigError(f"{type(self).__name__} is untargeted; set targeted=false")
        result = self(system.logits, x, labels)
        # a detector's rejection is not a success: judge by the exact system
        result.success = is_fooled(system.predict(result.adversarial), labels, targeted=False)
        return result

    def _labels(self, model: LogitsFn, x: Tensor, labels: Tensor) -> Tensor:
        return predicted_labels(model, x) if self.use_predicted_labels else labels


class FGSM(_GradientAttack):
    """x* = clip(x + eps * sign(grad_x J(x, y)))  (Goodfellow et al.; tramer2017 Eq. 2)."""

    def __call__(self, model: LogitsFn, x: Tensor, labels: Tensor) -> AttackResult:
        x_adv = fgsm(model, x, self._labels(model, x, labels), self.epsilon)
        return _result(model, x, x_adv, labels, targeted=False)


class LeastLikelyFGSM(_GradientAttack):
    """Step-LL: x* = clip(x - eps * sign(grad_x J(x, y_LL))) toward the least-likely class
    (tramer2017 §2.2, Kurakin et al.)."""

    def __call__(self, model: LogitsFn, x: Tensor, labels: Tensor) -> AttackResult:
        with torch.no_grad():
            target = model(x).argmin(1)
        x_adv = (x - self.epsilon * _loss_gradient(model, x, target).sign()).clamp(0, 1)
        return _result(model, x, x_adv, labels, targeted=False)


class IterativeFGSM(_GradientAttack):
    """I-FGSM: ``steps`` FGSM steps of size eps/steps, projected on the eps-ball and [0, 1]
    (tramer2017 §2.2, Kurakin et al.)."""

    def __init__(self, epsilon: float, steps: int = 10, use_predicted_labels: bool = False) -> None:
        super().__init__(epsilon, use_predicted_labels)
        self.steps = steps

    def __call__(self, model: LogitsFn, x: Tensor, labels: Tensor) -> AttackResult:
        y = self._labels(model, x, labels)
        alpha = self.epsilon / self.steps
        x_adv = x.clone()
        for _ in range(self.steps):
            x_adv = x_adv + alpha * _loss_gradient(model, x_adv, y).sign()
            x_adv = torch.minimum(torch.maximum(x_adv, x - self.epsilon), x + self.epsilon)
            x_adv = x_adv.clamp(0, 1)
        return _result(model, x, x_adv, labels, targeted=False)


class RandFGSM(_GradientAttack):
    """RAND+FGSM of tramer2017 §4.1, Eq. (7): x' = x + alpha * sign(N(0, I)), then
    x* = clip(x' + (eps - alpha) * sign(grad_{x'} J(x', y))). (Not torchattacks' RFGSM, which
    differs in the sign of the step.) Requires alpha < eps."""

    def __init__(self, epsilon: float, alpha: float, use_predicted_labels: bool = False,
                 seed: int = 0) -> None:
        super().__init__(epsilon, use_predicted_labels)
        if not 0 <= alpha < epsilon:
            raise ValueError(f"RAND+FGSM needs 0 <= alpha < epsilon, got {alpha}, {epsilon}")
        self.alpha = alpha
        self.seed = seed
        # one generator for the attack's lifetime: successive batches get fresh noise
        self._generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: LogitsFn, x: Tensor, labels: Tensor) -> AttackResult:
        y = self._labels(model, x, labels)
        noise = torch.randn(x.shape, generator=self._generator).to(x.device)
        x_prime = (x + self.alpha * noise.sign()).clamp(0, 1)
        step = (self.epsilon - self.alpha) * _loss_gradient(model, x_prime, y).sign()
        x_adv = (x_prime + step).clamp(0, 1)
        return _result(model, x, x_adv, labels, targeted=False)

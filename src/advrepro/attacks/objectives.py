"""Attack objectives: the misclassification term of C&W and its defense-specific variants.

An :class:`Objective` maps a batch of candidate images and their labels (true labels for an
untargeted attack, targets for a targeted one) to ``(loss, success)``: ``loss`` is the
differentiable per-image misclassification term l(x') of cw2017 §2.6 (extra terms supplied by a
defense are added to it), ``success`` says whether the *exact* system is fooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

LogitsFn = Callable[[Tensor], Tensor]


class Objective(Protocol):
    def __call__(self, x_adv: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]: ...


def margin_loss(
    logits: Tensor, labels: Tensor, targeted: bool, kappa: float = 0.0,
    reject_class: int | None = None,
) -> Tensor:
    """C&W's logit margin (cw2017 §2.6).

    Targeted: max(max_{i != t} Z_i - Z_t, -kappa). Untargeted: max(Z_y - max_{i != y} Z_i, -kappa).
    With a ``reject_class`` (the "adversarial" class N+1 of G(x), cw2017 §3.1), an untargeted
    attack must avoid it as well as the true class: it counts on the true class's side.
    """
    own_mask = torch.nn.functional.one_hot(labels, logits.shape[1]).bool()
    if reject_class is not None and not targeted:
        own_mask[:, reject_class] = True
    own = logits.masked_fill(~own_mask, float("-inf")).amax(1)
    others = logits.masked_fill(own_mask, float("-inf")).amax(1)
    diff = others - own if targeted else own - others
    return diff.clamp(min=-kappa)


def reaches_margin(logits: Tensor, labels: Tensor, targeted: bool, kappa: float,
                   reject_class: int | None = None) -> Tensor:
    """Whether the (unclamped) C&W margin reaches -kappa: a high-confidence example."""
    return margin_loss(logits, labels, targeted, math.inf, reject_class) <= -kappa + 1e-6


def is_fooled(predicted: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Targeted: predicted == target. Untargeted: predicted != true label and not rejected (-1)."""
    if targeted:
        return predicted == labels
    return (predicted != labels) & (predicted >= 0)


class ClassifierObjective:
    """Objective of a system given by differentiable surrogate logits and an exact predictor.

    ``surrogate`` is what the optimiser differentiates; ``exact`` (labels, -1 = rejected) is what
    a candidate must fool to be accepted (he2017 §3.1.1: optimise without the quantiser, accept
    only examples the quantised system misclassifies). When ``exact`` is None the surrogate is
    exact and its logits are reused, costing no extra forward pass. ``extra_loss`` adds a
    defense's penalty terms (e.g. the KDE term of cw2017 §5.2). With ``kappa`` > 0 a success
    also needs the surrogate margin to reach kappa (high-confidence examples).
    """

    def __init__(
        self,
        surrogate: LogitsFn,
        targeted: bool,
        kappa: float = 0.0,
        exact: Callable[[Tensor], Tensor] | None = None,
        extra_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        reject_class: int | None = None,
    ) -> None:
        self.reject_class = reject_class
        self.surrogate = surrogate
        self.targeted = targeted
        self.kappa = kappa
        self.exact = exact
        self.extra_loss = extra_loss

    def __call__(self, x_adv: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.surrogate(x_adv)
        loss = margin_loss(logits, labels, self.targeted, self.kappa, self.reject_class)
        if self.extra_loss is not None:
            loss = loss + self.extra_loss(x_adv, labels)
        with torch.no_grad():
            if self.exact is None:
                predicted = logits.argmax(1)
                if self.reject_class is not None:
                    predicted[predicted == self.reject_class] = -1
                success = is_fooled(predicted, labels, self.targeted)
            else:
                success = is_fooled(self.exact(x_adv.detach()), labels, self.targeted)
            if self.kappa > 0:
                success &= reaches_margin(logits, labels, self.targeted, self.kappa,
                                          self.reject_class)
        return loss, success


def with_detector_class(logits: Tensor, detector_logit: Tensor) -> Tensor:
    """G(x) of cw2017 §3.1 / he2017 §5: N class logits plus an (N+1)-th "adversarial" logit
    (D(x) + 1) * max_j Z_j(x), so that argmax G = N+1 exactly when D(x) > 0 (this relies on the
    largest logit being positive, as it is for a confident classifier; the exact system, not G,
    decides whether a candidate is accepted)."""
    top = logits.amax(1)
    return torch.cat([logits, ((detector_logit + 1) * top)[:, None]], dim=1)


class ExpectationObjective:
    """Expectation over randomness (cw2017 §6.1): C&W's loss summed over K fixed samples of
    the model, ``samples(x)`` giving their logits as ``K x B x classes`` in one pass.

    Without an ``exact`` predictor a candidate succeeds when it fools every sample; with one,
    when it fools the exact system (checked once per step) and, for a confidence margin
    kappa > 0, every sample reaches the margin.
    """

    def __init__(self, samples: LogitsFn, targeted: bool, kappa: float = 0.0,
                 exact: Callable[[Tensor], Tensor] | None = None) -> None:
        self.samples = samples
        self.targeted = targeted
        self.kappa = kappa
        self.exact = exact

    def __call__(self, x_adv: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.samples(x_adv)
        k, b = logits.shape[:2]
        flat, repeated = logits.flatten(0, 1), labels.repeat(k)
        loss = margin_loss(flat, repeated, self.targeted, self.kappa).view(k, b).sum(0)
        with torch.no_grad():
            every = reaches_margin(flat, repeated, self.targeted, self.kappa).view(k, b).all(0)
            if self.exact is None:
                return loss, every
            if self.kappa <= 0:
                return loss, is_fooled(self.exact(x_adv.detach()), labels, self.targeted)
            # high confidence on every sample is required: the exact system only checks those
            success = every.clone()
            if every.any():
                success[every] = is_fooled(self.exact(x_adv.detach()[every]), labels[every],
                                           self.targeted)
        return loss, success

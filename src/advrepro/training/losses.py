"""Training losses of adam2018: the triplet margin loss (Supplementary Eq. 1) and the input-output
Jacobian penalties of §4.4 (parallel / orthogonal Jacobians, Figure 3) and §4.5 (a target
Jacobian norm, Figure 4)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from advrepro.errors import require_choice

LogitsFn = Callable[[Tensor], Tensor]
OUTPUTS = ("logit", "probability")
GOALS = ("parallel", "orthogonal")


def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float,
                        squared: bool = False, reduction: str = "mean") -> Tensor:
    """L(x, x-, x+) = max(0, alpha + d(x, x+) - d(x, x-))  (adam2018 Supplementary Eq. 1).

    d is the Euclidean distance (``squared``: its square, as FaceNet uses). ``reduction``:
    "mean", "sum" or "none" (per triplet)."""
    require_choice("reduction", reduction, ("mean", "sum", "none"))
    d_pos = (anchor - positive).pow(2).sum(1)
    d_neg = (anchor - negative).pow(2).sum(1)
    if not squared:
        d_pos, d_neg = d_pos.clamp(min=1e-12).sqrt(), d_neg.clamp(min=1e-12).sqrt()
    loss = (margin + d_pos - d_neg).clamp(min=0)
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def sample_triplets(labels: Tensor, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Batched triplet sampling: every example of the batch that has another example of its
    class in the batch becomes an anchor, with a positive drawn uniformly among the other
    examples of its class and a negative drawn uniformly among the examples of other classes.
    Returns the index tensors (anchor, positive, negative)."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    ok = pos_mask.any(1) & neg_mask.any(1)
    anchors = ok.nonzero().flatten()
    if len(anchors) == 0:
        empty = labels.new_zeros(0)
        return empty, empty, empty
    gen_device = generator.device if generator is not None else labels.device
    pos_w = pos_mask[anchors].float().to(gen_device)
    neg_w = neg_mask[anchors].float().to(gen_device)
    positives = torch.multinomial(pos_w, 1, generator=generator).flatten().to(labels.device)
    negatives = torch.multinomial(neg_w, 1, generator=generator).flatten().to(labels.device)
    return anchors, positives, negatives


def class_input_gradient(model: LogitsFn, x: Tensor, labels: Tensor, output: str = "logit",
                         create_graph: bool = False) -> Tensor:
    """d f(x)_y / dx for each image, where f is the model's logits or softmax probabilities and
    y the image's label: the row of the input-output Jacobian for that class (same shape as x).

    With ``create_graph`` the result can be differentiated again (training penalties)."""
    require_choice("output", output, OUTPUTS)
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    out = model(x)
    if output == "probability":
        out = out.softmax(1)
    picked = out.gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(picked, x, create_graph=create_graph)
    return grad


def jacobian_cosine(model_a: LogitsFn, model_b: LogitsFn, x: Tensor, labels: Tensor,
                    output: str = "logit", create_graph: bool = True) -> Tensor:
    """Per-image cosine similarity of the two models' flattened input gradients of class y."""
    x = x.detach().requires_grad_(True)
    g_a = class_input_gradient(model_a, x, labels, output, create_graph).flatten(1)
    g_b = class_input_gradient(model_b, x, labels, output, create_graph).flatten(1)
    return F.cosine_similarity(g_a, g_b, dim=1, eps=1e-12)


def jacobian_alignment_penalty(model_a: LogitsFn, model_b: LogitsFn, x: Tensor, labels: Tensor,
                               goal: str, output: str = "logit") -> Tensor:
    """Penalty that makes two networks' input-output Jacobians parallel or orthogonal
    (adam2018 §4.4, Figure 3): mean over images of 1 - cos for "parallel", of cos^2 for
    "orthogonal" (0 exactly when the goal is met; the paper does not give its penalty)."""
    require_choice("goal", goal, GOALS)
    cos = jacobian_cosine(model_a, model_b, x, labels, output, create_graph=True)
    return (1 - cos).mean() if goal == "parallel" else cos.pow(2).mean()


def jacobian_norm(model: LogitsFn, x: Tensor, labels: Tensor, output: str = "logit",
                  create_graph: bool = False) -> Tensor:
    """Per-image L2 norm of the input-output Jacobian for the true class (adam2018 §4.5)."""
    return class_input_gradient(model, x, labels, output, create_graph).flatten(1).norm(dim=1)


def jacobian_norm_penalty(model: LogitsFn, x: Tensor, labels: Tensor, target: float,
                          output: str = "logit") -> Tensor:
    """Mean of (||J_y(x)||_2 - target)^2: regularises the true-class Jacobian norm toward the
    "goal" of adam2018 Figure 4 (the paper does not give the penalty's form)."""
    norms = jacobian_norm(model, x.detach().requires_grad_(True), labels, output,
                          create_graph=True)
    return (norms - target).pow(2).mean()

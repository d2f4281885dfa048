"""adam2018's measures: attack success (§4 definition), transfer and "relevant" transfer rates
(Tables 2, 5; Figure 3), cosine similarity of input gradients between two systems (Table 3),
their correlation with transfer rates (Table 4), and detector accuracy (Table 6)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor

from advrepro.errors import require_choice

LogitsFn = Callable[[Tensor], Tensor]


def adversarial_success(original_pred: Tensor, adversarial_pred: Tensor, labels: Tensor) -> Tensor:
    """adam2018 §4: a perturbed image is an adversarial example iff (1) it is classified as a
    class different from its original's, (2) that class is wrong, and (3) the original was
    classified correctly. A rejection (-1) is a class different from the truth, so callers that
    count rejections as failures must mask them out."""
    return ((adversarial_pred != original_pred) & (adversarial_pred != labels)
            & (original_pred == labels))


def success_rate(success: Tensor) -> float:
    return float(success.float().mean()) if success.numel() else float("nan")


def relevant_transfer(source_adversarial_pred: Tensor, target_original_pred: Tensor,
                      target_adversarial_pred: Tensor, labels: Tensor) -> Tensor:
    """Transfer that would fool a concordance detector (Table 5, Figure 3 "relevant"): the
    example is adversarial for the target model (§4 definition) *and* the target predicts the
    same wrong class as the source, so the two models agree and the detector is not alerted.
    This is our reading of "the success rate of transfer attacks that would have fooled the
    detector" (§5.1)."""
    fooled = adversarial_success(target_original_pred, target_adversarial_pred, labels)
    return fooled & (target_adversarial_pred == source_adversarial_pred)


def _probability_jacobian(fn: LogitsFn, x: Tensor, labels: Tensor, full: bool) -> Tensor:
    x = x.detach().requires_grad_(True)
    probs = fn(x).softmax(1)
    if not full:
        (g,) = torch.autograd.grad(probs.gather(1, labels[:, None]).sum(), x)
        return g.flatten(1)
    rows = []
    for c in range(probs.shape[1]):
        (g,) = torch.autograd.grad(probs[:, c].sum(), x, retain_graph=c < probs.shape[1] - 1)
        rows.append(g.flatten(1))
    return torch.cat(rows, 1)


def input_gradient_cosine(system_a: LogitsFn, system_b: LogitsFn, x: Tensor, labels: Tensor,
                          jacobian: str = "class") -> Tensor:
    """Per-image cosine similarity of the gradients of two systems' output probabilities with
    respect to the input image (adam2018 §4.3, Table 3; average it for the table).

    ``jacobian="class"``: the gradient of the probability of class ``labels`` (pass the true
    labels); ``"full"``: the whole probability Jacobian (classes x pixels), flattened. The
    paper says "probability output vector gradients" without saying which; Table 3's values
    come from "class" with the true label unless shown otherwise. Systems are logits
    functions, e.g. ``VAEDefendedNetwork(...).logits`` with a fixed arrangement."""
    require_choice("jacobian", jacobian, ("class", "full"))
    full = jacobian == "full"
    g_a = _probability_jacobian(system_a, x, labels, full)
    g_b = _probability_jacobian(system_b, x, labels, full)
    return F.cosine_similarity(g_a, g_b, dim=1, eps=1e-12)


def correlations(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Pearson and Spearman correlation of two sequences (adam2018 Table 4: cosine
    similarities of Table 3 vs. transfer rates of Table 2, per arrangement)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two 1-d sequences of equal length >= 2, got {a.shape}, {b.shape}")
    return {"pearson": float(stats.pearsonr(a, b)[0]),
            "spearman": float(stats.spearmanr(a, b)[0])}


def detector_accuracy(flagged: Tensor, is_adversarial: Tensor | bool) -> float:
    """Fraction of images on which the detector's decision is right: flagged iff adversarial
    (Table 6: ``is_adversarial=False`` for the original images, True for the perturbed)."""
    truth = torch.as_tensor(is_adversarial, dtype=torch.bool).expand_as(flagged)
    return success_rate(flagged == truth)

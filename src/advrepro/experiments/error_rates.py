"""The full-test-set protocol of tramer2017 (§3.2, Tables 1, 2, 4, 7, 8): every test image,
misclassified ones included, is attacked; the result is the target's error rate on the
adversarial images (and on the clean ones), with a 95 % confidence interval of a normal
approximation (tramer2017 Table 4 caption), and the norm of the loss gradient of the target at
each clean image (Table 7)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Z_95 = 1.959963984540054


def error_rate_ci(errors: Tensor) -> tuple[float, float]:
    """(error rate, half-width of its 95 % normal-approximation confidence interval)."""
    n = len(errors)
    if n == 0:
        return float("nan"), float("nan")
    p = float(errors.float().mean())
    return p, Z_95 * math.sqrt(p * (1 - p) / n)


def input_gradient_norms(model: nn.Module, x: Tensor, labels: Tensor,
                         batch_size: int = 500) -> Tensor:
    """||grad_x J(x, y_true)||_2 per image, J the cross-entropy of ``model`` (tramer2017
    Appendix D, Table 7), computed in batches with the model as it is (eval mode)."""
    norms = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].detach().requires_grad_(True)
        loss = F.cross_entropy(model(xb), labels[i:i + batch_size], reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb)
        norms.append(grad.flatten(1).norm(dim=1).detach())
    return torch.cat(norms)


def full_test_summary(records: dict[str, Any]) -> dict[str, Any]:
    """Error rates with confidence intervals and gradient-norm statistics of a full-test cell."""
    adv = torch.tensor(records["error_adversarial"])
    clean = torch.tensor(records["error_clean"])
    grad = torch.tensor(records["grad_norm"])
    err, err_ci = error_rate_ci(adv)
    err_clean, err_clean_ci = error_rate_ci(clean)
    return {
        "n_images": len(adv),
        "error_rate": err, "error_rate_ci95": err_ci,
        "accuracy": 1 - err, "accuracy_ci95": err_ci,
        "error_rate_clean": err_clean, "error_rate_clean_ci95": err_clean_ci,
        "accuracy_clean": 1 - err_clean, "accuracy_clean_ci95": err_clean_ci,
        "mean_grad_norm": float(grad.mean()), "std_grad_norm": float(grad.std()),
        "mean_linf": float(torch.tensor(records["linf"]).mean()),
        "mean_l2": float(torch.tensor(records["l2"]).mean()),
    }

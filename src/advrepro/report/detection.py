"""Detector metrics as cw2017 §7.2 recommends: true- and false-positive rates at the detector's
own threshold, the true-positive rate at 1 % false positives, and the ROC curve."""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor


def roc_curve(adversarial: Tensor, clean: Tensor) -> tuple[Tensor, Tensor]:
    """(false-positive rates, true-positive rates) over every threshold; scores > t flag."""
    scores = torch.cat([adversarial, clean])
    is_adv = torch.cat([torch.ones(len(adversarial)), torch.zeros(len(clean))])
    order = torch.argsort(scores, descending=True)
    tp = torch.cumsum(is_adv[order], 0)
    fp = torch.cumsum(1 - is_adv[order], 0)
    tpr = torch.cat([torch.zeros(1), tp / max(len(adversarial), 1)])
    fpr = torch.cat([torch.zeros(1), fp / max(len(clean), 1)])
    return fpr, tpr


def detection_metrics(adversarial: Tensor, clean: Tensor, max_fpr: float = 0.01) -> dict:
    """TPR/FPR at threshold 0 (the detector's own), TPR at ``max_fpr`` and the ROC AUC."""
    fpr, tpr = roc_curve(adversarial, clean)
    allowed = fpr <= max_fpr + 1e-12
    return {
        "tpr_at_threshold": float((adversarial > 0).float().mean()),
        "fpr_at_threshold": float((clean > 0).float().mean()),
        f"tpr_at_{max_fpr:.0%}_fpr": float(tpr[allowed].max()),
        "roc_auc": float(torch.trapezoid(tpr, fpr)),
        "n_adversarial": len(adversarial),
        "n_clean": len(clean),
    }


def _zero_knowledge_scores(records: pd.DataFrame, detector: str) -> tuple[Tensor, Tensor]:
    """Scores of the successful zero-knowledge examples and of all clean originals."""
    ok = records[records["success"].astype(bool)]
    return (torch.tensor(ok[f"score_{detector}"].values, dtype=torch.float),
            torch.tensor(records[f"clean_score_{detector}"].values, dtype=torch.float))


def zero_knowledge_detection(records: pd.DataFrame, detector: str) -> dict:
    """Detection metrics of one detector over a zero-knowledge cell's records (cw2017 §2.3:
    C&W against the unsecured classifier; the successful examples are the positives, every
    clean original a negative; ``score_<detector>`` > 0 flags)."""
    return detection_metrics(*_zero_knowledge_scores(records, detector))


def zero_knowledge_roc(records: pd.DataFrame, detector: str) -> tuple[Tensor, Tensor]:
    """The ROC curve behind :func:`zero_knowledge_detection`."""
    return roc_curve(*_zero_knowledge_scores(records, detector))

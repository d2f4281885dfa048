"""A cell's summary: the numbers the papers report, computed from its per-example records."""

from __future__ import annotations

from typing import Any

import pandas as pd

# what :func:`summarize` reads from a cell's records
RECORD_COLUMNS = ("success", "fooled_defense", "predicted_undefended", "label", "target", "l2",
                  "linf")
# the keys :func:`summarize` writes for every cell, whatever its records hold
ALWAYS_SUMMARIZED = ("n_images", "targeted", "success_rate", "fooled_defense_rate",
                     "fooled_classifier_rate", "mean_l2", "mean_linf", "mean_l2_fooled")


def _rate(mask: pd.Series) -> float:
    return float(mask.mean()) if len(mask) else float("nan")


def summarize(frame: pd.DataFrame, targeted: bool) -> dict[str, Any]:
    """Success rate and distortion as the papers report them, plus detector rates.

    ``fooled_classifier_rate`` counts examples that succeed on the attacked system and whose
    label on the evaluated side's bare classifier is the adversarial one (the target, or any
    wrong class), whatever its detectors say: for the limited-knowledge threat model this is
    transfer of the misclassification alone, ``fooled_defense_rate`` transfer past the
    defender's detectors as well (cw2017 §2.3).
    """
    ok = frame["success"].astype(bool)
    fooled = frame["fooled_defense"].astype(bool)
    bare = frame["predicted_undefended"]
    wrong = bare == frame["target"] if targeted else bare != frame["label"]
    out: dict[str, Any] = {
        "n_images": len(frame),
        "targeted": targeted,
        "success_rate": _rate(ok),
        "fooled_defense_rate": _rate(fooled),
        "fooled_classifier_rate": _rate(ok & wrong),
        "mean_l2": float(frame.loc[ok, "l2"].mean()) if ok.any() else float("nan"),
        "mean_linf": float(frame.loc[ok, "linf"].mean()) if ok.any() else float("nan"),
        "mean_l2_fooled": float(frame.loc[fooled, "l2"].mean()) if fooled.any() else float("nan"),
    }
    for col in ("l2_bound", "l1_score"):
        if col in frame:
            out[f"mean_{col}"] = float(frame.loc[ok, col].mean()) if ok.any() else float("nan")
    if "clean_l1_score" in frame:
        out["mean_clean_l1_score"] = float(frame["clean_l1_score"].mean())
    if "l2_bound" in frame:
        out["l2_bound"] = float(frame["l2_bound"].mean())
    for col in frame.columns:
        if col.startswith("score_") and ok.any():
            name = col[len("score_"):]
            out[f"detected_{name}"] = float((frame.loc[ok, col] > 0).mean())
            out[f"false_positive_{name}"] = float((frame[f"clean_{col}"] > 0).mean())
            out[f"mean_score_{name}"] = float(frame.loc[ok, col].mean())
            out[f"mean_clean_score_{name}"] = float(frame[f"clean_{col}"].mean())
            # scored as more natural than its own original (KDE: a higher likelihood, cw2017 §5.2)
            out[f"more_natural_than_original_{name}"] = float(
                (frame.loc[ok, col] < frame.loc[ok, f"clean_{col}"]).mean())
    return out


def summary_line(summary: dict[str, Any]) -> str:
    """One line a finished cell prints: success and distortion, or error rates (full test)."""
    seconds = f"{summary['n_images']} images, {summary.get('attack_seconds')} s"
    if summary.get("protocol") == "full_test":
        return (f"{summary['cell']}: error {summary['error_rate']:.2%} "
                f"(+-{summary['error_rate_ci95']:.2%}), clean error "
                f"{summary['error_rate_clean']:.2%} ({seconds})")
    return (f"{summary['cell']}: success {summary['success_rate']:.2%}, fooled defense "
            f"{summary['fooled_defense_rate']:.2%}, mean L2 {summary['mean_l2']:.3f} ({seconds})")

"""he2017 §4 table: the specialists+1 ensemble under the unanimous-target attack, its
zero-knowledge detection, and the class sets it was built from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from advrepro.errors import UserError
from advrepro.experiments.store import CellStore
from advrepro.io import atomic_write_text
from advrepro.report.figures import confidence_histogram
from advrepro.report.paper_values import paper_value
from advrepro.report.tables import TableContext, to_markdown


def _jaccard(a: list[int], b: list[int]) -> float:
    return len(set(a) & set(b)) / len(set(a) | set(b)) if set(a) | set(b) else 1.0


@dataclass
class SpecialistsTable:
    """Cells of ``experiment``: the adaptive attack (specialists, perfect knowledge), zero-
    knowledge C&W and FGSM scored by the ensemble, and the undefended generalist targeted and
    untargeted. ``reference_sets`` are the U_1..U_K He et al. used (their code release)."""

    paper: str
    table: str
    experiment: str
    title: str
    reference_sets: list[list[int]] | None = None
    reference_sets_source: str = ""
    notes: str = ""

    def _find(self, cells: list[CellStore]) -> dict[str, CellStore]:
        found: dict[str, CellStore] = {}
        for cell in cells:
            s = cell.summary()
            name, threat = s["system_evaluated"], s["threat"]
            if name == "undefended":
                found["undefended_targeted" if s["targeted"] else "undefended_untargeted"] = cell
            elif threat == "perfect":
                found["adaptive"] = cell
            elif threat == "zero":
                found["zero_fgsm" if "FGSM" in s["cell"] else "zero_cw"] = cell
        if "adaptive" not in found:
            raise UserError(f"{self.experiment}: no finished adaptive (threat=perfect) cell; run "
                            f"python scripts/attack.py -m experiment={self.experiment}")
        return found

    def _row(self, quantity: str, key: str, ours: float, n: Any = "") -> dict[str, Any]:
        paper = paper_value(self.paper, self.table, key, "paper")
        return {"quantity": quantity, "paper": paper, "ours": ours, "delta": ours - paper,
                "n": n}

    def build(self, ctx: TableContext) -> pd.DataFrame:
        cells = self._find(ctx.cells(self.experiment))
        adaptive = cells["adaptive"]
        s = adaptive.summary()
        rec = adaptive.records()
        ok = rec[rec["success"].astype(bool)]
        inside = ok[ok["target_in_confused_set"].astype(bool)]
        rows = [
            self._row("success rate (unanimous vote for the target)", "success_rate",
                      s["success_rate"], s["n_images"]),
            self._row("mean L2 of the adaptive examples", "mean_l2", s["mean_l2"], len(ok)),
            self._row("mean ensemble confidence of the adaptive examples",
                      "mean_adversarial_confidence", float(ok["confidence"].mean()), len(ok)),
            self._row("targets inside U_y (the true class's confused set)",
                      "targets_in_confused_set", float(len(inside)), len(ok)),
            self._row("mean L2 for those targets", "mean_l2_targets_in_confused_set",
                      float(inside["l2"].mean()), len(inside)),
            self._row("mean L2 for the other targets", "-",
                      float(ok.loc[~ok["target_in_confused_set"].astype(bool), "l2"].mean()),
                      len(ok) - len(inside)),
        ]
        for key, label, paper_key in (
            ("undefended_untargeted", "untargeted", "mean_l2_undefended_untargeted"),
            ("undefended_targeted", "targeted, same images and targets", "-"),
        ):
            if key in cells:
                base = cells[key].summary()
                rows.append(self._row(f"mean L2, generalist alone ({label})", paper_key,
                                      base["mean_l2"], base["n_images"]))
                rows.append(self._row(
                    f"distortion increase over the generalist alone ({label})",
                    "increase_over_untargeted" if key == "undefended_untargeted" else "-",
                    s["mean_l2"] / base["mean_l2"] - 1))
        frame = pd.DataFrame(rows)
        extra = self._detection(ctx, cells, s) + self._sets(ctx, s)
        ctx.write(self.paper, self.table, frame, self.title, self.notes, extra)
        ctx.example_figures(self.paper, self.table, [adaptive])
        return frame

    def _detection(self, ctx: TableContext, cells: dict[str, CellStore],
                   adaptive: dict[str, Any]) -> str:
        """Zero-knowledge detection (cw2017 §2.3 threat model) and the clean statistics."""
        clean = (adaptive.get("system") or {}).get("clean") or {}
        threshold = float((adaptive.get("system") or {}).get("threshold", 0.5))
        rows, series = [], {}
        rec = cells["adaptive"].records()
        series["clean originals"] = rec["clean_confidence"].tolist()
        for key, label in (("zero_cw", "C&W on the generalist (zero knowledge)"),
                           ("zero_fgsm", "FGSM on the generalist (zero knowledge)"),
                           ("adaptive", "adaptive attack (perfect knowledge)")):
            if key not in cells:
                continue
            s = cells[key].summary()
            r = cells[key].records()
            fooled_generalist = r[r["success"].astype(bool)]
            series[label] = fooled_generalist["confidence"].tolist()
            rows.append({
                "examples": label,
                "fool the generalist": s["success_rate"],
                "rejected by the ensemble": s.get("detected_specialists", float("nan")),
                "fool the ensemble": s["fooled_defense_rate"],
                "mean confidence": float(fooled_generalist["confidence"].mean()),
                "clean originals rejected": s.get("false_positive_specialists", float("nan")),
            })
        voters = len((adaptive.get("system") or {}).get("class_sets", [])) or 21
        confidence_histogram(series, voters, threshold, f"{self.title}: ensemble confidence",
                             ctx.figure_path(self.paper, f"{self.table}_confidence"))
        frame = pd.DataFrame(rows)
        atomic_write_text(Path(ctx.tables_dir) / self.paper / f"{self.table}_detection.csv",
                          frame.to_csv(index=False))
        out = (f"\nDetection (reject when the confidence is below {threshold:g}; rates among the "
               "examples that fool the generalist):\n\n" + to_markdown(frame) + "\n")
        if clean:
            out += (f"\nClean test images 0-{clean['images'] - 1}: ensemble accuracy "
                    f"{clean['accuracy']:.2%} (generalist {clean['generalist_accuracy']:.2%}), "
                    f"rejected {clean['rejected']:.2%}, accuracy on the accepted ones "
                    f"{clean['accuracy_accepted']:.2%}. Confidence histogram: "
                    f"{clean['confidence_histogram']}.\n")
        return out

    def _sets(self, ctx: TableContext, adaptive: dict[str, Any]) -> str:
        ours = (adaptive.get("system") or {}).get("class_sets") or []
        k = (len(ours) - 1) // 2
        rows = []
        for i in range(k):
            row: dict[str, Any] = {"class": i, "U_i ours": " ".join(map(str, ours[i]))}
            if self.reference_sets:
                ref = self.reference_sets[i]
                row["U_i He et al."] = " ".join(map(str, ref))
                row["jaccard"] = _jaccard(ours[i], ref)
            rows.append(row)
        frame = pd.DataFrame(rows)
        atomic_write_text(Path(ctx.tables_dir) / self.paper / f"{self.table}_sets.csv",
                          frame.to_csv(index=False))
        source = f" ({self.reference_sets_source})" if self.reference_sets_source else ""
        return ("\nConfused-class sets U_i from FGSM on our generalist, beside He et al.'s"
                f"{source}:\n\n" + to_markdown(frame) + "\n")

"""Grid tables: every entry of a paper table is one experiment cell, found by the fields its
summary stores (tramer2017 Tables 1, 2, 4, 7, 8).

Rows and columns each carry a selector, a mapping from summary fields (dotted for nested ones,
e.g. ``target.training``) to the values a cell must have; the entry at (row, column) is the
cell matching both selectors and the table's ``where``. A selector that matches no cell leaves
the entry empty and the table says which cells are missing; several matching cells must agree
on the value shown.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from advrepro.errors import UserError
from advrepro.report.figures import transfer_heatmaps
from advrepro.report.paper_values import paper_value
from advrepro.report.tables import TableContext, to_markdown

log = logging.getLogger(__name__)


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"target": {"epochs": 6}}`` -> ``{"target.epochs": 6}`` (lists and scalars kept)."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def matches(fields: dict[str, Any], selector: dict[str, Any]) -> bool:
    """Whether a flattened summary has every value of ``selector`` (numbers compared as
    numbers, so 0.3 in a config matches 0.3 stored)."""
    for key, wanted in selector.items():
        have = fields.get(key)
        if isinstance(wanted, (int, float)) and isinstance(have, (int, float)) \
                and not isinstance(wanted, bool):
            if not math.isclose(float(have), float(wanted), rel_tol=1e-9):
                return False
        elif have != wanted:
            return False
    return True


def tied_for_best(values: pd.Series, half_widths: pd.Series) -> pd.Series:
    """Entries whose 95 % confidence interval overlaps that of the lowest value (tramer2017
    Table 4: "methods statistically tied for best in bold")."""
    if values.isna().all():
        return pd.Series(False, index=values.index)
    best = values.idxmin()
    upper_best = values[best] + half_widths[best]
    return (values - half_widths) <= upper_best


@dataclass
class GridTable:
    """A rows x columns paper table of one metric read from experiment cells."""

    paper: str
    table: str
    experiment: str
    title: str
    rows: dict[str, dict[str, Any]]
    columns: dict[str, dict[str, Any]]
    where: dict[str, Any] = field(default_factory=dict)
    metric: str = "error_rate"
    #: per-row or per-column metric instead of ``metric`` (e.g. a "Clean" column)
    row_metrics: dict[str, str] = field(default_factory=dict)
    column_metrics: dict[str, str] = field(default_factory=dict)
    row_title: str = "row"
    column_title: str = "column"
    #: "min": bold the entries of each column statistically tied for the lowest value
    best: str | None = None
    percent: bool = True
    notes: str = ""
    output: str | None = None

    def build(self, ctx: TableContext) -> pd.DataFrame:
        summaries = [flatten(c.summary()) for c in ctx.cells(self.experiment)]
        summaries = [s for s in summaries if matches(s, self.where)]
        long_rows, missing, cited = [], [], []
        for r, row_sel in self.rows.items():
            for c, col_sel in self.columns.items():
                metric = self.row_metrics.get(r) or self.column_metrics.get(c) or self.metric
                hits = [s for s in summaries if matches(s, {**row_sel, **col_sel})]
                values = {float(s.get(metric, float("nan"))) for s in hits}
                if len(values) > 1:
                    raise UserError(f"{self.table}: {len(hits)} cells match ({r}, {c}) with "
                                    f"different {metric}: "
                                    + ", ".join(s["cell"] for s in hits))
                paper = paper_value(self.paper, self.table, r, c)
                if not math.isnan(paper):
                    cited.append([self.table, r, c])
                hit = hits[0] if hits else None
                if hit is None:
                    missing.append(f"({r}, {c}): {dict(self.where, **row_sel, **col_sel)}")
                ours = values.pop() if values else float("nan")
                long_rows.append({
                    self.row_title: r, self.column_title: c, "paper": paper, "ours": ours,
                    "ci95": float(hit.get(f"{metric}_ci95", float("nan"))) if hit else math.nan,
                    "delta": ours - paper, "n_images": hit["n_images"] if hit else 0,
                    "seconds": hit.get("attack_seconds") if hit else None,
                    "commit": hit.get("commit") if hit else None,
                    "cell": hit["cell"] if hit else "(not run)",
                })
        frame = pd.DataFrame(long_rows)
        ours = frame.pivot(index=self.row_title, columns=self.column_title, values="ours")
        ours = ours.loc[list(self.rows), list(self.columns)]
        paper = frame.pivot(index=self.row_title, columns=self.column_title, values="paper")
        paper = paper.loc[list(self.rows), list(self.columns)]
        extra = "\n\nOurs (paper):\n\n" + to_markdown(self._wide(frame, ours, paper)) + "\n"
        if missing:
            log.warning("%s: %d cells not run yet", self.table, len(missing))
            extra += ("\nNot run yet (run the table's make target with the same SCALE):\n\n"
                      + "\n".join(f"- {m}" for m in missing) + "\n")
        name = self.output or self.table
        ctx.write(self.paper, name, frame, self.title, self.notes, extra, cited=cited)
        vmax = 1.0 if self.percent else max(float(ours.max().max()), float(paper.max().max()))
        transfer_heatmaps(ours, paper, self.title, ctx.figure_path(self.paper, name),
                          x_label=self.column_title, y_label=self.row_title,
                          vmax=vmax if vmax == vmax and vmax > 0 else 1.0)
        return frame

    def _wide(self, frame: pd.DataFrame, ours: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
        ci = frame.pivot(index=self.row_title, columns=self.column_title, values="ci95")
        ci = ci.loc[list(self.rows), list(self.columns)]
        bold = pd.DataFrame(False, index=ours.index, columns=ours.columns)
        if self.best == "min":
            for c in ours.columns:
                bold[c] = tied_for_best(ours[c], ci[c].fillna(0))

        def show(v: float, p: float, b: bool) -> str:
            fmt = (lambda x: f"{100 * x:.1f}") if self.percent else (lambda x: f"{x:.3g}")
            text = ("n/a" if v != v else fmt(v)) + " (" + ("—" if p != p else fmt(p)) + ")"
            return f"**{text}**" if b else text

        wide = pd.DataFrame({c: [show(ours.loc[r, c], paper.loc[r, c], bool(bold.loc[r, c]))
                                 for r in ours.index] for c in ours.columns}, index=ours.index)
        wide.index.name = self.row_title
        return wide.reset_index()

"""Table builders: records of an experiment's cells -> a paper table with paper, ours, delta.

Each builder writes ``<tables_dir>/<paper>/<table>.{csv,md}`` and figures under
``<figures_dir>/<paper>/``. Table configs live in conf/table/<paper>/<table>.yaml.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from advrepro.errors import UserError
from advrepro.experiments.store import CellStore, completed_cells
from advrepro.io import atomic_write_text
from advrepro.provenance import current_commit
from advrepro.report.detection import zero_knowledge_detection, zero_knowledge_roc
from advrepro.report.figures import (
    example_grid,
    paper_vs_ours_plot,
    roc_plot,
    transfer_heatmaps,
)
from advrepro.report.paper_values import citation, paper_value

log = logging.getLogger(__name__)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.3g}"
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no optional dependency needed)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


@dataclass
class TableContext:
    """Where results are read from and written to, and how they were made."""

    runs_dir: str
    tables_dir: str
    figures_dir: str
    scale: str
    command: str = ""

    def cells(self, experiment: str) -> list[CellStore]:
        cells = completed_cells(Path(self.runs_dir) / experiment)
        if not cells:
            raise UserError(
                f"no finished cells under {Path(self.runs_dir) / experiment}; run the "
                f"experiment first (python scripts/attack.py -m experiment={experiment})"
            )
        return cells

    def write(self, paper: str, table: str, frame: pd.DataFrame, title: str, notes: str,
              extra_md: str = "", cited: str | list[list[str]] | None = None) -> Path:
        """Write ``frame`` as CSV and Markdown; the header cites the paper values it shows:
        ``cited`` is a paper table's name (all its values; default ``table``) or a list of
        [table, row, column] references."""
        out = Path(self.tables_dir) / paper
        csv_path = out / f"{table}.csv"
        atomic_write_text(csv_path, frame.to_csv(index=False))
        header = [
            f"# {title}",
            "",
            f"Paper values: {citation(paper, table if cited is None else cited) or 'see notes'}.",
            f"Scale: `{self.scale}`. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
            f"at commit `{current_commit()}`" + (f" by `{self.command}`." if self.command else "."),
            "",
        ]
        body = to_markdown(frame)
        tail = ["", notes.strip(), ""] if notes.strip() else [""]
        atomic_write_text(out / f"{table}.md", "\n".join(header) + "\n" + body + "\n" + extra_md
                          + "\n".join(tail))
        return csv_path

    def zero_knowledge_section(self, paper: str, name: str, title: str,
                               scored: dict[str, tuple[pd.DataFrame, str]],
                               extra: dict[str, dict[str, Any]] | None = None) -> str:
        """Detection under zero knowledge: ``scored`` maps a row label to (a zero-knowledge
        cell's records, the detector scored in them). Writes ``<name>_zero_knowledge.csv`` and
        its ROC plot; returns the Markdown section. ``extra`` adds columns per row."""
        frame = pd.DataFrame([{"detector": label, **zero_knowledge_detection(rec, det),
                               **(extra or {}).get(label, {})}
                              for label, (rec, det) in scored.items()])
        atomic_write_text(Path(self.tables_dir) / paper / f"{name}_zero_knowledge.csv",
                          frame.to_csv(index=False))
        roc_plot({label: zero_knowledge_roc(rec, det) for label, (rec, det) in scored.items()},
                 f"{title}: zero-knowledge ROC",
                 self.figure_path(paper, f"{name}_zero_knowledge_roc"))
        return ("\nZero-knowledge detection (C&W on the unsecured classifier; clean originals "
                "give the false positives):\n\n" + to_markdown(frame) + "\n")

    def figure_path(self, paper: str, name: str) -> Path:
        return Path(self.figures_dir) / paper / f"{name}.png"

    def example_figures(self, paper: str, table: str, cells: list[CellStore]) -> None:
        names = [c.label for c in cells]
        for cell in cells:
            name = cell.label
            if names.count(name) > 1:  # same cell name in several experiments
                name = f"{cell.directory.parent.name}_{name}"
            if not (cell.directory / "adversarial.pt").is_file():
                # committed cells keep records and summaries but not the image tensors
                log.warning("no adversarial.pt in %s; example figure skipped", cell.directory)
                continue
            t = cell.tensors()
            d = (t["adversarial"] - t["original"]).flatten(1).norm(dim=1)
            l2 = torch.where(t["success"], d, torch.full_like(d, float("inf")))
            example_grid(t["original"], t["adversarial"], l2, name,
                         self.figure_path(paper, f"{table}_examples_{name}"))


@dataclass
class SweepTable:
    """One row per cell of a sweep (he2017 Tables 1, 2, 4 and the single-number results).

    ``row_label`` formats the cell's defense config (e.g. "{bits}" or "{height}x{width}"),
    or maps cell-name prefixes to labels via ``row_names``. ``metrics`` are summary keys.
    """

    paper: str
    table: str
    experiment: str | list[str]
    title: str
    metrics: list[str]
    row_label: str = "{name}"
    row_names: dict[str, str] = field(default_factory=dict)
    x_label: str = ""
    notes: str = ""
    plot_metric: str = "mean_l2"
    output: str | None = None  # file name when several outputs share one paper table
    zero_knowledge_metrics: list[str] = field(default_factory=list)

    def label(self, summary: dict[str, Any]) -> str | None:
        """The row of a cell; None for a cell of the experiment this table does not show.
        A ``row_names`` key is a prefix of the cell name or of "<experiment>/<cell>"."""
        if self.row_names:
            qualified = f"{summary.get('experiment', '')}/{summary['cell']}"
            return next((name for prefix, name in self.row_names.items()
                         if summary["cell"].startswith(prefix)
                         or qualified.startswith(prefix)), None)
        return self.row_label.format(**summary.get("defense", {}))

    def build(self, ctx: TableContext) -> pd.DataFrame:
        experiments = [self.experiment] if isinstance(self.experiment, str) else self.experiment
        cells = [c for e in experiments for c in ctx.cells(e)]
        rows, cited, zero = [], [], {}
        for cell in cells:
            s = cell.summary()
            label = self.label(s)
            if label is None:
                continue
            if s.get("threat") == "zero":
                records = cell.records()
                if f"score_{s.get('system_evaluated')}" in records.columns:
                    zero[label] = (records, s)
                else:  # e.g. a bit-depth cell under zero knowledge: nothing detects
                    log.warning("zero-knowledge cell %s has no detector score; not shown",
                                s["cell"])
                continue
            row: dict[str, Any] = {"row": label, "n_images": s["n_images"]}
            for m in self.metrics:
                ours = float(s.get(m, float("nan")))
                paper = paper_value(self.paper, self.table, label, m)
                if not math.isnan(paper):
                    cited.append([self.table, label, m])
                row[f"{m}_paper"] = paper
                row[f"{m}_ours"] = ours
                row[f"{m}_delta"] = ours - paper
            row["attack_seconds"] = s.get("attack_seconds")
            row["cell"] = s["cell"]
            rows.append(row)
        frame = pd.DataFrame(rows)
        order = self._order(frame["row"].tolist())
        frame = frame.set_index("row").loc[order].reset_index()
        name = self.output or self.table
        extra = ""
        if zero:
            extra = ctx.zero_knowledge_section(
                self.paper, name, self.title,
                {label: (rec, s["system_evaluated"]) for label, (rec, s) in zero.items()},
                {label: {**{m: s.get(m) for m in self.zero_knowledge_metrics},
                         "attack_seconds": s.get("attack_seconds"), "cell": s["cell"]}
                 for label, (rec, s) in zero.items()})
        ctx.write(self.paper, name, frame, self.title, self.notes, extra, cited=cited)
        if self.plot_metric in self.metrics and len(frame) > 1:
            paper_vs_ours_plot(frame, self.plot_metric, self.x_label, self.title,
                               ctx.figure_path(self.paper, name))
        ctx.example_figures(self.paper, name, cells)
        return frame

    def _order(self, labels: list[str]) -> list[str]:
        from advrepro.report.paper_values import paper_values

        df = paper_values()
        known = [r for r in dict.fromkeys(df[(df.paper == self.paper)
                                             & (df.table == self.table)].row) if r in labels]
        return known + sorted(set(labels) - set(known))


@dataclass
class TransferTable:
    """Probability that examples made against a source defense also fool a target defense
    (he2017 Table 3: rows target, columns source). Among the examples that fooled the source
    system, the fraction that the target detector does not flag (score <= 0); all detectors
    guard the same classifier, so a source success is already misclassified by it."""

    paper: str
    table: str
    experiment: str
    title: str
    sources: list[str]
    distortion_rows: list[str] = field(default_factory=list)
    zero_knowledge_cell: str = "undefended"
    notes: str = ""

    def build(self, ctx: TableContext) -> pd.DataFrame:
        cells = {c.summary()["system_evaluated"]: c for c in ctx.cells(self.experiment)}
        missing = [s for s in self.sources if s not in cells]
        if missing:
            raise UserError(f"{self.experiment}: no finished cell for source(s) {missing}; "
                            f"found {sorted(cells)}")
        ours = pd.DataFrame(index=self.sources, columns=self.sources, dtype=float)
        paper = ours.copy()
        long_rows = []
        for src in self.sources:
            rec = cells[src].records()
            ok = rec[rec["fooled_defense"].astype(bool)]
            for tgt in self.sources:
                rate = float((ok[f"score_{tgt}"] <= 0).mean()) if len(ok) else float("nan")
                ours.loc[tgt, src] = rate
                paper.loc[tgt, src] = paper_value(self.paper, self.table, tgt, src)
                long_rows.append({"target": tgt, "source": src, "paper": paper.loc[tgt, src],
                                  "ours": rate, "delta": rate - paper.loc[tgt, src],
                                  "n_source_examples": len(ok)})
        frame = pd.DataFrame(long_rows)
        wide = ours.map(lambda v: f"{v:.0%}" if v == v else "n/a")
        wide_p = paper.map(lambda v: f"{v:.0%}" if v == v else "n/a")
        both = wide.astype(str) + " (paper " + wide_p.astype(str) + ")"
        both.index.name = "target \\ source"
        extra = "\n\nMatrix (rows target, columns source):\n\n" + to_markdown(
            both.reset_index()) + "\n"
        dist_rows = []
        for name in self.distortion_rows:
            if name in cells:
                s = cells[name].summary()
                p = paper_value(self.paper, f"{self.table}_distortion", name, "mean_l2")
                dist_rows.append({"system": name, "success_rate": s["fooled_defense_rate"],
                                  "mean_l2_paper": p, "mean_l2_ours": s["mean_l2_fooled"],
                                  "mean_l2_delta": s["mean_l2_fooled"] - p})
        if dist_rows:
            dist = pd.DataFrame(dist_rows)
            atomic_write_text(Path(ctx.tables_dir) / self.paper / f"{self.table}_distortion.csv",
                              dist.to_csv(index=False))
            extra += "\nDistortion of the adaptive attack:\n\n" + to_markdown(dist) + "\n"
        if self.zero_knowledge_cell in cells:
            rec = cells[self.zero_knowledge_cell].records()
            extra += ctx.zero_knowledge_section(self.paper, self.table, self.title,
                                                {name: (rec, name) for name in self.sources})
        ctx.write(self.paper, self.table, frame, self.title, self.notes, extra)
        transfer_heatmaps(ours, paper, self.title, ctx.figure_path(self.paper, self.table))
        ctx.example_figures(self.paper, self.table, list(cells.values()))
        return frame


@dataclass
class CellTable:
    """Single numbers of a paper, each read from one cell of ``experiment`` (cw2017's results
    are spread over its prose rather than tables). Each row: ``label``, ``cell`` (a prefix of
    the cell name), ``metric`` (a summary key), optionally ``complement: true`` (report
    1 - metric, e.g. the share of examples a defense removes) and ``paper`` ([table, row,
    column] of paper_values.csv, or omitted when the paper gives no number)."""

    paper: str
    table: str
    experiment: str
    title: str
    rows: list[dict[str, Any]]
    notes: str = ""
    output: str | None = None  # file name when several outputs share one paper table

    def build(self, ctx: TableContext) -> pd.DataFrame:
        summaries = [c.summary() for c in ctx.cells(self.experiment)]
        out = []
        for spec in self.rows:
            hit = next((s for s in summaries if s["cell"].startswith(spec["cell"])), None)
            ours = float(hit.get(spec["metric"], float("nan"))) if hit else float("nan")
            if spec.get("complement"):  # the paper states the other share (1 - metric)
                ours = 1.0 - ours
            ref = spec.get("paper")
            paper = paper_value(self.paper, *ref) if ref else float("nan")
            out.append({"result": spec["label"], "paper": paper, "ours": ours,
                        "delta": ours - paper, "n_images": hit["n_images"] if hit else 0,
                        "attack_seconds": hit.get("attack_seconds") if hit else None,
                        "cell": hit["cell"] if hit else "(not run)"})
        frame = pd.DataFrame(out)
        refs = [r["paper"] for r in self.rows if r.get("paper")]
        ctx.write(self.paper, self.output or self.table, frame, self.title, self.notes,
                  cited=refs)
        return frame

"""Result store: one directory per experiment cell, written atomically, skipped when complete.

    <runs_dir>/<experiment>/<cell>/records.csv    per-example records
                                  /adversarial.pt  originals and adversarial examples
                                  /summary.json    written last: its presence marks completion
                                  /partial/<hash>/ the running attack's state (removed at the end)

A sweep killed mid-way and rerun finds the finished cells (same config hash) and skips them;
the cell it was in resumes its attack from the last finished binary-search step.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from advrepro.experiments.summary import ALWAYS_SUMMARIZED, RECORD_COLUMNS, summarize
from advrepro.io import atomic_torch_save, atomic_write_json, atomic_write_text, safe_torch_load


def config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CellStore:
    """Files of one experiment cell."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def label(self) -> str:
        """The readable part of the directory name (without the identity hash suffix)."""
        name = self.directory.name
        head, _, tail = name.rpartition("__")
        return head if head and len(tail) == 8 and all(c in "0123456789abcdef" for c in tail) \
            else name

    @property
    def summary_path(self) -> Path:
        return self.directory / "summary.json"

    def is_complete(self, digest: str) -> bool:
        if not self.summary_path.is_file():
            return False
        try:
            return json.loads(self.summary_path.read_text()).get("config_hash") == digest
        except json.JSONDecodeError:
            return False

    def summary(self) -> dict[str, Any]:
        """The stored summary. A cell written before :func:`summarize` gained a metric is
        completed from its records (stored values win); only such cells reread records.csv."""
        stored = json.loads(self.summary_path.read_text())
        if set(ALWAYS_SUMMARIZED) <= set(stored):
            return stored
        records = self.records()
        if not set(RECORD_COLUMNS) <= set(records.columns):
            return stored
        return {**summarize(records, bool(stored.get("targeted"))), **stored}

    def records(self) -> pd.DataFrame:
        return pd.read_csv(self.directory / "records.csv")

    def tensors(self) -> dict[str, Any]:
        return safe_torch_load(self.directory / "adversarial.pt")

    def partial_dir(self, digest: str) -> Path:
        """Where the attack of this cell's configuration ``digest`` keeps its resumable state
        while it runs (:mod:`advrepro.attacks.resume`); removed once the cell is written."""
        return self.directory / "partial" / digest

    def discard_partial(self) -> None:
        """Remove every saved attack state of this cell."""
        shutil.rmtree(self.directory / "partial", ignore_errors=True)

    def write(self, records: pd.DataFrame, tensors: dict[str, Any], summary: dict[str, Any],
              config: str) -> None:
        """Write everything; the summary goes last so a partial cell never looks complete.
        The attack's resumable state goes after it: it is no longer needed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.summary_path.unlink(missing_ok=True)
        atomic_write_text(self.directory / "config.yaml", config)
        atomic_write_text(self.directory / "records.csv", records.to_csv(index=False))
        atomic_torch_save(self.directory / "adversarial.pt", tensors)
        atomic_write_json(self.summary_path, summary)
        self.discard_partial()


def completed_cells(experiment_dir: str | Path) -> list[CellStore]:
    """The complete cells of an experiment, sorted by directory name."""
    root = Path(experiment_dir)
    return [CellStore(p.parent) for p in sorted(root.glob("*/summary.json"))]

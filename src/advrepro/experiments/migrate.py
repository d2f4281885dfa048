"""Move finished cells to the current cell identity without recomputing them.

A cell stores the resolved configuration it ran with (``config.yaml``). When the identity rule
changes (:mod:`advrepro.experiments.identity`), each cell's new directory name and hash are
computed from that stored configuration; the directory is renamed and its summary gets the new
``config_hash`` and ``cell`` (the old hash is kept as ``legacy_config_hash``). Records are not
touched. Running it twice changes nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from advrepro.errors import UserError
from advrepro.experiments.identity import cell_identity
from advrepro.io import atomic_write_json

log = logging.getLogger(__name__)


def migrate_cells(root: str | Path) -> list[tuple[str, str]]:
    """Migrate every finished cell below ``root``; return the (old, new) directory pairs
    that were renamed or re-hashed."""
    moved = []
    for summary_path in sorted(Path(root).rglob("summary.json")):
        cell = summary_path.parent
        config = cell / "config.yaml"
        if not config.is_file():
            continue
        name, digest = cell_identity(OmegaConf.load(config))
        summary = json.loads(summary_path.read_text())
        if cell.name == name and summary.get("config_hash") == digest:
            continue
        target = cell.parent / name
        if target != cell and target.exists():
            raise UserError(f"cannot migrate {cell}: {target} exists already")
        summary.setdefault("legacy_config_hash", summary.get("config_hash"))
        summary.update(config_hash=digest, cell=name)
        atomic_write_json(summary_path, summary)
        if target != cell:
            cell.rename(target)
        moved.append((str(cell), str(target)))
        log.info("migrated %s -> %s", cell, target.name)
    return moved

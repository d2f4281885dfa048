"""A cell's identity: everything that was chosen for it, hashed; and its directory.

The identity is the resolved configuration less the settings that only choose how a run
executes (paths, progress bars, device). Its hash names the cell's directory together with a
readable prefix (defense, threat model, attack, source model), so two cells that differ in any
choice -- the model, a training recipe, an attack's epsilon, the seed -- never share a
directory, while a rerun of the same choices finds its finished cell.

Settings added to the configuration after cells were computed are listed in
:data:`LATER_DEFAULTS` with the value those cells implicitly had: a setting at that value is
left out of the hash, so adding a setting does not orphan any finished cell.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from advrepro.config import to_container
from advrepro.data.datasets import DatasetSpec, data_fingerprint
from advrepro.errors import ConfigError, DataNotFoundError
from advrepro.experiments.store import config_hash

# ("force" stays in the hash, as it always was: a forced run never looks like a finished one)
RUNTIME_KEYS = ("paths", "progress", "accelerator", "validate_every_n_epochs", "hydra")
#: scale settings that only choose how a run executes (the scale group supplies their defaults)
RUNTIME_SCALE_KEYS = ("validate_every_n_epochs",)
#: runtime settings wherever they appear (an attack's progress bar is ``${progress}``)
RUNTIME_ANYWHERE = ("progress",)
#: settings added after cells were stored ("group.key" for nested ones), with the value those
#: cells implicitly had
LATER_DEFAULTS: dict[str, Any] = {"protocol": "sample", "scale.full_test_images": None}
#: a name used as a path component: letters, digits, '_', '-', '.', '=' (no '..')
_SAFE_PART = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def identity_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved choices that define a cell's result."""
    resolved = {k: v for k, v in to_container(cfg).items() if k not in RUNTIME_KEYS}
    resolved["scale"] = {k: v for k, v in resolved["scale"].items()
                         if k not in RUNTIME_SCALE_KEYS}
    resolved["dataset"] = dataset_identity(resolved["dataset"])
    resolved = _without(resolved, RUNTIME_ANYWHERE)
    for dotted, default in LATER_DEFAULTS.items():
        *parents, key = dotted.split(".")
        node = resolved
        for parent in parents:
            node = node.get(parent) or {}
        if key in node and node[key] == default:
            del node[key]
    return resolved


def _without(node: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        return {k: _without(v, keys) for k, v in node.items() if k not in keys}
    if isinstance(node, list):
        return [_without(v, keys) for v in node]
    return node


def dataset_identity(dataset: dict[str, Any]) -> dict[str, Any]:
    """The dataset settings that define its content: not where it lives (``root``), whether it
    may be downloaded or how it is checked, but the identity of its files
    (:func:`~advrepro.data.datasets.data_fingerprint`)."""
    out = {k: v for k, v in dataset.items() if k not in ("root", "download", "verify_checksum")}
    spec = DatasetSpec(**{k: v for k, v in dataset.items()
                          if k in DatasetSpec.__dataclass_fields__})
    try:
        out["files"] = data_fingerprint(spec)
    except DataNotFoundError:  # no finished cell can match; loading it will say what is missing
        out["files"] = "absent"
    return out


def attack_name(cfg: DictConfig) -> str:
    """Short name of the configured attack: its class, plus its parameterization and its
    confidence margin kappa when they are set."""
    name = cfg.attack._target_.rsplit(".", 1)[-1]
    param = cfg.attack.get("parameterization")
    if param:
        name = f"{name}-{param._target_.rsplit('.', 1)[-1]}"
    kappa = float(cfg.attack.get("confidence") or 0.0)
    return f"{name}-kappa{kappa:g}" if kappa > 0 else name


def readable_name(cfg: DictConfig) -> str:
    """The readable part of a cell's directory name: defense, threat, attack, targeted, and
    the source model of a transfer attack."""
    defense = instantiate(cfg.defense, _convert_="all")
    name = defense.cell_name() if hasattr(defense, "cell_name") else defense.name
    parts = [name, cfg.threat.name, attack_name(cfg)]
    if cfg.targeted:
        parts.append("targeted")
    source = cfg.get("source")
    if source:
        parts.append(f"from-{source.name}")
    return "__".join(safe_part(str(p), "cell name") for p in parts)


def cell_identity(cfg: DictConfig) -> tuple[str, str]:
    """(cell directory name, config hash) of ``cfg`` without training or loading anything."""
    digest = config_hash(identity_config(cfg))
    return f"{readable_name(cfg)}__{digest[:8]}", digest


def safe_part(value: str, what: str) -> str:
    """``value`` if it can name a directory, else a one-line error naming ``what``."""
    if not _SAFE_PART.match(value) or value in (".", ".."):
        raise ConfigError(f"{what} {value!r} cannot name a directory: use letters, digits, "
                          "'_', '-', '.', '=' and '+' only")
    return value


def cell_directory(runs_dir: str | Path, experiment: str, cfg: DictConfig) -> tuple[Path, str]:
    """(directory, config hash) of the cell of ``cfg`` under ``runs_dir``/``experiment``;
    every part of ``experiment`` (e.g. "he2017/table1") must be a safe name, so the directory
    stays under ``runs_dir``."""
    for part in str(experiment).split("/"):
        safe_part(part, "experiment_name part")
    name, digest = cell_identity(cfg)
    root = Path(runs_dir).resolve()
    directory = (root / experiment / name).resolve()
    if root not in directory.parents:
        raise ConfigError(f"cell directory {directory} would leave the runs directory {root}")
    return Path(runs_dir) / experiment / name, digest

"""Run one experiment cell: dataset x defense x attack x threat model -> per-example records.

Threat models (cw2017 §2.3, §2.7):
- ``zero``: the attack targets the unsecured classifier; the defense is only evaluated.
- ``perfect``: the attack targets the defended system's adaptive objective.
- ``limited``: the attacker builds its own copy of the defense from the attacker's half of the
  training data and attacks it; the examples are scored on the defender's copy, built from the
  other half.
Every example is also scored by each detector of ``cfg.panel`` (the basis of transfer tables).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from advrepro.attacks.objectives import is_fooled
from advrepro.attacks.resume import resumable
from advrepro.data.sampling import random_targets, sample_correctly_classified
from advrepro.defenses.builders import NoDefense, build_detector
from advrepro.defenses.system import DefendedSystem, batched
from advrepro.errors import require_choice
from advrepro.experiments.store import CellStore, config_hash
from advrepro.experiments.summary import summarize
from advrepro.experiments.workbench import Workbench, to_container
from advrepro.report.tables import current_commit

log = logging.getLogger(__name__)

THREATS = ("zero", "limited", "perfect")
_RUNTIME_KEYS = ("paths", "progress", "accelerator", "validate_every_n_epochs", "hydra")
#: scale settings that only choose how a run executes (the scale group supplies their defaults)
_RUNTIME_SCALE_KEYS = ("validate_every_n_epochs",)


def cell_identity(cfg: DictConfig) -> tuple[str, str]:
    """(cell directory name, config hash) of ``cfg`` without training or loading anything."""
    defense = instantiate(cfg.defense, _convert_="all")
    name = defense.cell_name() if hasattr(defense, "cell_name") else defense.name
    name = f"{name}__{cfg.threat.name}__{attack_name(cfg)}" + ("__targeted" if cfg.targeted else "")
    resolved = {k: v for k, v in to_container(cfg).items() if k not in _RUNTIME_KEYS}
    resolved["scale"] = {k: v for k, v in resolved["scale"].items()
                         if k not in _RUNTIME_SCALE_KEYS}
    return name, config_hash(resolved)


def attack_name(cfg: DictConfig) -> str:
    """Short name of the configured attack: its class, plus its parameterization and its
    confidence margin kappa when they are set."""
    name = cfg.attack._target_.rsplit(".", 1)[-1]
    param = cfg.attack.get("parameterization")
    if param:
        name = f"{name}-{param._target_.rsplit('.', 1)[-1]}"
    kappa = float(cfg.attack.get("confidence") or 0.0)
    return f"{name}-kappa{kappa:g}" if kappa > 0 else name


def cell_store(cfg: DictConfig) -> tuple[CellStore, str]:
    name, digest = cell_identity(cfg)
    return CellStore(f"{cfg.paths.runs_dir}/{cfg.experiment_name}/{name}"), digest


def _systems(cfg: DictConfig) -> tuple[Workbench, DefendedSystem, DefendedSystem]:
    """(defender's workbench, system attacked, system evaluated) for the threat model."""
    threat = cfg.threat.name
    require_choice("threat", threat, THREATS)
    defense = instantiate(cfg.defense, _convert_="all")
    if threat == "limited":
        defender = Workbench(cfg, half="defender")
        attacked = defense.build(Workbench(cfg, half="attacker"))
        return defender, attacked, defense.build(defender)
    defender = Workbench(cfg)
    evaluated = defense.build(defender)
    attacked = NoDefense().build(defender) if threat == "zero" else evaluated
    return defender, attacked, evaluated


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    """The commit of the code this process runs, read at its first cell and kept: a multirun
    keeps the modules it loaded, so a commit made while it runs does not describe its cells."""
    return current_commit()


def run_cell(cfg: DictConfig) -> dict[str, Any]:
    """Run (or skip, when already complete) the cell described by ``cfg``; return its summary."""
    commit = code_commit()
    store, digest = cell_store(cfg)
    if store.is_complete(digest) and not cfg.get("force", False):
        log.info("cell %s is complete; skipping", store.directory)
        return store.summary()
    bench, attacked, evaluated = _systems(cfg)
    classifier = bench.classifier()
    x_pool, y_pool = bench.test_set()
    idx = sample_correctly_classified(
        lambda b: classifier(b.to(bench.device)), x_pool, y_pool, int(cfg.n_images), cfg.seed
    )
    x = x_pool[idx].to(bench.device)
    y = y_pool[idx].to(bench.device)
    targeted = bool(cfg.targeted)
    labels = random_targets(y, 10, cfg.seed).to(bench.device) if targeted else y

    attack = instantiate(cfg.attack)
    torch.manual_seed(int(cfg.seed))  # any randomness drawn from the global RNG (Gumbel samples)
    start = time.time()
    if cfg.get("force", False):
        store.discard_partial()
    with resumable(store.partial_dir(digest),
                   key=str(classifier.cache_meta.get("key"))) as session:
        result = attack.run(attacked, x, labels, targeted)  # an interrupted cell continues
    seconds = time.time() - start + session.resumed_seconds

    adv = result.adversarial
    predicted = batched(evaluated.predict, adv)
    fooled = is_fooled(predicted, labels, targeted) & result.success
    records: dict[str, Any] = {
        "index": idx.tolist(),
        "label": y.tolist(),
        "target": labels.tolist() if targeted else [-1] * len(y),
        "success": result.success.tolist(),
        "fooled_defense": fooled.tolist(),
        "predicted_defended": predicted.tolist(),
        "predicted_undefended": batched(lambda b: classifier(b).argmax(1), adv).tolist(),
        "l2": result.l2.tolist(),
        "linf": result.linf.tolist(),
        "const": result.const.tolist() if len(result.const) else [float("nan")] * len(y),
        "restart": result.restart.tolist() if len(result.restart) else [0] * len(y),
    }
    # every detector of the evaluated system, plus the evaluation panel's
    for prefix, images in (("score_", adv), ("clean_score_", x)):
        for name, values in _system_scores(evaluated, images).items():
            records[f"{prefix}{name}"] = values.tolist()
    for name in cfg.get("panel") or []:
        if f"score_{name}" not in records:
            detector = build_detector(bench, name)
            records[f"score_{name}"] = batched(detector, adv).tolist()
            records[f"clean_score_{name}"] = batched(detector, x).tolist()
    with torch.no_grad():
        extra = evaluated.extra_records(x, adv, y, labels if targeted else None)
    records.update({k: v.tolist() for k, v in extra.items()})
    frame = pd.DataFrame(records)
    summary = summarize(frame, targeted)
    summary.update(
        config_hash=digest, cell=store.directory.name, defense=to_container(cfg.defense),
        experiment=cfg.experiment_name,
        threat=cfg.threat.name, system_attacked=attacked.name, system_evaluated=evaluated.name,
        attack_seconds=round(seconds, 1), attack_iterations=result.iterations,
        classifier=classifier.cache_meta.get("key"),
        classifier_accuracy=classifier.cache_meta.get("val_accuracy"),
        device=str(bench.device), commit=commit, system=evaluated.describe(),
    )
    tensors = {"index": idx, "original": x.cpu(), "adversarial": adv.cpu(),
               "success": result.success.cpu()}
    store.write(frame, tensors, summary, OmegaConf.to_yaml(cfg, resolve=True))
    log.info("cell %s: %s", store.directory.name, summary)
    return summary


def _system_scores(system: DefendedSystem, images: torch.Tensor,
                   batch_size: int = 500) -> dict[str, torch.Tensor]:
    """The system's detector logits on ``images``, computed in batches without gradients."""
    parts = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            parts.append(system.detector_scores(images[i:i + batch_size]))
    return {k: torch.cat([p[k] for p in parts]).cpu() for k in (parts[0] if parts else {})}

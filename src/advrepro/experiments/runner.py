"""Run one experiment cell: dataset x defense x attack x threat model -> per-example records.

Threat models (cw2017 §2.3, §2.7; tramer2017 §2):
- ``zero``: the attack targets the unsecured classifier; the defense is only evaluated.
- ``perfect``: the attack targets the defended system's adaptive objective.
- ``limited``: the attacker builds its own copy of the defense from the attacker's half of the
  training data and attacks it; the examples are scored on the defender's copy, built from the
  other half.
- ``transfer``: the non-adaptive black-box adversary of tramer2017 (Definition 2): the attack
  runs on a separately trained ``source`` model and its examples are scored on the defended
  system (he2017/cw2017's zero knowledge is the special case source = the bare classifier).

Evaluation protocols:
- ``sample`` (he2017 §2.4, cw2017): ``n_images`` random correctly classified test images; success
  rate and distortion of the successful examples. Every example is also scored by each detector
  of ``cfg.panel`` (the basis of transfer tables between detectors).
- ``full_test`` (tramer2017): every test image, error rates with confidence intervals
  (:mod:`advrepro.experiments.error_rates`).
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

from advrepro.attacks.base import Attack
from advrepro.attacks.objectives import is_fooled
from advrepro.attacks.resume import resumable
from advrepro.config import to_container
from advrepro.data.sampling import random_targets, sample_correctly_classified
from advrepro.defenses.builders import NoDefense, build_detector
from advrepro.defenses.system import DefendedSystem, batched
from advrepro.errors import ConfigError, UserError, require_choice
from advrepro.experiments.error_rates import full_test_summary, input_gradient_norms
from advrepro.experiments.identity import attack_name, cell_directory
from advrepro.experiments.store import CellStore
from advrepro.experiments.summary import summarize
from advrepro.experiments.workbench import Workbench, classifier_description
from advrepro.locking import exclusive
from advrepro.provenance import current_commit

log = logging.getLogger(__name__)

THREATS = ("zero", "limited", "perfect", "transfer")
PROTOCOLS = ("sample", "full_test")
#: images attacked at once under the full-test protocol (the attack batches on the tensor side)
FULL_TEST_BATCH = 1000


def cell_store(cfg: DictConfig) -> tuple[CellStore, str]:
    directory, digest = cell_directory(cfg.paths.runs_dir, cfg.experiment_name, cfg)
    return CellStore(directory), digest


def _systems(cfg: DictConfig) -> tuple[Workbench, DefendedSystem, DefendedSystem]:
    """(defender's workbench, system attacked, system evaluated) for the threat model."""
    threat = cfg.threat.name
    defense = instantiate(cfg.defense, _convert_="all")
    if threat == "limited":
        defender = Workbench(cfg, half="defender")
        attacked = defense.build(Workbench(cfg, half="attacker"))
        return defender, attacked, defense.build(defender)
    defender = Workbench(cfg)
    evaluated = defense.build(defender)
    if threat == "transfer":
        source = defender.trained_classifier(cfg.source.model, cfg.source.train)
        return defender, DefendedSystem(source, f"source {cfg.source.name}"), evaluated
    attacked = NoDefense().build(defender) if threat == "zero" else evaluated
    return defender, attacked, evaluated


def validate(cfg: DictConfig) -> Attack:
    """Check the cell's settings before anything is trained or loaded; return its attack."""
    require_choice("threat", cfg.threat.name, THREATS)
    require_choice("protocol", cfg.get("protocol", "sample"), PROTOCOLS)
    if (cfg.threat.name == "transfer") != bool(cfg.get("source")):
        raise ConfigError("threat=transfer needs a source model (source=<name>), and a source "
                          "model needs threat=transfer")
    return instantiate(cfg.attack)


@functools.lru_cache(maxsize=1)
def code_commit() -> str:
    """The commit of the code this process runs, read at its first cell and kept: a multirun
    keeps the modules it loaded, so a commit made while it runs does not describe its cells."""
    return current_commit()


def run_cell(cfg: DictConfig) -> dict[str, Any]:
    """Run (or skip, when already complete) the cell described by ``cfg``; return its summary."""
    attack = validate(cfg)
    store, digest = cell_store(cfg)
    # one process per cell: a second identical command waits, then finds the cell complete
    with exclusive(store.directory, f"cell {store.directory.name}"):
        if store.is_complete(digest) and not cfg.get("force", False):
            log.info("cell %s is complete; skipping", store.directory)
            return store.summary()
        return _run(cfg, attack, store, digest)


def _run(cfg: DictConfig, attack: Attack, store: CellStore, digest: str) -> dict[str, Any]:
    commit = code_commit()
    bench, attacked, evaluated = _systems(cfg)
    if cfg.get("force", False):
        store.discard_partial()
    protocol = cfg.get("protocol", "sample")
    run = _full_test if protocol == "full_test" else _sample
    frame, tensors, summary = run(cfg, bench, attack, attacked, evaluated, store, digest)
    require_finite(tensors["adversarial"], store.directory.name)
    classifier = bench.classifier()
    summary.update(
        config_hash=digest, cell=store.directory.name, defense=to_container(cfg.defense),
        experiment=cfg.experiment_name, protocol=protocol, attack=attack_name(cfg),
        epsilon=cfg.attack.get("epsilon"),
        threat=cfg.threat.name, system_attacked=attacked.name, system_evaluated=evaluated.name,
        classifier=classifier.cache_meta.get("key"),
        classifier_accuracy=classifier.cache_meta.get("val_accuracy"),
        target=classifier_description(cfg.model, cfg.train),
        source=(dict(classifier_description(cfg.source.model, cfg.source.train),
                     name=cfg.source.name) if cfg.get("source") else None),
        device=str(bench.device), commit=commit, system=evaluated.describe(),
    )
    store.write(frame, tensors, summary, OmegaConf.to_yaml(cfg, resolve=True))
    log.info("cell %s: %s", store.directory.name, summary)
    return summary


def _sample(cfg: DictConfig, bench: Workbench, attack: Attack, attacked: DefendedSystem,
            evaluated: DefendedSystem, store: CellStore, digest: str):
    """he2017 / cw2017: ``n_images`` correctly classified test images, success and distortion."""
    classifier = bench.classifier()
    x_pool, y_pool = bench.test_set()
    idx = sample_correctly_classified(
        lambda b: classifier(b.to(bench.device)), x_pool, y_pool, int(cfg.n_images), cfg.seed
    )
    x = x_pool[idx].to(bench.device)
    y = y_pool[idx].to(bench.device)
    targeted = bool(cfg.targeted)
    labels = random_targets(y, 10, cfg.seed).to(bench.device) if targeted else y

    torch.manual_seed(int(cfg.seed))  # any randomness drawn from the global RNG (Gumbel samples)
    start = time.time()
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
    summary.update(attack_seconds=round(seconds, 1), attack_iterations=result.iterations)
    tensors = {"index": idx, "original": x.cpu(), "adversarial": adv.cpu(),
               "success": result.success.cpu()}
    return frame, tensors, summary


def _full_test(cfg: DictConfig, bench: Workbench, attack: Attack, attacked: DefendedSystem,
               evaluated: DefendedSystem, store: CellStore, digest: str):
    """tramer2017: every test image (or the first ``scale.full_test_images``), error rates."""
    if cfg.targeted:
        raise ConfigError("protocol=full_test reports untargeted error rates; set targeted=false")
    x_all, y_all = bench.test_set()
    limit = cfg.scale.get("full_test_images")
    if limit is not None:
        x_all, y_all = x_all[:int(limit)], y_all[:int(limit)]
    torch.manual_seed(int(cfg.seed))
    start = time.time()
    adv = []
    for i in range(0, len(x_all), FULL_TEST_BATCH):
        xb = x_all[i:i + FULL_TEST_BATCH].to(bench.device)
        yb = y_all[i:i + FULL_TEST_BATCH].to(bench.device)
        adv.append(attack.run(attacked, xb, yb, False).adversarial.detach().cpu())
    seconds = time.time() - start
    adv_all = torch.cat(adv)
    require_finite(adv_all, store.directory.name)
    x_dev = x_all.to(bench.device)
    y_dev = y_all.to(bench.device)
    pred_clean = batched(evaluated.predict, x_dev).cpu()
    pred_adv = batched(evaluated.predict, adv_all.to(bench.device)).cpu()
    delta = (adv_all - x_all).flatten(1)
    records: dict[str, Any] = {
        "index": list(range(len(x_all))),
        "label": y_all.tolist(),
        "predicted_clean": pred_clean.tolist(),
        "predicted_adversarial": pred_adv.tolist(),
        "error_clean": (pred_clean != y_all).tolist(),
        "error_adversarial": (pred_adv != y_all).tolist(),
        "l2": delta.norm(dim=1).tolist(),
        "linf": delta.abs().amax(dim=1).tolist(),
        "grad_norm": input_gradient_norms(evaluated.logits, x_dev, y_dev).cpu().tolist(),
    }
    summary = full_test_summary(records)
    summary.update(attack_seconds=round(seconds, 1))
    # the images themselves are kept for a small sample (figures), not for the whole test set
    keep = slice(0, 100)
    tensors = {"index": torch.arange(len(x_all))[keep], "original": x_all[keep],
               "adversarial": adv_all[keep], "success": (pred_adv != y_all)[keep]}
    return pd.DataFrame(records), tensors, summary


def require_finite(adversarial: torch.Tensor, cell: str) -> None:
    """A cell whose attack produced NaN or infinite images is never written as finished."""
    if not torch.isfinite(adversarial).all():
        bad = int((~torch.isfinite(adversarial.flatten(1))).any(1).sum())
        raise UserError(f"cell {cell}: the attack produced {bad} non-finite adversarial "
                        "image(s); nothing was written (check the attack's settings)")


def _system_scores(system: DefendedSystem, images: torch.Tensor,
                   batch_size: int = 500) -> dict[str, torch.Tensor]:
    """The system's detector logits on ``images``, computed in batches without gradients."""
    parts = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            parts.append(system.detector_scores(images[i:i + batch_size]))
    return {k: torch.cat([p[k] for p in parts]).cpu() for k in (parts[0] if parts else {})}

"""Adversarial examples of the training set, the data every trained detector learns from.

cw2017 §3.1 generates C&W examples for every training image. On 2 CPU cores that is far
beyond a session, so the budget is a config choice (``scale.detector_*``): the first N
training images, targeted C&W to random targets with a short binary search. The examples are
cached next to the models, keyed by the classifier and the budget. A paper-budget run (4000
images) takes long enough to be interrupted: every batch's attack saves its binary-search state
(:mod:`advrepro.attacks.resume`) and a rerun continues where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from torch import Tensor

from advrepro.attacks.cw import CarliniWagnerL2
from advrepro.attacks.resume import resumable
from advrepro.data.sampling import random_targets
from advrepro.defenses.system import DefendedSystem
from advrepro.io import atomic_torch_save, safe_torch_load

#: A short attack needs a larger Adam step and a first constant near the typical one.
DETECTOR_ATTACK_LR = 0.05
DETECTOR_ATTACK_CONST = 0.1


def detector_data_key(bench) -> dict:
    """Identity of the detector training data: the classifier and the attack budget."""
    scale = bench.cfg.scale
    key = {
        "classifier": bench.classifier().cache_meta["key"],
        "n_images": int(scale.detector_train_images),
        "binary_search_steps": int(scale.detector_attack_steps),
        "max_iterations": int(scale.detector_attack_iterations),
        "learning_rate": DETECTOR_ATTACK_LR,
        "initial_const": DETECTOR_ATTACK_CONST,
        "seed": bench.seed,
    }
    if rounded_to_8bit(bench):
        key["round_to_8bit"] = True
    return key


def detector_data_path(bench) -> Path:
    """Where the workbench's detector training data is cached (named by a digest of its key)."""
    key = detector_data_key(bench)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return Path(bench.cfg.paths.cache_dir) / "detector_data" / f"{digest}.pt"


def rounded_to_8bit(bench) -> bool:
    """``detector_data.round_to_8bit`` (default false): store the adversarial training examples
    as 8-bit images. C&W's tanh box never reaches 0 exactly, so unrounded examples differ from
    every natural MNIST image in the background pixels, and a detector trained on them learns
    that cue instead of the perturbation (see README, cw2017 on MNIST)."""
    return bool((bench.cfg.get("detector_data") or {}).get("round_to_8bit", False))


def adversarial_training_set(bench, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """(natural, adversarial) training images: C&W examples of the first N training images
    against the workbench's classifier (budget from ``cfg.scale``); failures are dropped."""
    key = detector_data_key(bench)
    n_images = key["n_images"]
    path = detector_data_path(bench)
    if path.is_file():
        data = safe_torch_load(path)
        return data["natural"], data["adversarial"]
    classifier = bench.classifier()
    binary_search_steps, max_iterations = key["binary_search_steps"], key["max_iterations"]
    x, y = bench.train_set()
    x, y = x[:n_images], y[:n_images]
    targets = random_targets(y, 10, bench.seed + 1)
    attack = CarliniWagnerL2(binary_search_steps, max_iterations,
                             learning_rate=DETECTOR_ATTACK_LR, initial_const=DETECTOR_ATTACK_CONST,
                             progress=bench.cfg.get("progress", True))
    objective = DefendedSystem(classifier).objective(targeted=True)
    naturals, adversarials = [], []
    partial = path.with_suffix(".partial")
    with resumable(partial, key=path.stem):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(bench.device)
            tb = targets[i:i + batch_size].to(bench.device)
            result = attack(objective, xb, tb)
            adv, success = result.adversarial, result.success
            if key.get("round_to_8bit"):
                adv = (adv * 255).round() / 255
                with torch.no_grad():
                    success &= classifier(adv).argmax(1) == tb  # rounding may undo an example
            naturals.append(xb[success].cpu())
            adversarials.append(adv[success].cpu())
    natural, adversarial = torch.cat(naturals), torch.cat(adversarials)
    atomic_torch_save(path, {"natural": natural, "adversarial": adversarial, "key": key})
    shutil.rmtree(partial, ignore_errors=True)
    return natural, adversarial


def natural_vs_adversarial(natural: Tensor, adversarial: Tensor, val_fraction: float = 0.1,
                           seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Binary training data (0 = natural, 1 = adversarial) with a validation split made by
    source image: an image and its adversarial version fall on the same side, so validation
    accuracy measures detection, not recognition of memorised training images."""
    n = len(natural)
    if len(adversarial) != n:
        raise ValueError("natural and adversarial images must be paired")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(int(n * val_fraction), 1)
    val, train = perm[:n_val], perm[n_val:]

    def pairs(idx: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([natural[idx], adversarial[idx]])
        y = torch.cat([torch.zeros(len(idx)), torch.ones(len(idx))]).long()
        return x, y

    x_tr, y_tr = pairs(train)
    x_val, y_val = pairs(val)
    return x_tr, y_tr, x_val, y_val

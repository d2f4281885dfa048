"""Benchmark of our batched C&W L2 against public implementations (issue: attack engine).

Same trained MNIST CNN, same images, same random targets, matched budgets (binary-search
steps, iterations, Adam step, first constant). Peers are optional (``pip install -e .[bench]``):
foolbox's L2CarliniWagnerAttack, torchattacks' CW (no binary search: fixed c) and ART's
CarliniL2Method. Reports success rate, mean L2 over successes and wall time for each, and our
attack's overhead over the model's own forward+backward time for the same number of steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advrepro.attacks.cw import CarliniWagnerL2
from advrepro.defenses.system import DefendedSystem


@dataclass
class Budget:
    binary_search_steps: int = 9
    max_iterations: int = 1000
    learning_rate: float = 0.01
    initial_const: float = 1e-3


def _row(name: str, model: nn.Module, x: Tensor, adv: Tensor, target: Tensor,
         seconds: float) -> dict:
    with torch.no_grad():
        success = model(adv).argmax(1) == target
    l2 = (adv - x).flatten(1).norm(dim=1)[success]
    return {"attack": name, "success_rate": float(success.float().mean()),
            "mean_l2": float(l2.mean()) if len(l2) else float("nan"), "seconds": seconds}


def ours(model: nn.Module, x: Tensor, target: Tensor, b: Budget, abort_early: bool = True):
    attack = CarliniWagnerL2(b.binary_search_steps, b.max_iterations, b.learning_rate,
                             b.initial_const, abort_early=abort_early, progress=False)
    start = time.time()
    result = attack(DefendedSystem(model).objective(targeted=True), x, target)
    return result.adversarial, time.time() - start


def foolbox_cw(model: nn.Module, x: Tensor, target: Tensor, b: Budget):
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=b.binary_search_steps, steps=b.max_iterations,
        stepsize=b.learning_rate, initial_const=b.initial_const, abort_early=True)
    start = time.time()
    _, adv, _ = attack(fmodel, x, fb.criteria.TargetedMisclassification(target), epsilons=None)
    return adv, time.time() - start


def torchattacks_cw(model: nn.Module, x: Tensor, target: Tensor, b: Budget, c: float = 1.0):
    import torchattacks

    attack = torchattacks.CW(model, c=c, kappa=0, steps=b.max_iterations, lr=b.learning_rate)
    attack.set_mode_targeted_by_label(quiet=True)
    start = time.time()
    adv = attack(x, target)
    return adv, time.time() - start


def art_cw(model: nn.Module, x: Tensor, target: Tensor, b: Budget):
    import numpy as np
    from art.attacks.evasion import CarliniL2Method
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0))
    attack = CarliniL2Method(clf, confidence=0.0, targeted=True, learning_rate=b.learning_rate,
                             binary_search_steps=b.binary_search_steps,
                             max_iter=b.max_iterations, initial_const=b.initial_const,
                             batch_size=len(x), verbose=False)
    start = time.time()
    adv = attack.generate(x.numpy(), y=np.eye(10)[target.numpy()])
    return torch.from_numpy(adv), time.time() - start


PEERS: dict[str, Callable] = {"foolbox": foolbox_cw, "torchattacks": torchattacks_cw,
                              "art": art_cw}


def model_step_seconds(model: nn.Module, x: Tensor, repeats: int = 20) -> float:
    """Seconds of one forward pass of ``model`` on the batch ``x`` plus the backward pass to the
    input, the gradient every attack step needs (weight gradients are not computed)."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr).sum(), xr)
        start = time.time()
        for _ in range(repeats):
            torch.autograd.grad(model(xr).sum(), xr)
        return (time.time() - start) / repeats
    finally:
        for p in frozen:
            p.requires_grad_(True)


def run_benchmark(model: nn.Module, x: Tensor, target: Tensor, budget: Budget,
                  peers: list[str]) -> tuple[list[dict], dict]:
    rows = []
    adv, sec = ours(model, x, target, budget)
    rows.append(_row("advrepro (ours)", model, x, adv, target, sec))
    for name in peers:
        try:
            adv, sec = PEERS[name](model, x, target, budget)
        except ImportError as err:
            rows.append({"attack": name, "error": f"not installed ({err.name})"})
            continue
        rows.append(_row(name, model, x, adv, target, sec))
    # overhead: no early abort, so the step count is exactly steps x iterations on the batch
    adv, sec = ours(model, x, target, budget, abort_early=False)
    steps = budget.binary_search_steps * budget.max_iterations
    model_sec = steps * model_step_seconds(model, x)
    overhead = {"attack_seconds": sec, "model_forward_backward_seconds": model_sec,
                "overhead": sec / model_sec - 1, "steps": steps}
    return rows, overhead

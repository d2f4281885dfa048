"""Carlini & Wagner's L2 attack, batched (cw2017 §2.6; he2017 §2.4).

minimize ||x' - x||_2^2 + c * l(x')   over x' = image(w), with Adam on w.

All images of a batch are attacked at once: each image has its own constant c, its own binary
search bounds, its own Adam state and its own early abort; rows that have stopped are dropped
from the forward pass, so no work is spent on them. For every image the lowest-L2 candidate
that fools the exact system, over all constants and restarts, is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from advrepro.attacks.base import AttackResult
from advrepro.attacks.objectives import Objective
from advrepro.attacks.parameterizations import TanhBox
from advrepro.attacks.resume import attack_checkpoint
from advrepro.errors import ConfigError


@dataclass
class _BatchedAdam:
    """Adam (Kingma & Ba) with per-row step counts, updating only the given rows."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def reset(self, w: Tensor) -> None:
        self.m = torch.zeros_like(w)
        self.v = torch.zeros_like(w)
        self.t = torch.zeros(w.shape[0], device=w.device)

    def step(self, w: Tensor, rows: Tensor, grad: Tensor) -> None:
        shape = (-1,) + (1,) * (w.ndim - 1)
        self.t[rows] += 1
        t = self.t[rows].view(shape)
        m = self.m[rows].mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
        v = self.v[rows].mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        self.m[rows], self.v[rows] = m, v
        m_hat = m / (1 - self.beta1**t)
        v_hat = v / (1 - self.beta2**t)
        w[rows] -= self.lr * m_hat / (v_hat.sqrt() + self.eps)


class CarliniWagnerL2:
    """Batched C&W L2 with binary search over c and random-restart support.

    Binary search (C&W 2017): while an image has no success c is multiplied by 10; once an
    upper bound exists, c bisects. ``restarts`` > 1 repeats the whole search from random starts
    of radius ``random_start`` (he2017 §3.1.1). ``abort_early`` stops an image's current
    constant when its loss has not improved by 0.01 % over a tenth of ``max_iterations``.
    """

    def __init__(
        self,
        binary_search_steps: int = 9,
        max_iterations: int = 1000,
        learning_rate: float = 1e-2,
        initial_const: float = 1e-3,
        abort_early: bool = True,
        restarts: int = 1,
        random_start: float = 0.0,
        parameterization: object | None = None,
        confidence: float = 0.0,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if binary_search_steps < 1 or max_iterations < 1 or restarts < 1:
            raise ConfigError("attack.binary_search_steps, max_iterations and restarts must be "
                              f">= 1, got {binary_search_steps}, {max_iterations}, {restarts}")
        if not (learning_rate > 0 and initial_const > 0):
            raise ConfigError("attack.learning_rate and attack.initial_const must be positive, "
                              f"got {learning_rate} and {initial_const}")
        self.binary_search_steps = binary_search_steps
        self.max_iterations = max_iterations
        self.learning_rate = learning_rate
        self.initial_const = initial_const
        self.abort_early = abort_early
        self.restarts = restarts
        self.random_start = random_start
        self.parameterization = parameterization or TanhBox()
        self.confidence = confidence
        self.seed = seed
        self.progress = progress

    def run(self, system, x: Tensor, labels: Tensor, targeted: bool) -> AttackResult:
        """Attack a :class:`~advrepro.defenses.system.DefendedSystem` with its own objective."""
        return self(system.objective(targeted, self.confidence), x, labels)

    def __call__(self, objective: Objective, x: Tensor, labels: Tensor,
                 start: Tensor | None = None) -> AttackResult:
        """Attack ``x``; the optimisation begins at ``start`` (default ``x``) for every
        constant, while distortion is always measured from ``x``. Inside
        :func:`~advrepro.attacks.resume.resumable` the search resumes from its saved state."""
        n = x.shape[0]
        device = x.device
        start = x if start is None else start
        gen = torch.Generator().manual_seed(self.seed)
        state = {
            "steps_done": 0, "iterations": 0, "seconds": 0.0,
            "best_l2": torch.full((n,), math.inf, device=device), "best_adv": x.clone(),
            "best_const": torch.full((n,), math.nan, device=device),
            "best_restart": torch.full((n,), -1, dtype=torch.long, device=device),
            **self._new_search(n, device),
        }
        checkpoint = attack_checkpoint([x, labels, start], self._settings())
        loaded = checkpoint.load() if checkpoint is not None else None
        if loaded is not None:
            state.update({k: v.to(device) if isinstance(v, Tensor) else v
                          for k, v in loaded.items() if k in state})
            gen.set_state(loaded["generator"])
        began, seconds_before = time.time(), float(state["seconds"])
        steps = self.restarts * self.binary_search_steps
        bar = tqdm(total=steps, initial=state["steps_done"], desc="C&W L2",
                   disable=not self.progress, leave=False)
        best = (state["best_l2"], state["best_adv"], state["best_const"], state["best_restart"])
        for step in range(state["steps_done"], steps):
            restart, step_in_restart = divmod(step, self.binary_search_steps)
            if step_in_restart == 0:
                state.update(self._new_search(n, device))
            const, lower, upper = state["const"], state["lower"], state["upper"]
            radius = self.random_start if restart > 0 else 0.0
            found, iters = self._optimise(objective, x, start, labels, const, radius, gen,
                                          *best, restart)
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            bounded = upper < 1e9
            state.update(const=torch.where(bounded, (lower + upper) / 2, const * 10),
                         lower=lower, upper=upper, steps_done=step + 1,
                         iterations=state["iterations"] + iters,
                         seconds=seconds_before + time.time() - began)
            if checkpoint is not None:
                checkpoint.save({**state, "generator": gen.get_state()})
            bar.update(1)
            bar.set_postfix(success=f"{float((best[0] < math.inf).float().mean()):.2f}")
        bar.close()
        best_l2, best_adv, best_const, best_restart = best
        return AttackResult(x, best_adv, best_l2 < math.inf, best_const, best_restart,
                            int(state["iterations"]))

    def _new_search(self, n: int, device: torch.device) -> dict[str, Tensor]:
        """A binary search's start: constant c0 and open bounds for every image."""
        return {"const": torch.full((n,), self.initial_const, device=device),
                "lower": torch.zeros(n, device=device),
                "upper": torch.full((n,), 1e10, device=device)}

    def _settings(self) -> dict[str, Any]:
        """The numbers that shape the search (part of the resume key), and the
        parameterization's type and numbers; not the progress bar."""
        param = self.parameterization
        numbers = (bool, int, float, str)
        return {k: v for k, v in vars(self).items()
                if isinstance(v, numbers) and k != "progress"} | {
            "parameterization": (type(param).__name__, sorted(
                (k, v) for k, v in vars(param).items() if isinstance(v, numbers)))}

    def _optimise(
        self, objective: Objective, x: Tensor, start: Tensor, labels: Tensor, const: Tensor,
        random_start: float, gen: torch.Generator, best_l2: Tensor, best_adv: Tensor,
        best_const: Tensor, best_restart: Tensor, restart: int,
    ) -> tuple[Tensor, int]:
        """One constant of the binary search for every image; updates the ``best_*`` in place."""
        n = x.shape[0]
        param = self.parameterization
        w = param.init(start, random_start, gen).detach()
        adam = _BatchedAdam(self.learning_rate)
        adam.reset(w)
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        prev = torch.full((n,), math.inf, device=x.device)
        active = torch.arange(n, device=x.device)
        check_every = max(self.max_iterations // 10, 1)
        iters = 0
        for it in range(self.max_iterations):
            if len(active) == 0:
                break
            iters += 1
            w_a = w[active].requires_grad_(True)
            x_adv = param.image(w_a)
            x_a = x[active]
            dist = (x_adv - x_a).flatten(1).pow(2).sum(1)
            mis, success = objective(x_adv, labels[active])
            loss = dist + const[active] * mis
            (grad,) = torch.autograd.grad(loss.sum(), w_a)
            with torch.no_grad():
                l2 = dist.sqrt()
                improved = success & (l2 < best_l2[active])
                if improved.any():
                    rows = active[improved]
                    best_l2[rows] = l2[improved]
                    best_adv[rows] = x_adv[improved].detach()
                    best_const[rows] = const[rows]
                    best_restart[rows] = restart
                found[active[success]] = True
                adam.step(w, active, grad)
                if self.abort_early and (it + 1) % check_every == 0:
                    previous = prev[active]
                    # improved by 0.01 % of |loss| (sign-safe; the first check always passes)
                    bar = torch.where(torch.isfinite(previous),
                                      previous - 1e-4 * previous.abs(), previous)
                    keep = loss.detach() <= bar
                    prev[active] = loss.detach()
                    active = active[keep]
        return found, iters

"""How an attack's free variables map to images.

- :class:`TanhBox`: x' = (tanh(w) + 1) / 2, the change of variables of C&W (cw2017 §2.6) that
  keeps x' in [0, 1] without clipping.
- :class:`GumbelQuantized`: one categorical distribution over the 2^b levels per pixel and
  channel, sampled with the Gumbel-softmax straight-through estimator (he2017 Appendix A), so
  the optimiser searches over already-quantised images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_BOUND = 0.999999


class TanhBox:
    """C&W's box constraint by change of variables."""

    def init(self, x: Tensor, random_start: float = 0.0,
             generator: torch.Generator | None = None) -> Tensor:
        start = x
        if random_start > 0:
            noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
            start = (x + (2 * noise - 1) * random_start).clamp(0, 1)
        return torch.atanh((2 * start - 1) * _BOUND)

    def image(self, w: Tensor) -> Tensor:
        return (torch.tanh(w) + 1) / 2


class GumbelQuantized:
    """Gumbel-softmax reparameterisation over images with ``2**bits`` levels (he2017 App. A).

    The free variable holds per-pixel logits over levels (shape x.shape + (levels,)); each call
    of :meth:`image` draws a fresh hard sample whose gradient flows to the logits.
    ``init_scale`` sets how sharply the initial distribution peaks at the rounded original: its
    logit there is ``init_scale * log(levels)``, so the peak holds about the same probability
    mass whatever the number of levels. Samples use the global RNG (the runner seeds it).
    """

    def __init__(self, bits: int, temperature: float = 1.0, init_scale: float = 2.0) -> None:
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {bits}")
        self.levels = 2**bits
        self.temperature = temperature
        self.init_scale = init_scale

    def values(self, device: torch.device) -> Tensor:
        return torch.linspace(0, 1, self.levels, device=device)

    def init(self, x: Tensor, random_start: float = 0.0,
             generator: torch.Generator | None = None) -> Tensor:
        nearest = torch.round(x * (self.levels - 1)).long()
        peak = self.init_scale * math.log(self.levels)
        logits = F.one_hot(nearest, self.levels).float() * peak
        if random_start > 0:
            noise = torch.randn(logits.shape, generator=generator, device="cpu").to(x.device)
            logits = logits + random_start * noise
        return logits

    def image(self, w: Tensor) -> Tensor:
        sample = F.gumbel_softmax(w, tau=self.temperature, hard=True, dim=-1)
        return (sample * self.values(w.device)).sum(-1)

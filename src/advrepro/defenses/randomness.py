"""Model randomness: dropout switched on at test time, and fixed samples of it (cw2017 §6.1)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def dropout_enabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with its dropout layers sampling (and everything else in eval mode)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    states = [m.training for m in layers]
    for m in layers:
        m.train(True)
    try:
        yield
    finally:
        for m, s in zip(layers, states, strict=False):
            m.train(s)


class FixedDropoutSample(nn.Module):
    """One deterministic network Z_j: the model with dropout masks drawn once from ``seed``.

    Summing the attack loss over K such samples is the expectation-over-randomness attack of
    cw2017 §6.1. Masks are drawn per feature (shared by the batch) and fixed for the attack.
    """

    def __init__(self, model: nn.Module, seed: int) -> None:
        super().__init__()
        self.model = model
        self.seed = seed
        self._masks: dict[int, Tensor] = {}

    def forward(self, x: Tensor) -> Tensor:
        handles = []
        gen = torch.Generator().manual_seed(self.seed)
        for i, layer in enumerate(m for m in self.model.modules() if isinstance(m, nn.Dropout)):
            def hook(mod: nn.Module, inputs: tuple[Tensor], output: Tensor, i: int = i,
                     p: float = layer.p) -> Tensor:
                x_in = inputs[0]
                if i not in self._masks:
                    keep = torch.rand(x_in.shape[1:], generator=gen) >= p
                    self._masks[i] = keep.to(x_in.device, x_in.dtype) / (1 - p)
                return x_in * self._masks[i]

            handles.append(layer.register_forward_hook(hook))
        try:
            return self.model(x)
        finally:
            for h in handles:
                h.remove()

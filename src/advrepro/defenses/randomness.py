"""Model randomness: fixed samples of a network's dropout masks (cw2017 §6.1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DropoutSamples(nn.Module):
    """K deterministic networks Z_1 ... Z_K: the model with dropout masks drawn once per seed.

    ``forward`` runs all K networks in one batched pass and returns their logits as a
    ``K x B x classes`` tensor. The layers before the first dropout layer are the same in all K
    networks, so they run once on the B images; the batch becomes K x B at that layer. Each
    network's masks are drawn per feature (one mask shared by every image, as a fixed network
    is) from its own seed, layer after layer in the order the forward pass reaches them (which
    need not be the order the layers were registered in), and kept, so Z_k(x) depends on
    neither the batch nor the call. Dropout layers must be in eval mode (they
    are, for a cached classifier); the masks replace them, scaled by 1 / (1 - p).

    Summing an attack's loss over such samples is the expectation-over-randomness attack of
    cw2017 §6.1; Feinman et al.'s uncertainty U(x) is computed over another L of them.
    """

    def __init__(self, model: nn.Module, seeds: list[int]) -> None:
        super().__init__()
        if not seeds:
            raise ValueError("DropoutSamples needs at least one seed")
        self.model = model
        self.seeds = list(seeds)
        self.layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no dropout layer to sample")
        self._masks: dict[int, Tensor] = {}

    def mask(self, layer: nn.Dropout) -> Tensor:
        """The K networks' masks at ``layer`` (K x 1 x features, scaled by 1 / (1 - p));
        drawn by the first forward pass."""
        i = next((i for i, m in enumerate(self.layers) if m is layer), None)
        if i is None or i not in self._masks:
            raise KeyError(f"no mask for {layer!r}: not a dropout layer of the model, or no "
                           "forward pass has reached it yet")
        return self._masks[i]

    def _draw(self, i: int, x_in: Tensor) -> Tensor:
        """Layer ``i``'s masks, drawn from the K generators the first time it is reached."""
        if i not in self._masks:
            if not self._masks:
                self._generators = [torch.Generator().manual_seed(s) for s in self.seeds]
            p = self.layers[i].p
            features = x_in.shape[1:]
            keep = torch.stack([torch.rand(features, generator=g) >= p
                                for g in self._generators])
            self._masks[i] = (keep.to(x_in.dtype) / (1 - p)).unsqueeze(1).to(x_in.device)
        return self._masks[i]

    def forward(self, x: Tensor) -> Tensor:
        k, b = len(self.seeds), x.shape[0]

        def hook(i: int):
            def apply(mod: nn.Module, inputs: tuple[Tensor], output: Tensor) -> Tensor:
                x_in = inputs[0]
                mask = self._draw(i, x_in)
                if x_in.shape[0] == b:  # first dropout layer: the K networks part here
                    return (x_in.unsqueeze(0) * mask).flatten(0, 1)
                if x_in.shape[0] == k * b:
                    return (x_in.view(k, b, *x_in.shape[1:]) * mask).view_as(x_in)
                raise ValueError(f"dropout layer {i} of {type(self.model).__name__} got a batch "
                                 f"of {x_in.shape[0]}, expected {b} or {k} x {b} images")
            return apply

        states = [layer.training for layer in self.layers]
        handles = []
        for i, layer in enumerate(self.layers):
            layer.eval()  # the fixed mask replaces the layer's own sampling
            handles.append(layer.register_forward_hook(hook(i)))
        try:
            logits = self.model(x)
        finally:
            for h, layer, state in zip(handles, self.layers, states, strict=True):
                h.remove()
                layer.train(state)
        return logits.view(k, b, -1)

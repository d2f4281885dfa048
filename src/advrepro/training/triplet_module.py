"""Training of adam2018's triplet network (§3.2, Supplementary Figure 9, Eq. 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advrepro.errors import ConfigError
from advrepro.training.losses import sample_triplets, triplet_margin_loss
from advrepro.training.module import ClassifierModule
from advrepro.training.recipe import TrainRecipe


@dataclass(frozen=True)
class TripletRecipe(TrainRecipe):
    """A :class:`TrainRecipe` plus the margin alpha of Eq. (1) and the distance d."""

    margin: float = 1.0
    squared_distance: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.margin <= 0:
            raise ConfigError(f"train.margin must be positive, got {self.margin}")


class TripletModule(ClassifierModule):
    """Triplet-loss training of an embedding network ``model``.

    Each batch is embedded once; triplets are sampled inside it (:func:`sample_triplets`:
    every example with a same-class partner is an anchor, with a random positive and a random
    negative from the batch) from the module's own generator seeded with ``seed``.
    """

    def __init__(self, model: nn.Module, recipe: TripletRecipe, steps_per_epoch: int,
                 seed: int = 0) -> None:
        super().__init__(model, recipe, steps_per_epoch)
        self.generator = torch.Generator().manual_seed(seed)

    def triplet_loss(self, x: Tensor, y: Tensor, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor]:
        emb = self.model(x)
        a, p, n = sample_triplets(y.cpu(), generator)
        if len(a) == 0:
            return emb.sum() * 0, emb.new_zeros(())
        a, p, n = a.to(emb.device), p.to(emb.device), n.to(emb.device)
        losses = triplet_margin_loss(emb[a], emb[p], emb[n], self.recipe.margin,
                                     squared=self.recipe.squared_distance, reduction="none")
        return losses.mean(), (losses > 0).float().mean()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, active = self.triplet_loss(batch[0], batch[1], self.generator)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/active_triplets", active)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        gen = torch.Generator().manual_seed(batch_idx)  # the same triplets every epoch
        loss, active = self.triplet_loss(batch[0], batch[1], gen)
        self.log("val/triplet_loss", loss, prog_bar=True)
        self.log("val/active_triplets", active)

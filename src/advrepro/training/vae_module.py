"""Training of adam2018's VAEs (§3.1, §4.1): each reconstructs the activations a trained,
frozen classifier produces at one insertion point."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advrepro.errors import ConfigError
from advrepro.models.vae import classifier_stages
from advrepro.training.module import ClassifierModule
from advrepro.training.recipe import TrainRecipe


@dataclass(frozen=True)
class VAERecipe(TrainRecipe):
    """A :class:`TrainRecipe` plus the weight of the KL term (1 = the ELBO)."""

    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_weight < 0:
            raise ConfigError(f"train.kl_weight must be >= 0, got {self.kl_weight}")


def insertion_point_features(classifier: nn.Module, point: str) -> nn.Module:
    """The frozen part of ``classifier`` that maps an image to its activation at ``point``
    (nn.Identity for "input"): what the VAE of that point is trained to reconstruct."""
    points, stages = classifier_stages(classifier)
    if point not in points:
        raise ConfigError(f"{type(classifier).__name__} has no insertion point {point!r}; "
                          f"choose one of {list(points)}")
    prefix = nn.Sequential(*stages[: points.index(point)])
    return prefix if len(prefix) else nn.Identity()


class VAEModule(ClassifierModule):
    """Negative ELBO training of ``model`` (an :class:`ActivationVAE`): per example, the
    reconstruction loss plus ``kl_weight`` x KL(q(z|x) || N(0, I)), averaged over the batch.

    Batches are (images, labels) like the classifier's; ``features`` (see
    :func:`insertion_point_features`) turns the images into the activations to reconstruct,
    without gradient and in eval mode. Only the VAE is optimised (same one-cycle schedule and
    optimiser as :class:`ClassifierModule`).
    """

    def __init__(self, model: nn.Module, recipe: VAERecipe, steps_per_epoch: int,
                 features: nn.Module | None = None) -> None:
        super().__init__(model, recipe, steps_per_epoch)
        # not an optimised module: only ``model`` is handed to the optimiser, and the
        # activations are computed without gradient (the classifier's parameters are not
        # touched, so the same classifier can serve several VAEs)
        self.features = features if features is not None else nn.Identity()

    def activations(self, x: Tensor) -> Tensor:
        self.features.eval()
        with torch.no_grad():
            return self.features(x)

    def elbo_loss(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        recon, kl = self.model.loss_terms(self.activations(x))
        kl_weight = getattr(self.recipe, "kl_weight", 1.0)
        return (recon + kl_weight * kl).mean(), recon.mean(), kl.mean()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, recon, kl = self.elbo_loss(batch[0])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/recon", recon)
        self.log("train/kl", kl)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        a = self.activations(batch[0])
        mse = (self.model(a) - a).pow(2).flatten(1).sum(1).mean()
        self.log("val/recon_sq_error", mse, prog_bar=True)

    @torch.no_grad()
    def final_metrics(self, x: Tensor, y: Tensor, batch_size: int = 1000) -> dict[str, float]:
        """What :class:`~advrepro.training.cache.ModelCache` records in meta.json for a VAE:
        the mean squared reconstruction error (summed over the activation) of the validation
        images' activations, the decoder reading the posterior mean."""
        device = next(self.model.parameters()).device
        total = 0.0
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            feat_param = next(self.features.parameters(), None)
            a = self.activations(xb.to(feat_param.device) if feat_param is not None else xb)
            a = a.to(device)
            total += float((self.model(a) - a).pow(2).flatten(1).sum(1).sum())
        return {"val_recon_sq_error": total / max(len(x), 1)}

"""One LightningModule for every model the papers train (classifiers, detectors, specialists)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advrepro.training.recipe import TrainRecipe, augment_batch


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training of ``model`` with ``recipe`` (one-cycle LR schedule).

    Binary detectors are trained as two-class classifiers; :mod:`advrepro.defenses.detectors`
    turns their two logits into the single detector logit D(x) = z_adv - z_nat.
    """

    def __init__(self, model: nn.Module, recipe: TrainRecipe, steps_per_epoch: int) -> None:
        super().__init__()
        self.model = model
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.model(augment_batch(x, self.recipe))
        loss = F.cross_entropy(logits, y, label_smoothing=self.recipe.label_smoothing)
        acc = (logits.argmax(1) == y).float().mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", acc, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        r = self.recipe
        params = self.model.parameters()
        if r.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=r.lr, momentum=r.momentum,
                                  weight_decay=r.weight_decay, nesterov=True)
        else:
            opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
        total = r.max_steps if r.max_steps > 0 else r.epochs * self.steps_per_epoch
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=max(total, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

"""One LightningModule for every model the papers train (classifiers, detectors, specialists)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advrepro.attacks.gradient import fgsm, predicted_labels
from advrepro.training.recipe import AdversarialTraining, TrainRecipe, augment_batch


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training of ``model`` with ``recipe`` (one-cycle LR schedule).

    Binary detectors are trained as two-class classifiers; :mod:`advrepro.defenses.detectors`
    turns their two logits into the single detector logit D(x) = z_adv - z_nat.
    """

    def __init__(self, model: nn.Module, recipe: TrainRecipe, steps_per_epoch: int,
                 static_sources: list[nn.Module] | None = None, seed: int = 0) -> None:
        """``static_sources``: the trained pre-trained models of ``recipe.adversary.static``,
        in its order (ensemble adversarial training); not trained, not saved with the model."""
        super().__init__()
        self.model = model
        self.recipe = recipe
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        # a plain list keeps the static models out of this module's parameters and state
        self._static = list(static_sources or [])
        adversary = recipe.adversary
        if adversary is not None and len(self._static) != len(adversary.static):
            raise ValueError(f"{len(adversary.static)} static models configured, "
                             f"{len(self._static)} given")

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def adversarial_batch(self, x: Tensor, y: Tensor, adversary: AdversarialTraining) -> Tensor:
        """FGSM examples of ``x`` made by this step's source: drawn uniformly among the model
        being trained and the static models, from a generator seeded by (seed, step) so that a
        resumed training draws the same sources. Every source runs in training mode (dropout
        active), as Tramer's code computes its adversarial gradients."""
        sources = ([self.model] if adversary.include_self else []) + self._static
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.global_step))
        source = sources[int(torch.randint(len(sources), (1,), generator=gen))]
        source.to(x.device).train()
        labels = predicted_labels(source, x) if adversary.use_predicted_labels else y
        return fgsm(source, x, labels, adversary.epsilon)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        x = augment_batch(x, self.recipe)
        adversary = self.recipe.adversary
        smoothing = self.recipe.label_smoothing
        if adversary is None:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        else:
            x_adv = self.adversarial_batch(x, y, adversary)
            if adversary.objective == "goodfellow":
                logits = self.model(x)
                w = adversary.clean_weight
                loss = (w * F.cross_entropy(logits, y, label_smoothing=smoothing)
                        + (1 - w) * F.cross_entropy(self.model(x_adv), y,
                                                    label_smoothing=smoothing))
            else:  # replace_half (Kurakin et al.)
                half = len(x) // 2
                logits = self.model(torch.cat([x_adv[:half], x[half:]]))
                loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
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
        if r.schedule == "constant":
            return opt
        total = r.max_steps if r.max_steps > 0 else r.epochs * self.steps_per_epoch
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=max(total, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

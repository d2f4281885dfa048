"""Training recipes: optimiser, one-cycle schedule and tensor-side augmentation."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from advrepro.errors import ConfigError, require_choice

OPTIMIZERS = ("sgd", "adam")
AUGMENTATIONS = ("none", "shift", "crop_flip")


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained. ``augment``: "shift" (random translations of up to ``pad`` pixels,
    used for MNIST) or "crop_flip" (pad-and-crop plus horizontal flips, used for CIFAR-10)."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "none"
    pad: int = 2
    label_smoothing: float = 0.0
    max_steps: int = -1

    def __post_init__(self) -> None:
        require_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        require_choice("train.augment", self.augment, AUGMENTATIONS)
        if self.epochs <= 0:
            raise ConfigError(f"train.epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise ConfigError(f"train.batch_size must be positive, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")

    def as_dict(self) -> dict:
        return asdict(self)


def augment_batch(x: Tensor, recipe: TrainRecipe) -> Tensor:
    """Random translation (and flip) of a whole batch at once, on the batch's device."""
    if recipe.augment == "none" or recipe.pad <= 0:
        return x
    n, _, h, w = x.shape
    p = recipe.pad
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * p + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # n x h
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # n x w
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if recipe.augment == "crop_flip":
        flip = torch.rand(n, device=x.device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()

"""Training recipes: optimiser, schedule, tensor-side augmentation and an optional adversary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from advrepro.config import to_container
from advrepro.errors import ConfigError, require_choice

OPTIMIZERS = ("sgd", "adam")
AUGMENTATIONS = ("none", "shift", "crop_flip")
SCHEDULES = ("one_cycle", "constant")
ADVERSARIAL_OBJECTIVES = ("goodfellow", "replace_half")


@dataclass(frozen=True)
class AdversarialTraining:
    """Adversarial training (tramer2017 §3.1, §5.2): each batch is attacked with FGSM of size
    ``epsilon`` by a source drawn uniformly at random per batch among the model being trained
    (when ``include_self``) and the fixed pre-trained ``static`` models (ensemble adversarial
    training; each entry names a model config and its training recipe).

    ``objective``: "goodfellow" trains on the clean batch and its adversarial copy with loss
    ``clean_weight * J(x) + (1 - clean_weight) * J(x_adv)`` (models without batch norm);
    "replace_half" replaces half of each batch by adversarial inputs (Kurakin et al., for
    batch-normalised models). ``use_predicted_labels``: the FGSM uses the source's own
    prediction instead of the true label, against label leaking (tramer2017 §3.1, MNIST).
    """

    epsilon: float = 0.3
    objective: str = "goodfellow"
    clean_weight: float = 0.5
    use_predicted_labels: bool = True
    include_self: bool = True
    static: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_choice("train.adversary.objective", self.objective, ADVERSARIAL_OBJECTIVES)
        if not 0 < self.epsilon <= 1:
            raise ConfigError(f"train.adversary.epsilon must be in (0, 1], got {self.epsilon}")
        if not 0 <= self.clean_weight <= 1:
            raise ConfigError("train.adversary.clean_weight must be in [0, 1], got "
                              f"{self.clean_weight}")
        if not self.include_self and not self.static:
            raise ConfigError("train.adversary needs a source: include_self=true or static models")
        for name, source in self.static.items():
            if not isinstance(source, dict) or not {"model", "train"} <= set(source):
                raise ConfigError(f"train.adversary.static.{name} must give 'model' and 'train'")

    @property
    def n_sources(self) -> int:
        return len(self.static) + int(self.include_self)


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
    #: "one_cycle" (default) or "constant" learning rate (e.g. Keras' Adam as tramer2017 ran it)
    schedule: str = "one_cycle"
    adversary: AdversarialTraining | None = None

    def __post_init__(self) -> None:
        require_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        require_choice("train.augment", self.augment, AUGMENTATIONS)
        require_choice("train.schedule", self.schedule, SCHEDULES)
        if isinstance(self.adversary, dict):
            object.__setattr__(self, "adversary", AdversarialTraining(
                **{k: v for k, v in self.adversary.items() if k != "_target_"}))
        if self.epochs <= 0:
            raise ConfigError(f"train.epochs must be positive, got {self.epochs}")
        if self.batch_size <= 0:
            raise ConfigError(f"train.batch_size must be positive, got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")

    def as_dict(self) -> dict:
        """The recipe as part of a model's cache key. Settings added after models were cached
        (``schedule``, ``adversary``) appear only when they differ from their default, so that
        every model trained before they existed keeps its key."""
        out = asdict(self)
        for name, default in _LATER_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        return out


#: settings added to TrainRecipe after models were cached, with the value they had implicitly
_LATER_DEFAULTS: dict[str, Any] = {"schedule": "one_cycle", "adversary": None}


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


def recipe_from(node: Any) -> TrainRecipe:
    """A :class:`TrainRecipe` from a config node (or the recipe itself)."""
    if isinstance(node, TrainRecipe):
        return node
    d = {k: v for k, v in to_container(node).items() if k != "_target_"}
    return TrainRecipe(**d)

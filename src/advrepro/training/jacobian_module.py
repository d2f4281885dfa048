"""Training with input-output Jacobian penalties (adam2018 §4.4, Figure 3; §4.5, Figure 4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advrepro.errors import ConfigError, require_choice
from advrepro.training.losses import (
    GOALS,
    OUTPUTS,
    jacobian_alignment_penalty,
    jacobian_cosine,
    jacobian_norm,
    jacobian_norm_penalty,
)
from advrepro.training.module import ClassifierModule
from advrepro.training.recipe import TrainRecipe


@dataclass(frozen=True)
class JacobianRecipe(TrainRecipe):
    """A :class:`TrainRecipe` plus a Jacobian penalty: ``goal`` "parallel" / "orthogonal" (a
    pair of networks, §4.4) or "norm" (one network, Jacobian norm toward ``target_norm``,
    §4.5), weighted by ``penalty_weight``, on the gradient of the true class's ``output``."""

    goal: str = "orthogonal"
    penalty_weight: float = 1.0
    target_norm: float = 1.0
    output: str = "logit"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_choice("train.goal", self.goal, (*GOALS, "norm"))
        require_choice("train.output", self.output, OUTPUTS)
        if self.penalty_weight < 0 or self.target_norm < 0:
            raise ConfigError("train.penalty_weight and train.target_norm must be >= 0")


class JacobianPairModule(ClassifierModule):
    """Joint training of two classifiers ``first`` and ``second`` (adam2018 §4.4: "pairs of
    LeNet models ... trained to have orthogonal [or parallel] input-output Jacobians"):
    CE(first) + CE(second) + weight x alignment penalty. The paper does not say whether both
    networks of a pair move or only the second; here both do (one optimiser over the pair)."""

    def __init__(self, first: nn.Module, second: nn.Module, recipe: JacobianRecipe,
                 steps_per_epoch: int) -> None:
        if recipe.goal not in GOALS:
            raise ConfigError(f"a pair is trained for goal parallel or orthogonal, "
                              f"not {recipe.goal!r}")
        super().__init__(nn.ModuleList([first, second]), recipe, steps_per_epoch)

    def forward(self, x: Tensor) -> Tensor:
        return self.model[0](x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        first, second = self.model
        ce = F.cross_entropy(first(x), y) + F.cross_entropy(second(x), y)
        penalty = jacobian_alignment_penalty(first, second, x, y, self.recipe.goal,
                                             self.recipe.output)
        loss = ce + self.recipe.penalty_weight * penalty
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/penalty", penalty, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        with torch.enable_grad():  # validation runs under no_grad
            cos = jacobian_cosine(*self.model, x, y, self.recipe.output, create_graph=False)
        self.log("val/jacobian_cosine", cos.mean(), prog_bar=True)
        for i, net in enumerate(self.model):
            self.log(f"val/acc_{i}", (net(x).argmax(1) == y).float().mean())


class JacobianNormModule(ClassifierModule):
    """CE + weight x (||d f_y / dx||_2 - target)^2: a classifier whose true-class Jacobian norm
    is regularised toward a goal (adam2018 §4.5, Figure 4 "goal")."""

    def __init__(self, model: nn.Module, recipe: JacobianRecipe, steps_per_epoch: int) -> None:
        if recipe.goal != "norm":
            raise ConfigError(f"JacobianNormModule needs goal=norm, not {recipe.goal!r}")
        super().__init__(model, recipe, steps_per_epoch)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        ce = F.cross_entropy(self.model(x), y)
        penalty = jacobian_norm_penalty(self.model, x, y, self.recipe.target_norm,
                                        self.recipe.output)
        loss = ce + self.recipe.penalty_weight * penalty
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/penalty", penalty)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        with torch.enable_grad():  # validation runs under no_grad
            norms = jacobian_norm(self.model, x, y, self.recipe.output)
        self.log("val/jacobian_norm", norms.mean(), prog_bar=True)
        self.log("val/acc", (self.model(x).argmax(1) == y).float().mean())


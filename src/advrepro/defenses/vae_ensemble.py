"""adam2018 §3.1: a classifier with VAEs inserted between its layers, in a fixed arrangement
(the "deterministic defence") or a random one drawn afresh for every query (the "stochastic
defence").

An arrangement is a 0/1 vector over the classifier's insertion points, in their order:
[input, conv1, conv2] for LeNet (Table 2), [input] for LR. A 1 means the activation at that
point is replaced by the VAE's reconstruction (decoder of the posterior mean, see
:class:`advrepro.models.vae.ActivationVAE`) before the next layer reads it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import advrepro.attacks  # noqa: F401  (first: importing defenses.system alone is circular)
from advrepro.defenses.system import DefendedSystem
from advrepro.config import to_container
from advrepro.errors import ConfigError, require_choice
from advrepro.models.vae import classifier_stages
from advrepro.training.vae_module import VAEModule, VAERecipe, insertion_point_features

MODES = ("deterministic", "stochastic")


def all_arrangements(n: int) -> list[tuple[int, ...]]:
    """The 2^n arrangements in binary order: (0,...,0), (0,...,0,1), ..., (1,...,1)."""
    return list(itertools.product((0, 1), repeat=n))


class VAEDefendedNetwork(DefendedSystem):
    """The classifier with the VAEs of an arrangement inserted (adam2018 §3.1, Figure 1).

    ``mode="deterministic"``: always the arrangement ``arrangement``.
    ``mode="stochastic"``: every call of :meth:`logits` (hence every ``predict`` and every
    gradient an attack takes) draws a new arrangement for every image from the system's own
    ``torch.Generator`` (seeded with ``seed``): each insertion point gets its VAE independently
    with probability 1/2, i.e. the arrangement is uniform over all 2^n arrangements (including
    the undefended one). adam2018 §3.1 states no distribution, but its "only a 1/64 chance that
    the same defense will be used" is one over the number of arrangements, i.e. uniform.

    ``vaes`` maps insertion point names to VAEs; a point without a VAE is never defended.
    """

    def __init__(self, classifier: nn.Module, vaes: Mapping[str, nn.Module],
                 mode: str = "deterministic", arrangement: Sequence[int] | None = None,
                 seed: int = 0, name: str | None = None) -> None:
        require_choice("defense.mode", mode, MODES)
        super().__init__(classifier, name or f"vae_{mode}")
        self.insertion_points, self._stages = classifier_stages(classifier)
        unknown = set(vaes) - set(self.insertion_points)
        if unknown:
            raise ConfigError(f"no insertion point {sorted(unknown)} in "
                              f"{type(classifier).__name__}; it has {self.insertion_points}")
        self.vaes = nn.ModuleDict(dict(vaes))
        self.mode = mode
        self.available = tuple(int(p in self.vaes) for p in self.insertion_points)
        if arrangement is None:
            arrangement = self.available
        self.arrangement = self._check(arrangement)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        # a stochastic system's logits are one draw: success is judged by a fresh query
        self.surrogate_is_exact = mode == "deterministic"

    def _check(self, arrangement: Sequence[int]) -> tuple[int, ...]:
        arrangement = tuple(int(a) for a in arrangement)
        if len(arrangement) != len(self.insertion_points) or set(arrangement) - {0, 1}:
            raise ConfigError(f"arrangement {list(arrangement)} must be 0/1 over "
                              f"{list(self.insertion_points)}")
        missing = [p for p, a, v in zip(self.insertion_points, arrangement, self.available,
                                        strict=True) if a and not v]
        if missing:
            raise ConfigError(f"arrangement {list(arrangement)} needs VAEs at {missing}")
        return arrangement

    def reseed(self, seed: int) -> None:
        """Restart the stochastic system's sequence of arrangements from ``seed``."""
        self.seed = seed
        self.generator.manual_seed(seed)

    def draw(self, batch: int) -> Tensor:
        """A batch x n 0/1 tensor of arrangements from the system's generator (points without a
        VAE are always 0)."""
        bits = torch.rand(batch, len(self.insertion_points), generator=self.generator) < 0.5
        return bits & torch.tensor(self.available, dtype=torch.bool)

    def forward_arrangement(self, x: Tensor, arrangement: Sequence[int] | Tensor) -> Tensor:
        """Logits with the VAEs of ``arrangement`` inserted: one arrangement for the batch (a
        0/1 sequence), or one per image (a batch x n 0/1 tensor)."""
        per_image = isinstance(arrangement, Tensor) and arrangement.dim() == 2
        if not per_image:
            arrangement = self._check(
                arrangement.tolist() if isinstance(arrangement, Tensor) else arrangement)
        h = x
        for i, (point, stage) in enumerate(zip(self.insertion_points, self._stages,
                                               strict=True)):
            if per_image:
                use = arrangement[:, i].to(x.device)
                if use.any():
                    cleaned = self.vaes[point](h)
                    h = torch.where(use.view(-1, *([1] * (h.dim() - 1))), cleaned, h)
            elif arrangement[i]:
                h = self.vaes[point](h)
            h = stage(h)
        return h

    def logits(self, x: Tensor) -> Tensor:
        if self.mode == "deterministic":
            return self.forward_arrangement(x, self.arrangement)
        return self.forward_arrangement(x, self.draw(x.shape[0]))

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "insertion_points": list(self.insertion_points),
            "arrangement": list(self.arrangement) if self.mode == "deterministic" else None,
            "distribution": (None if self.mode == "deterministic" else
                             "per query and image: each available VAE independently w.p. 1/2"),
            "seed": self.seed,
        }


@dataclass
class VAEEnsemble:
    """Config-level adam2018 defense: the trained classifier (``bench.classifier()``) with one
    VAE per insertion point whose ``arrangement`` bit is 1, each trained (or loaded) through
    the model cache on the frozen classifier's activations of the training images.

    ``stochastic=False``: the fixed arrangement ``arrangement`` (Table 1's "deterministic
    defence" is [1, 1, 1] for LeNet). ``stochastic=True``: a fresh arrangement per query and
    image over the points ``arrangement`` gives a VAE (all of them by default), drawn from a
    generator seeded with ``seed``.

    ``vaes`` maps insertion point names to VAE model configs (conf/model/adam_vae_*.yaml),
    ``recipe`` is the VAE training recipe (conf/train/adam_vae.yaml, a :class:`VAERecipe`).
    """

    arrangement: list[int] = field(default_factory=lambda: [1, 1, 1])
    stochastic: bool = False
    seed: int = 0
    vaes: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    name: str = "vae"

    def __post_init__(self) -> None:
        self.vaes = {k: to_container(v) for k, v in to_container(self.vaes).items()}
        self.recipe = to_container(self.recipe)
        self.arrangement = [int(a) for a in self.arrangement]
        if set(self.arrangement) - {0, 1} or not self.arrangement:
            raise ConfigError(f"defense.arrangement must be a non-empty 0/1 list, got "
                              f"{self.arrangement}")
        self.vae_recipe()  # validates

    def vae_recipe(self) -> VAERecipe:
        return VAERecipe(**{k: v for k, v in self.recipe.items() if k != "_target_"})

    def cell_name(self) -> str:
        bits = "".join(str(a) for a in self.arrangement)
        if self.stochastic:
            return f"{self.name}_stochastic" + ("" if set(self.arrangement) == {1}
                                                else f"_{bits}")
        return f"{self.name}_{bits}"

    def build(self, bench) -> DefendedSystem:
        classifier = bench.classifier()
        points, _ = classifier_stages(classifier)
        if len(self.arrangement) != len(points):
            raise ConfigError(f"defense.arrangement {self.arrangement} must have one 0/1 per "
                              f"insertion point of {type(classifier).__name__}: {list(points)}")
        wanted = [p for p, a in zip(points, self.arrangement, strict=True) if a]
        missing = [p for p in wanted if p not in self.vaes]
        if missing:
            raise ConfigError(f"defense.vaes has no VAE config for insertion points {missing}")
        vaes = {p: train_vae(bench, classifier, p, self.vaes[p], self.vae_recipe())
                for p in wanted}
        if self.stochastic:
            return VAEDefendedNetwork(classifier, vaes, mode="stochastic", seed=self.seed,
                                      name=self.cell_name())
        return VAEDefendedNetwork(classifier, vaes, mode="deterministic",
                                  arrangement=self.arrangement, seed=self.seed,
                                  name=self.cell_name())


def train_vae(bench, classifier: nn.Module, point: str, model_cfg: dict[str, Any],
              recipe: VAERecipe) -> nn.Module:
    """The VAE of ``model_cfg`` reconstructing ``classifier``'s activations at ``point``,
    trained with ``recipe`` on the workbench's training images (validated on its test images)
    through the model cache. Its key holds the classifier's cache key and the point."""
    features = insertion_point_features(classifier, point)

    def make_data():
        x, y = bench.train_set()
        xt, yt = bench.test_set()
        return x, y, xt, yt

    def module(model: nn.Module, steps_per_epoch: int) -> VAEModule:
        return VAEModule(model, recipe, steps_per_epoch, features=features)

    classifier_key = getattr(classifier, "cache_meta", {}).get("key")
    if classifier_key is None:
        raise ConfigError("the VAEs need a classifier from the model cache (its key is part "
                          "of theirs)")
    return bench.train(
        f"{bench.spec.name}-vae-{point}", model_cfg, recipe, make_data,
        {"vae_of": "classifier activations", "classifier": classifier_key,
         "insertion_point": point},
        module=module,
    )

"""The workbench: everything an experiment needs from one resolved config.

It knows the dataset, the model cache and the device, and hands out trained models (the
classifier of ``cfg.model`` trained with ``cfg.train``, and any auxiliary model a defense asks
for), each trained at most once thanks to :class:`~advrepro.training.ModelCache`.

``half`` selects the training data: ``None`` for the whole training set, ``"attacker"`` or
``"defender"`` for the disjoint halves of the limited-knowledge threat model (cw2017 §2.7).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from advrepro.data.datasets import DatasetSpec, data_fingerprint, load_split
from advrepro.data.sampling import disjoint_halves
from advrepro.errors import require_choice
from advrepro.training.cache import ModelCache, TrainingData, TrainRequest
from advrepro.config import to_container
from advrepro.training.recipe import TrainRecipe, recipe_from

HALVES = (None, "attacker", "defender")


def dataset_spec(cfg: DictConfig) -> DatasetSpec:
    d = to_container(cfg.dataset)
    return DatasetSpec(**{k: d[k] for k in DatasetSpec.__dataclass_fields__ if k in d})


def classifier_description(model_cfg: Any, train_cfg: Any) -> dict[str, Any]:
    """What a trained classifier is, for tables to select cells by: its architecture, how it
    was trained ("standard", "adversarial", "ensemble adversarial" with its static models) and
    for how many epochs."""
    recipe = recipe_from(train_cfg)
    adversary = recipe.adversary
    training = ("standard" if adversary is None
                else "ensemble adversarial" if adversary.static else "adversarial")
    return {"architecture": to_container(model_cfg)["_target_"].rsplit(".", 1)[-1],
            "training": training, "epochs": recipe.epochs,
            "static": sorted(adversary.static) if adversary is not None else []}


class Workbench:
    """Trained models and data for one experiment configuration."""

    def __init__(self, cfg: DictConfig, half: str | None = None) -> None:
        require_choice("half", half, HALVES)
        self.cfg = cfg
        self.half = half
        self.spec = dataset_spec(cfg)
        self.cache = ModelCache(
            cfg.paths.models_dir, accelerator=cfg.get("accelerator", "auto"),
            progress=cfg.get("progress", True),
            validate_every_n_epochs=int(cfg.get("validate_every_n_epochs", 1)),
        )
        self.seed = int(cfg.seed)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ----------------------------------------------------------------------------- data
    def train_set(self) -> tuple[Tensor, Tensor]:
        x, y = load_split(self.spec, "train")
        if self.half is None:
            return x, y
        attacker, defender = disjoint_halves(len(x), self.seed)
        idx = attacker if self.half == "attacker" else defender
        return x[idx], y[idx]

    def test_set(self) -> tuple[Tensor, Tensor]:
        return load_split(self.spec, "test")

    def data_key(self) -> dict[str, Any]:
        """Description of the training data, part of every cached model's identity: the
        dataset's files enter it when they are not the verified official ones."""
        files = data_fingerprint(self.spec)
        return {
            "dataset": self.spec.name,
            "train_limit": self.spec.train_limit,
            "half": self.half,
            "half_seed": self.seed if self.half else None,
            **({} if files == self.spec.name else {"files": files}),
        }

    # ----------------------------------------------------------------------------- models
    def train(
        self,
        name: str,
        model_cfg: dict[str, Any],
        recipe: TrainRecipe,
        make_data: Callable[[], TrainingData],
        data_key: dict[str, Any],
        build_model: Callable[[], nn.Module] | None = None,
        static_sources: Callable[[], list[nn.Module]] | None = None,
        module: Callable[[nn.Module, int], pl.LightningModule] | None = None,
    ) -> nn.Module:
        """A trained model from the cache (training it once if needed), on the device.
        ``module(model, steps_per_epoch)``: the LightningModule training it (default: the
        classifier's cross-entropy training; see :class:`TrainRequest`)."""
        request = TrainRequest(
            name=f"{name}{'-' + self.half if self.half else ''}",
            model_cfg=model_cfg, recipe=recipe, seed=self.seed,
            data_key={**self.data_key(), **data_key},
            make_data=make_data, build_model=build_model, static_sources=static_sources,
            module=module,
        )
        model = self.cache.get(request).to(self.device)
        model.cache_meta = self.cache.metadata(request)  # type: ignore[attr-defined]
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def classifier(self) -> nn.Module:
        """The classifier of ``cfg.model`` trained on this workbench's training data."""
        if not hasattr(self, "_classifier"):
            self._classifier = self.trained_classifier(self.cfg.model, self.cfg.train)
        return self._classifier

    def trained_classifier(self, model_cfg: Any, train_cfg: Any) -> nn.Module:
        """A classifier of architecture ``model_cfg`` trained with recipe ``train_cfg`` on this
        workbench's training data (and, for ensemble adversarial training, the static models
        its recipe names, trained first the same way)."""
        model_cfg = to_container(model_cfg)
        recipe = recipe_from(train_cfg)

        def make_data() -> TrainingData:
            x, y = self.train_set()
            xt, yt = self.test_set()
            return x, y, xt, yt

        def static_sources() -> list[nn.Module]:
            return [self.trained_classifier(s["model"], s["train"])
                    for s in recipe.adversary.static.values()]

        architecture = model_cfg["_target_"].rsplit(".", 1)[-1]
        with_static = recipe.adversary is not None and recipe.adversary.static
        return self.train(f"{self.spec.name}-{architecture}", model_cfg, recipe, make_data,
                          {"labels": "classes"},
                          static_sources=static_sources if with_static else None)

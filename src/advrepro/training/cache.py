"""Train-once model cache.

A trained model is identified by a hash of its resolved model, data, recipe and seed
description. Any experiment asks the cache; the cache returns the stored weights or trains the
model once (resuming an interrupted training from its last Lightning checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from advrepro.errors import CheckpointError
from advrepro.io import atomic_torch_save, atomic_write_json, read_json, safe_torch_load
from advrepro.locking import exclusive
from advrepro.training.module import ClassifierModule
from advrepro.training.recipe import TrainRecipe

log = logging.getLogger(__name__)

TrainingData = tuple[Tensor, Tensor, Tensor, Tensor]  # x_train, y_train, x_val, y_val


@dataclass
class TrainRequest:
    """Everything that determines a trained model.

    ``data_key`` describes the training data (dataset, subset, labelling); ``make_data`` builds
    it only when the model must actually be trained.
    """

    name: str
    model_cfg: dict[str, Any]
    recipe: TrainRecipe
    seed: int
    data_key: dict[str, Any]
    make_data: Callable[[], TrainingData] = field(repr=False, compare=False)
    build_model: Callable[[], nn.Module] | None = field(default=None, repr=False, compare=False)
    #: the trained static models of ``recipe.adversary`` (ensemble adversarial training), built
    #: only when this model must be trained; their configs are part of the recipe, so the key
    static_sources: Callable[[], list[nn.Module]] | None = field(default=None, repr=False,
                                                                 compare=False)
    #: the LightningModule that trains the model, ``module(model, steps_per_epoch)``; None =
    #: :class:`ClassifierModule` (cross-entropy on the (x, y) pairs). Not part of the key: what
    #: it trains on must be in ``data_key`` (e.g. the key of the frozen classifier whose
    #: activations a VAE reconstructs). A module with ``final_metrics(x_val, y_val) -> dict``
    #: reports those in meta.json instead of the top-1 ``val_accuracy``.
    module: Callable[[nn.Module, int], pl.LightningModule] | None = field(
        default=None, repr=False, compare=False)

    def new_model(self) -> nn.Module:
        """A fresh, untrained model: ``build_model()`` when given (e.g. a detector wrapping a
        frozen classifier), else ``model_cfg`` instantiated by Hydra."""
        return self.build_model() if self.build_model else instantiate(self.model_cfg)

    def key_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_cfg,
            "recipe": self.recipe.as_dict(),
            "seed": self.seed,
            "data": self.data_key,
        }


def model_key(request: TrainRequest) -> str:
    """Stable 12-hex-digit hash of the request's resolved description."""
    blob = json.dumps(request.key_dict(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (on its own device) over ``(x, y)``."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / max(len(x), 1)


class RandomStateCheckpoint(pl.Callback):
    """Saves the random state of a training in its Lightning checkpoints and restores it on
    resume, so that a resumed training continues the very random streams an uninterrupted one
    would: the shuffling generator of the training DataLoader (it draws each epoch's
    permutation and the iterator's base seed) and the global torch RNG (dropout, augmentation;
    the CUDA generators too when CUDA is initialised).

    Checkpoints are written at epoch ends, after the epoch's draws and before the next epoch's.
    """

    def __init__(self, shuffle_generator: torch.Generator) -> None:
        self.shuffle_generator = shuffle_generator

    @classmethod
    def saved_in(cls, checkpoint: Path) -> bool:
        """Whether a Lightning checkpoint holds this callback's random states."""
        callbacks = safe_torch_load(checkpoint).get("callbacks", {})
        return any(cls.__name__ in str(key) for key in callbacks)

    def state_dict(self) -> dict[str, Any]:
        state = {"shuffle": self.shuffle_generator.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.shuffle_generator.set_state(state_dict["shuffle"])
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class ModelCache:
    """Directory of trained models: ``<root>/<name>-<hash>/{model.pt,meta.json,last.ckpt}``."""

    def __init__(self, root: str | Path, accelerator: str = "auto", progress: bool = True,
                 validate_every_n_epochs: int = 1) -> None:
        """``validate_every_n_epochs`` = 0 skips the per-epoch validation curve (the final
        accuracy in meta.json is always measured); the trained weights are the same."""
        if validate_every_n_epochs < 0:
            raise ValueError("validate_every_n_epochs must be >= 0")
        self.root = Path(root)
        self.accelerator = accelerator
        self.progress = progress
        self.validate_every_n_epochs = validate_every_n_epochs

    def directory(self, request: TrainRequest) -> Path:
        return self.root / f"{request.name}-{model_key(request)}"

    def contains(self, request: TrainRequest) -> bool:
        return (self.directory(request) / "model.pt").is_file()

    def metadata(self, request: TrainRequest) -> dict[str, Any]:
        path = self.directory(request) / "meta.json"
        if not path.is_file():
            return {}
        return read_json(path, f"delete {path.parent} to retrain the model")

    def get(self, request: TrainRequest) -> nn.Module:
        """The trained model of ``request`` in eval mode: from the cache, or trained now.

        Training holds the model's inter-process lock: a second process asking for the same
        model meanwhile waits for it, then loads the weights the first one trained."""
        directory = self.directory(request)
        model = request.new_model()
        weights = directory / "model.pt"
        if not weights.is_file():
            with exclusive(directory, f"model {directory.name}"):
                if not weights.is_file():  # not trained by the process we waited for
                    self._train(request, model, directory)
        state = safe_torch_load(weights)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise CheckpointError(
                f"checkpoint {weights} does not fit {request.model_cfg.get('_target_')}: "
                f"{str(err).splitlines()[0]}; delete it to retrain"
            ) from None
        return model.eval()

    def shorter_run(self, request: TrainRequest) -> Path | None:
        """The final checkpoint of the same request trained for fewer epochs, when the recipe's
        learning rate is constant: training on from it is the longer training itself (the
        checkpoint restores the optimiser, the data order and the random state), as
        tramer2017 §5.3 trains its 6-epoch models for 6 more epochs. None otherwise."""
        recipe = request.recipe
        if recipe.schedule != "constant" or recipe.max_steps > 0:
            return None
        mine = request.key_dict()
        best: tuple[int, Path] | None = None
        for req_file in self.root.glob(f"{request.name}-*/request.json"):
            other = req_file.parent
            if not ((other / "model.pt").is_file() and (other / "last.ckpt").is_file()):
                continue
            if not RandomStateCheckpoint.saved_in(other / "last.ckpt"):
                continue  # written before random states were saved: not the same training
            theirs = read_json(req_file)
            epochs = theirs.get("recipe", {}).get("epochs", 0)
            same = {**theirs, "recipe": {**theirs.get("recipe", {}), "epochs": recipe.epochs}}
            if same == json.loads(json.dumps(mine, default=str)) and epochs < recipe.epochs \
                    and (best is None or epochs > best[0]):
                best = (epochs, other / "last.ckpt")
        return best[1] if best else None

    def _train(self, request: TrainRequest, model: nn.Module, directory: Path) -> None:
        # the static models of ensemble adversarial training come first (trained now if they
        # are not cached yet), so that this model's training starts from the seed either way
        static = request.static_sources() if request.static_sources else []
        pl.seed_everything(request.seed, workers=True, verbose=False)
        model = request.new_model()  # re-created after seeding: same init every time
        # the data first: bad data (a UserError) leaves no model directory behind
        x_tr, y_tr, x_val, y_val = request.make_data()
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / "request.json", request.key_dict())
        if hasattr(model, "fit_preprocessing"):
            model.fit_preprocessing(x_tr)
        recipe = request.recipe
        shuffle = torch.Generator().manual_seed(request.seed)
        loader = DataLoader(
            TensorDataset(x_tr, y_tr), batch_size=recipe.batch_size, shuffle=True,
            drop_last=len(x_tr) > recipe.batch_size, generator=shuffle,
        )
        # its own generator: iterating it must not draw from the global RNG that the
        # augmentation uses, so validating or not leaves the trained weights unchanged
        val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=1000,
                                generator=torch.Generator().manual_seed(request.seed))
        if request.module is not None:
            module = request.module(model, len(loader))
        else:
            module = ClassifierModule(model, recipe, steps_per_epoch=len(loader),
                                      static_sources=static, seed=request.seed)
        last = directory / "last.ckpt"
        resume = last if last.is_file() else self.shorter_run(request)
        if resume is not None:
            safe_torch_load(resume)  # fail clearly before Lightning tries on a truncated file
            log.info("resuming %s from %s", request.name, resume)
        trainer = pl.Trainer(
            accelerator=self.accelerator,
            devices=1,
            max_epochs=recipe.epochs,
            max_steps=recipe.max_steps,
            default_root_dir=str(directory),
            enable_progress_bar=self.progress,
            enable_model_summary=False,
            logger=pl.loggers.CSVLogger(str(directory), name="logs", version=0),
            callbacks=[
                # One rolling "last.ckpt", rewritten at the end of every epoch (resume point).
                pl.callbacks.ModelCheckpoint(
                    dirpath=str(directory), filename="last", save_top_k=1, save_last=False,
                    every_n_epochs=1, save_weights_only=False, enable_version_counter=False,
                ),
                RandomStateCheckpoint(shuffle),
            ],
            num_sanity_val_steps=0,
            check_val_every_n_epoch=max(self.validate_every_n_epochs, 1),
            limit_val_batches=1.0 if self.validate_every_n_epochs else 0,
            deterministic=False,
        )
        start = time.time()
        trainer.fit(module, loader, val_loader, ckpt_path=resume, weights_only=True)
        seconds = time.time() - start
        model = module.model.cpu().eval()
        if hasattr(module, "final_metrics"):
            metrics = module.final_metrics(x_val, y_val)
        else:
            metrics = {"val_accuracy": accuracy(model, x_val, y_val)}
        atomic_torch_save(directory / "model.pt", model.state_dict())
        atomic_write_json(
            directory / "meta.json",
            {
                "name": request.name,
                "key": model_key(request),
                **metrics,
                "val_size": len(x_val),
                "train_size": len(x_tr),
                "train_seconds_this_run": round(seconds, 1),
                "resumed_from": str(resume) if resume else None,
                "device": str(trainer.strategy.root_device),
                **request.key_dict(),
            },
        )
        log.info("trained %s: %s in %.0f s", request.name,
                 ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items()),
                 seconds)


def cached_models(root: str | Path, prefixes: list[str] | None = None):
    """One row per finished model under ``root`` (optionally only names starting with one of
    ``prefixes``): its directory, key, architecture, recipe summary and measured accuracy."""
    import pandas as pd

    rows = []
    for meta_path in sorted(Path(root).glob("*/meta.json")):
        meta = read_json(meta_path)
        if prefixes and not any(meta_path.parent.name.startswith(p) for p in prefixes):
            continue
        recipe = meta.get("recipe", {})
        adversary = recipe.get("adversary")
        rows.append({
            "directory": meta_path.parent.name, "key": meta.get("key"),
            "architecture": meta.get("model", {}).get("_target_", "").rsplit(".", 1)[-1],
            "training": ("standard" if not adversary else "ensemble adversarial"
                         if adversary.get("static") else "adversarial"),
            "epochs": recipe.get("epochs"), "train_size": meta.get("train_size"),
            "val_size": meta.get("val_size"), "val_accuracy": meta.get("val_accuracy"),
            "train_seconds_last_run": meta.get("train_seconds_this_run"),
            "resumed_from": meta.get("resumed_from"),
        })
    return pd.DataFrame(rows)

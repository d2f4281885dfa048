"""Shared fixtures: configs composed on the shipped tiny MNIST subset, and a small trained CNN."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TINY_DATA = ROOT / "tests" / "data"
SHARED_DATA = Path(os.environ.get("ADVREPRO_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def compose_cfg(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def tiny_overrides(tmp: Path, extra: list[str] | None = None) -> list[str]:
    """Overrides for a run on the shipped 300/100-image MNIST subset, writing under ``tmp``."""
    return [
        "scale=ci",
        f"paths.data_root={TINY_DATA}",
        f"paths.output_dir={tmp}",
        "dataset.download=false",
        "dataset.train_limit=null",
        "progress=false",
        "accelerator=cpu",
        *(extra or []),
    ]


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("advrepro")


@pytest.fixture(scope="session")
def tiny_bench(session_tmp):
    """Workbench whose classifier is the C&W CNN trained briefly on the tiny subset."""
    from advrepro.experiments.workbench import Workbench

    training = ["train.max_steps=-1", "train.epochs=40", "train.batch_size=32"]
    cfg = compose_cfg("attack", tiny_overrides(session_tmp, training))
    return Workbench(cfg)


@pytest.fixture(scope="session")
def tiny_model(tiny_bench):
    return tiny_bench.classifier()


@pytest.fixture(scope="session")
def tiny_sample(tiny_bench, tiny_model):
    """Up to 16 correctly classified test images of the tiny subset."""
    from advrepro.data import sample_correctly_classified

    x, y = tiny_bench.test_set()
    idx = sample_correctly_classified(tiny_model, x, y, 16, seed=0)
    return x[idx], y[idx]


def shared_data_available() -> bool:
    return (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


class StoppedAttack(Exception):
    """Raised by :func:`stop_cw_in_step` to simulate a run killed mid-attack."""


def stop_cw_in_step(monkeypatch, step: int) -> list[int]:
    """Make every C&W binary-search step append to the returned list, and the ``step``-th one
    (counted from 1) raise :class:`StoppedAttack`; clear the list to count a rerun's steps."""
    from advrepro.attacks import CarliniWagnerL2

    optimise = CarliniWagnerL2._optimise
    steps: list[int] = []

    def stopping(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == step:
            raise StoppedAttack
        return optimise(self, *args, **kwargs)

    monkeypatch.setattr(CarliniWagnerL2, "_optimise", stopping)
    return steps

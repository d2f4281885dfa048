"""Reliability: resumed trainings, locking, data identity."""

from __future__ import annotations


import pytest
import torch

from advrepro.training import ClassifierModule, ModelCache, TrainRecipe, TrainRequest


class Killed(Exception):
    """Raised inside a training to simulate a process killed mid-epoch."""


def _dropout_request(epochs: int = 2) -> TrainRequest:
    """A tiny MLP with dropout, shifted inputs: every random source of a training at once."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return TrainRequest(
        name="mlp", model_cfg={"_target_": "advrepro.models.TramerModelD"},
        recipe=TrainRecipe(epochs=epochs, batch_size=32, optimizer="adam", lr=1e-3,
                           augment="shift"),
        seed=3, data_key={"toy": 2}, make_data=lambda: (x, y, x[:32], y[:32]),
    )


@pytest.mark.parametrize("validate", [1, 0])
def test_resumed_training_gives_the_uninterrupted_weights(tmp_path, monkeypatch, validate):
    """Kill a 3-epoch training in its second epoch (after the first epoch's checkpoint); the
    rerun resumes from last.ckpt and must end with byte-identical weights."""
    req = _dropout_request(epochs=3)
    whole = ModelCache(tmp_path / "whole", accelerator="cpu", progress=False,
                       validate_every_n_epochs=validate).get(req)

    cache = ModelCache(tmp_path / "cut", accelerator="cpu", progress=False,
                       validate_every_n_epochs=validate)
    original = ClassifierModule.on_train_batch_start

    def kill_in_second_epoch(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            raise Killed
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "on_train_batch_start", kill_in_second_epoch)
    with pytest.raises(Killed):
        cache.get(req)
    monkeypatch.setattr(ClassifierModule, "on_train_batch_start", original)
    last = cache.directory(req) / "last.ckpt"
    assert last.is_file() and not (cache.directory(req) / "model.pt").is_file()
    resumed = cache.get(req)
    assert cache.metadata(req)["resumed_from"] == str(last)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert a.numpy().tobytes() == b.numpy().tobytes(), name

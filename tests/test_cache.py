import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from advrepro.errors import CheckpointError
from advrepro.io import safe_torch_load
from advrepro.training import ModelCache, TrainRecipe, TrainRequest, model_key


def _request(epochs: int = 2, seed: int = 0, augment: str = "none") -> TrainRequest:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (128,), generator=g)
    return TrainRequest(
        name="lr", model_cfg={"_target_": "advrepro.models.LogisticRegression"},
        recipe=TrainRecipe(epochs=epochs, batch_size=32, optimizer="adam", lr=1e-2,
                           augment=augment),
        seed=seed, data_key={"toy": 1}, make_data=lambda: (x, y, x[:32], y[:32]),
    )


def test_key_depends_on_every_part_of_the_request():
    base = model_key(_request())
    assert model_key(_request()) == base
    assert model_key(_request(epochs=3)) != base
    assert model_key(_request(seed=1)) != base


def test_second_request_is_a_cache_hit(tmp_path, monkeypatch):
    cache = ModelCache(tmp_path, accelerator="cpu", progress=False)
    req = _request()
    assert not cache.contains(req)
    first = cache.get(req)
    assert cache.contains(req)
    meta = cache.metadata(req)
    assert meta["val_size"] == 32 and 0 <= meta["val_accuracy"] <= 1

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model must not be trained again")

    monkeypatch.setattr(ModelCache, "_train", no_training)
    start = time.time()
    second = cache.get(req)
    assert time.time() - start < 5
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=False):
        assert torch.equal(a, b)


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    cache = ModelCache(tmp_path, accelerator="cpu", progress=False)
    req = _request()
    cache.get(req)
    weights = cache.directory(req) / "model.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated.*delete it"):
        cache.get(req)


def test_foreign_pickle_is_refused_by_weights_only_loading(tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(os.system))  # an arbitrary callable, not a tensor checkpoint
    with pytest.raises(CheckpointError):
        safe_torch_load(path)


def test_interrupted_training_resumes_from_its_last_checkpoint(tmp_path):
    """Kill a training after its first epoch checkpoint; the next request resumes from it."""
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_cache import _request
        from advrepro.training import ModelCache
        cache = ModelCache({str(tmp_path)!r}, accelerator="cpu", progress=False)
        req = _request(epochs=int(sys.argv[1]))
        req.recipe = req.recipe.__class__(**{{**req.recipe.as_dict(), "epochs": 400}})
        cache.get(req)
        print("done")
    """)
    path = tmp_path / "train.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path), "400"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    cache = ModelCache(tmp_path, accelerator="cpu", progress=False)
    req = _request(epochs=400)
    last = cache.directory(req) / "last.ckpt"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    assert last.is_file(), "no epoch checkpoint was written before the kill"
    assert not (cache.directory(req) / "model.pt").is_file()
    step_before = safe_torch_load(last)["global_step"]
    cache.get(req)
    meta = cache.metadata(req)
    assert meta["resumed_from"] == str(last)
    assert safe_torch_load(last)["global_step"] > step_before


def test_skipping_per_epoch_validation_trains_the_same_weights(tmp_path):
    """validate_every_n_epochs = 0 (the ci scale) drops the validation curve only: same
    weights (the random shifts draw the same numbers), same final accuracy in meta.json, and
    no val/acc rows in the training log."""
    req = _request(epochs=3, augment="shift")
    with_val = ModelCache(tmp_path / "a", accelerator="cpu", progress=False)
    without = ModelCache(tmp_path / "b", accelerator="cpu", progress=False,
                         validate_every_n_epochs=0)
    a, b = with_val.get(req), without.get(req)
    for wa, wb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(wa, wb)
    assert with_val.metadata(req)["val_accuracy"] == without.metadata(req)["val_accuracy"]
    logs = [c.directory(req) / "logs" / "version_0" / "metrics.csv" for c in (with_val, without)]
    assert "val/acc" in logs[0].read_text()
    assert not logs[1].is_file() or "val/acc" not in logs[1].read_text()
    with pytest.raises(ValueError, match="validate_every_n_epochs"):
        ModelCache(tmp_path, validate_every_n_epochs=-1)

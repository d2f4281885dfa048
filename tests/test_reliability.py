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


def _train_in_child(root: str, markers: str, barrier, results) -> None:
    """Child process: request the tiny model at the same moment as its sibling; a training
    leaves a marker file and is slowed down so that the two requests overlap."""
    import hashlib
    import os
    import time
    from pathlib import Path

    from test_cache import _request

    from advrepro.training import ModelCache

    train = ModelCache._train

    def marked_slow_train(self, *args, **kwargs):
        (Path(markers) / f"trained-{os.getpid()}").touch()
        time.sleep(1)
        return train(self, *args, **kwargs)

    ModelCache._train = marked_slow_train
    cache = ModelCache(root, accelerator="cpu", progress=False)
    barrier.wait(timeout=60)
    model = cache.get(_request())
    results.put(hashlib.sha256(b"".join(v.numpy().tobytes()
                                        for v in model.state_dict().values())).hexdigest())


def test_two_processes_train_a_model_once(tmp_path):
    """Two processes ask for the same model at once: one trains, the other waits for the lock
    and loads its weights."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    markers = tmp_path / "markers"
    markers.mkdir()
    barrier, results = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=_train_in_child,
                            args=(str(tmp_path / "models"), str(markers), barrier, results))
                for _ in range(2)]
    for child in children:
        child.start()
    digests = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    assert len(list(markers.iterdir())) == 1
    assert digests[0] == digests[1]


def test_a_held_lock_is_waited_for_with_a_log_line(tmp_path, caplog):
    import threading
    import time

    from advrepro.locking import exclusive, lock_path

    target = tmp_path / "cells" / "cell-1"
    order = []
    with exclusive(target, "cell-1"):
        assert lock_path(target).is_file() and not target.exists()

        def second():
            with exclusive(target, "cell-1"):
                order.append("second")

        thread = threading.Thread(target=second)
        with caplog.at_level("WARNING", logger="advrepro"):
            thread.start()
            time.sleep(0.5)
            order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    assert "waiting for another process working on cell-1" in caplog.text


def test_truncated_model_metadata_is_a_one_line_user_error(tmp_path):
    from test_cache import _request

    from advrepro.errors import UserError

    cache = ModelCache(tmp_path, accelerator="cpu", progress=False)
    req = _request(epochs=1)
    cache.get(req)
    meta = cache.directory(req) / "meta.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(UserError) as err:
        cache.metadata(req)
    assert "\n" not in str(err.value) and str(meta) in str(err.value)
    assert "to retrain" in str(err.value)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_umask_mode(tmp_path, umask):
    import os

    from advrepro.io import atomic_torch_save, atomic_write_json, atomic_write_text

    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "a")
        atomic_write_json(tmp_path / "b.json", {"b": 1})
        atomic_torch_save(tmp_path / "c.pt", {"c": torch.zeros(1)})
        (tmp_path / "reference").touch()
    finally:
        os.umask(old)
    expected = (tmp_path / "reference").stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    for name in ("a.txt", "b.json", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name


@pytest.mark.parametrize("override, summary", [
    ("defense=nosuch", "error: In 'attack': Could not find 'defense/nosuch'; available options "
                       "in 'defense': "),
    ("nosuchkey=3", "error: Could not override 'nosuchkey': Key 'nosuchkey' is not in struct"),
])
def test_hydra_errors_start_with_a_one_line_summary(tmp_path, override, summary):
    """Hydra's own message (raised before the task runs) is kept, after a one-line summary."""
    import subprocess
    import sys

    from conftest import ROOT, tiny_overrides

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "attack.py"),
                          *tiny_overrides(tmp_path / "out", [override])],
                         capture_output=True, text=True, timeout=120)
    lines = out.stderr.splitlines()
    assert out.returncode == 1 and lines[0].startswith(summary), out.stderr
    if override.startswith("defense="):
        assert "bit_depth, bit_depth_3" in lines[0]  # the valid options are named
    assert len(lines) > 3 and "HYDRA_FULL_ERROR" in out.stderr  # Hydra's message follows
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists()


def test_a_longer_constant_rate_training_continues_the_shorter_one(tmp_path):
    """tramer2017 §5.3 trains its 6-epoch models for 6 more epochs: with a constant learning
    rate, a 3-epoch request continues the finished 1-epoch model of the same recipe and ends
    with the weights of an uninterrupted 3-epoch training."""
    def request(epochs):
        req = _dropout_request(epochs)
        return TrainRequest(req.name, req.model_cfg, TrainRecipe(
            epochs=epochs, batch_size=32, optimizer="adam", lr=1e-3, augment="shift",
            schedule="constant"), req.seed, req.data_key, req.make_data)

    whole = ModelCache(tmp_path / "whole", accelerator="cpu", progress=False).get(request(3))
    cache = ModelCache(tmp_path / "steps", accelerator="cpu", progress=False)
    cache.get(request(1))
    assert cache.shorter_run(request(3)) == cache.directory(request(1)) / "last.ckpt"
    longer = cache.get(request(3))
    assert cache.metadata(request(3))["resumed_from"] == str(
        cache.directory(request(1)) / "last.ckpt")
    for (name, a), b in zip(whole.state_dict().items(), longer.state_dict().values(),
                            strict=True):
        assert a.numpy().tobytes() == b.numpy().tobytes(), name
    # a one-cycle schedule depends on the total length: never continued
    assert cache.shorter_run(_dropout_request(3)) is None

"""Adversarial training data of the detectors (cw2017 §3.1), optionally stored as 8-bit images."""

from __future__ import annotations

import pytest
import torch
from conftest import StoppedAttack, compose_cfg, stop_cw_in_step, tiny_overrides

from advrepro.defenses.detector_data import (
    adversarial_training_set,
    detector_data_path,
    rounded_to_8bit,
)
from advrepro.experiments.workbench import Workbench


def test_rounded_examples_are_8bit_images_that_still_fool_the_classifier(tiny_bench, tiny_model,
                                                                         tmp_path):
    training = ["train.max_steps=-1", "train.epochs=40", "train.batch_size=32",
                "scale.detector_train_images=40", "+detector_data.round_to_8bit=true",
                f"paths.cache_dir={tiny_bench.cfg.paths.cache_dir}"]
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, training))
    bench = Workbench(cfg)
    assert rounded_to_8bit(bench) and not rounded_to_8bit(tiny_bench)
    natural, adversarial = adversarial_training_set(bench)
    assert 0 < len(adversarial) <= 40 and len(natural) == len(adversarial)
    assert torch.equal((adversarial * 255).round() / 255, adversarial)
    assert not torch.equal(natural, adversarial)
    with torch.no_grad():
        # every kept example still reaches its (random, different) target after rounding
        assert (tiny_model(adversarial).argmax(1) != tiny_model(natural).argmax(1)).all()


def test_interrupted_detector_data_resumes_to_the_uninterrupted_result(tiny_bench, tmp_path,
                                                                       monkeypatch):
    """Generation stopped in the second step of its second batch keeps the first batch and the
    finished step; the rerun runs one step and stores what an uninterrupted run stores."""
    training = ["train.max_steps=-1", "train.epochs=40", "train.batch_size=32",
                "scale.detector_train_images=40", "scale.detector_attack_steps=2",
                f"paths.cache_dir={tiny_bench.cfg.paths.cache_dir}"]
    bench = Workbench(compose_cfg("attack", tiny_overrides(tmp_path, training)))
    path = detector_data_path(bench)
    path.unlink(missing_ok=True)
    reference = adversarial_training_set(bench, batch_size=20)
    path.unlink()
    steps = stop_cw_in_step(monkeypatch, 4)
    with pytest.raises(StoppedAttack):
        adversarial_training_set(bench, batch_size=20)
    partial = path.with_suffix(".partial")
    assert not path.exists() and len(list(partial.glob("*.pt"))) == 2  # one state per batch
    steps.clear()
    natural, adversarial = adversarial_training_set(bench, batch_size=20)
    assert len(steps) == 1  # only the unfinished step ran
    assert not partial.exists()
    assert torch.equal(natural, reference[0]) and torch.equal(adversarial, reference[1])

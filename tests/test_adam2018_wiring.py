"""adam2018 wiring: VAEs trained through the model cache with their own LightningModule, and
the config-level VAE defense built on a (tiny) trained classifier."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import compose_cfg, tiny_overrides
from hydra.utils import instantiate

from advrepro.defenses.vae_ensemble import VAEDefendedNetwork, VAEEnsemble
from advrepro.errors import ConfigError
from advrepro.models import LeNet
from advrepro.training import ModelCache, TrainRequest, model_key
from advrepro.training.vae_module import VAEModule, VAERecipe, insertion_point_features

VAE_CFG = {"_target_": "advrepro.models.vae.ActivationVAE", "shape": [64, 7, 7],
           "hidden": 8, "latent": 2, "output": "softplus"}


def _vae_request(classifier, point="conv2") -> TrainRequest:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    recipe = VAERecipe(epochs=1, batch_size=16, optimizer="adam", lr=1e-3)
    features = insertion_point_features(classifier, point)
    return TrainRequest(
        name="vae", model_cfg=VAE_CFG, recipe=recipe, seed=0,
        data_key={"classifier": "abc", "insertion_point": point},
        make_data=lambda: (x, y, x[:16], y[:16]),
        module=lambda model, steps: VAEModule(model, recipe, steps, features=features),
    )


def test_module_factory_is_not_part_of_the_key():
    req = _vae_request(LeNet().eval())
    assert model_key(req) == model_key(dataclasses.replace(req, module=None))
    assert "module" not in req.key_dict()


def test_vae_trains_through_the_cache_and_second_request_loads_it(tmp_path, monkeypatch):
    torch.manual_seed(0)
    lenet = LeNet().eval()
    for p in lenet.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    cache = ModelCache(tmp_path, accelerator="cpu", progress=False)
    req = _vae_request(lenet)
    first = cache.get(req)
    meta = cache.metadata(req)
    assert "val_accuracy" not in meta and meta["val_recon_sq_error"] >= 0
    assert meta["data"] == {"classifier": "abc", "insertion_point": "conv2"}
    # the frozen classifier is untouched
    assert all(torch.equal(before[k], v) for k, v in lenet.state_dict().items())

    def no_training(*args, **kwargs):
        raise AssertionError("a cached VAE must not be trained again")

    monkeypatch.setattr(ModelCache, "_train", no_training)
    second = cache.get(_vae_request(lenet))
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_cell_names_and_bad_arrangements():
    assert VAEEnsemble().cell_name() == "vae_111"
    assert VAEEnsemble(arrangement=[1, 0, 1]).cell_name() == "vae_101"
    assert VAEEnsemble(stochastic=True).cell_name() == "vae_stochastic"
    with pytest.raises(ConfigError):
        VAEEnsemble(arrangement=[2, 0, 1])


def _tiny_vae_overrides(tmp, defense):
    small = "hidden=8,latent=2".split(",")
    return tiny_overrides(tmp, [
        "experiment=adam2018/mnist", f"defense={defense}",
        "train.max_steps=3", "defense.recipe.max_steps=2", "defense.recipe.epochs=1",
        *[f"defense.vaes.{p}.{s}" for p in ("input", "conv1", "conv2") for s in small],
    ])


def test_vae_defense_builds_on_a_tiny_classifier_and_reuses_cached_vaes(tmp_path,
                                                                          monkeypatch):
    from advrepro.experiments.workbench import Workbench

    cfg = compose_cfg("attack", _tiny_vae_overrides(tmp_path, "adam_vae_deterministic"))
    bench = Workbench(cfg)
    defense = instantiate(cfg.defense, _convert_="all")
    system = defense.build(bench)
    assert isinstance(system, VAEDefendedNetwork)
    assert system.name == "vae_111" and system.arrangement == (1, 1, 1)
    assert set(system.vaes) == {"input", "conv1", "conv2"}
    x, _ = bench.test_set()
    assert system.logits(x[:4].to(bench.device)).shape == (4, 10)
    classifier_key = bench.classifier().cache_meta["key"]
    for vae in system.vaes.values():
        assert vae.cache_meta["data"]["classifier"] == classifier_key

    # the stochastic defense uses the very same VAEs: nothing is trained again
    def no_training(*args, **kwargs):
        raise AssertionError("the VAEs are cached")

    monkeypatch.setattr(ModelCache, "_train", no_training)
    cfg = compose_cfg("attack", _tiny_vae_overrides(tmp_path, "adam_vae_stochastic"))
    stochastic = instantiate(cfg.defense, _convert_="all").build(Workbench(cfg))
    assert stochastic.mode == "stochastic" and stochastic.name == "vae_stochastic"

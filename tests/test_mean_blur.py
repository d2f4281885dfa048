"""Li & Li's mean blur (cw2017 §6.2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_cfg, tiny_overrides
from hydra.utils import instantiate

from advrepro.defenses.blur import MeanBlur, MeanFilter
from advrepro.defenses.preprocessing import SqueezedClassifier
from advrepro.errors import ConfigError


def test_mean_blur_is_a_3x3_convolution_with_weights_one_ninth():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 7, 6, generator=g)
    got = MeanFilter(3)(x)
    # border: zero padding of one pixel, still divided by 9 (a conv layer with padding=1)
    kernel = torch.full((1, 1, 3, 3), 1 / 9)
    for c in range(3):
        assert torch.allclose(got[:, c:c + 1], F.conv2d(x[:, c:c + 1], kernel, padding=1),
                              atol=1e-6)
    # by hand: an interior pixel is the mean of its 3x3 window; a corner sums 4 values / 9
    assert float(got[1, 2, 3, 2]) == pytest.approx(float(x[1, 2, 2:5, 1:4].mean()), abs=1e-6)
    assert float(got[0, 0, 0, 0]) == pytest.approx(float(x[0, 0, :2, :2].sum()) / 9, abs=1e-6)
    # replicate padding keeps a constant image constant, zero padding darkens its border
    ones = torch.ones(1, 1, 4, 4)
    assert torch.allclose(MeanFilter(3, "replicate")(ones), ones)
    assert float(MeanFilter(3)(ones)[0, 0, 0, 0]) == pytest.approx(4 / 9)
    assert torch.allclose(MeanFilter(3, "reflect")(x)[:, :, 1:-1, 1:-1],
                          got[:, :, 1:-1, 1:-1], atol=1e-6)


class _Bench:
    def __init__(self, model):
        self.model = model

    def classifier(self):
        return self.model


def test_mean_blur_defense_from_its_config_differentiates_through_the_blur(tmp_path):
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, ["defense=mean_blur"]))
    spec = instantiate(cfg.defense, _convert_="all")
    assert isinstance(spec, MeanBlur) and spec.cell_name() == "mean_blur_3x3"
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    system = spec.build(_Bench(model))
    assert isinstance(system, SqueezedClassifier) and system.surrogate_is_exact
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    assert torch.allclose(system.logits(x), model(MeanFilter(3)(x)))
    system.logits(x).sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="odd positive"):
        MeanBlur(size=2)
    with pytest.raises(ConfigError, match="padding"):
        MeanBlur(padding="circular")

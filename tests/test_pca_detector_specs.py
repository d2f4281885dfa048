"""The cw2017 §4.1 / §4.3 detector specs built from conf/detectors/cw2017_pca.yaml on a fake
workbench of random 8x8 images (no training, no attack)."""

from __future__ import annotations

import torch
from conftest import compose_cfg, tiny_overrides
from hydra.utils import instantiate
from torch import nn

from advrepro.defenses import detector_data
from advrepro.defenses.hidden_pca import HiddenLayerPCACascade
from advrepro.defenses.pca import InputPCADetector
from advrepro.defenses.system import REJECTED


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3),
                                  nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


class _Bench:
    seed = 0
    device = torch.device("cpu")

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(400, 1, 8, 8, generator=g) * 0.5
        self.y = torch.randint(0, 10, (400,), generator=g)
        self.net = _Net().eval()

    def train_set(self):
        return self.x, self.y

    def classifier(self):
        return self.net


def _bench(tmp_path, defense):
    overrides = ["detectors=cw2017_pca", f"defense={defense}",
                 "detectors.input_pca.late_components=10",
                 "+detectors.input_pca.threshold_images=100", "detectors.hidden_pca.k=8"]
    return _Bench(compose_cfg("attack", tiny_overrides(tmp_path, overrides)))


def test_input_pca_defense_rejects_late_component_noise(tmp_path):
    bench = _bench(tmp_path, "input_pca")
    system = instantiate(bench.cfg.defense, _convert_="all").build(bench)
    (detector,) = system.detectors.values()
    assert isinstance(detector, InputPCADetector) and detector.k == 64 - 10
    clean = bench.x[:100]  # the threshold images (5 % flagged there)
    assert 0.0 < float((detector(clean) > 0).float().mean()) <= 0.1
    late = detector.pca.components[:, -10:].sum(1).view(1, 1, 8, 8)
    assert (system.predict(clean[:10] + late) == REJECTED).all()


def test_hidden_pca_defense_fits_one_stage_per_conv_layer(tmp_path, monkeypatch):
    bench = _bench(tmp_path, "hidden_pca")
    natural = bench.x[:200]
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None]) % 2).float() * 0.6
    monkeypatch.setattr(detector_data, "adversarial_training_set",
                        lambda b: (natural, natural + checker))
    system = instantiate(bench.cfg.defense, _convert_="all").build(bench)
    (cascade,) = system.detectors.values()
    assert isinstance(cascade, HiddenLayerPCACascade) and len(cascade.stages) == 2
    test = bench.x[200:260]
    assert (system.predict(test + checker) == REJECTED).float().mean() >= 0.9
    assert (system.predict(test) != REJECTED).float().mean() >= 0.9

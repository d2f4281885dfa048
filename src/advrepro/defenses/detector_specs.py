"""How each detector is trained or fitted; ``build(bench)`` returns the ready detector module.

Instances come from ``cfg.detectors.<name>`` (Hydra ``_target_``), see conf/detectors/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advrepro.defenses.detector_data import (
    adversarial_training_set,
    detector_data_key,
    natural_vs_adversarial,
)
from advrepro.defenses.detectors import (
    BinaryDetector,
    DropoutUncertaintyDetector,
    KernelDensityDetector,
    MetzenDetectorNet,
    set_threshold_at_fpr,
)
from advrepro.errors import ConfigError
from advrepro.config import to_container
from advrepro.training.recipe import recipe_from


def _binary_data(bench):
    def make():
        natural, adversarial = adversarial_training_set(bench)
        return natural_vs_adversarial(natural, adversarial, seed=bench.seed)

    return make


@dataclass
class Gong:
    """Gong et al.: a binary classifier on the input, natural vs adversarial (cw2017 §3.1).
    ``net`` defaults to the classifier's own architecture with two outputs."""

    recipe: dict[str, Any] = field(default_factory=dict)
    net: dict[str, Any] | None = None

    def build(self, bench) -> nn.Module:
        net_cfg = self.net or {**to_container(bench.cfg.model), "num_classes": 2}
        net = bench.train(
            "gong-detector", net_cfg, recipe_from(self.recipe), _binary_data(bench),
            {"detector": "gong", "adversarial_data": detector_data_key(bench),
             "split": "by source image"},
        )
        return BinaryDetector(net).eval()


@dataclass
class Metzen:
    """Metzen et al.: a detector subnetwork on the first residual unit (cw2017 §3.2)."""

    recipe: dict[str, Any] = field(default_factory=dict)
    widths: list[int] = field(default_factory=lambda: [96, 192, 192])

    def build(self, bench) -> nn.Module:
        classifier = bench.classifier()
        if not hasattr(classifier, "first_block_channels"):
            raise ConfigError(
                "the metzen detector reads the first residual unit of a ResNet; "
                f"model {bench.cfg.model._target_} has none (use model=metzen_resnet*)"
            )
        widths = tuple(self.widths)
        net = bench.train(
            "metzen-detector",
            {"detector": "metzen", "widths": list(widths),
             "classifier": classifier.cache_meta["key"]},
            recipe_from(self.recipe), _binary_data(bench),
            {"detector": "metzen", "adversarial_data": detector_data_key(bench),
             "split": "by source image"},
            build_model=lambda: MetzenDetectorNet(classifier, widths),
        )
        return BinaryDetector(net).eval()


def _clean_training_images(bench, n: int, skip: int) -> torch.Tensor:
    x, _ = bench.train_set()
    return x[skip:skip + n].to(bench.device)


@dataclass
class KernelDensity:
    """Feinman et al.'s KDE (cw2017 §5.2): ``per_class`` training images per class as the
    defender's reference (the attacker's G(x) uses a 100-per-class subsample), bandwidth
    ``sigma`` (Feinman et al.: 1.20 MNIST, 0.26 CIFAR-10), the threshold at false positive rate
    ``fpr`` on clean training images not in the reference."""

    sigma: float = 1.0
    per_class: int = 1000
    fpr: float = 0.05
    threshold_images: int = 1000

    def build(self, bench) -> nn.Module:
        classifier = bench.classifier()
        x, y = bench.train_set()
        gen = torch.Generator().manual_seed(bench.seed + 2)
        perm = torch.randperm(len(x), generator=gen)
        # threshold images are set aside first, references come from the rest
        rest, pool = perm[: self.threshold_images], perm[self.threshold_images:]
        chosen = torch.cat([pool[y[pool] == c][: self.per_class] for c in range(10)])
        with torch.no_grad():
            feats = torch.cat([
                classifier.hidden(x[chosen[i:i + 500]].to(bench.device))["final_hidden"]
                for i in range(0, len(chosen), 500)
            ])
        detector = KernelDensityDetector(classifier, feats, y[chosen].to(bench.device),
                                         self.sigma)
        set_threshold_at_fpr(detector, x[rest].to(bench.device), self.fpr)
        return detector.eval()


@dataclass
class DropoutUncertainty:
    """Feinman et al.'s dropout uncertainty (cw2017 §6.1) with L = ``passes``; the threshold
    at false positive rate ``fpr`` on clean training images."""

    passes: int = 30
    fpr: float = 0.05
    threshold_images: int = 1000

    def build(self, bench) -> nn.Module:
        classifier = bench.classifier()
        if not any(isinstance(m, nn.Dropout) for m in classifier.modules()):
            raise ConfigError(f"model {bench.cfg.model._target_} has no dropout layer")
        detector = DropoutUncertaintyDetector(classifier, self.passes)
        set_threshold_at_fpr(detector, _clean_training_images(bench, self.threshold_images, 0),
                             self.fpr)
        return detector.eval()

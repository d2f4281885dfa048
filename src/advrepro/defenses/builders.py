"""Config-level defenses: each ``build(bench)`` returns the :class:`DefendedSystem` to attack.

A defense config names its class with ``_target_`` (Hydra instantiates it); detectors are looked
up by name in ``cfg.detectors`` so that a defense, an ensemble and the evaluation panel of a
transfer table all share the same trained detectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.utils import instantiate
from torch import nn

from advrepro.defenses.detectors import DetectorDefense
from advrepro.defenses.feature_squeezing import FeatureSqueezingDetector
from advrepro.defenses.preprocessing import SqueezedClassifier
from advrepro.defenses.squeezers import BitDepthReduction, MedianFilter
from advrepro.defenses.system import DefendedSystem
from advrepro.errors import ConfigError


@dataclass
class NoDefense:
    """The unsecured classifier."""

    name: str = "undefended"

    def build(self, bench) -> DefendedSystem:
        return DefendedSystem(bench.classifier(), self.name)


@dataclass
class BitDepth:
    """Color-depth reduction to ``bits`` bits in front of the classifier (he2017 §3.1.1)."""

    bits: int = 1
    name: str = "bit_depth"

    def __post_init__(self) -> None:
        BitDepthReduction(self.bits)  # validates

    def cell_name(self) -> str:
        return f"{self.name}_{self.bits}"

    def build(self, bench) -> DefendedSystem:
        return SqueezedClassifier(bench.classifier(), BitDepthReduction(self.bits),
                                  differentiable=False, name=self.cell_name())


def parse_size(size: str) -> tuple[int, int]:
    """"3x1" -> (3, 1): rows x columns, the order of he2017 Table 2 and of Xu et al.'s
    ``median_filter_<a>_<b>`` squeezers (first number along the image height)."""
    try:
        h, w = (int(v) for v in str(size).lower().split("x"))
    except ValueError:
        raise ConfigError(f"median size must look like 3x3 or 2x1, got {size!r}") from None
    MedianFilter(h, w)  # validates
    return h, w


@dataclass
class MedianSmoothing:
    """Median filter of ``size`` (height x width, e.g. "3x3", "1x5") in front of the
    classifier (he2017 §3.1.2)."""

    size: str = "3x3"
    name: str = "median"

    def __post_init__(self) -> None:
        self.height, self.width = parse_size(self.size)

    def cell_name(self) -> str:
        return f"{self.name}_{self.height}x{self.width}"

    def build(self, bench) -> DefendedSystem:
        return SqueezedClassifier(bench.classifier(), MedianFilter(self.height, self.width),
                                  differentiable=True, name=self.cell_name())


@dataclass
class FeatureSqueezing:
    """Xu et al.'s joint detector with a bit-depth and a median branch (he2017 §3.2)."""

    bits: int = 1
    median: str = "2x2"
    threshold: float = 0.3076
    name: str = "feature_squeezing"

    def __post_init__(self) -> None:
        BitDepthReduction(self.bits)
        self.median_height, self.median_width = parse_size(self.median)

    def cell_name(self) -> str:
        return f"{self.name}_{self.bits}bit_{self.median}"

    def build(self, bench) -> DefendedSystem:
        return FeatureSqueezingDetector(
            bench.classifier(), self.bits, (self.median_height, self.median_width),
            self.threshold, name=self.name,
        )


@dataclass
class Detectors:
    """The classifier guarded by the named detectors; rejected if any flags (he2017 §5)."""

    members: list[str] = field(default_factory=list)
    name: str = "detectors"
    #: the adaptive attack on dropout uncertainty alone (cw2017 §6.1): K fixed dropout masks
    #: and the smallest confidence margin kappa it asks of each
    attack_dropout_samples: int = 10
    attack_dropout_margin: float = 0.0

    def __post_init__(self) -> None:
        if not self.members:
            raise ConfigError("defense.members must name at least one detector")
        if self.attack_dropout_samples < 1 or self.attack_dropout_margin < 0:
            raise ConfigError("defense.attack_dropout_samples must be >= 1 and "
                              "defense.attack_dropout_margin >= 0")

    def build(self, bench) -> DefendedSystem:
        detectors = {m: build_detector(bench, m) for m in self.members}
        system = DetectorDefense(bench.classifier(), detectors, self.name)
        system.attack_dropout_samples = self.attack_dropout_samples
        system.attack_dropout_margin = self.attack_dropout_margin
        return system


def build_detector(bench, name: str) -> nn.Module:
    """The trained detector ``name`` of ``cfg.detectors`` for this workbench (cached)."""
    available = bench.cfg.get("detectors") or {}
    if name not in available:
        valid = ", ".join(sorted(available)) or "(none configured)"
        raise ConfigError(f"unknown detector {name!r}; choose one of: {valid}")
    cache = bench.__dict__.setdefault("_detectors", {})
    if name not in cache:
        spec: Any = instantiate(available[name], _convert_="all")
        cache[name] = spec.build(bench)
    return cache[name]

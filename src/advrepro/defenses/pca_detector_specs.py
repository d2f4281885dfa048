"""Detector specs of cw2017 §4.1 and §4.3, in the pattern of
:mod:`advrepro.defenses.detector_specs`: ``build(bench)`` returns the fitted detector module
(a logit, > 0: adversarial), so :class:`~advrepro.defenses.builders.Detectors` can guard the
classifier with it. Configured in conf/detectors/cw2017_pca.yaml (``detectors=cw2017_pca``),
which extends the default detectors without changing them.

Both are fitted, not trained by gradient descent, and are cheap: they are refitted on every
build (not cached).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from advrepro.defenses import detector_data
from advrepro.defenses.hidden_pca import fit_cascade
from advrepro.defenses.pca import PCA, InputPCADetector
from advrepro.errors import ConfigError


@dataclass
class InputPCA:
    """Hendrycks & Gimpel's input PCA (cw2017 §4.1): PCA of ``pca_images`` training images
    (all when null), statistic = mean |coefficient| over the last ``late_components``
    components (cw2017 §4.1: on MNIST the last 74 carry < 1e-30 of the variance), threshold
    at false positive rate ``fpr`` on ``threshold_images`` other clean training images."""

    late_components: int = 74
    fpr: float = 0.05
    pca_images: int | None = None
    threshold_images: int = 1000

    def __post_init__(self) -> None:
        if self.late_components < 1:
            raise ConfigError("detectors.*.late_components must be >= 1")
        if not 0 < self.fpr < 1:
            raise ConfigError("detectors.*.fpr must be in (0, 1)")

    def build(self, bench) -> nn.Module:
        x, _ = bench.train_set()
        gen = torch.Generator().manual_seed(bench.seed + 3)
        perm = torch.randperm(len(x), generator=gen)
        held_out, pool = perm[: self.threshold_images], perm[self.threshold_images:]
        if self.pca_images is not None:
            pool = pool[: self.pca_images]
        pca = PCA.fit(x[pool].to(bench.device))
        k = pca.n_components - self.late_components
        if k < 0:
            raise ConfigError(f"late_components = {self.late_components} exceeds the "
                              f"{pca.n_components} components of the PCA")
        detector = InputPCADetector(pca, k)
        detector.set_threshold_at_fpr(x[held_out].to(bench.device), self.fpr)
        return detector.eval()


@dataclass
class HiddenLayerPCA:
    """Li & Li's cascade (cw2017 §4.3): one linear SVM per convolutional layer (the first
    ``max_stages``, all when null) on the first ``k`` PCA coefficients of its output, trained
    on the workbench's natural vs C&W training examples (the data the trained detectors
    share, :func:`~advrepro.defenses.detector_data.adversarial_training_set`)."""

    k: int = 20
    c: float = 1.0
    sequential: bool = True
    max_stages: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1 or self.c <= 0:
            raise ConfigError("detectors.*.k must be >= 1 and detectors.*.c > 0")

    def build(self, bench) -> nn.Module:
        classifier = bench.classifier()
        if not any(isinstance(m, nn.Conv2d) for m in classifier.modules()):
            raise ConfigError(f"model {bench.cfg.model._target_} has no convolutional layer "
                              "for the hidden-layer PCA cascade")
        natural, adversarial = detector_data.adversarial_training_set(bench)
        return fit_cascade(classifier, natural.to(bench.device), adversarial.to(bench.device),
                           self.k, self.c, self.sequential, self.max_stages, seed=bench.seed)

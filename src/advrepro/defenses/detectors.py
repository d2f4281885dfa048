"""Detectors of adversarial examples, each a module returning a logit D(x) (> 0: adversarial),
and the defense that rejects an input when any of its detectors flags it (he2017 §5).

- Gong et al. / Metzen et al. (cw2017 §3.1, §3.2): binary networks, D(x) = z_adv - z_nat;
  Gong's reads the input, Metzen's the output of the classifier's first residual unit.
- Feinman et al. kernel density (cw2017 §5.2): Gaussian KDE of the final hidden layer against
  training images of the predicted class; D(x) = tau - log KDE(x).
- Feinman et al. dropout uncertainty (cw2017 §6.1): U(x) over L stochastic passes;
  D(x) = (U(x) - tau) / tau.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from advrepro.attacks.objectives import (
    ClassifierObjective,
    ExpectationObjective,
    Objective,
    with_detector_class,
)
from advrepro.defenses.randomness import DropoutSamples
from advrepro.defenses.system import DefendedSystem


class BinaryDetector(nn.Module):
    """D(x) = z_adv(x) - z_nat(x) of a two-class network (the logit of sigmoid(D) = P(adv))."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        z = self.net(x)
        return z[:, 1] - z[:, 0]


class MetzenDetectorNet(nn.Module):
    """Detector subnetwork on the first residual unit of a frozen ResNet (cw2017 §3.2).

    Metzen et al.'s layout (conv - pool - conv - pool - conv - 1x1 conv to 2 - global average),
    with configurable widths (Metzen et al. use 96/192/192).
    """

    def __init__(self, classifier: nn.Module,
                 widths: tuple[int, int, int] = (96, 192, 192)) -> None:
        super().__init__()
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        c_in = classifier.first_block_channels
        a, b, c = widths
        self.head = nn.Sequential(
            nn.Conv2d(c_in, a, 3, padding=1), nn.BatchNorm2d(a), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(b, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def train(self, mode: bool = True) -> MetzenDetectorNet:
        super().train(mode)
        self.classifier.eval()  # the classifier is fixed; its batch-norm statistics too
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.classifier.hidden(x)["first_residual_block"])


class KernelDensityDetector(nn.Module):
    """Feinman et al.'s kernel density on the final hidden layer (cw2017 §5.2).

    log KDE(x) = log mean_{s in X_t} exp(-||f(x) - f(s)||^2 / (2 sigma^2)), t = predicted
    class, over ``reference`` features of training images. cw2017 writes the exponent with
    sigma^2; the factor 2 is the Gaussian kernel of Feinman et al.'s implementation, to which
    their bandwidths (1.20 MNIST, 0.26 CIFAR-10) belong. ``threshold`` is set on clean images
    (see :func:`set_threshold_at_fpr`). :meth:`subsample` gives the attacker's cheaper copy that
    keeps ``per_class`` references per class (cw2017 §5.2 used 100).
    """

    def __init__(self, classifier: nn.Module, reference: Tensor, reference_labels: Tensor,
                 sigma: float, threshold: float = 0.0) -> None:
        super().__init__()
        self.classifier = classifier
        self.sigma = sigma
        self.threshold = threshold
        self.register_buffer("reference", reference)
        self.register_buffer("reference_labels", reference_labels)

    def log_density(self, x: Tensor, classes: Tensor | None = None) -> Tensor:
        """log KDE(x) against the training images of ``classes`` (default: the predicted one).

        An attack targeting class t differentiates the density of t itself, as Carlini &
        Wagner's attack does: the predicted class changes along the way, and with it which
        references count, which makes the density of the predicted class discontinuous.
        """
        h = self.classifier.hidden(x)
        feats = h["final_hidden"]
        if classes is None:
            classes = h["logits"].argmax(1)
        d2 = torch.cdist(feats, self.reference).pow(2)  # B x M
        same = self.reference_labels[None, :] == classes[:, None]
        logk = (-d2 / (2 * self.sigma**2)).masked_fill(~same, float("-inf"))
        counts = same.sum(1).clamp(min=1)
        return torch.logsumexp(logk, dim=1) - counts.log()

    def forward(self, x: Tensor) -> Tensor:
        return self.threshold - self.log_density(x)

    def subsample(self, per_class: int, seed: int = 0) -> KernelDensityDetector:
        """The same detector over at most ``per_class`` random references of each class."""
        gen = torch.Generator().manual_seed(seed)
        labels = self.reference_labels.cpu()
        perm = torch.randperm(len(labels), generator=gen)
        keep = torch.cat([perm[labels[perm] == c][:per_class] for c in labels.unique()])
        keep = keep.to(self.reference.device)
        return KernelDensityDetector(self.classifier, self.reference[keep],
                                     self.reference_labels[keep], self.sigma, self.threshold)


class DropoutUncertaintyDetector(nn.Module):
    """Feinman et al.'s Bayesian uncertainty (cw2017 §6.1), with ``passes`` = L = 30:
    U(x) = mean_i ||F_r(x)||^2 - ||mean_i F_r(x)||^2 over dropout-randomised softmax outputs.

    The L dropout draws are fixed networks (:class:`DropoutSamples`) seeded from ``seed`` in a
    range no attack draws from, so U(x) is a deterministic function of x alone (independent of
    the batch it is scored in) that an attack's success check cannot win by luck, and the
    attacker's own samples (seeds 0 ... K-1) are never the defender's.
    """

    #: first seed of the defender's dropout draws; the attacker's samples use seeds below it
    seed_offset = 1_000_000

    def __init__(self, classifier: nn.Module, passes: int = 30, threshold: float = 0.02,
                 seed: int = 0) -> None:
        super().__init__()
        self.classifier = classifier
        self.passes = passes
        self.threshold = threshold
        first = self.seed_offset + seed * passes
        self.draws = DropoutSamples(classifier, list(range(first, first + passes)))

    def uncertainty(self, x: Tensor) -> Tensor:
        probs = self.draws(x).softmax(2)  # L x B x classes
        return probs.pow(2).sum(2).mean(0) - probs.mean(0).pow(2).sum(1)

    def forward(self, x: Tensor) -> Tensor:
        return (self.uncertainty(x) - self.threshold) / self.threshold


def set_threshold_at_fpr(detector: nn.Module, clean: Tensor, fpr: float,
                         batch_size: int = 250) -> float:
    """Set ``detector.threshold`` so that a fraction ``fpr`` of ``clean`` images is flagged.

    Works for detectors whose logit is ``threshold - s(x)`` (KDE, s = log density) or
    ``(u(x) - threshold) / threshold`` (dropout uncertainty): the threshold is the matching
    quantile of the raw statistic.
    """
    with torch.no_grad():
        if isinstance(detector, KernelDensityDetector):
            stat = torch.cat([detector.log_density(clean[i:i + batch_size])
                              for i in range(0, len(clean), batch_size)])
            value = float(torch.quantile(stat, fpr))
        elif isinstance(detector, DropoutUncertaintyDetector):
            stat = torch.cat([detector.uncertainty(clean[i:i + batch_size])
                              for i in range(0, len(clean), batch_size)])
            value = float(torch.quantile(stat, 1 - fpr))
        else:
            raise TypeError(f"no statistic to threshold for {type(detector).__name__}")
    if not math.isfinite(value):
        raise ValueError("threshold is not finite; are there clean images of every class?")
    detector.threshold = value
    return value


class DetectorDefense(DefendedSystem):
    """The classifier plus detectors; an input is rejected when any D_j(x) > 0 (he2017 §5).

    The adaptive attack is C&W on G(x) (cw2017 §3.1) with D(x) = max_j D_j(x), targeting a
    class other than the (N+1)-th; a candidate counts only if the exact system accepts it.
    """

    surrogate_is_exact = False

    def __init__(self, classifier: nn.Module, detectors: dict[str, nn.Module], name: str) -> None:
        super().__init__(classifier, name)
        self.detectors = nn.ModuleDict(detectors)

    def detector_scores(self, x: Tensor) -> dict[str, Tensor]:
        return {k: d(x) for k, d in self.detectors.items()}

    #: references per class in the attacker's KDE (cw2017 §5.2 used 100)
    attack_kde_per_class = 100
    #: fixed dropout masks in the expectation-over-randomness attack (cw2017 §6.1)
    attack_dropout_samples = 10
    #: smallest confidence margin kappa that attack asks of every mask: with kappa = 0 it
    #: stops on the decision boundary, where fresh masks disagree and U(x) stays high
    attack_dropout_margin = 0.0

    def attack_surrogates(self) -> list[nn.Module]:
        """The detectors as the attack differentiates them: KDE over a 100-per-class sample."""
        return [d.subsample(self.attack_kde_per_class) if isinstance(d, KernelDensityDetector)
                else d for d in self.detectors.values()]

    def g_logits(self, x: Tensor) -> Tensor:
        if "_surrogates" not in self.__dict__:
            self.__dict__["_surrogates"] = self.attack_surrogates()
        surrogates = self.__dict__["_surrogates"]
        combined = torch.stack([d(x) for d in surrogates]).amax(0)
        return with_detector_class(self.classifier(x), combined)

    def objective(self, targeted: bool, kappa: float = 0.0) -> Objective:
        """C&W on G(x) (the last column is the "adversarial" class); for the dropout detector
        alone, C&W's loss summed over K fixed dropout masks instead (cw2017 §6.1: G(x) fails
        there); for the kernel density alone, C&W's loss plus the KDE term of cw2017 §5.2.
        Success is always judged by the exact system."""
        only = list(self.detectors.values())
        if len(only) == 1 and isinstance(only[0], DropoutUncertaintyDetector):
            samples = DropoutSamples(self.classifier, list(range(self.attack_dropout_samples)))
            margin = max(kappa, self.attack_dropout_margin)
            return ExpectationObjective(samples, targeted, margin, exact=self.predict)
        if len(only) == 1 and isinstance(only[0], KernelDensityDetector):
            # cw2017 §5.2: l(x') + max(-log KDE(x') - eps, 0) over the attacker's 100-per-class
            # references; eps = the detector's own threshold, so the term is 0 when accepted.
            # The density is that of the class the example is to end in: the target, or for an
            # untargeted attack the best class other than the true one (the predicted class
            # would be the true one until the example crosses, then jump).
            (kde,) = self.attack_surrogates()

            def kde_term(x: Tensor, labels: Tensor) -> Tensor:
                if targeted:
                    destination = labels
                else:
                    with torch.no_grad():
                        logits = self.classifier(x)
                    true = torch.nn.functional.one_hot(labels, logits.shape[1]).bool()
                    destination = logits.masked_fill(true, float("-inf")).argmax(1)
                return (kde.threshold - kde.log_density(x, destination)).clamp(min=0)

            return ClassifierObjective(self.classifier, targeted, kappa, exact=self.predict,
                                       extra_loss=kde_term)
        return ClassifierObjective(self.g_logits, targeted, kappa, exact=self.predict,
                                   reject_class=-1)

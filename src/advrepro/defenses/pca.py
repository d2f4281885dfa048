"""Principal component analysis of images, and Hendrycks & Gimpel's input-PCA detector
(cw2017 §4.1).

:class:`PCA` is fitted by a plain SVD of the centred training matrix and keeps its mean and
components as buffers, so every transform is a differentiable affine map on batches
(N x C x H x W or N x D). Components are ordered by decreasing variance; "the first k" are the
k largest.

Hendrycks & Gimpel: adversarial examples place more weight on the late (small-variance)
components than natural images. cw2017 §4.1 measures it with the component score
S(j) = (1/N) sum_i |PCA(X_i)_j| (:func:`component_scores`) and explains it: on MNIST the last
components span border pixels that are almost always 0 in natural images (the last 74
components carry < 1e-30 of the variance, :func:`variance_share_of_last`). The detector here
(:class:`InputPCADetector`) flags an image when its mean absolute coefficient over the
components after the first ``k`` exceeds a threshold set at a false positive rate on clean
images. A perfect-knowledge attacker changes only the first K components
(:func:`project_to_leading`), which leaves the detector's statistic exactly where it was.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PCA(nn.Module):
    """PCA of flattened images: ``mean`` (D), ``components`` (D x r, orthonormal columns,
    decreasing variance) and ``explained_variance`` (r, the variance along each component,
    over N - 1). :meth:`fit` keeps ``r = min(N, D)`` components unless ``max_components``
    asks for fewer.
    """

    def __init__(self, dim: int, n_components: int | None = None) -> None:
        super().__init__()
        r = dim if n_components is None else n_components
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.eye(dim)[:, :r].contiguous())
        self.register_buffer("explained_variance", torch.ones(r))

    @classmethod
    def fit(cls, images: Tensor, max_components: int | None = None) -> PCA:
        """PCA of ``images`` (N x ...), by an SVD of the centred N x D matrix in float64."""
        flat = images.detach().flatten(1).double()
        n, d = flat.shape
        if n < 2:
            raise ValueError("PCA needs at least two images")
        mean = flat.mean(0)
        _, s, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        r = len(s) if max_components is None else min(max_components, len(s))
        pca = cls(d, r)
        pca.mean.copy_(mean.to(pca.mean.dtype))
        pca.components.copy_(vh[:r].T)
        pca.explained_variance.copy_(s[:r].pow(2) / (n - 1))
        return pca.to(images.device)

    @classmethod
    def fit_lowrank(cls, images: Tensor, n_components: int, oversample: int = 10,
                    niter: int = 4, seed: int = 0) -> PCA:
        """The first ``n_components`` by randomized SVD (``torch.pca_lowrank``), for wide
        inputs such as a convolutional layer's output (cw2017 §4.3) where a full SVD is too
        slow. ``explained_variance`` holds only the kept components' variances."""
        flat = images.detach().flatten(1).double()
        n, d = flat.shape
        q = min(n_components + oversample, n, d)
        if not 1 <= n_components <= q:
            raise ValueError(f"n_components must be in 1..{q}, got {n_components}")
        mean = flat.mean(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, s, v = torch.pca_lowrank(flat - mean, q=q, center=False, niter=niter)
        pca = cls(d, n_components)
        pca.mean.copy_(mean.to(pca.mean.dtype))
        pca.components.copy_(v[:, :n_components])
        pca.explained_variance.copy_(s[:n_components].pow(2) / (n - 1))
        return pca.to(images.device)

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    @property
    def n_components(self) -> int:
        return self.components.shape[1]

    def transform(self, x: Tensor, k: int | None = None) -> Tensor:
        """PCA(x): the coefficients of the first ``k`` (default: all) components, N x k."""
        v = self.components if k is None else self.components[:, :k]
        return (x.flatten(1) - self.mean) @ v

    def inverse_transform(self, coefficients: Tensor, shape: tuple[int, ...] | None = None
                          ) -> Tensor:
        """The image (flat, or reshaped to ``shape`` per item) of the first
        ``coefficients.shape[1]`` coefficients."""
        k = coefficients.shape[1]
        flat = coefficients @ self.components[:, :k].T + self.mean
        return flat if shape is None else flat.view(len(flat), *shape)

    def reconstruct(self, x: Tensor, k: int) -> Tensor:
        """x projected onto the mean plus the span of the first ``k`` components, same shape
        as ``x`` (Bhagoji et al.'s map to the reduced space and back, cw2017 §4.2)."""
        return self.inverse_transform(self.transform(x, k), tuple(x.shape[1:]))

    def forward(self, x: Tensor) -> Tensor:
        return self.transform(x)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_components={self.n_components}"


def component_scores(pca: PCA, images: Tensor, batch_size: int = 1000) -> Tensor:
    """S(j) = (1/N) sum_i |PCA(X_i)_j| for every component j (cw2017 §4.1), over ``images``."""
    with torch.no_grad():
        total = torch.zeros(pca.n_components, dtype=pca.components.dtype,
                            device=pca.components.device)
        for i in range(0, len(images), batch_size):
            total += pca.transform(images[i:i + batch_size]).abs().sum(0)
    return total / len(images)


def variance_share_of_last(pca: PCA, k: int) -> float:
    """Share of the total variance carried by the last ``k`` of the PCA's components
    (cw2017 §4.1: the last 74 of MNIST's 784 carry less than 1e-30). Exact zeros of the SVD
    count as zero, so the share can be 0."""
    var = pca.explained_variance.double()
    if not 0 <= k <= len(var):
        raise ValueError(f"k must be in 0..{len(var)}, got {k}")
    return float(var[len(var) - k:].sum() / var.sum()) if k else 0.0


def late_component_mass(pca: PCA, x: Tensor, k: int) -> Tensor:
    """Mean |PCA(x)_j| over the components j > ``k`` (all components after the first k)."""
    if not 0 <= k < pca.n_components:
        raise ValueError(f"k must be in 0..{pca.n_components - 1}, got {k}")
    return pca.transform(x)[:, k:].abs().mean(1)


class InputPCADetector(nn.Module):
    """Hendrycks & Gimpel's input-PCA detector (cw2017 §4.1), as a detector logit:
    D(x) = s(x) - threshold, s(x) = :func:`late_component_mass` (> 0: adversarial).

    ``k`` is the number of leading components the statistic ignores; the threshold is set
    on clean images by :meth:`set_threshold_at_fpr`.
    """

    def __init__(self, pca: PCA, k: int, threshold: float = 0.0) -> None:
        super().__init__()
        if not 0 <= k < pca.n_components:
            raise ValueError(f"k must be in 0..{pca.n_components - 1}, got {k}")
        self.pca = pca
        self.k = k
        self.threshold = threshold

    def statistic(self, x: Tensor) -> Tensor:
        return late_component_mass(self.pca, x, self.k)

    def forward(self, x: Tensor) -> Tensor:
        return self.statistic(x) - self.threshold

    def set_threshold_at_fpr(self, clean: Tensor, fpr: float, batch_size: int = 1000) -> float:
        """Threshold = the (1 - fpr) quantile of s over ``clean``: a share ``fpr`` of them
        lies above it and is flagged."""
        with torch.no_grad():
            stat = torch.cat([self.statistic(clean[i:i + batch_size])
                              for i in range(0, len(clean), batch_size)])
        value = float(torch.quantile(stat.double(), 1 - fpr))
        if not math.isfinite(value):
            raise ValueError("threshold is not finite")
        self.threshold = value
        return value

    def extra_repr(self) -> str:
        return f"k={self.k}, threshold={self.threshold:.4g}"


def project_to_leading(pca: PCA, perturbation: Tensor, k: int) -> Tensor:
    """The part of ``perturbation`` (N x ..., same shape returned) in the span of the first
    ``k`` components: x + project_to_leading(delta) has the same coefficients as x on every
    later component, so :class:`InputPCADetector` with ``k`` or more ignored components scores
    it as it scores x (the perfect-knowledge attack of cw2017 §4.1/§4.2). The mean cancels in
    a difference of images, so it is not used. No clipping to [0, 1] here: clipping would move
    the late components again; an attack keeps the image in the box through its own
    parameterization (or by checking the result)."""
    v = pca.components[:, :k]
    flat = perturbation.flatten(1)
    return ((flat @ v) @ v.T).view_as(perturbation)

"""Grosse et al.'s Maximum Mean Discrepancy test (cw2017 §5.1).

Given a set X1 known natural and a set X2 that is either all natural or all adversarial, test
whether both come from the same distribution: Fisher's permutation test with the (biased)
kernel MMD as statistic.

- Kernel: Gaussian, k(a, b) = exp(-||a - b||^2 / (2 sigma^2)) on flattened images.
- Bandwidth rule (the "median heuristic" of Gretton et al.): sigma = the median Euclidean
  distance between distinct points of the pooled sample X1 u X2 (for an even number of
  pairs the lower of the two middle values, as ``torch.median``), unless given. It depends on
  the pooled sample only, so it is the same for every permutation.
- Statistic: the biased estimate MMD_b^2 = mean k(X1, X1) + mean k(X2, X2) - 2 mean k(X1, X2)
  (Gretton et al. 2012, eq. 5; every mean over all pairs, diagonals included). The test is
  the same with MMD_b = sqrt(MMD_b^2), a monotone map.
- Permutation test: a = MMD(X1, X2); for each of ``n_permutations`` random shuffles of the
  pooled sample into sets Y1, Y2 of the original sizes, b = MMD(Y1, Y2). cw2017 §5.1 reports
  "the fraction of times" a shuffle beats the observed statistic; here the p-value is
  p = (1 + #{b >= a}) / (1 + n_permutations), the usual permutation p-value that counts the
  observed split as one of the permutations, so it is never 0 and is a valid p-value for a
  finite number of permutations. Reject "same distribution" when p < alpha (0.05 in cw2017).

The kernel matrix of the pooled sample is computed once (N x N, N = |X1| + |X2|); a split is
a weight vector w (1/|X1| on X1, -1/|X2| on X2) and MMD_b^2 = w^T K w, so all permutations
run as batched matrix products, in chunks of ``chunk`` permutations. Randomness comes only from
the ``generator`` (or ``seed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def gaussian_kernel(a: Tensor, b: Tensor, sigma: float) -> Tensor:
    """k(a_i, b_j) = exp(-||a_i - b_j||^2 / (2 sigma^2)) for flattened a (N x ...), b (M x ...)."""
    d2 = torch.cdist(a.flatten(1).double(), b.flatten(1).double()).pow(2)
    return torch.exp(-d2 / (2 * sigma**2))


def median_bandwidth(pooled: Tensor) -> float:
    """Median Euclidean distance over the distinct pairs (i < j) of ``pooled`` (N x ...);
    the lower middle value for an even number of pairs."""
    flat = pooled.flatten(1).double()
    if len(flat) < 2:
        raise ValueError("the median heuristic needs at least two points")
    d = torch.cdist(flat, flat)
    i, j = torch.triu_indices(len(flat), len(flat), offset=1)
    sigma = float(d[i, j].median())
    if sigma <= 0:
        raise ValueError("median pairwise distance is 0; give the bandwidth explicitly")
    return sigma


def mmd_biased(x: Tensor, y: Tensor, sigma: float | None = None) -> float:
    """MMD_b^2(X, Y) with the Gaussian kernel (bandwidth by :func:`median_bandwidth` of the
    pooled sample unless given)."""
    if sigma is None:
        sigma = median_bandwidth(torch.cat([x, y]))
    return float(gaussian_kernel(x, x, sigma).mean() + gaussian_kernel(y, y, sigma).mean()
                 - 2 * gaussian_kernel(x, y, sigma).mean())


def random_permutations(n: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` uniformly random permutations of 0..n-1 (count x n), from ``generator``."""
    return torch.argsort(torch.rand(count, n, generator=generator, dtype=torch.float64), dim=1)


def split_weights(m: int, n: int) -> Tensor:
    """w with 1/m on the first m points and -1/n on the next n: w^T K w = MMD_b^2."""
    return torch.cat([torch.full((m,), 1.0 / m, dtype=torch.float64),
                      torch.full((n,), -1.0 / n, dtype=torch.float64)])


@dataclass
class MMDTestResult:
    statistic: float  #: observed MMD_b^2(X1, X2)
    p_value: float  #: (1 + #{permuted >= observed}) / (1 + n_permutations)
    sigma: float  #: kernel bandwidth used
    n_permutations: int
    permutation_statistics: Tensor  #: MMD_b^2 of every shuffle (n_permutations,)

    def rejects(self, alpha: float = 0.05) -> bool:
        """Whether the test concludes the two sets differ (p < alpha)."""
        return self.p_value < alpha


def mmd_permutation_test(x1: Tensor, x2: Tensor, n_permutations: int = 1000,
                         sigma: float | None = None, seed: int = 0,
                         generator: torch.Generator | None = None, chunk: int = 256
                         ) -> MMDTestResult:
    """Fisher's permutation test of "X1 and X2 come from the same distribution" with the
    biased Gaussian-kernel MMD (cw2017 §5.1; conventions in the module docstring)."""
    if n_permutations < 1:
        raise ValueError("n_permutations must be >= 1")
    m, n = len(x1), len(x2)
    if m < 1 or n < 1:
        raise ValueError("both sets need at least one image")
    pooled = torch.cat([x1.detach(), x2.detach()]).flatten(1).double().cpu()
    if sigma is None:
        sigma = median_bandwidth(pooled)
    k = gaussian_kernel(pooled, pooled, sigma)
    w = split_weights(m, n)
    observed = float(w @ k @ w)
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    stats = []
    for start in range(0, n_permutations, chunk):
        perms = random_permutations(m + n, min(chunk, n_permutations - start), gen)
        weights = w[perms]  # point j joins the set that position perms[p, j] belongs to
        stats.append(((weights @ k) * weights).sum(1))
    permuted = torch.cat(stats)
    # a tolerance so that shuffles equal to the observed split (up to rounding) count as >=
    exceed = int((permuted >= observed - 1e-12 * max(abs(observed), 1.0)).sum())
    return MMDTestResult(observed, (1 + exceed) / (1 + n_permutations), sigma, n_permutations,
                         permuted)

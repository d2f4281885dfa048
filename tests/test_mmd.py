"""Grosse et al.'s MMD permutation test (cw2017 §5.1) on small seeded samples."""

from __future__ import annotations

import math

import pytest
import torch

from advrepro.defenses.mmd import (
    gaussian_kernel,
    median_bandwidth,
    mmd_biased,
    mmd_permutation_test,
    random_permutations,
    split_weights,
)


def test_biased_mmd_and_bandwidth_equal_the_hand_computation():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    # pooled pairwise distances sorted: 1, 2, 2, sqrt 5, 3, sqrt 13 -> lower middle value 2
    assert median_bandwidth(torch.cat([x, y])) == pytest.approx(2.0)

    def k(a, b, s=1.5):
        return math.exp(-sum((u - v) ** 2 for u, v in zip(a, b, strict=True)) / (2 * s * s))

    xs, ys = x.tolist(), y.tolist()
    kxx = sum(k(a, b) for a in xs for b in xs) / 4
    kyy = sum(k(a, b) for a in ys for b in ys) / 4
    kxy = sum(k(a, b) for a in xs for b in ys) / 4
    assert mmd_biased(x, y, sigma=1.5) == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)
    assert float(gaussian_kernel(x, y, 1.5)[1, 1]) == pytest.approx(k(xs[1], ys[1]))
    # w^T K w form used by the batched test
    pooled = torch.cat([x, y])
    w = split_weights(2, 2)
    assert float(w @ gaussian_kernel(pooled, pooled, 1.5) @ w) == pytest.approx(
        mmd_biased(x, y, 1.5), abs=1e-12)


def _gauss(n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 3, 3, generator=g) + shift


def test_two_samples_of_one_distribution_are_not_rejected():
    result = mmd_permutation_test(_gauss(60, 0.0, 0), _gauss(60, 0.0, 1), 500, seed=0)
    assert result.p_value > 0.05 and not result.rejects(0.05)


def test_clearly_shifted_distributions_are_rejected():
    result = mmd_permutation_test(_gauss(60, 0.0, 0), _gauss(60, 1.0, 1), 500, seed=0)
    assert result.p_value < 0.05 and result.rejects()
    assert result.p_value == pytest.approx(1 / 501)  # no shuffle reaches the observed split


def test_p_value_is_one_plus_exceedances_over_one_plus_permutations():
    x1, x2 = _gauss(20, 0.0, 2), _gauss(15, 0.3, 3)
    result = mmd_permutation_test(x1, x2, 300, seed=7, chunk=64)
    assert result.statistic == pytest.approx(mmd_biased(x1, x2), abs=1e-12)
    assert result.sigma == pytest.approx(median_bandwidth(torch.cat([x1, x2])))
    # the shuffles, recomputed one by one from the same seeded generator (drawn in chunks)
    gen = torch.Generator().manual_seed(7)
    perms = torch.cat([random_permutations(35, c, gen) for c in (64, 64, 64, 64, 44)])
    pooled = torch.cat([x1, x2])
    for p in (0, 100, 299):
        first = perms[p] < 20  # point j joins X1 when its position is among the first 20
        b = mmd_biased(pooled[first], pooled[~first], result.sigma)
        assert float(result.permutation_statistics[p]) == pytest.approx(b, abs=1e-10)
    exceed = int((result.permutation_statistics >= result.statistic).sum())
    assert result.p_value == pytest.approx((1 + exceed) / 301)
    # same seed, same answer; a passed generator is used as is
    assert mmd_permutation_test(x1, x2, 300, seed=7).p_value == result.p_value
    gen = torch.Generator().manual_seed(7)
    assert mmd_permutation_test(x1, x2, 300, generator=gen, chunk=64).p_value == result.p_value

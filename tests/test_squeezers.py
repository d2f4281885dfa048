import numpy as np
import pytest
import torch

from advrepro.defenses.squeezers import BitDepthReduction, MedianFilter
from advrepro.errors import ConfigError


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_bit_depth_produces_2_to_the_b_levels(bits):
    x = torch.linspace(0, 1, 1001).view(1, 1, 1, -1)
    out = BitDepthReduction(bits)(x)
    levels = torch.unique(out)
    assert len(levels) == 2**bits
    assert torch.allclose(levels, torch.linspace(0, 1, 2**bits))
    assert (out - x).abs().max() <= 0.5 / (2**bits - 1) + 1e-6


@pytest.mark.parametrize("bits", [0, 9, 2.5])
def test_bit_depth_rejects_bad_values(bits):
    with pytest.raises(ConfigError, match="bits"):
        BitDepthReduction(bits)


def reference_median(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Direct implementation of scipy.ndimage.median_filter(mode='reflect') for one channel."""
    rows, cols = img.shape
    padded = np.pad(img, ((h // 2, h - 1 - h // 2), (w // 2, w - 1 - w // 2)), mode="symmetric")
    out = np.empty_like(img)
    for i in range(rows):
        for j in range(cols):
            window = np.sort(padded[i:i + h, j:j + w].ravel())
            out[i, j] = window[len(window) // 2]
    return out


@pytest.mark.parametrize("shape", [(3, 3), (2, 2), (5, 5), (3, 1), (1, 3), (2, 1), (1, 2),
                                   (5, 1), (1, 5)])
def test_median_filter_matches_the_scipy_convention(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 9, 11, generator=g)
    out = MedianFilter(*shape)(x)
    for n in range(2):
        for c in range(3):
            ref = reference_median(x[n, c].numpy(), *shape)
            assert np.allclose(out[n, c].numpy(), ref)


def test_median_filter_passes_gradients_to_selected_pixels():
    x = torch.rand(1, 1, 6, 6, requires_grad=True)
    MedianFilter(3, 3)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_median_filter_rejects_bad_shapes():
    with pytest.raises(ConfigError):
        MedianFilter(0, 3)

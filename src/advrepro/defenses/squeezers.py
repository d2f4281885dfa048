"""Xu et al.'s feature squeezers as torch modules (he2017 §3; Xu et al. 2017).

Both act on batches in [0, 1] (N x C x H x W) and are differentiable where the operation is:
the median filter passes gradients to the selected pixel; bit-depth reduction has zero gradient
almost everywhere, which is why he2017 §3.1.1 optimises without it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrepro.errors import ConfigError


class BitDepthReduction(nn.Module):
    """Round each value to the nearest of 2^b evenly spaced levels over [0, 1] (he2017 §3.1.1).

    Ties round half to even, as ``numpy.rint`` in Xu et al.'s code.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        if not isinstance(bits, int) or not 1 <= bits <= 8:
            raise ConfigError(f"defense.bits must be an integer in 1..8, got {bits!r}")
        self.bits = bits
        self.levels = 2**bits - 1

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * self.levels) / self.levels

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def _symmetric_pad_index(n: int, before: int, after: int, device: torch.device) -> Tensor:
    """Indices of a length-``n`` axis padded by reflection including the edge (scipy 'reflect':
    d c b a | a b c d | d c b a), valid for pads up to ``n``."""
    idx = torch.arange(n, device=device)
    return torch.cat([idx[:before].flip(0), idx, idx[n - after:].flip(0) if after else idx[:0]])


class MedianFilter(nn.Module):
    """Median over a ``height x width`` window, any shape (2x2, 1x2, 5x1, ...), per channel.

    Convention of Xu et al. (``scipy.ndimage.median_filter(size=(1, h, w, 1), mode='reflect')``):
    the window of a pixel at row i spans rows i - h//2 ... i - h//2 + h - 1 (so an even window
    reaches one pixel further up/left than down/right); borders are padded by reflection that
    repeats the edge pixel; for an even number k of values the median is the (k//2 + 1)-th
    smallest (the upper of the two middle values), as scipy's rank filter picks.
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        for name, v in (("height", height), ("width", width)):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"defense.{name} must be a positive integer, got {v!r}")
        self.height, self.width = height, width

    def forward(self, x: Tensor) -> Tensor:
        h, w = self.height, self.width
        if h == 1 and w == 1:
            return x
        n, c, rows, cols = x.shape
        ri = _symmetric_pad_index(rows, h // 2, h - 1 - h // 2, x.device)
        ci = _symmetric_pad_index(cols, w // 2, w - 1 - w // 2, x.device)
        padded = x[:, :, ri][:, :, :, ci]
        patches = padded.unfold(2, h, 1).unfold(3, w, 1)  # n c rows cols h w
        flat = patches.reshape(n, c, rows, cols, h * w)
        k = h * w
        return flat.kthvalue(k // 2 + 1, dim=-1).values

    def extra_repr(self) -> str:
        return f"{self.height}x{self.width}"

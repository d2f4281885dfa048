"""Li & Li's mean blur (cw2017 §6.2): a 3x3 average filter in front of the classifier.

cw2017 §6.2 observes that the blur is one more convolutional layer at the front of the
network, F'(x) = F(blur(x)), and attacks F' with C&W's attack: the filter is linear, so the
adaptive attack differentiates through it (``differentiable=True`` in
:class:`~advrepro.defenses.preprocessing.SqueezedClassifier`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advrepro.defenses.preprocessing import SqueezedClassifier
from advrepro.defenses.system import DefendedSystem
from advrepro.errors import ConfigError

PADDINGS = ("zeros", "replicate", "reflect")


class MeanFilter(nn.Module):
    """Average over a ``size x size`` window (odd size), each channel on its own: a
    depthwise conv2d with every weight 1 / size^2, stride 1, output the size of the input.

    Border handling (``padding``): "zeros" (default) pads with 0 and still divides by
    size^2, exactly ``conv2d(x, ones / 9, padding=1)`` for 3x3 - the extra convolutional
    layer of cw2017 §6.2, which darkens the border pixels of a non-zero image; "replicate"
    repeats the edge pixel; "reflect" mirrors without repeating it (d c b | a b c d).
    """

    def __init__(self, size: int = 3, padding: str = "zeros") -> None:
        super().__init__()
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ConfigError(f"defense.size must be an odd positive integer, got {size!r}")
        if padding not in PADDINGS:
            raise ConfigError(f"defense.padding must be one of {', '.join(PADDINGS)}, "
                              f"got {padding!r}")
        self.size = size
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        c, r = x.shape[1], self.size // 2
        kernel = torch.full((c, 1, self.size, self.size), 1.0 / self.size**2,
                            dtype=x.dtype, device=x.device)
        if self.padding == "zeros":
            return F.conv2d(x, kernel, padding=r, groups=c)
        return F.conv2d(F.pad(x, (r, r, r, r), mode=self.padding), kernel, groups=c)

    def extra_repr(self) -> str:
        return f"{self.size}x{self.size}, padding={self.padding}"


@dataclass
class MeanBlur:
    """Li & Li's ``size`` x ``size`` mean blur in front of the classifier (cw2017 §6.2);
    the perfect-knowledge attack differentiates through it."""

    size: int = 3
    padding: str = "zeros"
    name: str = "mean_blur"

    def __post_init__(self) -> None:
        MeanFilter(self.size, self.padding)  # validates

    def cell_name(self) -> str:
        return f"{self.name}_{self.size}x{self.size}"

    def build(self, bench) -> DefendedSystem:
        return SqueezedClassifier(bench.classifier(), MeanFilter(self.size, self.padding),
                                  differentiable=True, name=self.cell_name())

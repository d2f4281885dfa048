"""The CIFAR-10 ResNet of Metzen et al. (2017), used by cw2017 §2.4 (91.5 %) and he2017 §5."""

from __future__ import annotations

from torch import Tensor, nn

from advrepro.models.base import PaperModel


class PreActBlock(nn.Module):
    """Pre-activation residual unit (BN-ReLU-conv, twice); 1x1 projection when shapes change."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(x).relu()
        shortcut = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)
        out = self.conv2(self.bn2(out).relu())
        return out + shortcut


class MetzenResNet(PaperModel):
    """Pre-activation ResNet with three stages of ``blocks_per_stage`` units, widths 16k/32k/64k.

    ``blocks_per_stage=5`` is the 32-layer network of Metzen et al. that cw2017 uses. The
    output of the first residual unit is exposed as ``first_residual_block``: the input of
    Metzen's detector in cw2017 §3.2 and he2017 §5.

    ``dropout > 0`` adds a dropout layer on the pooled features, before the classification
    layer, so that Feinman et al.'s uncertainty detector can sample the network (cw2017 §6.1;
    the paper does not describe its CIFAR-10 dropout network, this placement is ours). With the
    default 0 the network, and its state dict, are exactly the paper's.
    """

    def __init__(self, blocks_per_stage: int = 5, width: int = 1, num_classes: int = 10,
                 in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        in_ch = widths[0]
        for stage, out_ch in enumerate(widths):
            for i in range(blocks_per_stage):
                blocks.append(PreActBlock(in_ch, out_ch, 2 if (stage > 0 and i == 0) else 1))
                in_ch = out_ch
        self.first_block = blocks[0]
        self.later_blocks = nn.Sequential(*blocks[1:])
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        pooled: list[nn.Module] = [nn.BatchNorm2d(in_ch), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten()]
        self.final = nn.Sequential(*pooled, *([nn.Dropout(dropout)] if dropout > 0 else []))
        self.head = nn.Linear(in_ch, num_classes)
        self.first_block_channels = widths[0]

    def body(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.final(self.later_blocks(self.first_block(self.stem(x))))

    def hidden(self, x: Tensor) -> dict[str, Tensor]:
        first = self.first_block(self.stem(x))
        final_hidden = self.final(self.later_blocks(first))
        return {
            "first_residual_block": first,
            "final_hidden": final_hidden,
            "logits": self.head(final_hidden),
        }

    def from_first_block(self, first: Tensor) -> Tensor:
        """Logits from the first residual unit's output (lets detectors share the forward pass)."""
        return self.head(self.final(self.later_blocks(first)))

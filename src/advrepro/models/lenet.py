"""The 2-conv LeNet of adam2018 §4.1 (the TensorFlow MNIST tutorial network)."""

from __future__ import annotations

from torch import Tensor, nn

from advrepro.models.base import PaperModel


class LeNet(PaperModel):
    """conv 5x5x32 / pool / conv 5x5x64 / pool / FC 1024 - dropout / FC classes.

    adam2018 §4.1 names "a 2 convolutional layer LeNet" without listing its widths; these are
    the widths of the TensorFlow tutorial LeNet that the name usually denotes.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 1024), nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(1024, num_classes)

    #: Where adam2018 §4.2 (Table 2) inserts a VAE: the image, and the output of each
    #: convolutional block (conv -> ReLU -> max-pool), i.e. what the next layer reads.
    insertion_points = ("input", "conv1", "conv2")

    def stages(self) -> list[nn.Module]:
        """The network cut at its insertion points: stage i maps the activation at
        ``insertion_points[i]`` to the next one, the last stage ends in the logits.

        The stages are views on ``body`` and ``head`` (same parameters, nothing new is
        registered, so state dicts are unchanged); running them in turn is ``forward``.
        """
        return [self.body[0:3], self.body[3:6], nn.Sequential(*self.body[6:], self.head)]

    def activations(self, x: Tensor) -> dict[str, Tensor]:
        """The activation at every insertion point for ``x``, plus ``logits``."""
        out = {}
        for name, stage in zip(self.insertion_points, self.stages(), strict=True):
            out[name] = x
            x = stage(x)
        out["logits"] = x
        return out

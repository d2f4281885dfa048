"""The MNIST CNN of Carlini & Wagner (cw2017 §2.4; architecture of C&W 2016, Table 1)."""

from __future__ import annotations

from torch import nn

from advrepro.models.base import PaperModel


class CarliniWagnerMNIST(PaperModel):
    """conv 32-32 / pool / conv 64-64 / pool / FC 200 - dropout - FC 200 / FC classes.

    cw2017 §2.4 reports 99.4 % test accuracy. ``dropout`` sits between the two FC layers as in
    C&W's training code; Feinman's uncertainty detector samples it (cw2017 §6.1).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.Conv2d(64, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 200), nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(200, 200), nn.ReLU(),
        )
        self.head = nn.Linear(200, num_classes)

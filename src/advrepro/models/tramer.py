"""MNIST models A, B, C and D of tramer2017 (Appendix, Table 6)."""

from __future__ import annotations

from torch import nn

from advrepro.models.base import PaperModel


class TramerModelA(PaperModel):
    """Conv(64,5,5) - Conv(64,5,5) - Dropout(0.25) - FC(128) - Dropout(0.5) - FC."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 64, 5), nn.ReLU(),
            nn.Conv2d(64, 64, 5), nn.ReLU(),
            nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(64 * 20 * 20, 128), nn.ReLU(), nn.Dropout(0.5),
        )
        self.head = nn.Linear(128, num_classes)


class TramerModelB(PaperModel):
    """Dropout(0.2) - Conv(64,8,8) - Conv(128,6,6) - Conv(128,5,5) - Dropout(0.5) - FC."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Dropout(0.2),
            nn.Conv2d(in_channels, 64, 8, stride=2, padding=3), nn.ReLU(),
            nn.Conv2d(64, 128, 6, stride=2), nn.ReLU(),
            nn.Conv2d(128, 128, 5), nn.ReLU(),
            nn.Dropout(0.5), nn.Flatten(),
        )
        self.head = nn.Linear(128, num_classes)


class TramerModelC(PaperModel):
    """Conv(128,3,3) - Conv(64,3,3) - Dropout(0.25) - FC(128) - Dropout(0.5) - FC."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 128, 3), nn.ReLU(),
            nn.Conv2d(128, 64, 3), nn.ReLU(),
            nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(64 * 24 * 24, 128), nn.ReLU(), nn.Dropout(0.5),
        )
        self.head = nn.Linear(128, num_classes)


class TramerModelD(PaperModel):
    """[FC(300) - Dropout(0.5)] x 4 - FC."""

    def __init__(self, input_dim: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_dim
        for _ in range(4):
            layers += [nn.Linear(width, 300), nn.ReLU(), nn.Dropout(0.5)]
            width = 300
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(300, num_classes)

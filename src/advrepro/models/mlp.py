"""Fully connected models: adam2018's logistic regression and cw2017 §4.2's PCA network."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advrepro.models.base import PaperModel


class LogisticRegression(PaperModel):
    """Multinomial logistic regression on raw pixels (adam2018 §4.1, "LR")."""

    def __init__(self, input_dim: int = 784, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Flatten()
        self.head = nn.Linear(input_dim, num_classes)


class PCAFullyConnected(PaperModel):
    """100-100-10 fully connected net on the first ``k`` principal components (cw2017 §4.2).

    The projection is fitted on the training images by :meth:`fit_preprocessing`, which the
    trainer calls before the first epoch; it is stored as buffers, so it is part of the
    checkpoint.
    """

    def __init__(self, k: int = 20, input_dim: int = 784, hidden: int = 100,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(input_dim))
        self.register_buffer("components", torch.eye(input_dim)[:k].T.contiguous())
        self.body = nn.Sequential(
            nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.head = nn.Linear(hidden, num_classes)

    def fit_preprocessing(self, images: Tensor) -> None:
        """Fit the PCA projection on training images (N x C x H x W)."""
        flat = images.flatten(1).double()
        mean = flat.mean(0)
        _, _, v = torch.linalg.svd(flat - mean, full_matrices=False)
        self.mean.copy_(mean.float())
        self.components.copy_(v[: self.components.shape[1]].T.float())

    def project(self, x: Tensor) -> Tensor:
        return (x.flatten(1) - self.mean) @ self.components

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.project(x))

    def hidden(self, x: Tensor) -> dict[str, Tensor]:
        return super().hidden(self.project(x))

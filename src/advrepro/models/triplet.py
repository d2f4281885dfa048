"""The triplet network of adam2018 §3.2 and its KNN-softmax classifier (Figure 2a, 2b).

A single embedding network maps the anchor, the positive and the negative example
(Supplementary Figure 9); it is trained with the margin loss of Supplementary Eq. (1)
(:func:`advrepro.training.losses.triplet_margin_loss`). Its classifier compares a test
embedding with 50 random training embeddings per class, averages the similarities per class
and turns them into probabilities with a softmax.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EmbeddingNet(nn.Module):
    """conv 5x5x32 / pool / conv 5x5x64 / pool / FC ``hidden`` / FC ``embedding_dim``.

    adam2018 does not describe the embedding network; the convolutional trunk repeats the
    LeNet it is compared with (conf/model/adam_triplet.yaml says why).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: int = 1024,
                 embedding_dim: int = 128) -> None:
        super().__init__()
        side = image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * side * side, hidden), nn.ReLU(),
            nn.Linear(hidden, embedding_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TripletNetwork(nn.Module):
    """The shared embedding applied to (anchor, positive, negative) (Supplementary Fig. 9)."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        n = anchor.shape[0]
        out = self.embedding(torch.cat([anchor, positive, negative]))
        return out[:n], out[n : 2 * n], out[2 * n :]


def pairwise_distance(a: Tensor, b: Tensor, squared: bool = False) -> Tensor:
    """Euclidean distances between the rows of ``a`` (n x d) and ``b`` (m x d): n x m.

    Computed from differences (not the |a|^2 + |b|^2 - 2ab expansion) so that it is exact and
    its gradient is finite for distinct points."""
    d2 = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
    return d2 if squared else d2.clamp(min=1e-12).sqrt()


class KNNSoftmaxClassifier(nn.Module):
    """p_t(y|x) of adam2018 §3.2 / Figure 2: softmax over classes of the mean similarity of
    embedding(x) to ``per_class`` reference training embeddings of each class.

    ``forward`` returns the per-class mean similarities divided by ``temperature``, i.e. the
    logits whose softmax is p_t. Similarity = minus the Euclidean distance used by the triplet
    loss (the paper says "similarity" without defining it). The reference embeddings are
    computed once and stored (a buffer), so only the test image is differentiated.
    """

    def __init__(self, embedding: nn.Module, references: Tensor, reference_labels: Tensor,
                 num_classes: int = 10, temperature: float = 1.0, squared: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        missing = set(range(num_classes)) - set(reference_labels.tolist())
        if missing:
            raise ValueError(f"no reference embedding for classes {sorted(missing)}")
        self.embedding = embedding
        self.num_classes = num_classes
        self.temperature = temperature
        self.squared = squared
        self.register_buffer("references", references.detach().clone())
        self.register_buffer("reference_labels", reference_labels.detach().clone().long())

    @classmethod
    @torch.no_grad()
    def from_training_set(cls, embedding: nn.Module, x: Tensor, y: Tensor, per_class: int = 50,
                          seed: int = 0, num_classes: int = 10, **kwargs) -> KNNSoftmaxClassifier:
        """Sample ``per_class`` training images of every class (all of a class that has fewer)
        with a seeded generator and keep their embeddings (adam2018 §3.2: 50 per class)."""
        gen = torch.Generator().manual_seed(seed)
        chosen = []
        for c in range(num_classes):
            idx = (y == c).nonzero().flatten()
            chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
        idx = torch.cat(chosen)
        was_training = embedding.training
        embedding.eval()
        device = next(embedding.parameters(), x).device
        refs = torch.cat([embedding(x[idx[i : i + 500]].to(device))
                          for i in range(0, len(idx), 500)])
        embedding.train(was_training)
        return cls(embedding, refs, y[idx], num_classes=num_classes, **kwargs)

    def similarities(self, x: Tensor) -> Tensor:
        """Mean similarity of each image to each class's references (B x classes)."""
        dist = pairwise_distance(self.embedding(x), self.references, self.squared)
        onehot = torch.nn.functional.one_hot(self.reference_labels, self.num_classes)
        onehot = onehot.to(dist.dtype)
        return -(dist @ onehot) / onehot.sum(0)

    def forward(self, x: Tensor) -> Tensor:
        return self.similarities(x) / self.temperature

    def probabilities(self, x: Tensor) -> Tensor:
        return self.forward(x).softmax(1)

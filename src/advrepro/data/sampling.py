"""The papers' evaluation protocol as reusable, seeded functions.

- he2017 §2.4: "we randomly sample 100 images in the test set, filter out examples that are
  not correctly classified";
- cw2017 §2.6: targeted attacks with a target label different from the true one;
- cw2017 §3.1 (limited knowledge): "we split the training set in half" between attacker and
  defender.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from advrepro.errors import ConfigError


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@torch.no_grad()
def predict_labels(
    classify: Callable[[Tensor], Tensor], images: Tensor, batch_size: int = 500
) -> Tensor:
    """Predicted labels of ``classify`` (a logits function, or a label function) on ``images``."""
    outs = []
    for start in range(0, len(images), batch_size):
        out = classify(images[start : start + batch_size])
        outs.append(out.argmax(1) if out.ndim == 2 else out)
    return torch.cat(outs).cpu()


def sample_correctly_classified(
    classify: Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    n: int,
    seed: int,
) -> Tensor:
    """Indices of a seeded random sample of ``n`` test images, keeping the correctly classified.

    Follows he2017 §2.4 literally: draw ``n`` images, then drop the misclassified ones, so the
    result may hold fewer than ``n`` indices.
    """
    if n <= 0 or n > len(images):
        raise ConfigError(f"cannot sample {n} images from a pool of {len(images)}")
    drawn = torch.randperm(len(images), generator=_generator(seed))[:n]
    predicted = predict_labels(classify, images[drawn])
    return drawn[predicted == labels[drawn]]


def random_targets(labels: Tensor, num_classes: int, seed: int) -> Tensor:
    """Seeded uniformly random target labels, each different from the true label."""
    offsets = torch.randint(1, num_classes, labels.shape, generator=_generator(seed))
    return (labels.cpu() + offsets) % num_classes


def disjoint_halves(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into two disjoint random halves: (attacker's, defender's), cw2017 §3.1."""
    perm = torch.randperm(n, generator=_generator(seed))
    half = n // 2
    return perm[:half].sort().values, perm[half:].sort().values

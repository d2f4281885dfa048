"""Datasets and the papers' evaluation protocol."""

from advrepro.data.datasets import DatasetSpec, data_fingerprint, load_split
from advrepro.data.sampling import (
    disjoint_halves,
    random_targets,
    sample_correctly_classified,
)

__all__ = [
    "DatasetSpec",
    "data_fingerprint",
    "load_split",
    "disjoint_halves",
    "random_targets",
    "sample_correctly_classified",
]

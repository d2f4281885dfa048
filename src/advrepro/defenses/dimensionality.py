"""Bhagoji et al.'s dimensionality-reduction defense (cw2017 §4.2).

Two variants, both restricting the classifier to the first K principal components:

- the 100-100-10 fully connected network on the first K PCA coefficients:
  :class:`advrepro.models.PCAFullyConnected` (conf/model/pca_fc.yaml), which fits its own
  projection; :func:`pca_fully_connected` builds one from an already fitted :class:`PCA`;
- the "PCA and back" preprocessing in front of any classifier (the convolutional variant
  Bhagoji et al. present but did not use): :class:`PCAProjected`.

Both are differentiable affine maps before the network, so C&W's attack differentiates
through them unchanged (cw2017 §4.2, perfect knowledge).
"""

from __future__ import annotations

from torch import Tensor, nn

from advrepro.defenses.pca import PCA
from advrepro.models.mlp import PCAFullyConnected


class PCAProjected(nn.Module):
    """x -> model(reconstruct_k(x)): the image projected onto the mean plus the span of the
    first ``k`` components, then the classifier. ``hidden`` is forwarded when the model has
    one (so the detectors reading hidden layers still work)."""

    def __init__(self, model: nn.Module, pca: PCA, k: int) -> None:
        super().__init__()
        if not 1 <= k <= pca.n_components:
            raise ValueError(f"k must be in 1..{pca.n_components}, got {k}")
        self.model = model
        self.pca = pca
        self.k = k

    def project(self, x: Tensor) -> Tensor:
        return self.pca.reconstruct(x, self.k)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.project(x))

    def hidden(self, x: Tensor) -> dict[str, Tensor]:
        return self.model.hidden(self.project(x))

    def extra_repr(self) -> str:
        return f"k={self.k}"


def pca_fully_connected(pca: PCA, k: int, hidden: int = 100, num_classes: int = 10
                        ) -> PCAFullyConnected:
    """Bhagoji et al.'s 100-100-10 network on the first ``k`` coefficients of ``pca``
    (cw2017 §4.2): the project's :class:`PCAFullyConnected` with ``pca``'s projection copied
    into its buffers (its own ``fit_preprocessing`` would fit the same one by SVD)."""
    if not 1 <= k <= pca.n_components:
        raise ValueError(f"k must be in 1..{pca.n_components}, got {k}")
    net = PCAFullyConnected(k=k, input_dim=pca.dim, hidden=hidden, num_classes=num_classes)
    net.mean.copy_(pca.mean)
    net.components.copy_(pca.components[:, :k])
    return net.to(pca.mean.device)

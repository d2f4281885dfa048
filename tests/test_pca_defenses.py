"""Input PCA (Hendrycks & Gimpel, cw2017 §4.1) and dimensionality reduction (Bhagoji et al.,
cw2017 §4.2) on tiny tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advrepro.defenses.dimensionality import PCAProjected, pca_fully_connected
from advrepro.defenses.pca import (
    PCA,
    InputPCADetector,
    component_scores,
    late_component_mass,
    project_to_leading,
    variance_share_of_last,
)


def _low_rank(n: int = 200, d: int = 12, rank: int = 3, seed: int = 0):
    """n points mean + A B with orthonormal B (rank x d) and decreasing column scales of A."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))
    scales = torch.tensor([5.0, 2.0, 0.5], dtype=torch.float64)[:rank]
    coef = torch.randn(n, rank, generator=g, dtype=torch.float64) * scales
    coef -= coef.mean(0)
    mean = torch.rand(d, generator=g, dtype=torch.float64)
    return (coef @ basis.T + mean).float(), basis.float(), mean.float(), coef.float()


def test_pca_of_a_low_rank_matrix_recovers_its_subspace_and_variances():
    x, basis, mean, coef = _low_rank()
    pca = PCA.fit(x)
    assert pca.n_components == 12
    assert torch.allclose(pca.mean, mean, atol=1e-5)
    # the first 3 components span the generating subspace; the rest carry no variance
    v3 = pca.components[:, :3]
    assert torch.allclose(v3 @ v3.T, basis @ basis.T, atol=1e-4)
    assert torch.allclose(pca.components.T @ pca.components, torch.eye(12), atol=1e-5)
    expected = torch.linalg.svdvals(coef.double()).pow(2) / (len(x) - 1)
    assert torch.allclose(pca.explained_variance[:3].double(), expected, rtol=1e-4)
    assert pca.explained_variance[3:].abs().max() < 1e-8
    assert (pca.explained_variance[:-1] >= pca.explained_variance[1:]).all()
    # rank-3 data: the last 9 of 12 components carry (numerically) nothing
    assert variance_share_of_last(pca, 9) < 1e-10
    assert variance_share_of_last(pca, 12) == pytest.approx(1.0)
    assert variance_share_of_last(pca, 0) == 0.0
    # 3 components reconstruct the data exactly; transform and inverse are consistent
    assert torch.allclose(pca.reconstruct(x, 3), x, atol=1e-4)
    assert torch.allclose(pca.inverse_transform(pca.transform(x)), x, atol=1e-4)


def test_component_score_and_late_mass_equal_the_hand_computation():
    x, *_ = _low_rank()
    pca = PCA.fit(x)
    imgs = torch.rand(5, 12)
    coeffs = torch.stack([(imgs[i] - pca.mean) @ pca.components for i in range(5)])
    # S(j) = (1/N) sum_i |PCA(X_i)_j| (cw2017 §4.1), one image and five (in chunks of 2)
    assert torch.allclose(component_scores(pca, imgs[:1]), coeffs[0].abs(), atol=1e-6)
    assert torch.allclose(component_scores(pca, imgs, batch_size=2), coeffs.abs().mean(0),
                          atol=1e-6)
    j = 7
    hand = sum(abs(float((imgs[i] - pca.mean) @ pca.components[:, j])) for i in range(5)) / 5
    assert float(component_scores(pca, imgs)[j]) == pytest.approx(hand, abs=1e-6)
    assert torch.allclose(late_component_mass(pca, imgs, 4), coeffs[:, 4:].abs().mean(1),
                          atol=1e-6)


def test_input_pca_detector_flags_the_requested_share_of_clean_images():
    g = torch.Generator().manual_seed(1)
    train = torch.rand(300, 1, 4, 4, generator=g)
    pca = PCA.fit(train)
    det = InputPCADetector(pca, k=6)
    clean = torch.rand(400, 1, 4, 4, generator=g)
    det.set_threshold_at_fpr(clean, 0.1)
    assert abs(float((det(clean) > 0).float().mean()) - 0.1) <= 0.01
    # noise along the late components is flagged
    late = pca.components[:, 6:].sum(1).view(1, 1, 4, 4)
    assert (det(clean[:20] + 3 * late) > 0).all()


def test_projection_onto_the_first_k_components_leaves_late_ones_unchanged():
    g = torch.Generator().manual_seed(2)
    pca = PCA.fit(torch.rand(100, 1, 5, 5, generator=g))
    x = torch.rand(4, 1, 5, 5, generator=g)
    delta = torch.randn(4, 1, 5, 5, generator=g)
    k = 8
    step = project_to_leading(pca, delta, k)
    assert step.shape == delta.shape
    before, after = pca.transform(x), pca.transform(x + step)
    assert torch.allclose(after[:, k:], before[:, k:], atol=1e-5)
    # the leading coefficients move by exactly those of delta; the projection is idempotent
    assert torch.allclose(after[:, :k] - before[:, :k],
                          delta.flatten(1) @ pca.components[:, :k], atol=1e-5)
    assert torch.allclose(project_to_leading(pca, step, k), step, atol=1e-5)
    # so the detector's statistic (for any k' >= k) does not move
    det = InputPCADetector(pca, k=k)
    assert torch.allclose(det.statistic(x + step), det.statistic(x), atol=1e-5)


class _Flat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 3)

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_pca_projected_is_differentiable_and_the_full_basis_is_the_identity():
    g = torch.Generator().manual_seed(3)
    pca = PCA.fit(torch.rand(50, 1, 4, 4, generator=g))
    model = _Flat()
    x = torch.rand(3, 1, 4, 4, generator=g)
    full = PCAProjected(model, pca, 16)
    assert torch.allclose(full.project(x), x, atol=1e-5)
    assert torch.allclose(full(x), model(x), atol=1e-5)
    # with k < D the gradient flows to the input and lies in the span of the first k
    reduced = PCAProjected(model, pca, 5)
    x.requires_grad_(True)
    reduced(x).sum().backward()
    grad = x.grad.flatten(1)
    assert grad.abs().sum() > 0
    assert torch.allclose(grad @ pca.components[:, 5:], torch.zeros(3, 11), atol=1e-5)


def test_pca_fully_connected_uses_the_given_projection():
    g = torch.Generator().manual_seed(4)
    train = torch.rand(60, 1, 4, 4, generator=g)
    pca = PCA.fit(train)
    net = pca_fully_connected(pca, 6, hidden=100, num_classes=10)
    x = torch.rand(2, 1, 4, 4, generator=g)
    assert torch.allclose(net.project(x), pca.transform(x, 6), atol=1e-5)
    assert net(x).shape == (2, 10)
    assert [m.out_features for m in net.modules() if isinstance(m, nn.Linear)] == [100, 100, 10]
    # the model's own fit finds the same subspace (components up to sign)
    own = type(net)(k=6, input_dim=16)
    own.fit_preprocessing(train)
    assert torch.allclose(own.components.abs(), net.components.abs(), atol=1e-4)


def test_randomized_pca_finds_the_leading_subspace_of_a_low_rank_matrix():
    x, basis, *_ = _low_rank(n=80, d=12)
    pca = PCA.fit_lowrank(x, 3)
    v = pca.components
    assert v.shape == (12, 3)
    assert torch.allclose(v @ v.T, basis @ basis.T, atol=1e-4)
    assert torch.allclose(pca.explained_variance, PCA.fit(x).explained_variance[:3], rtol=1e-4)


def test_carlini_wagner_differentiates_through_the_pca_projection():
    """cw2017 §4.2, perfect knowledge: C&W on F(reconstruct_k(x)) finds targeted examples."""
    from advrepro.attacks import CarliniWagnerL2
    from advrepro.defenses.system import DefendedSystem

    g = torch.Generator().manual_seed(5)
    pca = PCA.fit(torch.rand(80, 1, 4, 4, generator=g))
    torch.manual_seed(0)
    system = DefendedSystem(PCAProjected(_Flat(), pca, 6))
    x = torch.rand(6, 1, 4, 4, generator=g)
    with torch.no_grad():
        targets = (system.logits(x).argmax(1) + 1) % 3
    attack = CarliniWagnerL2(binary_search_steps=4, max_iterations=100, learning_rate=0.1,
                             initial_const=1.0, progress=False)
    result = attack(system.objective(targeted=True), x, targets)
    assert result.success.all()
    assert (system.predict(result.adversarial) == targets).all()

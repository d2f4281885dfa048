"""Li & Li's hidden-layer PCA cascade (cw2017 §4.3) on tiny tensors."""

from __future__ import annotations

import torch
from torch import nn

from advrepro.defenses.detectors import DetectorDefense
from advrepro.defenses.hidden_pca import (
    HiddenLayerPCACascade,
    LayerSVM,
    cascade_accepts,
    cascade_rates,
    conv_layer_outputs,
    false_positive_rate,
    fit_cascade,
    true_positive_rate,
)
from advrepro.defenses.pca import PCA


def test_cascade_accepts_only_if_every_stage_accepts():
    scores = torch.tensor([
        [-1.0, 0.5, -0.2, 0.0, 2.0],   # stage 1
        [-0.3, -1.0, 0.1, -5.0, 3.0],  # stage 2
        [-2.0, -1.0, -1.0, 0.0, -1.0],  # stage 3
    ])
    # column 0 all accept; 1 rejected by stage 1; 2 by stage 2; 3 on the boundary (0 accepts)
    assert cascade_accepts(scores).tolist() == [True, False, False, True, False]
    assert true_positive_rate(torch.tensor([True, True, False, True])) == 0.75
    assert false_positive_rate(torch.tensor([False, True, False, False, False])) == 0.2


class _TwoConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3),
                                  nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


def _toy(n: int, seed: int):
    """Natural: smooth noise; adversarial: the same plus a fixed checkerboard pattern."""
    g = torch.Generator().manual_seed(seed)
    natural = 0.5 + 0.1 * torch.randn(n, 1, 6, 6, generator=g)
    checker = ((torch.arange(6)[:, None] + torch.arange(6)[None]) % 2).float() - 0.5
    adversarial = 0.5 + 0.1 * torch.randn(n, 1, 6, 6, generator=g) + 0.4 * checker
    return natural, adversarial


def test_conv_layer_outputs_are_the_conv_modules_outputs():
    model = _TwoConv()
    x = torch.rand(3, 1, 6, 6)
    first, second = conv_layer_outputs(model, x)
    assert torch.allclose(first, model.body[0](x).flatten(1))
    assert torch.allclose(second, model.body[2](model.body[1](model.body[0](x))).flatten(1))


def test_a_separable_toy_problem_is_separated_and_the_logit_is_the_max_stage():
    model = _TwoConv().eval()
    natural, adversarial = _toy(200, 0)
    cascade = fit_cascade(model, natural, adversarial, k=5)
    assert len(cascade.stages) == 2
    test_nat, test_adv = _toy(100, 1)
    rates = cascade_rates(cascade, test_nat, test_adv)
    assert rates.first_stage_tpr >= 0.98 and rates.first_stage_fpr <= 0.02
    assert rates.cascade_tpr >= rates.first_stage_tpr  # more stages only reject more
    assert rates.cascade_fpr <= 0.05
    # D(x) = max_i C_i(x): > 0 exactly when the cascade rejects; differentiable in x
    x = torch.cat([test_nat[:5], test_adv[:5]]).requires_grad_(True)
    d = cascade(x)
    assert torch.equal(d > 0, ~cascade.accepts(x))
    d.sum().backward()
    assert x.grad.abs().sum() > 0
    # as a member of the detector defense: rejected inputs predict -1
    system = DetectorDefense(model, {"li_cascade": cascade}, "li")
    assert (system.predict(test_adv[:10]) == -1).float().mean() >= 0.9


def test_layer_svm_decision_is_the_affine_map_of_standardised_pca_coefficients():
    g = torch.Generator().manual_seed(5)
    nat = torch.randn(60, 10, generator=g)
    adv = torch.randn(60, 10, generator=g) + 2.0
    stage = LayerSVM.fit(nat, adv, k=3)
    assert isinstance(stage.pca, PCA) and stage.pca.n_components == 3
    h = torch.randn(4, 10, generator=g)
    z = ((h - stage.pca.mean) @ stage.pca.components - stage.scale_mean) / stage.scale_std
    assert torch.allclose(stage(h), z @ stage.weight + stage.bias, atol=1e-5)
    # one stage per conv layer at most
    try:
        HiddenLayerPCACascade(_TwoConv(), [stage, stage, stage])
    except ValueError:
        pass
    else:
        raise AssertionError("three stages accepted for two conv layers")

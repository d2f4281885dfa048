"""Feinman et al.'s detectors (cw2017 §5.2, §6.1) and their adaptive attacks, on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from advrepro.attacks import CarliniWagnerL2, TwoPhaseCarliniWagnerL2
from advrepro.data import random_targets
from advrepro.defenses.detectors import (
    DetectorDefense,
    DropoutUncertaintyDetector,
    KernelDensityDetector,
    set_threshold_at_fpr,
)
from advrepro.defenses.randomness import DropoutSamples
from advrepro.defenses.system import DefendedSystem
from advrepro.models import MetzenResNet

CW = dict(binary_search_steps=5, max_iterations=150, learning_rate=0.1, initial_const=1.0,
          progress=False)


def _kde(tiny_bench, tiny_model, fpr: float = 0.2) -> KernelDensityDetector:
    """References: 200 training images; threshold: on the other 100 (not references)."""
    x, y = tiny_bench.train_set()
    with torch.no_grad():
        feats = tiny_model.hidden(x[:200])["final_hidden"]
    kde = KernelDensityDetector(tiny_model, feats, y[:200], sigma=1.2)
    set_threshold_at_fpr(kde, x[200:], fpr)
    return kde


def test_kernel_density_matches_its_formula(tiny_bench, tiny_model, tiny_sample):
    """log KDE(x) = log mean_{s in X_t} exp(-||f(x) - f(s)||^2 / (2 sigma^2)) (cw2017 §5.2)."""
    kde = _kde(tiny_bench, tiny_model)
    x, _ = tiny_sample
    x = x[:4]
    classes = torch.tensor([0, 3, 7, 9])
    got = kde.log_density(x, classes)
    feats = tiny_model.hidden(x)["final_hidden"]
    for i, t in enumerate(classes.tolist()):
        refs = kde.reference[kde.reference_labels == t]
        d2 = (refs - feats[i]).pow(2).sum(1)
        expected = torch.logsumexp(-d2 / (2 * 1.2**2), 0) - math.log(len(refs))
        assert torch.allclose(got[i], expected, atol=1e-4)
    # by default the class is the predicted one
    predicted = tiny_model(x).argmax(1)
    assert torch.allclose(kde.log_density(x), kde.log_density(x, predicted))


def test_threshold_flags_the_requested_share_of_clean_images(tiny_bench, tiny_model):
    x, _ = tiny_bench.train_set()
    kde = _kde(tiny_bench, tiny_model, fpr=0.2)
    flagged = float((kde(x[200:]) > 0).float().mean())
    assert abs(flagged - 0.2) <= 0.02


def test_dropout_uncertainty_is_a_fixed_function_of_the_image(tiny_model, tiny_sample):
    """U(x) (cw2017 §6.1) over L fixed draws: >= 0, the same alone or in any batch, and the
    variance of the draws' softmax outputs."""
    x, _ = tiny_sample
    detector = DropoutUncertaintyDetector(tiny_model, passes=8)
    u = detector.uncertainty(x)
    assert (u >= -1e-6).all() and (u > 0).any()
    alone = torch.cat([detector.uncertainty(x[i:i + 1]) for i in range(4)])
    assert torch.allclose(u[:4], alone, atol=1e-6)
    assert torch.allclose(detector.uncertainty(x.flip(0)).flip(0), u, atol=1e-6)
    probs = DropoutSamples(tiny_model, detector.draws.seeds)(x).softmax(2)
    assert torch.allclose(u, probs.var(0, unbiased=False).sum(1), atol=1e-6)
    # the attacker's samples (seeds 0 ... K-1) are not the defender's draws
    assert min(detector.draws.seeds) >= 1000


class _DropoutRegisteredLast(torch.nn.Module):
    """Two dropout layers registered in the reverse of the order the forward pass uses them."""

    def __init__(self) -> None:
        super().__init__()
        self.late_dropout = torch.nn.Dropout(0.3)
        self.early_dropout = torch.nn.Dropout(0.5)
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc1 = torch.nn.Linear(4 * 26 * 26, 32)
        self.fc2 = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.early_dropout(torch.relu(self.conv(x)).flatten(1))
        return self.fc2(self.late_dropout(torch.relu(self.fc1(h))))


@pytest.mark.parametrize("model_name", ["cw_mnist", "resnet", "registered_out_of_order"])
def test_dropout_samples_are_the_k_masked_networks(tiny_model, model_name):
    """The batched K x B pass (shared layers run once) gives, for each k, the network with
    mask k applied at every dropout layer, run alone; its input gradient is theirs summed.
    Masks follow the order the forward pass reaches the layers, not their registration."""
    torch.manual_seed(0)
    model = {"cw_mnist": lambda: tiny_model,
             "resnet": lambda: MetzenResNet(1, dropout=0.5).eval(),
             "registered_out_of_order": lambda: _DropoutRegisteredLast().eval()}[model_name]()
    resnet = model_name == "resnet"
    x = torch.rand(5, *((3, 32, 32) if resnet else (1, 28, 28)), requires_grad=True)
    samples = DropoutSamples(model, [3, 4, 5])
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    seen: list[int] = []
    hook = first_conv.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    logits = samples(x)
    hook.remove()
    assert seen == [5]  # the layers before the first dropout layer ran once, on B images
    logits.sum().backward()
    batched_grad, x.grad = x.grad.clone(), None
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    alone = []
    for k in range(3):
        masks = [samples.mask(layer)[k] for layer in layers]
        handles = [layer.register_forward_hook(lambda mod, inp, out, mask=mask: inp[0] * mask)
                   for layer, mask in zip(layers, masks, strict=True)]
        alone.append(model(x))
        for h in handles:
            h.remove()
    alone = torch.stack(alone)
    assert logits.shape == alone.shape == (3, 5, 10)
    assert torch.allclose(logits, alone, atol=1e-5)
    alone.sum().backward()
    assert torch.allclose(batched_grad, x.grad, atol=1e-5)
    with pytest.raises(KeyError, match="not a dropout layer"):
        samples.mask(torch.nn.Dropout(0.5))
    if model_name == "registered_out_of_order":  # seed 3's first draw goes to the layer used first
        first_draw = torch.rand(4 * 26 * 26, generator=torch.Generator().manual_seed(3)) >= 0.5
        assert torch.equal(samples.mask(model.early_dropout)[0, 0], first_draw.float() / 0.5)


def test_resnet_with_dropout_is_sampled_by_the_uncertainty_detector():
    """The CIFAR-10 dropout network (cw2017 §6.1): dropout=0 keeps the paper ResNet's modules
    and state dict, so cached checkpoints still load; dropout > 0 gives a network whose
    dropout draws disagree and whose eval mode is deterministic."""
    plain, with_dropout = MetzenResNet(1), MetzenResNet(1, dropout=0.5)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    assert plain.state_dict().keys() == with_dropout.state_dict().keys()
    with_dropout.load_state_dict(plain.state_dict())
    x = torch.rand(6, 3, 32, 32)
    with_dropout.eval()
    assert torch.equal(with_dropout(x), plain.eval()(x))
    u = DropoutUncertaintyDetector(with_dropout, passes=8).uncertainty(x)
    assert (u > 0).all()
    with pytest.raises(ValueError, match="dropout"):
        MetzenResNet(1, dropout=1.0)


@pytest.mark.parametrize("two_phase", [False, True], ids=["one_phase", "two_phase"])
@pytest.mark.parametrize("targeted", [True, False])
def test_adaptive_attack_on_kde_alone_is_accepted(tiny_bench, tiny_model, tiny_sample, targeted,
                                                  two_phase):
    """cw2017 §5.2: C&W's loss plus max(-log KDE_t(x') - eps, 0), t the target (or the best
    other class), gives examples the kernel density accepts (scored with all references, not
    only the attacker's sample), in one phase or in the paper's two."""
    x, y = tiny_sample
    kde = _kde(tiny_bench, tiny_model)
    system = DetectorDefense(tiny_model, {"kde": kde}, "kde")
    labels = random_targets(y, 10, seed=0) if targeted else y
    attack = (TwoPhaseCarliniWagnerL2(CarliniWagnerL2(**CW), CarliniWagnerL2(**CW)) if two_phase
              else CarliniWagnerL2(**CW))
    result = attack.run(system, x, labels, targeted=targeted)
    ok = result.success
    assert ok.float().mean() >= 0.5
    assert (kde(result.adversarial[ok]) <= 0).all()
    predicted = system.predict(result.adversarial[ok])
    assert (predicted == labels[ok]).all() if targeted else ((predicted != y[ok]).all()
                                                            and (predicted >= 0).all())


def test_dropout_attack_margin_makes_examples_pass_fresh_masks(tiny_model, tiny_sample):
    """cw2017 §6.1 with a confidence margin on every one of the K attack masks: the examples
    are accepted by the detector, whose own L draws the attacker never saw."""
    x, y = tiny_sample
    detector = DropoutUncertaintyDetector(tiny_model, passes=10)
    set_threshold_at_fpr(detector, x, 0.05)
    system = DetectorDefense(tiny_model, {"dropout": detector}, "dropout")
    system.attack_dropout_samples, system.attack_dropout_margin = 5, 3.0
    result = CarliniWagnerL2(**CW).run(system, x, y, targeted=False)
    ok = result.success
    assert ok.float().mean() >= 0.8
    adv = result.adversarial[ok]
    assert (detector(adv) <= 0).all()
    logits = DropoutSamples(tiny_model, list(range(5)))(adv)  # K x B x classes
    true = torch.nn.functional.one_hot(y[ok], 10).bool().expand_as(logits)
    own = logits.masked_fill(~true, float("-inf")).amax(2)
    others = logits.masked_fill(true, float("-inf")).amax(2)
    assert (others - own >= 3.0 - 1e-4).all()  # every attack mask, with margin kappa


def test_second_phase_starts_at_the_first_phases_examples(tiny_model, tiny_sample):
    """Phase two's first candidate is phase one's example (the detector is ignored by phase one),
    and distortion is measured from the original, not from that starting point."""
    x, y = tiny_sample
    seen: list[torch.Tensor] = []

    class Recording(DefendedSystem):
        def objective(self, targeted, kappa=0.0):
            inner = super().objective(targeted, kappa)

            def record(x_adv, labels):
                if not seen:
                    seen.append(x_adv.detach().clone())
                return inner(x_adv, labels)
            return record

    system = Recording(tiny_model)
    first = CarliniWagnerL2(**CW)
    phase_one = first(DefendedSystem(tiny_model).objective(False), x, y)
    second = CarliniWagnerL2(**{**CW, "binary_search_steps": 1, "max_iterations": 1})
    result = TwoPhaseCarliniWagnerL2(first, second).run(system, x, y, targeted=False)
    ok = phase_one.success
    assert ok.any()
    assert torch.allclose(seen[0][ok], phase_one.adversarial[ok], atol=1e-4)
    assert torch.allclose(seen[0][~ok], x[~ok], atol=1e-4)
    done = result.success
    assert torch.allclose(result.l2[done], (result.adversarial - x)[done].flatten(1).norm(dim=1))
    assert result.iterations > second.max_iterations

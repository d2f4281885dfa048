import math

import pytest
import torch
from torch import nn

from advrepro.attacks import (
    FGSM,
    CarliniWagnerL2,
    GumbelQuantized,
    IterativeFGSM,
    LeastLikelyFGSM,
    RandFGSM,
    TwoPhaseCarliniWagnerL2,
    margin_loss,
)
from advrepro.attacks.cw import _BatchedAdam
from advrepro.attacks.resume import resumable
from advrepro.attacks.objectives import ExpectationObjective
from advrepro.defenses.detectors import BinaryDetector, DetectorDefense
from advrepro.defenses.preprocessing import SqueezedClassifier
from advrepro.defenses.randomness import DropoutSamples
from advrepro.defenses.squeezers import BitDepthReduction
from advrepro.defenses.system import DefendedSystem
from advrepro.errors import CheckpointError
from advrepro.io import safe_torch_load

CW = dict(binary_search_steps=5, max_iterations=150, learning_rate=0.1, initial_const=1.0,
          progress=False)


@pytest.mark.parametrize("attack", [
    FGSM(0.1), LeastLikelyFGSM(0.1), IterativeFGSM(0.1, steps=5), RandFGSM(0.1, alpha=0.05),
])
def test_gradient_attacks_stay_in_the_epsilon_ball_and_the_box(attack, tiny_model, tiny_sample):
    x, y = tiny_sample
    result = attack(tiny_model, x, y)
    delta = (result.adversarial - x).abs().amax()
    assert delta <= 0.1 + 1e-6
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    # success is what the model says about the returned examples
    pred = tiny_model(result.adversarial).argmax(1)
    assert torch.equal(result.success, pred != y)


def test_fgsm_raises_the_loss_and_ifgsm_raises_it_more(tiny_model, tiny_sample):
    x, y = tiny_sample
    loss = nn.functional.cross_entropy
    clean = loss(tiny_model(x), y)
    one = loss(tiny_model(FGSM(0.2)(tiny_model, x, y).adversarial), y)
    many = loss(tiny_model(IterativeFGSM(0.2, steps=10)(tiny_model, x, y).adversarial), y)
    assert one > clean and many > one


def test_rand_fgsm_requires_alpha_below_epsilon():
    with pytest.raises(ValueError):
        RandFGSM(0.1, alpha=0.1)


def test_predicted_labels_option_uses_the_models_prediction(tiny_model, tiny_sample):
    x, y = tiny_sample
    wrong = (y + 1) % 10
    a = FGSM(0.1, use_predicted_labels=True)(tiny_model, x, wrong).adversarial
    b = FGSM(0.1)(tiny_model, x, y).adversarial
    assert torch.equal(a, b)  # the sample is correctly classified, so prediction == y


def test_batched_adam_matches_torch_adam_row_by_row():
    torch.manual_seed(0)
    w = torch.randn(3, 5)
    ref = w.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.05)
    mine = _BatchedAdam(0.05)
    mine.reset(w)
    rows = torch.arange(3)
    for _ in range(4):
        g = torch.randn(3, 5)
        opt.zero_grad()
        ref.grad = g.clone()
        opt.step()
        mine.step(w, rows, g)
    assert torch.allclose(w, ref.detach(), atol=1e-6)


def test_margin_loss_signs():
    logits = torch.tensor([[3.0, 1.0, 0.0]])
    assert margin_loss(logits, torch.tensor([0]), targeted=False).item() == 2.0
    assert margin_loss(logits, torch.tensor([1]), targeted=True).item() == 2.0
    assert margin_loss(logits, torch.tensor([0]), targeted=True, kappa=1.0).item() == -1.0
    # with a reject class, an untargeted attack must beat both the label and the reject class
    g = torch.tensor([[1.0, 0.5, 4.0]])
    assert margin_loss(g, torch.tensor([0]), targeted=False, reject_class=-1).item() == 3.5


def test_cw_untargeted_succeeds_on_every_image_and_reports_true_distances(tiny_model, tiny_sample):
    x, y = tiny_sample
    result = CarliniWagnerL2(**CW)(DefendedSystem(tiny_model).objective(False), x, y)
    assert result.success.all()
    pred = tiny_model(result.adversarial).argmax(1)
    assert (pred != y).all()
    d = (result.adversarial - x).flatten(1).norm(dim=1)
    assert torch.allclose(result.l2, d)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert torch.isfinite(result.const).all()  # each image records its own winning constant


def test_cw_targeted_reaches_the_targets(tiny_model, tiny_sample):
    x, y = tiny_sample
    target = (y + 1) % 10
    attack = CarliniWagnerL2(**{**CW, "binary_search_steps": 6, "max_iterations": 300})
    result = attack(DefendedSystem(tiny_model).objective(True), x, target)
    assert result.success.float().mean() >= 0.9
    pred = tiny_model(result.adversarial[result.success]).argmax(1)
    assert torch.equal(pred, target[result.success])


def test_cw_high_confidence_examples_reach_the_margin_kappa(tiny_model, tiny_sample):
    x, y = tiny_sample
    target = (y + 1) % 10
    kappa = 5.0
    attack = CarliniWagnerL2(**{**CW, "binary_search_steps": 6, "max_iterations": 300})
    result = attack(DefendedSystem(tiny_model).objective(True, kappa), x, target)
    assert result.success.float().mean() >= 0.9
    z = tiny_model(result.adversarial[result.success])
    t = target[result.success]
    others = z.masked_fill(torch.nn.functional.one_hot(t, 10).bool(), float("-inf")).amax(1)
    assert (z.gather(1, t[:, None]).squeeze(1) - others >= kappa - 1e-4).all()


def test_cw_binary_search_lowers_distortion(tiny_model, tiny_sample):
    x, y = tiny_sample
    obj = DefendedSystem(tiny_model).objective(False)
    one = CarliniWagnerL2(**{**CW, "binary_search_steps": 1, "initial_const": 100.0})(obj, x, y)
    search = CarliniWagnerL2(**{**CW, "initial_const": 100.0})(obj, x, y)
    assert search.mean_l2() < one.mean_l2()


def test_surrogate_attack_fools_the_exact_one_bit_system(tiny_model, tiny_sample):
    """he2017 §3.1.1: optimise without the quantiser, accept only exact-system failures."""
    x, y = tiny_sample
    system = SqueezedClassifier(tiny_model, BitDepthReduction(1), differentiable=False,
                                name="bit_depth_1")
    attack = CarliniWagnerL2(**{**CW, "restarts": 2, "random_start": 0.1})
    result = attack.run(system, x, y, targeted=False)
    assert result.success.float().mean() >= 0.5
    exact = tiny_model(BitDepthReduction(1)(result.adversarial[result.success])).argmax(1)
    assert (exact != y[result.success]).all()


class _BrightnessDetector(nn.Module):
    """A toy detector: flags images whose mean brightness rises above the clean mean."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        return (x.flatten(1).mean(1) - self.threshold) * 100


def test_g_of_x_examples_evade_every_detector_they_were_built_against(tiny_model, tiny_sample):
    """cw2017 §3.1 / he2017 §5: C&W on G(x) with D = max_j D_j."""
    x, y = tiny_sample
    clean_mean = float(x.flatten(1).mean(1).max())
    detectors = {"bright": _BrightnessDetector(clean_mean + 0.002),
                 "net": BinaryDetector(nn.Sequential(nn.Flatten(), nn.Linear(784, 2)))}
    system = DetectorDefense(tiny_model, detectors, "toy")
    result = CarliniWagnerL2(**CW).run(system, x, y, targeted=False)
    ok = result.success
    assert ok.float().mean() >= 0.5
    adv = result.adversarial[ok]
    for d in detectors.values():
        assert (d(adv) <= 0).all()
    assert (tiny_model(adv).argmax(1) != y[ok]).all()
    assert (system.predict(adv) != -1).all()


def test_expectation_over_dropout_samples_fools_every_sample(tiny_model, tiny_sample):
    """cw2017 §6.1: the loss summed over K fixed dropout masks."""
    x, y = tiny_sample
    samples = DropoutSamples(tiny_model, seeds=[0, 1, 2])
    logits = samples(x)
    assert logits.shape == (3, len(x), 10)
    assert not torch.equal(logits[0], logits[1])  # different masks
    result = CarliniWagnerL2(**CW)(ExpectationObjective(samples, targeted=False), x, y)
    ok = result.success
    assert ok.float().mean() >= 0.8
    assert (samples(result.adversarial[ok]).argmax(2) != y[ok]).all()


def test_dropout_samples_are_fixed_networks(tiny_model, tiny_sample):
    """Z_k(x) depends on x and the seed only: not on the batch, the call or the model's mode."""
    x, _ = tiny_sample
    samples = DropoutSamples(tiny_model, seeds=[5, 6])
    batch = samples(x)
    alone = torch.cat([samples(x[i:i + 1]) for i in range(3)], dim=1)
    assert torch.allclose(batch[:, :3], alone, atol=1e-5)
    again = DropoutSamples(tiny_model, seeds=[6])(x[3:7])
    assert torch.allclose(batch[1, 3:7], again[0], atol=1e-5)
    assert not torch.allclose(batch[0], tiny_model(x), atol=1e-3)  # masks applied
    tiny_model.train()
    try:
        assert torch.allclose(samples(x), batch, atol=1e-5)  # the layer's own sampling is off
    finally:
        tiny_model.eval()


def test_gumbel_parameterisation_searches_quantised_images(tiny_model, tiny_sample):
    """he2017 Appendix A: every candidate is already quantised."""
    x, y = tiny_sample
    param = GumbelQuantized(bits=2)
    attack = CarliniWagnerL2(**{**CW, "parameterization": param, "learning_rate": 0.1})
    result = attack(DefendedSystem(tiny_model).objective(False), x, y)
    assert result.success.any()
    adv = result.adversarial[result.success]
    assert torch.allclose(adv * 3, torch.round(adv * 3), atol=1e-5)
    bound = (BitDepthReduction(2)(x) - x).flatten(1).norm(dim=1)[result.success]
    assert (result.l2[result.success] >= bound - 1e-5).all()
    assert math.isfinite(result.mean_l2())


class _Interrupted(Exception):
    pass


def _count_steps(attack: CarliniWagnerL2, stop_at: float = math.inf) -> list[int]:
    """Count ``attack``'s binary-search steps; raise :class:`_Interrupted` in step ``stop_at``."""
    steps = [0]
    optimise = attack._optimise

    def counted(*args, **kwargs):
        steps[0] += 1
        if steps[0] >= stop_at:
            raise _Interrupted
        return optimise(*args, **kwargs)

    attack._optimise = counted
    return steps


def _cw(**overrides) -> CarliniWagnerL2:
    return CarliniWagnerL2(**{**CW, "binary_search_steps": 3, "max_iterations": 30,
                              "restarts": 2, "random_start": 0.05, **overrides})


def _assert_same_result(a, b) -> None:
    assert torch.equal(a.adversarial, b.adversarial)
    assert torch.equal(a.success, b.success)
    assert torch.equal(a.restart, b.restart)
    assert torch.allclose(a.const, b.const, equal_nan=True)
    assert a.iterations == b.iterations


@pytest.mark.parametrize("gumbel", [False, True], ids=["tanh", "gumbel"])
def test_interrupted_cw_resumes_to_the_uninterrupted_result(tiny_model, tiny_sample, tmp_path,
                                                            gumbel):
    """Killed in the second step of its second restart and rerun in the same directory, C&W
    continues from its last finished step (bounds, constants and generators restored: random
    restarts, Gumbel samples) and returns exactly what an uninterrupted run returns."""
    x, y = tiny_sample[0][:6], tiny_sample[1][:6]
    extra = {"parameterization": GumbelQuantized(bits=2)} if gumbel else {}
    objective = DefendedSystem(tiny_model).objective(False)
    torch.manual_seed(0)
    full = _cw(**extra)(objective, x, y)

    torch.manual_seed(0)
    interrupted = _cw(**extra)
    _count_steps(interrupted, stop_at=5)
    with pytest.raises(_Interrupted), resumable(tmp_path):
        interrupted(objective, x, y)
    (state_file,) = tmp_path.glob("*.pt")
    assert safe_torch_load(state_file)["steps_done"] == 4

    torch.manual_seed(1)  # the saved state, not the caller's seed, sets the RNG
    resumed_attack = _cw(**extra)
    steps = _count_steps(resumed_attack)
    with resumable(tmp_path) as session:
        resumed = resumed_attack(objective, x, y)
    assert steps[0] == 2 and session.resumed_seconds > 0  # only the two unfinished steps ran
    _assert_same_result(resumed, full)

    # other settings do not pick up this state; a corrupt state file is named, with the remedy
    with resumable(tmp_path):
        _cw(**extra, max_iterations=5)(objective, x, y)
    assert len(list(tmp_path.glob("*.pt"))) == 2
    state_file.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="restart this attack"), resumable(tmp_path):
        _cw(**extra)(objective, x, y)


def test_interrupted_two_phase_attack_resumes_in_its_second_phase(tiny_model, tiny_sample,
                                                                   tmp_path):
    """cw2017 §5.2's two C&W searches are two resumable calls: stopped in phase two, the rerun
    takes phase one's result from its state and continues phase two."""
    x, y = tiny_sample[0][:6], tiny_sample[1][:6]
    system = DefendedSystem(tiny_model)

    def two_phase() -> TwoPhaseCarliniWagnerL2:
        return TwoPhaseCarliniWagnerL2(_cw(restarts=1), _cw(restarts=1, initial_const=0.5))

    full = two_phase().run(system, x, y, False)
    interrupted = two_phase()
    _count_steps(interrupted.second, stop_at=2)
    with pytest.raises(_Interrupted), resumable(tmp_path):
        interrupted.run(system, x, y, False)
    resumed_attack = two_phase()
    first_steps = _count_steps(resumed_attack.first)
    second_steps = _count_steps(resumed_attack.second)
    with resumable(tmp_path):
        resumed = resumed_attack.run(system, x, y, False)
    assert (first_steps[0], second_steps[0]) == (0, 2)
    _assert_same_result(resumed, full)

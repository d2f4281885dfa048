"""adam2018 building blocks: VAE insertion, stochastic arrangements, triplet network, concordance
detector, Jacobian penalties and the papers' metrics, on tiny tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advrepro.defenses.concordance import (
    ConcordanceDefense,
    ConcordanceDetector,
    concordance_delta,
    concordance_flags,
)
from advrepro.defenses.system import DefendedSystem
from advrepro.defenses.vae_ensemble import VAEDefendedNetwork, all_arrangements
from advrepro.errors import ConfigError
from advrepro.models import LeNet, LogisticRegression
from advrepro.models.triplet import EmbeddingNet, KNNSoftmaxClassifier, TripletNetwork
from advrepro.models.vae import ActivationVAE
from advrepro.report.transferability import (
    adversarial_success,
    correlations,
    detector_accuracy,
    input_gradient_cosine,
    relevant_transfer,
)
from advrepro.training.jacobian_module import (
    JacobianNormModule,
    JacobianPairModule,
    JacobianRecipe,
)
from advrepro.training.losses import (
    class_input_gradient,
    jacobian_alignment_penalty,
    jacobian_cosine,
    jacobian_norm,
    jacobian_norm_penalty,
    sample_triplets,
    triplet_margin_loss,
)
from advrepro.training.triplet_module import TripletModule, TripletRecipe
from advrepro.training.vae_module import VAEModule, VAERecipe, insertion_point_features

NO_TRAINER = pytest.mark.filterwarnings("ignore:You are trying to `self.log")

LENET_KEYS = ["body.0.weight", "body.0.bias", "body.3.weight", "body.3.bias", "body.7.weight",
              "body.7.bias", "head.weight", "head.bias"]


@pytest.fixture(scope="module")
def lenet():
    torch.manual_seed(0)
    return LeNet().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def small_vaes():
    torch.manual_seed(2)
    return {"input": ActivationVAE([1, 28, 28], hidden=16, latent=4, output="sigmoid"),
            "conv1": ActivationVAE([32, 14, 14], hidden=16, latent=4, output="softplus"),
            "conv2": ActivationVAE([64, 7, 7], hidden=16, latent=4, output="softplus")}


# --- LeNet insertion points -------------------------------------------------------------------

def test_lenet_stages_compose_to_forward_and_keep_parameter_names(lenet, images):
    assert list(lenet.state_dict()) == LENET_KEYS  # cached weights still load
    acts = lenet.activations(images)
    assert acts["conv1"].shape == (4, 32, 14, 14) and acts["conv2"].shape == (4, 64, 7, 7)
    assert torch.equal(acts["input"], images)
    assert torch.equal(acts["logits"], lenet(images))


def test_insertion_point_features_give_the_activation_to_reconstruct(lenet, images):
    acts = lenet.activations(images)
    for point in ("input", "conv1", "conv2"):
        assert torch.equal(insertion_point_features(lenet, point)(images), acts[point])
    with pytest.raises(ConfigError, match="no insertion point"):
        insertion_point_features(lenet, "fc1")


# --- VAE --------------------------------------------------------------------------------------

def test_vae_reconstructs_shape_deterministically_and_its_loss_terms_are_sane(images):
    vae = small_vaes()["input"].eval()
    out = vae(images)
    assert out.shape == images.shape and ((out >= 0) & (out <= 1)).all()
    assert torch.equal(out, vae(images))  # test time: decoder of the posterior mean
    recon, kl = vae.loss_terms(images)
    assert recon.shape == kl.shape == (4,)
    assert torch.isfinite(recon).all() and (kl >= 0).all()


@NO_TRAINER
def test_vae_module_lowers_the_negative_elbo_of_conv2_activations(lenet, images):
    torch.manual_seed(3)
    vae = ActivationVAE([64, 7, 7], hidden=16, latent=4, output="softplus")
    module = VAEModule(vae, VAERecipe(optimizer="adam", lr=1e-3, kl_weight=1.0),
                       steps_per_epoch=1, features=insertion_point_features(lenet, "conv2"))
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = module.training_step((images, torch.zeros(4, dtype=torch.long)), 0)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(module.elbo_loss(images)[0].detach()) < 0.5 * first
    assert all(p.grad is None for p in lenet.parameters())  # the classifier stays frozen
    assert module.configure_optimizers()["optimizer"].param_groups[0]["params"] == list(
        vae.parameters())


def test_vae_and_triplet_modules_run_under_a_lightning_trainer(lenet, images):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(images, torch.tensor([0, 0, 1, 1])), batch_size=4)
    vae = ActivationVAE([64, 7, 7], hidden=8, latent=2, output="softplus")
    modules = [VAEModule(vae, VAERecipe(optimizer="adam", lr=1e-3), steps_per_epoch=1,
                         features=insertion_point_features(lenet, "conv2")),
               TripletModule(EmbeddingNet(hidden=8, embedding_dim=4),
                             TripletRecipe(optimizer="adam", lr=1e-3), steps_per_epoch=1)]
    for module in modules:
        before = [p.detach().clone() for p in module.model.parameters()]
        trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(module, data, data)
        assert any(not torch.equal(b, p) for b, p in zip(before, module.model.parameters(),
                                                          strict=True))
    assert all(p.grad is None for p in lenet.parameters())


# --- VAEDefendedNetwork -----------------------------------------------------------------------

def test_arrangement_000_is_the_bare_classifier_exactly(lenet, images):
    system = VAEDefendedNetwork(lenet, small_vaes(), arrangement=[0, 0, 0]).eval()
    assert isinstance(system, DefendedSystem)
    assert torch.equal(system.logits(images), lenet(images))
    assert torch.equal(system.predict(images), lenet(images).argmax(1))
    defended = VAEDefendedNetwork(lenet, small_vaes(), arrangement=[1, 1, 1]).eval()
    assert not torch.allclose(defended.logits(images), lenet(images))


def test_stochastic_system_is_reproducible_from_its_seed(lenet, images):
    vaes = small_vaes()

    def queries(seed):
        system = VAEDefendedNetwork(lenet, vaes, mode="stochastic", seed=seed).eval()
        return [system.logits(images) for _ in range(3)], system

    first, system = queries(7)
    second, _ = queries(7)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, queries(8)[0], strict=True))
    assert not torch.equal(first[0], first[1])  # a fresh arrangement per query
    system.reseed(7)
    assert torch.equal(system.logits(images), first[0])
    assert not system.surrogate_is_exact


def test_stochastic_query_applies_each_images_drawn_arrangement(lenet, images):
    system = VAEDefendedNetwork(lenet, small_vaes(), mode="stochastic", seed=3).eval()
    drawn = system.draw(4)
    system.reseed(3)
    logits = system.logits(images)
    for i in range(4):
        alone = system.forward_arrangement(images[i : i + 1], drawn[i].int().tolist())
        torch.testing.assert_close(logits[i : i + 1], alone)


def test_stochastic_arrangements_are_uniform_over_the_eight(lenet):
    system = VAEDefendedNetwork(lenet, small_vaes(), mode="stochastic", seed=0)
    bits = system.draw(8000).int()
    codes = bits[:, 0] * 4 + bits[:, 1] * 2 + bits[:, 2]
    freq = torch.bincount(codes, minlength=8).float() / 8000
    assert (freq - 1 / 8).abs().max() < 0.02
    assert len(all_arrangements(3)) == 8 and all_arrangements(3)[1] == (0, 0, 1)


def test_gradients_flow_through_inserted_vaes(lenet, images):
    vaes = small_vaes()
    system = VAEDefendedNetwork(lenet, vaes, arrangement=[1, 1, 1])
    x = images.clone().requires_grad_(True)
    system.logits(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for vae in vaes.values():
        assert vae.mu.weight.grad is not None and vae.mu.weight.grad.abs().sum() > 0


def test_lr_has_the_input_as_only_insertion_point_and_bad_arrangements_fail(lenet):
    lr = LogisticRegression().eval()
    vae = ActivationVAE([1, 28, 28], hidden=8, latent=2)
    system = VAEDefendedNetwork(lr, {"input": vae}, arrangement=[1])
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(system.logits(x), lr(vae(x)))
    assert system.insertion_points == ("input",)
    with pytest.raises(ConfigError, match="0/1 over"):
        VAEDefendedNetwork(lenet, small_vaes(), arrangement=[1, 1])
    with pytest.raises(ConfigError, match="needs VAEs"):
        VAEDefendedNetwork(lenet, {"input": vae}, arrangement=[0, 1, 0])
    with pytest.raises(ConfigError, match="no insertion point"):
        VAEDefendedNetwork(lr, {"conv1": vae})


# --- triplet network --------------------------------------------------------------------------

def test_triplet_loss_is_zero_when_margins_hold_and_positive_otherwise():
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    negative = torch.tensor([[3.0, 0.0], [1.5, 0.0]])  # margin met; violated by 0.5
    per = triplet_margin_loss(anchor, positive, negative, margin=1.0, reduction="none")
    torch.testing.assert_close(per, torch.tensor([0.0, 0.5]))
    assert float(triplet_margin_loss(anchor[:1], positive[:1], negative[:1], 1.0)) == 0.0
    squared = triplet_margin_loss(anchor, positive, negative, 1.0, squared=True,
                                  reduction="none")
    torch.testing.assert_close(squared, torch.tensor([0.0, 0.0]))  # 1 + 1 - 2.25 < 0
    torch.testing.assert_close(triplet_margin_loss(anchor, positive, negative, 1.0),
                               torch.tensor(0.25))


def test_sample_triplets_draws_valid_positives_and_negatives():
    labels = torch.tensor([0, 1, 0, 1, 2, 0])
    a, p, n = sample_triplets(labels, torch.Generator().manual_seed(0))
    assert a.tolist() == [0, 1, 2, 3, 5]  # class 2 has no positive
    assert (labels[a] == labels[p]).all() and (a != p).all()
    assert (labels[a] != labels[n]).all()
    again = sample_triplets(labels, torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip((a, p, n), again, strict=True))


@NO_TRAINER
def test_triplet_module_step_trains_the_shared_embedding():
    torch.manual_seed(0)
    net = EmbeddingNet(hidden=16, embedding_dim=8)
    module = TripletModule(net, TripletRecipe(optimizer="adam", lr=1e-3, margin=1.0),
                           steps_per_epoch=1, seed=0)
    x, y = torch.rand(8, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = module.training_step((x, y), 0)
    loss.backward()
    assert torch.isfinite(loss) and net.net[0].weight.grad is not None
    a, p, n = TripletNetwork(net)(x[:2], x[2:4], x[4:6])
    assert a.shape == p.shape == n.shape == (2, 8)
    torch.testing.assert_close(a, net(x[:2]))


def test_knn_softmax_labels_well_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = torch.arange(3).repeat_interleave(80)
    x = centres[y] + 0.5 * torch.randn(240, 2, generator=gen)
    knn = KNNSoftmaxClassifier.from_training_set(nn.Identity(), x, y, per_class=50, seed=0,
                                                 num_classes=3)
    assert torch.bincount(knn.reference_labels).tolist() == [50, 50, 50]
    test_y = torch.tensor([0, 1, 2, 2, 1])
    test_x = centres[test_y] + 0.5 * torch.randn(5, 2, generator=gen)
    probs = knn.probabilities(test_x)
    assert torch.equal(probs.argmax(1), test_y)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    assert (probs.max(1).values > 0.99).all()
    with pytest.raises(ValueError, match="no reference"):
        KNNSoftmaxClassifier(nn.Identity(), x[:2], y[:2], num_classes=3)


# --- concordance detector ---------------------------------------------------------------------

def test_concordance_detector_flags_disagreement_per_its_rule():
    p_c = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.75, 0.25], [0.2, 0.8]])
    p_t = torch.tensor([[0.4, 0.6], [0.6, 0.4], [0.5, 0.5], [0.9, 0.1]])
    torch.testing.assert_close(concordance_delta(p_c, p_t), torch.tensor([0.5, 0.3, 0.25, 0.7]))
    assert concordance_flags(p_c, p_t).tolist() == [True, False, False, True]
    assert concordance_flags(p_c, p_t, eta=0.25).tolist() == [True, True, True, True]


class Fixed(nn.Module):
    """A 'network' that returns given logits for images 0..B-1 (pixel 0 holds the index)."""

    def __init__(self, logits):
        super().__init__()
        self.table = logits

    def forward(self, x):
        return self.table[x.flatten(1)[:, 0].long()] + 0 * x.flatten(1)[:, :1]


def test_concordance_defense_rejects_disagreements_and_g_has_n_plus_1_outputs():
    classifier = Fixed(torch.tensor([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0]]))
    auxiliary = Fixed(torch.tensor([[4.0, 0.0], [0.0, 4.0], [0.0, 4.0]]))
    system = ConcordanceDefense(classifier, auxiliary, eta=0.4)
    x = torch.arange(3.0).view(3, 1, 1, 1)
    assert system.predict(x).tolist() == [0, -1, 1]
    scores = system.detector_scores(x)["concordance"]
    assert (scores > 0).tolist() == [False, True, False]
    g = system.g_logits(x)
    assert g.shape == (3, 3)
    assert g.argmax(1).tolist() == [0, 2, 1]  # class N+1 exactly where the detector fires
    loss, success = system.objective(targeted=False)(x, torch.tensor([1, 1, 1]))
    assert success.tolist() == [True, False, False] and loss.shape == (3,)
    assert isinstance(system.detector, ConcordanceDetector)


def test_concordance_defense_uses_one_draw_of_a_stochastic_base(lenet, images):
    base = VAEDefendedNetwork(lenet, small_vaes(), mode="stochastic", seed=0).eval()
    knn = KNNSoftmaxClassifier(nn.Flatten(), images.flatten(1), torch.arange(4) % 2,
                               num_classes=2)
    system = ConcordanceDefense(base, Fixed(torch.zeros(1, 10)), eta=0.4)
    assert system.predict(images).shape == (4,)
    base.reseed(0)
    logits = base.logits(images)
    base.reseed(0)
    torch.testing.assert_close(system.g_logits(images)[:, :10], logits)
    assert knn(images).shape == (4, 2)


# --- Jacobian penalties -----------------------------------------------------------------------

def linear(rows):
    layer = nn.Linear(3, len(rows), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows))
    return layer


def test_jacobian_of_a_linear_model_is_its_weight_row():
    model = linear([[1.0, 2.0, 2.0], [0.0, 1.0, 0.0]])
    x, y = torch.randn(2, 3), torch.tensor([0, 1])
    torch.testing.assert_close(class_input_gradient(model, x, y), model.weight.detach()[y])
    torch.testing.assert_close(jacobian_norm(model, x, y), torch.tensor([3.0, 1.0]))
    probs = class_input_gradient(model, x, y, output="probability")
    full = torch.autograd.functional.jacobian(lambda v: model(v).softmax(1), x)
    torch.testing.assert_close(probs, torch.stack([full[i, y[i], i] for i in range(2)]))


def test_alignment_penalty_is_zero_at_its_goal_and_maximal_at_the_other():
    a = linear([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    orth = linear([[0.0, 3.0, 0.0], [0.0, 0.0, 2.0]])
    par = linear([[2.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    x, y = torch.randn(2, 3), torch.tensor([0, 1])
    torch.testing.assert_close(jacobian_cosine(a, orth, x, y), torch.zeros(2))
    torch.testing.assert_close(jacobian_cosine(a, par, x, y), torch.ones(2))
    assert float(jacobian_alignment_penalty(a, orth, x, y, "orthogonal")) == pytest.approx(0)
    assert float(jacobian_alignment_penalty(a, orth, x, y, "parallel")) == pytest.approx(1)
    assert float(jacobian_alignment_penalty(a, par, x, y, "parallel")) == pytest.approx(0)
    assert float(jacobian_alignment_penalty(a, par, x, y, "orthogonal")) == pytest.approx(1)
    mixed = linear([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # cos = 1/sqrt(2): differentiable
    jacobian_alignment_penalty(a, mixed, x, y, "orthogonal").backward()
    assert mixed.weight.grad is not None and mixed.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError):
        jacobian_alignment_penalty(a, par, x, y, "diagonal")


def test_jacobian_norm_penalty_targets_the_true_class_norm():
    model = linear([[3.0, 0.0, 4.0], [0.0, 1.0, 0.0]])  # norms 5 and 1
    x, y = torch.randn(2, 3), torch.tensor([0, 1])
    penalty = jacobian_norm_penalty(model, x, y, target=2.0)
    assert float(penalty.detach()) == pytest.approx(((5 - 2) ** 2 + (1 - 2) ** 2) / 2)
    penalty.backward()
    # d/dW_0 (|W_0| - 2)^2 / 2 = (|W_0| - 2) W_0 / |W_0|
    torch.testing.assert_close(model.weight.grad[0], torch.tensor([1.8, 0.0, 2.4]))


def _train_steps(module, params, x, y, steps=40, lr=0.08):
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = module.training_step((x, y), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()


@NO_TRAINER
@pytest.mark.parametrize("goal", ["parallel", "orthogonal"])
def test_jacobian_pair_training_moves_the_cosine_to_its_goal(goal):
    torch.manual_seed(0)
    x = torch.randn(32, 1, 2, 2)
    y = (x.flatten(1)[:, 0] > 0).long()
    pair = [nn.Sequential(nn.Flatten(), nn.Linear(4, 2)) for _ in range(2)]
    module = JacobianPairModule(*pair, JacobianRecipe(goal=goal, penalty_weight=5.0),
                                steps_per_epoch=1)
    before = jacobian_cosine(*pair, x, y, create_graph=False).mean()
    _train_steps(module, module.model.parameters(), x, y)
    after = jacobian_cosine(*pair, x, y, create_graph=False)
    if goal == "parallel":
        assert after.mean() > max(float(before), 0.95)
    else:
        assert after.abs().max() < 0.1 < abs(float(before))


@NO_TRAINER
def test_jacobian_norm_training_reaches_its_goal():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 2, 2)
    y = (x.flatten(1)[:, 0] > 0).long()
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    module = JacobianNormModule(model, JacobianRecipe(goal="norm", target_norm=3.0,
                                                      penalty_weight=1.0), steps_per_epoch=1)
    _train_steps(module, model.parameters(), x, y, steps=80)
    assert (jacobian_norm(model, x, y) - 3.0).abs().max() < 0.3
    with pytest.raises(ConfigError):
        JacobianPairModule(model, model, JacobianRecipe(goal="norm"), steps_per_epoch=1)
    with pytest.raises(ConfigError):
        JacobianRecipe(goal="diagonal")


# --- metrics ----------------------------------------------------------------------------------

def test_success_needs_original_correct_and_a_new_wrong_class():
    labels = torch.tensor([0, 1, 2, 3, 4])
    original = torch.tensor([0, 1, 5, 3, 4])
    adversarial = torch.tensor([7, 1, 6, 3, 9])
    assert adversarial_success(original, adversarial, labels).tolist() == [
        True, False, False, False, True]  # #2 was misclassified to begin with
    target_original = torch.tensor([0, 1, 2, 3, 4])
    target_adv = torch.tensor([7, 8, 2, 3, 8])
    assert relevant_transfer(adversarial, target_original, target_adv, labels).tolist() == [
        True, False, False, False, False]


def test_correlations_reproduce_table_4_from_tables_2_and_3():
    """Table 4 is the correlation, over the six transfer arrangements (not [1,1,1]), of the
    Table 3 cosines with the Table 2 transfer rates: recomputed from paper_values.csv, which
    also checks those typed-in numbers."""
    from advrepro.report.paper_values import paper_value

    arrangements = ["001", "010", "100", "011", "101", "110"]
    cosine = [paper_value("adam2018", "table3", "111", f"cosine_{a}") for a in arrangements]
    for attack in ("fgs", "igs", "cw2"):
        rates = [paper_value("adam2018", "table2", attack, f"transfer_{a}") for a in arrangements]
        r = correlations(cosine, rates)
        for kind in ("pearson", "spearman"):
            assert round(r[kind], 3) == paper_value("adam2018", "table4", kind, attack)
    assert correlations([1, 2, 3], [1, 4, 9])["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        correlations([1], [2])


def test_input_gradient_cosine_of_probabilities():
    a = linear([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x, y = torch.randn(3, 3), torch.tensor([0, 1, 0])
    torch.testing.assert_close(input_gradient_cosine(a, a, x, y), torch.ones(3))
    # two classes: dp_0/dx = p0 p1 (w0 - w1) = -dp_1/dx, so the class gradients of a model
    # and of its class-swapped twin are opposite, and the full Jacobians too
    swapped = linear([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(input_gradient_cosine(a, swapped, x, y), -torch.ones(3))
    full = input_gradient_cosine(a, swapped, x, y, jacobian="full")
    torch.testing.assert_close(full, -torch.ones(3))


def test_detector_accuracy_counts_right_decisions():
    flagged = torch.tensor([True, False, True, True])
    assert detector_accuracy(flagged, False) == 0.25
    assert detector_accuracy(flagged, torch.tensor([True, False, False, True])) == 0.75


# --- configs ----------------------------------------------------------------------------------

def test_configs_instantiate_and_vae_shapes_fit_lenets_insertion_points(lenet, images, tmp_path):
    from conftest import compose_cfg, tiny_overrides
    from hydra.utils import instantiate

    def load(group, option):
        return instantiate(compose_cfg("train", tiny_overrides(tmp_path, [f"{group}={option}"]))
                           [group])

    acts = lenet.activations(images[:2])
    for point in ("input", "conv1", "conv2"):
        vae = load("model", f"adam_vae_{point}").eval()
        assert vae(acts[point]).shape == acts[point].shape
    assert load("model", "adam_triplet")(images[:2]).shape == (2, 128)
    vae_recipe, triplet_recipe = load("train", "adam_vae"), load("train", "adam_triplet")
    assert isinstance(vae_recipe, VAERecipe) and "kl_weight" in vae_recipe.as_dict()
    assert isinstance(triplet_recipe, TripletRecipe) and "margin" in triplet_recipe.as_dict()
    assert load("train", "adam_mnist").augment == "none"  # adam2018 §4: no augmentation
    for goal in ("parallel", "orthogonal", "norm"):
        assert load("train", f"adam_jacobian_{goal}").goal == goal

"""The specialists+1 ensemble (he2017 §4): class sets, decision rule, unanimous-target attack."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advrepro.attacks import CarliniWagnerL2
from advrepro.defenses.specialists import (
    ClassSubsetClassifier,
    SpecialistsEnsemble,
    SpecialistsPlusOne,
    UnanimousTargetObjective,
    specialist_sets,
    top_confusions,
)
from advrepro.defenses.system import REJECTED
from advrepro.errors import ConfigError

K = 4


def test_top_confusions_cover_80_percent_with_the_fewest_classes():
    counts = torch.tensor([
        [0, 50, 30, 20],   # 50 + 30 = 80 % -> {1, 2}
        [90, 0, 5, 5],     # 90 % -> {0}
        [10, 10, 0, 10],   # ties: index order, 3 of 3 needed for 80 % -> {0, 1, 3}
        [0, 0, 0, 0],      # never misclassified: still one class
    ])
    assert top_confusions(counts, 0.8) == [(1, 2), (0,), (0, 1, 3), (0,)]


def test_specialist_sets_are_sets_complements_and_the_generalist():
    sets = specialist_sets([(1, 2), (0,), (0, 1, 3), (0,)], K)
    assert len(sets) == 2 * K + 1
    assert sets[K] == (0, 3) and sets[K + 1] == (1, 2, 3)
    assert sets[-1] == (0, 1, 2, 3)
    for u, complement in zip(sets[:K], sets[K:2 * K], strict=True):
        assert set(u) | set(complement) == set(range(K)) and not set(u) & set(complement)


class _Fixed(nn.Module):
    """A 'classifier' voting for a fixed class per input row (for the decision rule)."""

    def __init__(self, votes: list[int]) -> None:
        super().__init__()
        self.register_buffer("v", torch.tensor(votes))

    def forward(self, x):
        return nn.functional.one_hot(self.v[: len(x)], K).float()


def _ensemble(votes_per_member: list[list[int]], threshold: float = 0.5) -> SpecialistsEnsemble:
    sets = specialist_sets([(1,), (0, 2), (3,), (2,)], K)
    members = [ClassSubsetClassifier(_Fixed(v), s, K) for v, s in zip(votes_per_member, sets,
                                                                       strict=True)]
    return SpecialistsEnsemble(members, sets, K, threshold)


def _reference_decision(votes: list[int], sets) -> tuple[int, float]:
    """he2017 §4 written out for one input, member by member."""
    for c in range(K):
        able = [v for v, s in zip(votes, sets, strict=True) if c in s]
        if all(v == c for v in able):
            return c, 1.0
    counts = [votes.count(c) for c in range(K)]
    return max(range(K), key=lambda c: (counts[c], -c)), max(counts) / len(votes)


def test_decision_rule_matches_the_papers_rule_on_random_votes():
    sets = specialist_sets([(1,), (0, 2), (3,), (2,)], K)
    gen = torch.Generator().manual_seed(0)
    n = 200
    votes = [[s[i] for i in torch.randint(len(s), (n,), generator=gen).tolist()] for s in sets]
    # make the first input unanimous for class 2
    for j, s in enumerate(sets):
        if 2 in s:
            votes[j][0] = 2
    ens = _ensemble(votes)
    label, confidence = ens.decide(ens.votes(torch.zeros(n, 1, 2, 2)))
    assert label[0] == 2 and confidence[0] == 1.0
    kinds = set()
    for i in range(n):
        want_label, want_conf = _reference_decision([v[i] for v in votes], sets)
        assert int(label[i]) == want_label
        assert float(confidence[i]) == pytest.approx(want_conf)
        kinds.add(want_conf == 1.0)
    assert kinds == {True, False}  # both branches of the rule were exercised


def test_low_confidence_is_rejected():
    sets = specialist_sets([(1,), (0, 2), (3,), (2,)], K)
    # each member votes for a different class where it can: no unanimity, small majority
    votes = [[s[j % len(s)]] for j, s in enumerate(sets)]
    ens = _ensemble(votes, threshold=0.9)
    label, confidence = ens.decide(ens.votes(torch.zeros(1, 1, 2, 2)))
    assert confidence[0] < 0.9
    assert ens.predict(torch.zeros(1, 1, 2, 2))[0] == REJECTED


def test_subset_classifier_never_predicts_outside_its_set():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, K))
    spec = ClassSubsetClassifier(net, (1, 3), K)
    pred = spec(torch.randn(64, 1, 2, 2)).argmax(1)
    assert set(pred.tolist()) <= {1, 3}
    loss = nn.functional.cross_entropy(spec(torch.randn(8, 1, 2, 2)), torch.tensor([1, 3] * 4))
    assert torch.isfinite(loss)


class _Counting(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.rows = 0

    def forward(self, x):
        self.rows += len(x)
        return self.net(x)


def _linear_ensemble(seed: int = 0) -> SpecialistsEnsemble:
    torch.manual_seed(seed)
    sets = specialist_sets([(1, 2), (0,), (0, 1, 3), (0,)], K)
    members = [ClassSubsetClassifier(_Counting(nn.Sequential(nn.Flatten(), nn.Linear(16, K))),
                                     s, K) for s in sets]
    for p in (p for m in members for p in m.parameters()):
        p.requires_grad_(False)
    return SpecialistsEnsemble(members, sets, K, threshold=0.5)


def test_objective_sums_margins_over_the_members_able_to_predict_the_target():
    ens = _linear_ensemble()
    x = torch.rand(6, 1, 4, 4)
    targets = torch.tensor([0, 1, 2, 3, 0, 2])
    loss, success = UnanimousTargetObjective(ens)(x, targets)
    want = torch.zeros(6)
    unanimous = torch.ones(6, dtype=torch.bool)
    for j, m in enumerate(ens.members):
        z = m(x)
        able = ens.membership[j, targets]
        others = z.masked_fill(nn.functional.one_hot(targets, K).bool(), float("-inf")).amax(1)
        margin = (others - z.gather(1, targets[:, None]).squeeze(1)).clamp(min=0)
        want += torch.where(able, margin, torch.zeros_like(margin))
        unanimous &= ~able | (z.argmax(1) == targets)
    assert torch.allclose(loss, want, atol=1e-5)
    assert torch.equal(success, unanimous)


def test_objective_runs_each_member_only_on_the_rows_it_can_vote_for():
    ens = _linear_ensemble()
    targets = torch.tensor([0, 1, 2, 3, 0, 2])
    for m in ens.members:
        m.network.rows = 0
    UnanimousTargetObjective(ens)(torch.rand(6, 1, 4, 4), targets)
    for j, m in enumerate(ens.members):
        assert m.network.rows == int(ens.membership[j, targets].sum())


def test_unanimous_target_attack_gets_every_able_member_to_vote_for_the_target(tiny_model,
                                                                              tiny_sample):
    """Members: perturbed copies of the tiny MNIST CNN restricted to he2017-like class sets."""
    torch.manual_seed(0)
    sets = specialist_sets([(3, 5, 8), (7, 8), (1, 3, 7), (5, 8), (7, 9), (3, 8), (0, 5),
                            (2, 9), (3, 5), (4, 7)], 10)
    members = []
    for s in sets:
        net = copy.deepcopy(tiny_model)
        for p in net.parameters():
            p.add_(0.1 * p.abs().mean() * torch.randn_like(p))
        members.append(ClassSubsetClassifier(net, s, 10))
    ens = SpecialistsEnsemble(members, sets, 10, threshold=0.5)
    x, y = tiny_sample[0][:6], tiny_sample[1][:6]
    targets = (y + 1 + torch.arange(6)) % 10
    attack = CarliniWagnerL2(binary_search_steps=3, max_iterations=100, learning_rate=0.05,
                             initial_const=1.0, progress=False)
    result = attack.run(ens, x, targets, targeted=True)
    assert result.success.all()
    adv = result.adversarial
    assert torch.equal(ens.predict(adv), targets)  # decided and accepted: the target
    assert torch.all(ens.confidence(adv) == 1.0)   # by a unanimous vote


def test_untargeted_attack_and_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="targeted"):
        _linear_ensemble().objective(targeted=False)
    with pytest.raises(ConfigError, match="coverage"):
        SpecialistsPlusOne(coverage=0.0)
    with pytest.raises(ConfigError, match="threshold"):
        SpecialistsPlusOne(threshold=1.5)

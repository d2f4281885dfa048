"""Abbasi & Gagné's ensemble of specialists + 1 generalist, and its attack (he2017 §4).

For each class i, U_i holds the classes that account for the top 80 % of the untargeted FGSM
misclassifications of class i on the generalist, and U_{K+i} = C \\ U_i. A specialist is trained
on the images of its classes only and predicts among them; the generalist F_{2K+1} covers C.

Decision rule (he2017 §4): if for some class i the generalist and every specialist able to
predict i all predict i, the output is i and only they vote (confidence 1); otherwise the
majority of all 2K+1 votes wins, with confidence = the winner's share of the votes. Inputs whose
confidence is below a threshold are rejected as adversarial.

Attack (he2017 §4): targeted C&W whose misclassification term is summed over the generalist and
every specialist whose set contains the target; success = all of them vote for the target, which
gives the ensemble's highest confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from advrepro.attacks.gradient import FGSM
from advrepro.attacks.objectives import Objective, margin_loss, reaches_margin
from advrepro.defenses.system import REJECTED, DefendedSystem, batched
from advrepro.errors import ConfigError
from advrepro.config import to_container
from advrepro.training.recipe import recipe_from

ClassSet = tuple[int, ...]


class ClassSubsetClassifier(nn.Module):
    """A K-way network that can only predict the classes of ``classes``: the logits of every
    other class are -inf (a specialist "classifies input images into the classes in U_j only")."""

    def __init__(self, network: nn.Module, classes: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.network = network
        allowed = torch.zeros(num_classes, dtype=torch.bool)
        allowed[list(classes)] = True
        self.register_buffer("allowed", allowed)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x).masked_fill(~self.allowed, float("-inf"))


def confusion_counts(classifier: nn.Module, x: Tensor, y: Tensor, epsilon: float,
                     num_classes: int, batch_size: int = 1000) -> Tensor:
    """counts[i, j]: untargeted FGSM examples of class i that ``classifier`` labels j != i."""
    attack = FGSM(epsilon)
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        adv = attack(classifier, xb, yb).adversarial
        with torch.no_grad():
            pred = classifier(adv).argmax(1).cpu()
        flat = yb.cpu() * num_classes + pred
        counts += torch.bincount(flat, minlength=num_classes**2).view(num_classes, num_classes)
    counts.fill_diagonal_(0)
    return counts


def top_confusions(counts: Tensor, coverage: float = 0.8) -> list[ClassSet]:
    """U_i: the fewest classes that account for ``coverage`` of class i's misclassifications
    (ties broken by class index). A class never misclassified gets its most frequent confusion
    anyway, so that no set is empty."""
    sets = []
    for i, row in enumerate(counts):
        order = sorted((j for j in range(len(row)) if j != i), key=lambda j: (-int(row[j]), j))
        total = int(row.sum())
        chosen, covered = [], 0
        for j in order:
            chosen.append(j)
            covered += int(row[j])
            if covered >= coverage * total:
                break
        sets.append(tuple(sorted(chosen)))
    return sets


def specialist_sets(confused: Sequence[ClassSet], num_classes: int) -> list[ClassSet]:
    """U_1..U_K, their complements U_{K+1}..U_{2K}, and U_{2K+1} = C (he2017 §4)."""
    everything = tuple(range(num_classes))
    complements = [tuple(c for c in everything if c not in u) for u in confused]
    return [tuple(u) for u in confused] + complements + [everything]


class SpecialistsEnsemble(DefendedSystem):
    """The 2K+1 classifiers with the decision rule of he2017 §4 and a rejection threshold."""

    surrogate_is_exact = False

    def __init__(self, members: Sequence[nn.Module], sets: Sequence[ClassSet],
                 num_classes: int, threshold: float, name: str = "specialists") -> None:
        if len(members) != len(sets):
            raise ValueError("one class set per member")
        super().__init__(members[-1], name)  # the generalist F_{2K+1}
        self.members = nn.ModuleList(members)
        self.sets = [tuple(s) for s in sets]
        self.threshold = threshold
        membership = torch.zeros(len(sets), num_classes, dtype=torch.bool)
        for j, s in enumerate(sets):
            membership[j, list(s)] = True
        self.register_buffer("membership", membership)  # [M, K]: member j can predict class k

    def votes(self, x: Tensor) -> Tensor:
        """[M, B]: each member's predicted class (within its own set)."""
        return torch.stack([m(x).argmax(1) for m in self.members])

    def decide(self, votes: Tensor) -> tuple[Tensor, Tensor]:
        """(label, confidence) of every input from the members' votes (he2017 §4)."""
        num_classes = self.membership.shape[1]
        hit = votes[:, :, None] == torch.arange(num_classes, device=votes.device)  # [M, B, K]
        able = self.membership[:, None, :]                                         # [M, 1, K]
        unanimous = (hit | ~able).all(0)                                           # [B, K]
        counts = hit.sum(0)                                                        # [B, K]
        majority = counts.argmax(1)
        has_unanimous = unanimous.any(1)
        label = torch.where(has_unanimous, unanimous.float().argmax(1), majority)
        share = counts.amax(1).float() / votes.shape[0]
        confidence = torch.where(has_unanimous, torch.ones_like(share), share)
        return label, confidence

    @torch.no_grad()
    def confidence(self, x: Tensor) -> Tensor:
        return self.decide(self.votes(x))[1]

    def logits(self, x: Tensor) -> Tensor:
        """Vote counts per class (the ensemble has no logits; only for inspection)."""
        votes = self.votes(x)
        return torch.nn.functional.one_hot(votes, self.membership.shape[1]).sum(0).float()

    def detector_scores(self, x: Tensor) -> dict[str, Tensor]:
        """> 0 when the confidence is below the threshold (rejected as adversarial)."""
        return {"specialists": self.threshold - self.confidence(x)}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        label, confidence = self.decide(self.votes(x))
        return torch.where(confidence < self.threshold, torch.full_like(label, REJECTED), label)

    def extra_records(self, original: Tensor, adversarial: Tensor, true_labels: Tensor,
                      targets: Tensor | None) -> dict[str, Tensor]:
        """Ensemble confidence of each example and its original; for targeted attacks, whether
        the target lies in U_y, the set the true class is most often confused with (he2017 §4
        reports the distortion of those targets separately)."""
        out = {"confidence": batched(self.confidence, adversarial),
               "clean_confidence": batched(self.confidence, original)}
        if targets is not None:  # member i (< K) is the specialist of U_i
            out["target_in_confused_set"] = self.membership[true_labels, targets]
        return out

    def describe(self) -> dict:
        return {"class_sets": [list(s) for s in self.sets], "threshold": self.threshold,
                "clean": getattr(self, "clean_statistics", None)}

    def objective(self, targeted: bool, kappa: float = 0.0) -> Objective:
        if not targeted:
            raise ConfigError("the specialists+1 attack is targeted (he2017 §4); "
                              "set targeted=true")
        return UnanimousTargetObjective(self, kappa)


class UnanimousTargetObjective:
    """he2017 §4: loss = sum over the members whose set contains the target t of C&W's targeted
    margin; success = every one of them predicts t. Each member runs only on the rows whose
    target it can predict (about half of the members per image), batched per member."""

    def __init__(self, ensemble: SpecialistsEnsemble, kappa: float = 0.0) -> None:
        self.ensemble = ensemble
        self.kappa = kappa

    def __call__(self, x_adv: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        loss = torch.zeros(len(x_adv), device=x_adv.device)
        success = torch.ones(len(x_adv), dtype=torch.bool, device=x_adv.device)
        applicable = self.ensemble.membership[:, labels]  # [M, B]
        for member, rows in zip(self.ensemble.members, applicable, strict=True):
            idx = rows.nonzero().squeeze(1)
            if len(idx) == 0:
                continue
            z = member(x_adv[idx])
            t = labels[idx]
            loss = loss.index_add(0, idx, margin_loss(z, t, True, self.kappa))
            with torch.no_grad():
                ok = z.argmax(1) == t
                if self.kappa > 0:
                    ok &= reaches_margin(z, t, True, self.kappa)
                success[idx] &= ok
        return loss, success


@dataclass
class SpecialistsPlusOne:
    """Build the ensemble for a workbench: the generalist is ``cfg.model`` trained with
    ``cfg.train``; the confusion sets come from untargeted FGSM (``fgsm_epsilon``) on
    ``confusion_images`` training images, unless ``sets`` gives U_1..U_K explicitly (e.g. the
    ones He et al. used); each specialist has the generalist's architecture and ``recipe``."""

    coverage: float = 0.8
    fgsm_epsilon: float = 0.3
    confusion_images: int = 10000
    threshold: float = 0.5
    clean_eval_images: int = 2000
    sets: list[list[int]] | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    name: str = "specialists"

    def __post_init__(self) -> None:
        if not 0 < self.coverage <= 1:
            raise ConfigError(f"defense.coverage must be in (0, 1], got {self.coverage}")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"defense.threshold must be in [0, 1], got {self.threshold}")

    def confused_sets(self, bench, generalist: nn.Module, num_classes: int) -> list[ClassSet]:
        if self.sets is not None:
            if len(self.sets) != num_classes:
                raise ConfigError(f"defense.sets needs one set per class ({num_classes}), "
                                  f"got {len(self.sets)}")
            return [tuple(sorted(s)) for s in self.sets]
        x, y = bench.train_set()
        n = min(self.confusion_images, len(x))
        gen = torch.Generator().manual_seed(bench.seed)
        idx = torch.randperm(len(x), generator=gen)[:n]
        counts = confusion_counts(generalist, x[idx].to(bench.device), y[idx].to(bench.device),
                                  self.fgsm_epsilon, num_classes)
        return top_confusions(counts, self.coverage)

    def build(self, bench) -> DefendedSystem:
        model_cfg = to_container(bench.cfg.model)
        num_classes = int(model_cfg.get("num_classes", 10))
        generalist = bench.classifier()
        sets = specialist_sets(self.confused_sets(bench, generalist, num_classes), num_classes)
        recipe = recipe_from(self.recipe or bench.cfg.train)
        if recipe.label_smoothing > 0:
            raise ConfigError("specialists need label_smoothing = 0 (their other classes' "
                              "logits are -inf)")
        members = [self._specialist(bench, s, model_cfg, recipe, num_classes)
                   for s in sets[:-1]]
        system = SpecialistsEnsemble(members + [generalist], sets, num_classes, self.threshold,
                                     self.name).to(bench.device)
        x, y = bench.test_set()
        system.clean_statistics = clean_statistics(
            system, x[: self.clean_eval_images].to(bench.device),
            y[: self.clean_eval_images].to(bench.device))
        return system

    @staticmethod
    def _specialist(bench, classes: ClassSet, model_cfg: dict[str, Any], recipe,
                    num_classes: int) -> nn.Module:
        def make_data():
            x, y = bench.train_set()
            xt, yt = bench.test_set()
            keep = torch.isin(y, torch.tensor(classes))
            keep_t = torch.isin(yt, torch.tensor(classes))
            return x[keep], y[keep], xt[keep_t], yt[keep_t]

        return bench.train(
            "specialist-" + "-".join(map(str, classes)), model_cfg, recipe, make_data,
            {"labels": "classes", "classes": list(classes)},
            build_model=lambda: ClassSubsetClassifier(instantiate(model_cfg), classes,
                                                      num_classes),
        )


def clean_statistics(system: SpecialistsEnsemble, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Accuracy, rejection rate and confidence distribution of the ensemble on clean images."""
    with torch.no_grad():
        parts = [system.decide(system.votes(x[i:i + 500])) for i in range(0, len(x), 500)]
    label = torch.cat([p[0] for p in parts])
    confidence = torch.cat([p[1] for p in parts])
    rejected = confidence < system.threshold
    values, counts = confidence.unique(return_counts=True)
    return {
        "images": len(x),
        "accuracy": float((label == y).float().mean()),
        "accuracy_accepted": float((label == y)[~rejected].float().mean()),
        "rejected": float(rejected.float().mean()),
        "generalist_accuracy": float((batched(system.members[-1], x).argmax(1) == y)
                                     .float().mean()),
        "confidence_histogram": {f"{v:.4f}": int(c) for v, c in zip(values.tolist(),
                                                                    counts.tolist(), strict=True)},
    }

"""The experiment model: a cell's identity comes from every choice made for it; training-time
defenses (adversarial and ensemble adversarial training); the full-test-set protocol; grid
tables that select cells by the fields of their summaries."""

import json
import math

import pandas as pd
import pytest
import torch
from conftest import TINY_DATA, compose_cfg, tiny_overrides
from omegaconf import OmegaConf
from torch import nn

from advrepro.attacks import FGSM, RandFGSM
from advrepro.errors import ConfigError
from advrepro.experiments.error_rates import error_rate_ci
from advrepro.experiments.identity import cell_directory, cell_identity, identity_config
from advrepro.experiments.migrate import migrate_cells
from advrepro.experiments.store import CellStore
from advrepro.report.grid import GridTable, matches, tied_for_best
from advrepro.report.tables import TableContext
from advrepro.training.cache import TrainRequest, model_key
from advrepro.training.module import ClassifierModule
from advrepro.training.recipe import TrainRecipe, recipe_from


# ------------------------------------------------------------------------------- identity
def test_a_sweep_over_two_models_and_two_epsilons_gives_four_cells(tmp_path):
    names = set()
    for model in ("tramer_a", "tramer_b"):
        for eps in ("0.1", "0.3"):
            cfg = compose_cfg("attack", tiny_overrides(tmp_path, [
                "experiment=tramer2017/mnist", f"model={model}", f"attack.epsilon={eps}"]))
            names.add(cell_identity(cfg)[0])
    assert len(names) == 4


def test_settings_added_later_at_their_old_value_leave_the_identity_unchanged(tmp_path):
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, ["experiment=he2017/table1",
                                                          "scale.full_test_images=null"]))
    ident = identity_config(cfg)
    assert "protocol" not in ident and "full_test_images" not in ident["scale"]
    full = compose_cfg("attack", tiny_overrides(tmp_path, ["experiment=he2017/table1",
                                                           "protocol=full_test"]))
    assert identity_config(full)["protocol"] == "full_test"
    assert cell_identity(full)[1] != cell_identity(cfg)[1]


def test_identity_ignores_how_the_data_root_is_spelled_and_the_progress_bar(tmp_path):
    base = tiny_overrides(tmp_path, ["experiment=he2017/table1"])
    digests = {cell_identity(compose_cfg("attack", base + extra))[1] for extra in (
        [], [f"paths.data_root={TINY_DATA}/"], [f"paths.data_root={TINY_DATA}/../data"],
        ["progress=true"])}
    assert len(digests) == 1


@pytest.mark.parametrize("override", ["experiment_name=../../escape",
                                      "defense.name=../../../x", "experiment_name=a/../../b"])
def test_names_that_would_leave_the_runs_directory_are_refused(override, tmp_path):
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, [override]))
    with pytest.raises(ConfigError, match="cannot name a directory"):
        cell_directory(cfg.paths.runs_dir, cfg.experiment_name, cfg)


def test_migration_renames_a_cell_to_its_identity_and_is_idempotent(tmp_path):
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, ["experiment=he2017/table1"]))
    old = tmp_path / "runs" / "he2017" / "table1" / "bit_depth_1__perfect__CarliniWagnerL2"
    old.mkdir(parents=True)
    (old / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (old / "summary.json").write_text(json.dumps({"config_hash": "0123", "cell": old.name}))
    (old / "records.csv").write_text("success\n1\n")
    moved = migrate_cells(tmp_path / "runs")
    name, digest = cell_identity(cfg)
    new = old.parent / name
    assert moved == [(str(old), str(new))] and not old.exists()
    summary = json.loads((new / "summary.json").read_text())
    assert summary == {"config_hash": digest, "cell": name, "legacy_config_hash": "0123"}
    assert (new / "records.csv").read_text() == "success\n1\n"
    assert CellStore(new).is_complete(digest)
    assert migrate_cells(tmp_path / "runs") == []


# ---------------------------------------------------------------------- adversarial training
def test_recipe_keys_of_models_trained_before_adversaries_existed_are_unchanged():
    assert set(TrainRecipe().as_dict()) == {"epochs", "batch_size", "optimizer", "lr", "momentum",
                                            "weight_decay", "augment", "pad",
                                            "label_smoothing", "max_steps"}


def test_static_models_are_part_of_the_trained_models_key(tmp_path):
    def key(train):
        cfg = compose_cfg("attack", tiny_overrides(tmp_path, ["model=tramer_a", f"train={train}"]))
        recipe = recipe_from(cfg.train)
        return model_key(TrainRequest("m", {"_target_": "x"}, recipe, 0, {}, lambda: None))

    assert len({key("tramer_mnist"), key("tramer_adv"), key("tramer_adv_ens")}) == 3
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, ["train=tramer_adv_ens"]))
    assert sorted(recipe_from(cfg.train).adversary.static) == ["A", "C", "D"]


class _Linear(nn.Module):
    def __init__(self, w: float) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)
        with torch.no_grad():
            self.lin.weight.copy_(w * torch.tensor([[1.0, 2.0, -3.0, 4.0],
                                                    [-1.0, 0.5, 1.0, -2.0]]))
        nn.init.zeros_(self.lin.bias)

    def forward(self, x):
        return self.lin(x.flatten(1))


def _module(adversary, static=()):
    recipe = TrainRecipe(epochs=1, batch_size=4, optimizer="adam", lr=1e-3,
                         adversary=adversary)
    return ClassifierModule(_Linear(1.0), recipe, steps_per_epoch=1,
                            static_sources=list(static), seed=3)


def test_goodfellow_objective_weighs_the_clean_and_the_adversarial_loss():
    torch.manual_seed(0)
    x, y = 0.3 + 0.4 * torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])  # no clipping
    module = _module({"epsilon": 0.3, "clean_weight": 0.25})
    loss = module.training_step((x, y), 0)
    x_adv = module.adversarial_batch(x, y, module.recipe.adversary)
    ce = nn.functional.cross_entropy
    expected = 0.25 * ce(module.model(x), y) + 0.75 * ce(module.model(x_adv), y)
    assert torch.allclose(loss, expected)
    # the FGSM step is of size epsilon on the source's own labels (no label leaking)
    assert torch.allclose((x_adv - x).abs(), torch.tensor(0.3))


def test_ensemble_source_is_drawn_per_step_and_reproducibly():
    static = [_Linear(-1.0), _Linear(2.0), _Linear(0.5)]
    module = _module({"epsilon": 0.3, "static": {n: {"model": {}, "train": {}}
                                                 for n in "ACD"}}, static)
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    adversary = module.recipe.adversary
    draws = [module.adversarial_batch(x, y, adversary) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])  # same step -> same source
    assert adversary.n_sources == 4
    with pytest.raises(ValueError, match="3 static models configured, 1 given"):
        _module({"epsilon": 0.3, "static": {n: {"model": {}, "train": {}} for n in "ACD"}},
                static[:1])


# ------------------------------------------------------------------------ full-test protocol
def test_error_rate_confidence_interval_is_the_normal_approximation():
    p, half = error_rate_ci(torch.tensor([True] * 25 + [False] * 75))
    assert p == 0.25 and half == pytest.approx(1.959964 * math.sqrt(0.25 * 0.75 / 100))


def test_rand_fgsm_draws_fresh_noise_for_every_batch():
    model = _Linear(1.0)
    attack = RandFGSM(0.3, alpha=0.05)
    x, y = torch.full((2, 1, 2, 2), 0.5), torch.tensor([0, 1])
    first, second = attack(model, x, y).adversarial, attack(model, x, y).adversarial
    assert not torch.equal(first, second)
    assert torch.equal(RandFGSM(0.3, alpha=0.05)(model, x, y).adversarial, first)


def test_full_test_cell_scores_every_test_image_and_transfer_needs_a_source(tmp_path):
    from advrepro.experiments.runner import run_cell

    base = ["experiment=tramer2017/mnist", "model=tramer_d", "train.max_steps=30"]
    summary = run_cell(compose_cfg("attack", tiny_overrides(tmp_path, base)))
    assert summary["n_images"] == 100 and summary["protocol"] == "full_test"
    assert summary["target"] == {"architecture": "TramerModelD", "training": "standard",
                                 "epochs": 6, "static": []}
    # misclassified clean images count as errors on the adversarial side too
    assert summary["error_rate"] >= summary["error_rate_clean"] > 0
    with pytest.raises(ConfigError, match="threat=transfer needs a source"):
        run_cell(compose_cfg("attack", tiny_overrides(tmp_path, base + ["threat=transfer"])))
    moved = run_cell(compose_cfg("attack", tiny_overrides(
        tmp_path, base + ["threat=transfer", "source=tramer_d", "source.train.max_steps=30"])))
    assert moved["error_rate"] == summary["error_rate"]  # source = target: the white box
    assert moved["cell"] != summary["cell"] and moved["source"]["name"] == "D"
    assert isinstance(FGSM(0.3), FGSM)


# ------------------------------------------------------------------------------ grid tables
def test_selectors_match_nested_fields_and_numbers():
    fields = {"target.training": "adversarial", "epsilon": 0.30000001, "attack": "FGSM"}
    assert matches(fields, {"target.training": "adversarial", "epsilon": 0.3}) is False
    assert matches({**fields, "epsilon": 0.3}, {"epsilon": 0.3, "attack": "FGSM"})
    assert not matches(fields, {"attack": "RandFGSM"})


def test_tied_for_best_is_an_overlap_of_confidence_intervals():
    values = pd.Series([0.05, 0.06, 0.20]), pd.Series([0.01, 0.01, 0.01])
    assert tied_for_best(*values).tolist() == [True, True, False]


def test_grid_table_reads_cells_by_their_fields_and_names_the_missing_ones(tmp_path):
    runs = tmp_path / "runs" / "tramer2017" / "mnist"
    cells = {("A", "TramerModelA"): 0.71, ("B", "TramerModelA"): 0.62,
             ("A", "TramerModelB"): 0.5}
    for i, ((src, arch), err) in enumerate(cells.items()):
        CellStore(runs / f"c{i}").write(
            pd.DataFrame({"x": [1]}), {}, {
                "cell": f"c{i}", "n_images": 10000, "attack": "FGSM", "epsilon": 0.3,
                "error_rate": err, "error_rate_ci95": 0.01,
                "source": {"name": src}, "target": {"architecture": arch}}, "")
    ctx = TableContext(str(tmp_path / "runs"), str(tmp_path / "t"), str(tmp_path / "f"), "test")
    table = GridTable("tramer2017", "table1", "tramer2017/mnist", "T1",
                      rows={"A": {"source.name": "A"}, "B": {"source.name": "B"}},
                      columns={"A": {"target.architecture": "TramerModelA"},
                               "B": {"target.architecture": "TramerModelB"}},
                      where={"attack": "FGSM"}, row_title="source", column_title="target")
    frame = table.build(ctx)
    got = {(r.source, r.target): r.ours for r in frame.itertuples()}
    assert got[("A", "A")] == 0.71 and got[("B", "A")] == 0.62 and got[("A", "B")] == 0.5
    assert math.isnan(got[("B", "B")])
    assert frame.set_index(["source", "target"]).loc[("A", "A"), "paper"] == 0.714
    md = (tmp_path / "t" / "tramer2017" / "table1.md").read_text()
    assert "71.0 (71.4)" in md and "Not run yet" in md and "(B, B)" in md


def test_a_non_finite_attack_result_is_never_stored_as_finished(tmp_path, monkeypatch):
    from advrepro.attacks import gradient
    from advrepro.errors import UserError
    from advrepro.experiments.runner import cell_store, run_cell

    cfg = compose_cfg("attack", tiny_overrides(tmp_path, [
        "experiment=tramer2017/mnist", "model=tramer_d", "train.max_steps=30"]))
    monkeypatch.setattr(gradient, "fgsm", lambda model, x, labels, eps: x * float("nan"))
    with pytest.raises(UserError, match="non-finite adversarial"):
        run_cell(cfg)
    assert not cell_store(cfg)[0].summary_path.exists()


def test_a_non_positive_step_or_constant_is_a_config_error():
    from advrepro.attacks import CarliniWagnerL2

    for kwargs in ({"learning_rate": -0.01}, {"initial_const": 0.0}):
        with pytest.raises(ConfigError, match="must be positive"):
            CarliniWagnerL2(**kwargs)

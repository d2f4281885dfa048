"""cw2017/mnist_new_methods (§4.1, §4.3, §6.2): the experiment's cells compose, the table's rows
name those cells, and every paper reference exists in paper_values.csv. No training."""

import math

import pytest
from conftest import CONF, compose_cfg, tiny_overrides
from hydra.utils import instantiate
from omegaconf import OmegaConf

from advrepro.experiments.identity import cell_identity
from advrepro.report.paper_values import paper_values
from advrepro.report.tables import CellTable

EXPERIMENT = "cw2017/mnist_new_methods"
# the sweep of the experiment plus the hidden-layer cascade's own line (Makefile)
CELLS = [["defense=mean_blur", "threat=zero"], ["defense=mean_blur", "threat=perfect"],
         ["defense=input_pca", "threat=zero"], ["defense=input_pca", "threat=perfect"],
         ["defense=hidden_pca", "threat=zero", "panel=[hidden_pca_first_stage]"]]


def _cell(tmp_path, overrides):
    return compose_cfg("attack", tiny_overrides(tmp_path, [f"experiment={EXPERIMENT}",
                                                          *overrides]))


def _table(tmp_path) -> CellTable:
    cfg = compose_cfg("table", [f"table={EXPERIMENT}", f"paths.output_dir={tmp_path}"])
    return instantiate(cfg.table, _convert_="all")


def test_sweep_is_the_listed_cells(tmp_path):
    cfg = _cell(tmp_path, [])
    assert cfg.experiment_name == EXPERIMENT and cfg.targeted  # cw2017 §2.1: targeted only
    params = OmegaConf.load(CONF / "experiment" / f"{EXPERIMENT}.yaml").hydra.sweeper.params
    assert set(params.defense.split(",")) == {"mean_blur", "input_pca"}
    assert set(params.threat.split(",")) == {"zero", "perfect"}


@pytest.mark.parametrize("overrides", CELLS, ids=lambda o: "-".join(o))
def test_cells_compose(tmp_path, overrides):
    cfg = _cell(tmp_path, overrides)
    defense = instantiate(cfg.defense, _convert_="all")
    assert hasattr(defense, "build")
    for member in cfg.defense.get("members") or []:  # the PCA detectors come with cw2017_pca
        assert hasattr(instantiate(cfg.detectors[member], _convert_="all"), "build")
    for member in cfg.panel:  # the cascade's first stage alone (cw2017 §4.3)
        spec = instantiate(cfg.detectors[member], _convert_="all")
        assert spec.max_stages == 1 and spec.k == cfg.detectors.hidden_pca.k
    name, digest = cell_identity(cfg)
    assert "targeted" in name and len(digest) == 16


def test_table_rows_select_the_experiments_cells(tmp_path):
    table = _table(tmp_path)
    assert table.experiment == EXPERIMENT and table.paper == "cw2017"
    names = [cell_identity(_cell(tmp_path, o))[0] for o in CELLS]
    for row in table.rows:
        hits = [n for n in names if n.startswith(row["cell"])]
        assert len(hits) == 1, (row["label"], hits)


def test_table_paper_references_exist(tmp_path):
    table = _table(tmp_path)
    values = paper_values()
    refs = [r["paper"] for r in table.rows if "paper" in r]
    assert refs
    for t, row, column in refs:
        hit = values[(values.paper == "cw2017") & (values.table == t) & (values.row == row)
                     & (values.column == column)]
        assert len(hit) == 1, (t, row, column)


class _Ctx:
    def __init__(self, summaries):
        self.summaries = summaries
        self.written = None

    def cells(self, experiment):
        return [type("Cell", (), {"summary": lambda self, s=s: s})() for s in self.summaries]

    def write(self, paper, table, frame, title, notes, cited):
        self.written = frame


def test_complement_row_reports_one_minus_the_metric():
    summary = {"cell": "mean_blur_3x3__zero__x", "fooled_defense_rate": 0.25, "n_images": 4}
    table = CellTable(paper="cw2017", table="t", experiment="e", title="t", rows=[
        {"label": "removed", "cell": "mean_blur_3x3__zero", "metric": "fooled_defense_rate",
         "complement": True, "paper": ["mean_blur", "zero_knowledge_low_confidence",
                                       "removed_rate"]},
        {"label": "kept", "cell": "mean_blur_3x3__zero", "metric": "fooled_defense_rate"}])
    frame = table.build(_Ctx([summary]))
    assert frame.ours.tolist() == [0.75, 0.25]
    assert frame.paper.iloc[0] == 0.80 and math.isnan(frame.paper.iloc[1])

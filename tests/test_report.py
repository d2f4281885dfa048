import math

import pandas as pd
import pytest
import torch

from advrepro.experiments.store import CellStore
from advrepro.experiments.summary import summarize
from advrepro.report.detection import detection_metrics
from advrepro.report.paper_values import citation, paper_value, paper_values
from advrepro.report.tables import CellTable, SweepTable, TableContext, TransferTable


def test_detection_metrics_on_a_known_case():
    adv = torch.tensor([2.0, 1.0, 0.5, -1.0])
    clean = torch.tensor([-3.0, -2.0, 0.7, -0.5] + [-5.0] * 96)
    m = detection_metrics(adv, clean)
    assert m["tpr_at_threshold"] == 0.75
    assert m["fpr_at_threshold"] == pytest.approx(0.01)
    # <= 1 % false positives allows one clean score (0.7) above the cut: cut just above -0.5
    # flags 2.0, 1.0 and 0.5
    assert m["tpr_at_1%_fpr"] == 0.75
    assert 0.5 < m["roc_auc"] <= 1.0


def test_paper_values_carry_citations_and_are_looked_up():
    df = paper_values()
    assert df["source"].str.len().min() > 5
    assert paper_value("he2017", "table1", "1", "mean_l2") == 3.86
    assert paper_value("he2017", "table3", "kde", "gong") == 0.96
    assert math.isnan(paper_value("he2017", "table1", "9", "mean_l2"))
    # a table cites the sources of the values it shows, not every value of the same group
    cited = citation("cw2017", [["dropout", "secured_cifar", "mean_l2"]])
    assert cited == "cw2017 §6.1, perfect knowledge (CIFAR-10)"
    assert "MNIST" in citation("cw2017", "dropout")
    assert citation("cw2017", "no_such_table") == ""


def _cell(root, name, summary, records=None):
    store = CellStore(root / name)
    n = 2
    frame = records if records is not None else pd.DataFrame({"success": [True] * n})
    x = torch.zeros(n, 1, 4, 4)
    store.write(frame, {"original": x, "adversarial": x + 0.1, "success": torch.ones(n).bool()},
                {"cell": name, "n_images": n, **summary}, "")


def test_sweep_table_sets_paper_ours_and_delta_side_by_side(tmp_path):
    runs = tmp_path / "runs" / "he2017" / "table1"
    _cell(runs, "bit_depth_1__x", {"defense": {"bits": 1}, "success_rate": 1.0, "mean_l2": 3.0})
    _cell(runs, "bit_depth_8__x", {"defense": {"bits": 8}, "success_rate": 0.5, "mean_l2": 1.5})
    ctx = TableContext(str(tmp_path / "runs"), str(tmp_path / "t"), str(tmp_path / "f"), "test")
    table = SweepTable("he2017", "table1", "he2017/table1", "T1", ["success_rate", "mean_l2"],
                       row_label="{bits}", x_label="bits")
    frame = table.build(ctx)
    assert frame["row"].tolist() == ["1", "8"]
    assert frame["mean_l2_paper"].tolist() == [3.86, 1.38]
    assert frame["mean_l2_delta"].round(3).tolist() == [-0.86, 0.12]
    assert (tmp_path / "t" / "he2017" / "table1.md").read_text().count("|") > 10
    assert (tmp_path / "f" / "he2017" / "table1.png").is_file()


def test_sweep_table_cites_only_the_paper_values_its_rows_show(tmp_path):
    """The MNIST rows of he2017's squeezing results cite §3.1.1 / §3.2 on MNIST, not the
    CIFAR-10 values of the same paper table."""
    runs = tmp_path / "runs" / "he2017" / "squeezing_mnist"
    _cell(runs, "undefended__x", {"success_rate": 1.0, "mean_l2": 1.2})
    _cell(runs, "feature_squeezing__x", {"success_rate": 0.8, "mean_l2": 2.5})
    ctx = TableContext(str(tmp_path / "runs"), str(tmp_path / "t"), str(tmp_path / "f"), "test")
    SweepTable("he2017", "squeezing_combined", "he2017/squeezing_mnist", "T",
               ["success_rate", "mean_l2"], output="squeezing_mnist",
               row_names={"undefended": "mnist_undefended",
                          "feature_squeezing": "mnist_feature_squeezing"}).build(ctx)
    header = (tmp_path / "t" / "he2017" / "squeezing_mnist.md").read_text().splitlines()[2]
    assert "on MNIST" in header and "8-bit row of Table 1" in header
    assert "CIFAR" not in header


def test_sweep_table_reports_zero_knowledge_cells_as_detection_not_as_rows(tmp_path):
    """he2017 §3.2 / #4 item 2: the joint detector's zero-knowledge cell gives its detection
    rate (successful examples scored above the threshold) and false-positive rate (clean
    originals above it) in a section of its own; it does not duplicate the attacked row."""
    runs = tmp_path / "runs" / "he2017" / "squeezing_mnist"
    _cell(runs, "feature_squeezing__perfect", {"success_rate": 0.5, "mean_l2": 2.0,
                                               "threat": "perfect"})
    rec = pd.DataFrame({"success": [True, True, True, False],
                        "score_feature_squeezing": [0.7, 0.2, -0.1, 0.9],
                        "clean_score_feature_squeezing": [-0.3, 0.1, -0.3, -0.3]})
    _cell(runs, "feature_squeezing__zero", {"threat": "zero", "mean_l1_score": 1.03,
                                            "system_evaluated": "feature_squeezing"}, rec)
    _cell(runs, "bit_depth_1__zero", {"threat": "zero", "system_evaluated": "bit_depth_1"})
    ctx = TableContext(str(tmp_path / "runs"), str(tmp_path / "t"), str(tmp_path / "f"), "test")
    frame = SweepTable("he2017", "squeezing_combined", "he2017/squeezing_mnist", "T",
                       ["success_rate", "mean_l2"], output="squeezing_mnist",
                       row_names={"feature_squeezing": "mnist_feature_squeezing",
                                  "bit_depth_1": "1 bit"},
                       zero_knowledge_metrics=["mean_l1_score"]).build(ctx)
    assert frame["cell"].tolist() == ["feature_squeezing__perfect"]
    zk = pd.read_csv(tmp_path / "t" / "he2017" / "squeezing_mnist_zero_knowledge.csv")
    assert zk["detector"].tolist() == ["mnist_feature_squeezing"]  # the 1-bit cell has no score
    row = zk.set_index("detector").loc["mnist_feature_squeezing"]
    assert row["tpr_at_threshold"] == pytest.approx(2 / 3)  # the failed example is not counted
    assert row["fpr_at_threshold"] == pytest.approx(1 / 4)
    assert row["n_adversarial"] == 3 and row["mean_l1_score"] == 1.03
    assert "Zero-knowledge detection" in (tmp_path / "t" / "he2017" / "squeezing_mnist.md"
                                          ).read_text()
    assert (tmp_path / "f" / "he2017" / "squeezing_mnist_zero_knowledge_roc.png").is_file()


def test_transfer_matrix_counts_undetected_source_successes(tmp_path):
    runs = tmp_path / "runs" / "exp"
    for src, scores in {"gong": ([-1, -1], [1, -1]), "metzen": ([1, 1], [-1, -1])}.items():
        rec = pd.DataFrame({"success": [True, True], "fooled_defense": [True, True],
                            "score_gong": scores[0], "score_metzen": scores[1],
                            "clean_score_gong": [-1, -1], "clean_score_metzen": [-1, -1]})
        _cell(runs, f"{src}__perfect", {"system_evaluated": src}, rec)
    ctx = TableContext(str(tmp_path / "runs"), str(tmp_path / "t"), str(tmp_path / "f"), "test")
    frame = TransferTable("he2017", "table3", "exp", "T3", ["gong", "metzen"]).build(ctx)
    rate = {(r.target, r.source): r.ours for r in frame.itertuples()}
    assert rate[("gong", "gong")] == 1.0 and rate[("metzen", "gong")] == 0.5
    assert rate[("gong", "metzen")] == 0.0 and rate[("metzen", "metzen")] == 1.0
    assert rate[("metzen", "gong")] - 0.43 == pytest.approx(
        frame.set_index(["target", "source"]).loc[("metzen", "gong"), "delta"])


def test_tables_build_from_committed_cells_without_their_tensors(tmp_path):
    """A fresh clone has records and summaries but not adversarial.pt: tables still build."""
    runs = tmp_path / "runs" / "cw2017" / "mnist"
    _cell(runs, "grosse__perfect__x", {"fooled_defense_rate": 0.5, "mean_l2_fooled": 2.5,
                                       "defense": {"name": "grosse"}})
    (runs / "grosse__perfect__x" / "adversarial.pt").unlink()
    ctx = TableContext(str(tmp_path / "runs"), str(tmp_path / "t"), str(tmp_path / "f"), "test")
    rows = [{"label": "success", "cell": "grosse__perfect", "metric": "fooled_defense_rate",
             "paper": ["grosse", "secured", "success_rate"]},
            {"label": "L2", "cell": "grosse__perfect", "metric": "mean_l2_fooled",
             "paper": ["grosse", "secured", "mean_l2"]},
            {"label": "not run", "cell": "kde__perfect", "metric": "mean_l2"}]
    frame = CellTable("cw2017", "mnist", "cw2017/mnist", "T", rows).build(ctx)
    assert frame["ours"].tolist()[:2] == [0.5, 2.5]
    assert frame["paper"].tolist()[:2] == [1.0, 2.26]
    assert math.isnan(frame["ours"].iloc[2]) and frame["cell"].iloc[2] == "(not run)"
    assert "cw2017 §3.1" in (tmp_path / "t" / "cw2017" / "mnist.md").read_text()
    sweep = SweepTable("cw2017", "mnist", "cw2017/mnist", "T", ["mean_l2_fooled"]).build(ctx)
    assert sweep["mean_l2_fooled_ours"].tolist() == [2.5]


def test_detector_rates_pair_each_example_with_its_own_original():
    """detected_* / false_positive_* count scores above 0; more_natural_than_original_* (cw2017
    §5.2's "higher likelihood than the original" for KDE) compares each successful example's
    score with its own original's, and ignores failed examples."""
    frame = pd.DataFrame({
        "success": [True, True, True, False], "fooled_defense": [True, True, False, False],
        "predicted_undefended": [1, 2, 3, 0], "label": [0, 0, 0, 0], "target": [-1] * 4,
        "l2": [1.0, 2.0, 3.0, 0.0], "linf": [0.1] * 4,
        "score_kde": [-2.0, 0.5, -1.0, -9.0], "clean_score_kde": [-1.0, 1.0, -3.0, 0.0],
    })
    out = summarize(frame, targeted=False)
    assert out["detected_kde"] == pytest.approx(1 / 3)
    assert out["false_positive_kde"] == pytest.approx(1 / 4)
    assert out["more_natural_than_original_kde"] == pytest.approx(2 / 3)

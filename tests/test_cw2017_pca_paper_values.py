"""The numbers cw2017 §4.1-§4.3, §5.1 and §6.2 state, as typed into paper_values.csv."""

from __future__ import annotations

from advrepro.report.paper_values import citation, paper_value, paper_values


def test_cw2017_pca_mmd_and_blur_values_are_cited_and_unique():
    df = paper_values()
    ours = df[(df.paper == "cw2017") & df.table.isin(
        ["input_pca", "dimensionality_reduction", "hidden_pca", "mmd", "mean_blur"])]
    assert len(ours) == 27
    assert not ours.duplicated(["table", "row", "column"]).any()
    sections = {"input_pca": "§4.1", "dimensionality_reduction": "§4.2", "hidden_pca": "§4.3",
                "mmd": "§5.1", "mean_blur": "§6.2"}
    for table, section in sections.items():
        assert all(s.startswith(f"cw2017 {section}") for s in ours[ours.table == table].source)
    assert paper_value("cw2017", "hidden_pca", "mnist_first_stage", "true_positive_rate") == 0.62
    assert paper_value("cw2017", "hidden_pca", "cifar_cascade", "false_positive_rate") == 0.98
    assert paper_value("cw2017", "input_pca", "mnist_training_set", "last_components") == 74
    assert paper_value("cw2017", "mean_blur", "zero_knowledge_low_confidence", "mean_l2") == 2.05
    assert "MNIST" in citation("cw2017", "mmd")

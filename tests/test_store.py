import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import ROOT, StoppedAttack, compose_cfg, stop_cw_in_step, tiny_overrides

from advrepro.experiments import runner
from advrepro.experiments.runner import cell_store, run_cell
from advrepro.experiments.store import CellStore

FAST = ["attack.binary_search_steps=2", "attack.max_iterations=20", "n_images=4",
        "train.max_steps=-1", "train.epochs=40", "train.batch_size=32"]


def test_atomic_store_never_shows_a_partial_cell(tmp_path):
    store = CellStore(tmp_path / "cell")
    assert not store.is_complete("abc")
    store.write(pd.DataFrame({"a": [1]}), {}, {"config_hash": "abc"}, "cfg: 1\n")
    assert store.is_complete("abc") and not store.is_complete("other")
    (tmp_path / "cell" / "summary.json").write_text("{trunc")
    assert not store.is_complete("abc")
    assert not list((tmp_path / "cell").glob(".*.tmp"))


def test_finished_cell_is_skipped_and_changed_config_recomputed(tmp_path, monkeypatch):
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, FAST + ["defense=bit_depth",
                                                                  "defense.bits=2"]))
    first = run_cell(cfg)
    assert first["n_images"] > 0
    records = cell_store(cfg)[0].records()
    assert {"index", "label", "success", "l2", "linf", "const", "restart"} <= set(records)

    def boom(*a, **k):
        raise AssertionError("a finished cell must not be attacked again")

    monkeypatch.setattr(runner, "_systems", boom)
    assert run_cell(cfg) == first
    assert not (cell_store(cfg)[0].directory / "partial").exists()  # attack state removed
    changed = compose_cfg("attack", tiny_overrides(tmp_path, FAST + ["defense=bit_depth",
                                                                      "defense.bits=3"]))
    with pytest.raises(AssertionError, match="must not be attacked"):
        run_cell(changed)


def test_killed_sweep_recomputes_no_finished_cell(tmp_path):
    """Kill a Hydra multirun sweep after its first cell; the rerun keeps that cell untouched."""
    overrides = tiny_overrides(tmp_path, FAST + ["defense=bit_depth", "experiment_name=sweep"])
    cmd = [sys.executable, str(ROOT / "scripts" / "attack.py"), "-m", *overrides,
           "defense.bits=1,2,3,4"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    runs = tmp_path / "ci" / "runs" / "sweep"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list(runs.glob("*/summary.json")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}
    assert 1 <= len(done) < 4, f"expected a partial sweep, found {sorted(done)}"
    first = json.loads(next(iter(runs.glob("*/summary.json"))).read_text())
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    after = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}
    assert len(after) == 4
    for name, mtime in done.items():
        assert after[name] == mtime, f"finished cell {name} was recomputed"
    assert not list(runs.glob("*/partial"))  # the killed cell's attack state is gone
    assert json.loads((runs / first["cell"] / "summary.json").read_text()) == first


def test_interrupted_cell_resumes_its_attack(tmp_path, monkeypatch):
    """A cell stopped during its fourth binary-search step (the second of its second restart)
    keeps the three finished steps; the rerun runs only the fourth and writes what an
    uninterrupted run writes."""
    base = FAST + ["defense=bit_depth", "defense.bits=1", "attack.restarts=2",
                   "attack.random_start=0.05"]
    reference_cfg = compose_cfg("attack", tiny_overrides(tmp_path, base + [
        "experiment_name=reference"]))
    reference = run_cell(reference_cfg)
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, base + ["experiment_name=resumed"]))
    steps = stop_cw_in_step(monkeypatch, 4)
    with pytest.raises(StoppedAttack):
        run_cell(cfg)
    store = cell_store(cfg)[0]
    assert not store.summary_path.exists()
    assert len(list(store.directory.glob("partial/*/*.pt"))) == 1
    steps.clear()
    resumed = run_cell(cfg)
    assert len(steps) == 1  # only the unfinished step ran
    assert not (store.directory / "partial").exists()
    for key in ("success_rate", "mean_l2", "attack_iterations", "n_images"):
        assert resumed[key] == reference[key], key
    pd.testing.assert_frame_equal(store.records(), cell_store(reference_cfg)[0].records())


@pytest.mark.parametrize("threat", ["zero", "limited"])
def test_threat_models_run_end_to_end(threat, tmp_path):
    """zero: the unsecured classifier is attacked; limited: the attacker's copy (one half of the
    training set) is attacked and the defender's copy (the other half) evaluated."""
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, FAST + [
        f"threat={threat}", "defense=bit_depth", "defense.bits=1", "n_images=6"]))
    summary = run_cell(cfg)
    assert summary["threat"] == threat
    models = sorted(p.name for p in (tmp_path / "cache" / "models").iterdir())
    if threat == "limited":
        assert any("-attacker-" in m for m in models)
        assert any("-defender-" in m for m in models)
    else:
        assert summary["system_attacked"] == "undefended"
        assert summary["system_evaluated"] == "bit_depth_1"
    records = cell_store(cfg)[0].records()
    # what counts as fooling the defense is judged on the evaluated (defender's) system
    assert (records["fooled_defense"] <= records["success"]).all()


def test_grosse_secured_classifier_is_trained_and_attacked(tmp_path):
    """cw2017 §3.1: an (N+1)-class network; adaptive C&W must avoid the extra class."""
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, FAST + [
        "defense=grosse", "scale.detector_train_images=64", "targeted=true"]))
    summary = run_cell(cfg)
    records = cell_store(cfg)[0].records()
    assert summary["system_evaluated"] == "grosse"
    ok = records[records["fooled_defense"].astype(bool)]
    assert (ok["predicted_defended"] == ok["target"]).all()
    assert (ok["score_grosse"] <= 0).all()  # accepted: the adversarial class does not win


def test_summary_gains_metrics_derived_from_records_without_changing_stored_ones(tmp_path):
    """A cell written before a metric existed gets it from its records; stored values win."""
    records = pd.DataFrame({"success": [True, True, False, True],
                            "fooled_defense": [False, True, False, False],
                            "predicted_undefended": [3, 3, 1, 2], "label": [0, 1, 2, 3],
                            "target": [3, 3, 3, 3], "l2": [1.0, 2.0, float("inf"), 3.0],
                            "linf": [0.1, 0.2, float("inf"), 0.3]})
    store = CellStore(tmp_path / "cell")
    store.write(records, {}, {"config_hash": "h", "targeted": True, "mean_l2": 9.0}, "")
    summary = store.summary()
    # successes classified as the target by the bare classifier: rows 0 and 1 of 4
    assert summary["fooled_classifier_rate"] == 0.5
    assert summary["fooled_defense_rate"] == 0.25
    assert summary["mean_l2"] == 9.0  # the stored value, not the recomputed 2.0
    untargeted = CellStore(tmp_path / "u")
    untargeted.write(records, {}, {"config_hash": "h", "targeted": False}, "")
    # successes whose bare prediction differs from the true label: rows 0, 1 and 3
    assert untargeted.summary()["fooled_classifier_rate"] == 0.75


def test_a_complete_summary_is_returned_without_reading_the_records(tmp_path):
    """Table builds call summary() often: a summary that already has every always-derived
    metric is returned as stored, records.csv is not reread (here it is unreadable)."""
    from advrepro.experiments.summary import ALWAYS_SUMMARIZED

    stored = {"config_hash": "h", **{key: 0.5 for key in ALWAYS_SUMMARIZED}}
    store = CellStore(tmp_path / "cell")
    store.write(pd.DataFrame({"success": [True]}), {}, stored, "")
    (store.directory / "records.csv").write_bytes(b"\x00not a csv")
    assert store.summary() == stored
    del stored["fooled_classifier_rate"]
    store.write(pd.DataFrame({"success": [True]}), {}, stored, "")
    assert "fooled_classifier_rate" not in store.summary()  # old records lack the columns


def test_cells_record_the_commit_their_process_started_with(monkeypatch):
    """A commit made while a sweep runs must not be written into its later cells."""
    commits = iter(["aaaaaaa", "bbbbbbb"])
    monkeypatch.setattr(runner, "current_commit", lambda: next(commits))
    runner.code_commit.cache_clear()
    try:
        assert runner.code_commit() == "aaaaaaa"
        assert runner.code_commit() == "aaaaaaa"
    finally:
        runner.code_commit.cache_clear()

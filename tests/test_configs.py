import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, TINY_DATA, compose_cfg, tiny_overrides
from hydra.utils import instantiate

from advrepro.data import DatasetSpec, load_split
from advrepro.errors import ConfigError, DataCorruptError, DataNotFoundError
from advrepro.experiments.identity import attack_name, cell_identity

EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                     for p in (CONF / "experiment").rglob("*.yaml"))
TABLES = sorted(str(p.relative_to(CONF / "table").with_suffix(""))
                for p in (CONF / "table").rglob("*.yaml"))
GROUP_OPTIONS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml"))
                 for g in ("defense", "attack", "model", "threat", "scale", "dataset")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("scale", GROUP_OPTIONS["scale"])
def test_every_experiment_composes_and_instantiates(experiment, scale, tmp_path):
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, [f"experiment={experiment}",
                                                          f"scale={scale}"]))
    assert cfg.experiment_name == experiment
    defense = instantiate(cfg.defense, _convert_="all")
    attack = instantiate(cfg.attack)
    assert hasattr(defense, "build") and hasattr(attack, "run")
    model = instantiate(cfg.model)
    assert callable(model)
    name, digest = cell_identity(cfg)
    assert attack_name(cfg) in name and len(digest) == 16
    for det in cfg.detectors.values():
        assert hasattr(instantiate(det, _convert_="all"), "build")


def test_runtime_settings_leave_the_cell_hash_unchanged(tmp_path):
    """Settings that only choose how a run executes (device, progress bars, validation curves)
    must not make finished cells look stale; a result-changing setting must."""
    base = ["experiment=he2017/table1", "scale=ci"]
    _, digest = cell_identity(compose_cfg("attack", tiny_overrides(tmp_path, base)))
    for runtime in ("accelerator=cuda", "validate_every_n_epochs=3",
                    "scale.validate_every_n_epochs=5", "progress=false"):
        cfg = compose_cfg("attack", tiny_overrides(tmp_path, [*base, runtime]))
        assert cell_identity(cfg)[1] == digest, runtime
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, [*base, "scale.n_images=7"]))
    assert cell_identity(cfg)[1] != digest


@pytest.mark.parametrize("table", TABLES)
def test_every_table_config_instantiates(table, tmp_path):
    cfg = compose_cfg("table", [f"table={table}", f"paths.output_dir={tmp_path}"])
    t = instantiate(cfg.table, _convert_="all")
    experiments = [t.experiment] if isinstance(t.experiment, str) else t.experiment
    assert experiments and set(experiments) <= set(EXPERIMENTS)


@pytest.mark.parametrize("group", ["defense", "attack", "model", "threat"])
def test_every_group_option_instantiates(group, tmp_path):
    for option in GROUP_OPTIONS[group]:
        cfg = compose_cfg("attack", tiny_overrides(tmp_path, [f"{group}={option}"]))
        node = cfg[group]
        obj = instantiate(node, _convert_="all") if "_target_" in node else node
        assert obj is not None


@pytest.mark.parametrize("override, message", [
    ("defense.bits=0", "bits must be an integer in 1..8"),
    ("defense.bits=12", "bits must be an integer in 1..8"),
])
def test_bad_defense_values_raise_config_errors(override, message, tmp_path):
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, ["defense=bit_depth", override]))
    with pytest.raises(Exception) as info:
        instantiate(cfg.defense)
    assert message in str(info.value)


def test_bad_median_shape_and_unknown_detector(tmp_path):
    cfg = compose_cfg("attack", tiny_overrides(tmp_path, ["defense=median", "defense.size=3by3"]))
    with pytest.raises(Exception, match="median size must look like"):
        instantiate(cfg.defense)
    from advrepro.defenses.builders import build_detector
    from advrepro.experiments.workbench import Workbench

    bench = Workbench(compose_cfg("attack", tiny_overrides(tmp_path)))
    with pytest.raises(ConfigError, match="unknown detector 'nope'; choose one of: dropout, gong"):
        build_detector(bench, "nope")


def test_missing_data_says_where_it_looked_and_how_to_fix_it(tmp_path):
    spec = DatasetSpec("mnist", str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataNotFoundError) as info:
        load_split(spec, "train")
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg and "ADVREPRO_DATA" in msg


def test_cifar_with_wrong_checksums_names_the_opt_out(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not the official bytes")
    spec = DatasetSpec("cifar10", str(tmp_path), download=False)
    with pytest.raises(DataCorruptError, match="data_batch_1 does not match.*checksum=false"):
        load_split(spec, "test")


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ConfigError, match="choose one of: cifar10, mnist"):
        DatasetSpec("svhn", "data")


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args],
                          capture_output=True, text=True, timeout=300)


def test_entry_point_prints_one_line_for_a_bad_value(tmp_path):
    out = _run("attack.py", *tiny_overrides(tmp_path, ["defense=bit_depth", "defense.bits=0"]))
    assert out.returncode == 2
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    assert lines == ["error: defense.bits must be an integer in 1..8, got 0"]


def test_entry_point_names_valid_choices_for_an_unknown_option(tmp_path):
    out = _run("attack.py", *tiny_overrides(tmp_path, ["defense=nosuch"]))
    assert out.returncode != 0
    assert "Available options in 'defense'" in out.stderr and "bit_depth" in out.stderr
    assert "Traceback" not in out.stderr


def test_entry_point_reports_missing_data_in_one_line(tmp_path):
    out = _run("train.py", f"paths.data_root={tmp_path}", "dataset.download=false",
               f"paths.output_dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: mnist not found under")


def test_shipped_tiny_subset_loads_through_torchvision():
    x, y = load_split(DatasetSpec("mnist", str(TINY_DATA), download=False), "train")
    assert x.shape == (300, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert len(set(y.tolist())) == 10
    assert Path(TINY_DATA / "MNIST" / "raw").is_dir()

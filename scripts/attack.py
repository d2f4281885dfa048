"""Run experiment cells: one cell, or a Hydra multirun sweep of them.

    python scripts/attack.py defense=bit_depth defense.bits=3
    python scripts/attack.py -m experiment=he2017/table1          # sweep defined by the experiment
    python scripts/attack.py -m defense=bit_depth defense.bits=1,2,3 hydra/launcher=joblib
"""

import hydra
from omegaconf import DictConfig

from advrepro.cli import summarise_hydra_errors, user_errors_as_one_line
from advrepro.experiments.runner import run_cell
from advrepro.experiments.summary import summary_line


@summarise_hydra_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="attack")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    print(summary_line(run_cell(cfg)))


if __name__ == "__main__":
    main()

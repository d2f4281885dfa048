"""Build a paper table (CSV, Markdown, figures) from finished experiment cells.

    python scripts/table.py table=he2017/table1
"""

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from advrepro.cli import summarise_hydra_errors, user_errors_as_one_line
from advrepro.report.tables import TableContext, to_markdown


@summarise_hydra_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="table")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    ctx = TableContext(cfg.paths.runs_dir, cfg.paths.tables_dir, cfg.paths.figures_dir,
                       cfg.scale.name, cfg.command)
    table = instantiate(cfg.table, _convert_="all")
    frame = table.build(ctx)
    print(to_markdown(frame))
    name = getattr(table, "output", None) or table.table
    print(f"\nwritten to {cfg.paths.tables_dir}/{table.paper}/{name}.csv")


if __name__ == "__main__":
    main()

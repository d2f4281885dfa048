"""The papers' own numbers, typed in from ../shared/papers with their citation
(``paper_values.csv``: paper, table, row, column, value, source)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd


@lru_cache(maxsize=1)
def paper_values() -> pd.DataFrame:
    with resources.files("advrepro.report").joinpath("paper_values.csv").open() as fh:
        return pd.read_csv(fh, dtype={"row": str, "column": str})


def paper_value(paper: str, table: str, row: str, column: str) -> float:
    """The paper's value, or NaN where the paper reports none."""
    df = paper_values()
    hit = df[(df.paper == paper) & (df.table == table) & (df.row == str(row))
             & (df.column == column)]
    return float(hit.value.iloc[0]) if len(hit) else float("nan")


def citation(paper: str, cited: str | list[list[str]]) -> str:
    """The sources of the paper's values a table shows: all of paper table ``cited`` (a name),
    or only the values ``cited`` lists ([table, row, column] each)."""
    df = paper_values()
    hit = df[df.paper == paper]
    if isinstance(cited, str):
        hit = hit[hit.table == cited]
    else:
        wanted = {tuple(str(part) for part in ref) for ref in cited}
        hit = hit[[key in wanted for key in zip(hit.table, hit.row, hit.column, strict=True)]]
    return "; ".join(sorted(set(hit.source))) if len(hit) else ""

"""Move finished cells under a results directory to the current cell identity (no recompute).

    python scripts/migrate_cells.py outputs
"""

import sys

from advrepro.experiments.migrate import migrate_cells

if __name__ == "__main__":
    for old, new in migrate_cells(sys.argv[1] if len(sys.argv) > 1 else "outputs"):
        print(f"{old} -> {new}")

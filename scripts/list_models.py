"""List the trained models of a model cache as CSV (name, key, accuracy, sizes, training time).

    python scripts/list_models.py outputs/cache/models [NAME_PREFIX ...] > models.csv
"""

import sys

from advrepro.training.cache import cached_models

if __name__ == "__main__":
    frame = cached_models(sys.argv[1] if len(sys.argv) > 1 else "outputs/cache/models",
                          sys.argv[2:])
    print(frame.to_csv(index=False), end="")

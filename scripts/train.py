"""Train a model of the papers, or fetch it from the train-once cache.

    python scripts/train.py dataset=mnist model=cw_mnist train=mnist
"""

import logging
import time

import hydra
from omegaconf import DictConfig

from advrepro.cli import summarise_hydra_errors, user_errors_as_one_line
from advrepro.experiments.workbench import Workbench

log = logging.getLogger("advrepro.train")


@summarise_hydra_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    start = time.time()
    model = Workbench(cfg).classifier()
    meta = model.cache_meta
    print(
        f"{meta['name']} ({meta['key']}): test accuracy {meta['val_accuracy']:.4f} on "
        f"{meta['val_size']} images; trained in {meta['train_seconds_this_run']} s; "
        f"this request took {time.time() - start:.2f} s"
    )


if __name__ == "__main__":
    main()

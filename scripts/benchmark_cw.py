"""Benchmark our batched C&W L2 against foolbox, torchattacks and ART (see conf/benchmark.yaml).

    python scripts/benchmark_cw.py
"""

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig

from advrepro.cli import summarise_hydra_errors, user_errors_as_one_line
from advrepro.data import random_targets, sample_correctly_classified
from advrepro.experiments.benchmark import Budget, run_benchmark
from advrepro.experiments.workbench import Workbench
from advrepro.report.tables import to_markdown


@summarise_hydra_errors
@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    bench = Workbench(cfg)
    model = bench.classifier().cpu()
    x, y = bench.test_set()
    idx = sample_correctly_classified(model, x, y, int(cfg.n_images), cfg.seed)
    target = random_targets(y[idx], 10, cfg.seed)
    rows, overhead = run_benchmark(model, x[idx], target, Budget(**cfg.budget), list(cfg.peers))
    print(to_markdown(pd.DataFrame(rows)))
    print(f"\nours without early abort: {overhead['attack_seconds']:.1f} s for "
          f"{overhead['steps']} steps; the model's forward+backward alone: "
          f"{overhead['model_forward_backward_seconds']:.1f} s; overhead "
          f"{overhead['overhead']:.1%} ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()

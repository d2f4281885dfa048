"""advrepro: reproduce the tables of He et al. 2017, Carlini & Wagner 2017, Tramer et al. 2017
and Adam et al. 2018 with Hydra configs, a Lightning trainer and one batched attack engine."""

__version__ = "0.1.0"

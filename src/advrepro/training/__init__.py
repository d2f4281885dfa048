"""Lightning training with a train-once model cache."""

from advrepro.training.cache import ModelCache, TrainRequest, model_key
from advrepro.training.module import ClassifierModule
from advrepro.training.recipe import TrainRecipe

__all__ = ["ClassifierModule", "ModelCache", "TrainRecipe", "TrainRequest", "model_key"]

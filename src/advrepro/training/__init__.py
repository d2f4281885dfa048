"""Lightning training with a train-once model cache."""

from advrepro.training.cache import ModelCache, TrainRequest, model_key
from advrepro.training.module import ClassifierModule
from advrepro.training.jacobian_module import (
    JacobianNormModule,
    JacobianPairModule,
    JacobianRecipe,
)
from advrepro.training.recipe import TrainRecipe
from advrepro.training.triplet_module import TripletModule, TripletRecipe
from advrepro.training.vae_module import VAEModule, VAERecipe

__all__ = [
    "ClassifierModule",
    "JacobianNormModule",
    "JacobianPairModule",
    "JacobianRecipe",
    "ModelCache",
    "TrainRecipe",
    "TrainRequest",
    "TripletModule",
    "TripletRecipe",
    "VAEModule",
    "VAERecipe",
    "model_key",
]

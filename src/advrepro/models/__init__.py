"""The papers' architectures as plain ``nn.Module`` classes built from config.

Every model returns logits from ``forward`` and exposes the hidden layers the defenses read
through :meth:`PaperModel.hidden` (``final_hidden`` for every model, ``first_residual_block``
for the ResNet)."""

from advrepro.models.base import PaperModel
from advrepro.models.cw_mnist import CarliniWagnerMNIST
from advrepro.models.lenet import LeNet
from advrepro.models.mlp import LogisticRegression, PCAFullyConnected
from advrepro.models.resnet import MetzenResNet
from advrepro.models.tramer import TramerModelA, TramerModelB, TramerModelC, TramerModelD
from advrepro.models.triplet import EmbeddingNet, KNNSoftmaxClassifier, TripletNetwork
from advrepro.models.vae import ActivationVAE

__all__ = [
    "ActivationVAE",
    "CarliniWagnerMNIST",
    "EmbeddingNet",
    "KNNSoftmaxClassifier",
    "LeNet",
    "LogisticRegression",
    "MetzenResNet",
    "PCAFullyConnected",
    "PaperModel",
    "TramerModelA",
    "TramerModelB",
    "TramerModelC",
    "TramerModelD",
    "TripletNetwork",
]

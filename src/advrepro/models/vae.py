"""The noise-removing operator of adam2018 §3.1: a VAE that reconstructs one layer's input.

One :class:`ActivationVAE` is trained per insertion point (the image; the output of each
convolutional block of LeNet; the input of LR) to reconstruct the activations a trained
classifier produces there (adam2018 §4.1, Supplementary "Reconstruction of Feature
Embeddings"). The paper gives no architecture; the layer sizes are chosen in
``conf/model/adam_vae_*.yaml``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advrepro.errors import require_choice

OUTPUTS = ("sigmoid", "softplus")


def classifier_stages(classifier: nn.Module) -> tuple[tuple[str, ...], list[nn.Module]]:
    """Insertion points and stages of ``classifier``: ``stages()`` of a model that offers it
    (LeNet), else the image as the only insertion point (LR: its VAE cleans its input)."""
    if hasattr(classifier, "stages"):
        return tuple(classifier.insertion_points), list(classifier.stages())
    return ("input",), [classifier]


class ActivationVAE(nn.Module):
    """Fully connected VAE on a flattened activation of shape ``shape``.

    encoder: flatten -> Linear(d, hidden) -> ReLU -> (mu, log sigma^2) in R^latent
    decoder: Linear(latent, hidden) -> ReLU -> Linear(hidden, d) -> ``output`` -> reshape

    ``output`` = "sigmoid" for images in [0, 1] (Bernoulli likelihood, binary cross-entropy) or
    "softplus" for post-ReLU activations in [0, inf) (Gaussian likelihood, squared error).

    As an operator inside a classifier (``forward``) the VAE is deterministic: the decoder is
    applied to the posterior mean mu, with no sampling. adam2018 does not say whether z is
    sampled at test time; its "deterministic defence" (Table 1, Table 7) is a fixed arrangement
    whose accuracy is reported as one number, and its randomness (§3.1) is the random
    *arrangement*, so we take the VAE itself to be deterministic at test time. Sampling
    (``sample=True``) is used for training (the reparameterisation trick).
    """

    def __init__(self, shape: list[int] | tuple[int, ...], hidden: int = 400, latent: int = 20,
                 output: str = "sigmoid") -> None:
        super().__init__()
        require_choice("model.output", output, OUTPUTS)
        self.shape = tuple(int(s) for s in shape)
        self.output = output
        dim = math.prod(self.shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h)

    def decode_logits(self, z: Tensor) -> Tensor:
        """Decoder output before the output non-linearity, flat (B x d)."""
        return self.decoder(z)

    def _activate(self, out: Tensor) -> Tensor:
        out = torch.sigmoid(out) if self.output == "sigmoid" else F.softplus(out)
        return out.view(-1, *self.shape)

    def forward(self, x: Tensor, sample: bool = False) -> Tensor:
        """Reconstruction of ``x``: decoder(mu(x)), or decoder(z ~ q(z|x)) with ``sample``."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return self._activate(self.decode_logits(z))

    def loss_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example reconstruction loss (negative log-likelihood up to a constant, summed over
        features) and KL(q(z|x) || N(0, I)) for one reparameterised sample."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        out = self.decode_logits(z)
        target = x.flatten(1)
        if self.output == "sigmoid":
            recon = F.binary_cross_entropy_with_logits(out, target, reduction="none").sum(1)
        else:
            recon = (F.softplus(out) - target).pow(2).sum(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        return recon, kl

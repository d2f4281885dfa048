"""Li & Li's hidden-layer PCA cascade (cw2017 §4.3).

For the i-th convolutional layer of the classifier, a linear SVM C_i acts on the PCA of that
layer's output (natural = 0, adversarial = 1). The *cascade* accepts an input as natural only
if every C_i accepts it, and rejects it as soon as one does not (cw2017 §4.3).

Choices made here (cw2017 gives no more detail):

- a layer's output is the output of an ``nn.Conv2d`` module (before its activation), every
  ``Conv2d`` of the model in the order the forward pass reaches them, flattened;
- its PCA is fitted on the *natural* training images' outputs; the SVM reads the first
  ``k`` coefficients, standardised by their mean and standard deviation on the SVM's
  training data (scikit-learn ``LinearSVC``, hinge-squared loss, ``C``);
- ``sequential=True`` trains the cascade as cascades are trained: stage i learns from the
  training examples every earlier stage accepted (stages with too few examples left learn
  from all of them);
- each stage is kept as torch buffers (PCA, scaling, w, b), so the detector logit
  D(x) = max_i (w_i . z_i(x) + b_i) is differentiable, > 0 exactly when some stage
  rejects, and plugs into :class:`~advrepro.defenses.detectors.DetectorDefense`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from advrepro.defenses.pca import PCA


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    """Every ``nn.Conv2d`` of ``model`` in registration order."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def conv_layer_outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The flattened output of every convolutional layer of ``model`` on ``x``, in the order
    the forward pass reaches them (N x D_i each); gradients flow when ``x`` requires them."""
    outputs: list[tuple[int, Tensor]] = []
    handles = [layer.register_forward_hook(
        lambda mod, inp, out, i=i: outputs.append((i, out.flatten(1))))
        for i, layer in enumerate(conv_layers(model))]
    if not handles:
        raise ValueError(f"{type(model).__name__} has no convolutional layer")
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [out for _, out in outputs]


def cascade_accepts(stage_scores: Tensor) -> Tensor:
    """The cascade rule on stage scores (stages x N, > 0: that stage says adversarial): an
    input is accepted as natural only if every stage accepts it (score <= 0)."""
    return (stage_scores <= 0).all(0)


def true_positive_rate(flagged_adversarial: Tensor) -> float:
    """Share of adversarial inputs flagged (flags of the adversarial inputs only)."""
    return float(flagged_adversarial.double().mean())


def false_positive_rate(flagged_natural: Tensor) -> float:
    """Share of natural inputs flagged (flags of the natural inputs only)."""
    return float(flagged_natural.double().mean())


def fit_linear_svm(features: Tensor, labels: Tensor, c: float = 1.0, seed: int = 0,
                   max_iter: int = 5000) -> tuple[Tensor, float]:
    """(w, b) of scikit-learn's ``LinearSVC`` on ``features`` (N x d) and 0/1 ``labels``:
    the decision value is features @ w + b, > 0 for class 1."""
    from sklearn.svm import LinearSVC

    y = labels.cpu().numpy()
    if len(set(y.tolist())) != 2:
        raise ValueError("the SVM needs natural (0) and adversarial (1) examples")
    svm = LinearSVC(C=c, random_state=seed, max_iter=max_iter)
    svm.fit(features.detach().cpu().double().numpy(), y)
    w = torch.as_tensor(svm.coef_[0], dtype=features.dtype, device=features.device)
    return w, float(svm.intercept_[0])


class LayerSVM(nn.Module):
    """One stage: decision value w . ((PCA_k(h) - mu) / sigma) + b of a layer output h."""

    def __init__(self, pca: PCA, k: int, scale_mean: Tensor, scale_std: Tensor, weight: Tensor,
                 bias: float) -> None:
        super().__init__()
        self.pca = pca
        self.k = k
        self.register_buffer("scale_mean", scale_mean)
        self.register_buffer("scale_std", scale_std)
        self.register_buffer("weight", weight)
        self.bias = bias

    def features(self, h: Tensor) -> Tensor:
        return (self.pca.transform(h, self.k) - self.scale_mean) / self.scale_std

    def forward(self, h: Tensor) -> Tensor:
        return self.features(h) @ self.weight + self.bias

    @classmethod
    def fit(cls, natural: Tensor, adversarial: Tensor, k: int, c: float = 1.0,
            seed: int = 0, pca: PCA | None = None) -> LayerSVM:
        """Stage trained on flattened layer outputs; PCA from the natural outputs unless
        given."""
        if pca is None:
            pca = _fit_pca(natural, k, seed)
        z = pca.transform(torch.cat([natural, adversarial]), k)
        mean, std = z.mean(0), z.std(0).clamp(min=1e-8)
        labels = torch.cat([torch.zeros(len(natural)), torch.ones(len(adversarial))]).long()
        w, b = fit_linear_svm((z - mean) / std, labels, c, seed)
        return cls(pca, k, mean, std, w, b)


def _fit_pca(outputs: Tensor, k: int, seed: int) -> PCA:
    n, d = outputs.shape
    if k > min(n, d):
        raise ValueError(f"k = {k} components need at least {k} images and dimensions")
    if min(n, d) <= 1000:
        return PCA.fit(outputs, max_components=k)
    return PCA.fit_lowrank(outputs, k, seed=seed)


class HiddenLayerPCACascade(nn.Module):
    """Li & Li's cascade over the classifier's convolutional layers (cw2017 §4.3), as a
    detector logit: D(x) = max_i C_i(x) (> 0: some stage rejects, so adversarial)."""

    def __init__(self, classifier: nn.Module, stages: list[LayerSVM]) -> None:
        super().__init__()
        n_conv = len(conv_layers(classifier))
        if not 1 <= len(stages) <= n_conv:
            raise ValueError(f"{len(stages)} stages for {n_conv} convolutional layers")
        self.classifier = classifier
        self.stages = nn.ModuleList(stages)

    def stage_scores(self, x: Tensor) -> Tensor:
        """Decision value of every stage (stages x N)."""
        outputs = conv_layer_outputs(self.classifier, x)
        return torch.stack([stage(h) for stage, h in zip(self.stages, outputs, strict=False)])

    def accepts(self, x: Tensor) -> Tensor:
        return cascade_accepts(self.stage_scores(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.stage_scores(x).amax(0)


@dataclass
class CascadeRates:
    """TPR / FPR of the first stage alone and of the whole cascade (cw2017 §4.3 reports
    both on MNIST and CIFAR-10)."""

    first_stage_tpr: float
    first_stage_fpr: float
    cascade_tpr: float
    cascade_fpr: float


@torch.no_grad()
def cascade_rates(cascade: HiddenLayerPCACascade, natural: Tensor, adversarial: Tensor
                  ) -> CascadeRates:
    nat, adv = cascade.stage_scores(natural), cascade.stage_scores(adversarial)
    return CascadeRates(
        first_stage_tpr=true_positive_rate(adv[0] > 0),
        first_stage_fpr=false_positive_rate(nat[0] > 0),
        cascade_tpr=true_positive_rate(~cascade_accepts(adv)),
        cascade_fpr=false_positive_rate(~cascade_accepts(nat)),
    )


@torch.no_grad()
def fit_cascade(classifier: nn.Module, natural: Tensor, adversarial: Tensor, k: int = 20,
                c: float = 1.0, sequential: bool = True, max_stages: int | None = None,
                seed: int = 0, batch_size: int = 500, min_examples: int = 10
                ) -> HiddenLayerPCACascade:
    """Fit one :class:`LayerSVM` per convolutional layer of ``classifier`` (the first
    ``max_stages`` of them) on natural vs adversarial images."""

    def outputs(x: Tensor) -> list[Tensor]:
        chunks = [conv_layer_outputs(classifier, x[i:i + batch_size])
                  for i in range(0, len(x), batch_size)]
        return [torch.cat(layer) for layer in zip(*chunks, strict=True)]

    nat_out, adv_out = outputs(natural), outputs(adversarial)
    n_stages = len(nat_out) if max_stages is None else min(max_stages, len(nat_out))
    keep_nat = torch.ones(len(natural), dtype=torch.bool, device=natural.device)
    keep_adv = torch.ones(len(adversarial), dtype=torch.bool, device=adversarial.device)
    stages = []
    for i in range(n_stages):
        nat_i, adv_i = nat_out[i], adv_out[i]
        if sequential and min(int(keep_nat.sum()), int(keep_adv.sum())) >= min_examples:
            nat_i, adv_i = nat_i[keep_nat], adv_i[keep_adv]
        pca = _fit_pca(nat_out[i], k, seed)  # the layer's PCA: all natural outputs
        stage = LayerSVM.fit(nat_i, adv_i, k, c, seed, pca=pca)
        stages.append(stage)
        keep_nat &= stage(nat_out[i]) <= 0
        keep_adv &= stage(adv_out[i]) <= 0
    return HiddenLayerPCACascade(classifier, stages).eval()

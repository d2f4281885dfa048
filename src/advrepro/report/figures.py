"""Figures: paper-vs-ours plots, transfer heatmaps and example grids (he2017 Figures 1-7)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch

from advrepro.io import atomic_write_bytes


def _save(fig: plt.Figure, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def paper_vs_ours_plot(table: pd.DataFrame, metric: str, x_label: str, title: str,
                       path: Path) -> None:
    """Ours and the paper's value of ``metric`` for each row of a sweep table."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = range(len(table))
    ax.plot(x, table[f"{metric}_paper"], "o--", label="paper")
    ax.plot(x, table[f"{metric}_ours"], "s-", label="ours")
    ax.set_xticks(list(x), table["row"].astype(str))
    ax.set_xlabel(x_label)
    ax.set_ylabel(metric.replace("_", " ").replace("l2", "L2").replace("l1", "L1"))
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def transfer_heatmaps(ours: pd.DataFrame, paper: pd.DataFrame, title: str, path: Path,
                      x_label: str = "source defense", y_label: str = "target defense",
                      vmax: float = 1.0) -> None:
    """Side-by-side heatmaps of ours and the paper's matrix (he2017 Table 3: rows target,
    columns source; other tables name their axes)."""
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.1 * ours.shape[1] * 2, 1.6 + 0.7 * len(ours)))
    for ax, (name, m) in zip(axes, (("ours", ours), ("paper", paper)), strict=False):
        im = ax.imshow(m.values.astype(float), vmin=0, vmax=vmax, cmap="viridis")
        ax.set_xticks(range(m.shape[1]), m.columns, rotation=20, fontsize=8)
        ax.set_yticks(range(m.shape[0]), m.index, fontsize=8)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(name)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = float(m.values[i, j])
                ax.text(j, i, "n/a" if v != v else f"{v:.0%}" if vmax == 1 else f"{v:.2g}",
                        ha="center", va="center", color="w" if v < 0.6 * vmax else "k")
    fig.suptitle(title, fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8)
    _save(fig, path)


def example_grid(original: torch.Tensor, adversarial: torch.Tensor, l2: torch.Tensor,
                 title: str, path: Path, n: int = 6) -> None:
    """Originals over adversarials with their L2 distortions: the 3 smallest and 3 largest,
    in ascending order, as in he2017 Figures 1-7."""
    order = torch.argsort(l2)
    finite = order[torch.isfinite(l2[order])]
    if len(finite) == 0:
        return
    pick = finite if len(finite) <= n else torch.cat([finite[: n // 2], finite[-(n - n // 2):]])
    fig, axes = plt.subplots(2, len(pick), figsize=(1.6 * len(pick), 3.6), squeeze=False)
    for j, i in enumerate(pick.tolist()):
        for row, img in enumerate((original[i], adversarial[i])):
            ax = axes[row][j]
            im = img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1)
            ax.axis("off")
        axes[1][j].set_title(f"{float(l2[i]):.3g}", fontsize=9, y=-0.25)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def roc_plot(curves: dict[str, tuple[torch.Tensor, torch.Tensor]], title: str, path: Path) -> None:
    """ROC curves (false-positive rate vs true-positive rate) of several detectors."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr.numpy(), tpr.numpy(), label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false-positive rate (clean originals)")
    ax.set_ylabel("true-positive rate (adversarial)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    _save(fig, path)


def confidence_histogram(series: dict[str, list[float]], voters: int, threshold: float,
                         title: str, path: Path) -> None:
    """Distribution of an ensemble's confidence (share of ``voters`` votes for the winner)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    bins = [(i - 0.5) / voters for i in range(voters + 2)]
    for name, values in series.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{name} ({len(values)})",
                density=True)
    ax.axvline(threshold, linestyle=":", color="grey", label="rejection threshold")
    ax.set_xlabel("ensemble confidence")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)

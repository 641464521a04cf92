"""Figures of the retrieval-head analyses: per-head scores (layer x head) and NIAH accuracy heatmaps (length x depth) per masking condition.

    plot_head_scores(scores, "out/figures/retrieval_scores.png", value="retrieval_score")
    plot_masking_heatmaps(masked, "out/figures/masking_heatmaps.png")     # unmasked, then top-k and random-k per mask (uniform, remove)

Drawn from the tidy tables the heads pipeline writes (retrieval_scores.csv,
qr_heads.csv, masking.csv), nothing else.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .saving import save_figure


def plot_head_scores(scores: pd.DataFrame, path: str | Path, value: str = "retrieval_score", title: str = "") -> Path:
    """Heatmap of one per-head score (rows: layers, columns: heads)."""
    grid = scores.pivot(index="layer", columns="head", values=value)
    fig, ax = plt.subplots(figsize=(1.6 + 0.5 * grid.shape[1], 1.0 + 0.4 * grid.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all NaN when no trial succeeded: an empty map, already warned about
        sns.heatmap(grid, ax=ax, cmap="viridis", annot=grid.shape[1] <= 16, fmt=".2f", annot_kws={"fontsize": 6}, cbar_kws={"label": value})
    ax.set_title(title or value, fontsize=9)
    return save_figure(fig, path)


def plot_masking_heatmaps(masked: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """NIAH accuracy (context length x needle depth) per masking condition and mask, averaged over random draws.

    The unmasked condition is drawn once; a table without a `mask` column (written before there were two maskings) is drawn as one mask.
    """
    masked = masked if "mask" in masked else masked.assign(mask="remove")
    panels = [("", "none", masked[masked["condition"] == "none"])] if (masked["condition"] == "none").any() else []
    for mask in dict.fromkeys(masked["mask"]):
        for condition in dict.fromkeys(masked.loc[masked["condition"] != "none", "condition"]):
            part = masked[(masked["mask"] == mask) & (masked["condition"] == condition)]
            if len(part):
                panels.append((mask, condition, part))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (mask, condition, part) in zip(axes[0], panels):
        part = part[part["mask"] == part["mask"].iloc[0]]  # the unmasked runs of every mask are the same model
        grid = part.groupby(["context_length", "depth"])["success"].mean().unstack("depth")
        sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="RdYlGn", annot=True, fmt=".2f", annot_kws={"fontsize": 6}, cbar=ax is axes[0][-1])
        n = int(part["n_masked"].iloc[0]) if len(part) else 0
        what = f"{condition}, {mask} mask ({n} heads)" if mask else condition
        ax.set_title(f"{what}: {part['success'].mean():.2f}", fontsize=8)
        ax.set_xlabel("needle depth")
        ax.set_ylabel("context length")
    if title:
        fig.suptitle(title, fontsize=9, y=1.04)
    return save_figure(fig, path)

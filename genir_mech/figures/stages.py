"""Figure: the localised decoder stages drawn over the per-layer contribution profile.

    plot_stages(layer_means, stability, definition, "runs/stages/dsi-synth/figures/stages.png", title="dsi-synth")

`layer_means` is the tidy per-layer table a stage localisation writes
(layer, component, metric, value: means over queries), `stability` its
boundary table (boundary, selected, frequency). Panels share the layer axis:
contribution ratio per component type, cosine with the residual stream, and
(when measured) the single-layer ablation effect. Each stage is a shaded band
labelled with its name; each selected boundary is a dashed line labelled with
its bootstrap stability.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..stage_definition import StageDefinition
from .saving import save_figure

PANELS = {"ratio": "contribution ratio", "cos_residual": "cos(output, residual)", "layer_ablation": "queries leaving rank 1\n(single-layer ablation)"}


def selected_boundaries(stability: pd.DataFrame) -> dict[int, float]:
    """Boundary layer -> bootstrap frequency, for the boundaries the segmentation chose."""
    chosen = stability[stability["selected"].astype(bool)]
    return {int(b): float(f) for b, f in zip(chosen["boundary"], chosen["frequency"])}


def plot_stages(layer_means: pd.DataFrame, stability: pd.DataFrame, definition: StageDefinition, path: str | Path, title: str = "") -> Path:
    """Per-layer features with the located stages shaded, from the tables a stage localisation writes."""
    means = layer_means
    panels = [m for m in PANELS if m in set(means["metric"])]
    n_layers = int(means["layer"].max()) + 1
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.35 * n_layers + 3), 2.4 * len(panels)), sharex=True, squeeze=False)
    colours = plt.get_cmap("Pastel1")
    boundaries = selected_boundaries(stability)
    for ax, metric in zip(axes[:, 0], panels):
        sub = means[means["metric"] == metric]
        for component, rows in sub.groupby("component", sort=False):
            ax.plot(rows["layer"], rows["value"], marker="o", ms=3, label=component)
        for i, stage in enumerate(definition.stages):
            ax.axvspan(min(stage.layers) - 0.5, max(stage.layers) + 0.5, color=colours(i % 9), alpha=0.5, lw=0)
        for b in boundaries:
            ax.axvline(b - 0.5, color="k", ls="--", lw=0.8)
        if metric == "cos_residual":
            ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylabel(PANELS[metric])
    top = axes[0, 0]
    for stage in definition.stages:
        top.text((min(stage.layers) + max(stage.layers)) / 2, 1.02, stage.name, transform=top.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    bottom = axes[-1, 0]
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for b, freq in boundaries.items():
        bottom.text(b - 0.5, -0.32, f"{freq:.0%}", transform=bottom.get_xaxis_transform(), ha="center", va="top", fontsize=7)
    top.legend(fontsize=7, loc="upper right")
    bottom.set_xlabel("decoder layer (dashed: stage boundaries, with bootstrap stability)")
    if title:
        fig.suptitle(title, y=1.0)
    return save_figure(fig, path)

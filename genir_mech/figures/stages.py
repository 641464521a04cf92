"""Figure: the localised decoder stages drawn over the per-layer contribution profile.

    found = localise_stages(contrib, layers)
    plot_stages(found, "runs/stages/dsi-synth/stages.png", title="dsi-synth")

Panels share the layer axis: contribution ratio per component type, cosine
with the residual stream, and (when measured) the single-layer ablation effect.
Each stage is a shaded band labelled with its name; each boundary is a dashed
line labelled with its bootstrap stability.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .saving import save_figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PANELS = {"ratio": "contribution ratio", "cos_residual": "cos(output, residual)", "layer_ablation": "queries leaving rank 1\n(single-layer ablation)"}


def plot_stages(found, path: str | Path, title: str = "") -> Path:
    means = found.layer_means
    panels = [m for m in PANELS if m in set(means["metric"])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.35 * found.segmentation.n_layers + 3), 2.4 * len(panels)), sharex=True, squeeze=False)
    colours = plt.get_cmap("Pastel1")
    stability = found.boundary_stability()
    for ax, metric in zip(axes[:, 0], panels):
        sub = means[means["metric"] == metric]
        for component, rows in sub.groupby("component", sort=False):
            ax.plot(rows["layer"], rows["value"], marker="o", ms=3, label=component)
        for i, stage in enumerate(found.definition.stages):
            ax.axvspan(min(stage.layers) - 0.5, max(stage.layers) + 0.5, color=colours(i % 9), alpha=0.5, lw=0)
        for b in stability:
            ax.axvline(b - 0.5, color="k", ls="--", lw=0.8)
        if metric == "cos_residual":
            ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylabel(PANELS[metric])
    top = axes[0, 0]
    for stage in found.definition.stages:
        top.text((min(stage.layers) + max(stage.layers)) / 2, 1.02, stage.name, transform=top.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    bottom = axes[-1, 0]
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    for b, freq in stability.items():
        bottom.text(b - 0.5, -0.32, f"{freq:.0%}", transform=bottom.get_xaxis_transform(), ha="center", va="top", fontsize=7)
    top.legend(fontsize=7, loc="upper right")
    bottom.set_xlabel("decoder layer (dashed: stage boundaries, with bootstrap stability)")
    if title:
        fig.suptitle(title, y=1.0)
    return save_figure(fig, path)

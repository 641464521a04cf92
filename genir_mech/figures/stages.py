"""Figure: the localised decoder stages drawn over the per-layer contribution profile.

    fig = plot_stages(layer_means, stability, definition, "runs/stages/dsi-synth/figures/stages.png", title="dsi-synth")

`layer_means` is the tidy per-layer table a stage localisation writes
(layer, component, metric, value: means over queries), `stability` its
boundary table (boundary, selected, frequency). Panels share the layer axis:
contribution ratio per component type, cosine with the residual stream,
(when measured) the single-layer ablation effect, and the bootstrap frequency
of a boundary before each layer. Each stage is a band in its colour, named at
the top; each boundary between two stages is a dashed line labelled with its
bootstrap stability. A single stage is said so in the figure.
"""
from __future__ import annotations

import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..stage_definition import Stage, StageDefinition
from .saving import saved
from .style import component_colour, legend_outside, new_figure, readable, shade_stages, themed

PANELS = {"ratio": "contribution ratio", "cos_residual": "cosine with\nthe residual stream", "layer_ablation": "% of queries leaving\nrank 1 (one layer\nmean-ablated)"}


def selected_boundaries(stability: pd.DataFrame) -> dict[int, float]:
    """Boundary layer -> bootstrap frequency, for the boundaries the segmentation chose."""
    chosen = stability[stability["selected"].astype(bool)]
    return {int(b): float(f) for b, f in zip(chosen["boundary"], chosen["frequency"])}


def definition_boundaries(definition: StageDefinition) -> list[int]:
    """The first layer of every stage after the first: where the definition puts a boundary."""
    starts = sorted(min(s.layers) for s in definition.stages if s.layers)
    return starts[1:]


def plot_stages(layer_means: pd.DataFrame, stability: pd.DataFrame, definition: StageDefinition, path=None, title: str = ""):
    """Per-layer features with the located stages shaded and their boundaries drawn, from the tables a stage localisation writes."""
    means = layer_means
    panels = [m for m in PANELS if m in set(means["metric"])]
    n_layers = int(means["layer"].max()) + 1
    frequency = {int(b): float(f) for b, f in zip(stability["boundary"], stability["frequency"])}
    boundaries = definition_boundaries(definition)
    with themed():
        fig, axes = new_figure(len(panels) + 1, 1, figsize=(max(6.5, 0.4 * n_layers + 4), 2.1 * len(panels) + 1.8), sharex=True,
                               height_ratios=[2.0] * len(panels) + [1.0])
        for ax, metric in zip(axes[:-1, 0], panels):
            sub = means[means["metric"] == metric]
            scale = 100.0 if metric == "layer_ablation" else 1.0  # the table holds a fraction of queries; the axis says %
            for component, rows in sub.groupby("component", sort=False):
                ax.plot(rows["layer"], scale * rows["value"], marker="o", ms=3, color=component_colour(component), label=component)
            shade_stages(ax, definition, label=ax is axes[0, 0])
            for b in boundaries:
                ax.axvline(b - 0.5, color="k", ls="--", lw=1.0)
            if metric == "cos_residual":
                ax.axhline(0, color="grey", lw=0.5)
            ax.set_ylabel(PANELS[metric], fontsize=8)
        legend_outside(axes[0, 0], title="component")
        strip = axes[-1, 0]
        layers = sorted(frequency)
        strip.bar([b - 0.5 for b in layers], [100 * frequency[b] for b in layers], width=0.3, color="0.4")
        for b in boundaries:
            strip.axvline(b - 0.5, color="k", ls="--", lw=1.0)
            strip.text(b - 0.5, 1.02, f"{frequency.get(b, 0.0):.0%}", transform=strip.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)
        if not boundaries:
            strip.text(0.5, 0.5, f"one stage ({readable(definition.stages[0].name) if definition.stages else '-'}): no boundary selected",
                       transform=strip.transAxes, ha="center", va="center", fontsize=8, color="0.3")
        strip.set_ylim(0, 105)
        strip.set_ylabel("bootstrap %\nboundary here", fontsize=8)
        strip.xaxis.set_major_locator(MaxNLocator(integer=True))
        strip.set_xlim(-0.6, n_layers - 0.4)
        strip.set_xlabel("decoder layer (dashed: stage boundaries; bars: how often a bootstrap resample put a boundary before that layer)")
        if title:
            fig.suptitle(title)
    return saved(fig, path)


def plot_stages_per_step(layer_means: pd.DataFrame, step_stages: pd.DataFrame, path=None, title: str = ""):
    """One column per decoding step: the contribution profile of every component with that step's located stages shaded.

    `layer_means` is the per-step stage localisation's layer table (step, layer, component, metric, value),
    `step_stages` its stage table (step, stage, first_layer, last_layer). Read across a row: do the first
    (coarse) and last (fine) docid tokens go through the same decoder stages?
    """
    steps = sorted(int(s) for s in layer_means["step"].unique())
    panels = [m for m in PANELS if m in set(layer_means["metric"])]
    n_layers = int(layer_means["layer"].max()) + 1
    with themed():
        fig, axes = new_figure(len(panels), len(steps), figsize=(max(4.0, 0.3 * n_layers + 2.5) * len(steps) + 1.5, 2.2 * len(panels) + 1.2),
                               sharex=True, sharey="row")
        for col, step in enumerate(steps):
            rows = step_stages[step_stages["step"] == step]
            definition = StageDefinition(tuple(Stage(str(r.stage), tuple(range(int(r.first_layer), int(r.last_layer) + 1))) for r in rows.itertuples()))
            means = layer_means[layer_means["step"] == step]
            for row, metric in enumerate(panels):
                ax = axes[row, col]
                sub = means[means["metric"] == metric]
                scale = 100.0 if metric == "layer_ablation" else 1.0  # the table holds a fraction of queries; the axis says %
                for component, part in sub.groupby("component", sort=False):
                    ax.plot(part["layer"], scale * part["value"], marker="o", ms=3, color=component_colour(component), label=component)
                shade_stages(ax, definition, label=row == 0)
                for b in definition_boundaries(definition):
                    ax.axvline(b - 0.5, color="k", ls="--", lw=1.0)
                if metric == "cos_residual":
                    ax.axhline(0, color="grey", lw=0.5)
                if col == 0:
                    ax.set_ylabel(PANELS[metric], fontsize=8)
            axes[0, col].set_title(f"docid step {step}", pad=18, fontsize=9)
            axes[-1, col].set_xlabel("decoder layer")
            axes[-1, col].xaxis.set_major_locator(MaxNLocator(integer=True))
            axes[-1, col].set_xlim(-0.6, n_layers - 0.4)
        legend_outside(axes[0, -1], title="component")
        if title:
            fig.suptitle(title)
    return saved(fig, path)

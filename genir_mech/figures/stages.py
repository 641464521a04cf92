"""Figures: the localised decoder stages over the per-layer profile, and how the stage count moves with the knob.

    fig = plot_stages(layer_means, stability, definition, "runs/stages/dsi-synth/figures/stages.png", title="dsi-synth")
    fig = plot_stage_path(path, n_layers, definition, "runs/stages/dsi-synth/figures/stage_path.png")

`layer_means` is the tidy per-layer table a stage localisation writes
(layer, component, metric, value: means over queries), `stability` its
boundary table (boundary, selected, frequency). Panels share the layer axis:
contribution ratio per component type, cosine with the residual stream,
(when measured) the single-layer ablation effect, and the bootstrap frequency
of a boundary before each layer. Each stage is a band in its colour, named at
the top; each boundary between two stages is a dashed line labelled with its
bootstrap stability. A single stage is said so in the figure. Both residual
cosines are drawn when measured (solid: with the residual after the layer, the
paper's; dotted: entering the sublayer), and the logit-lens facts of the
functional tests when the localisation ran them.

`plot_stage_path` reads the knob path of a localisation (`stage_path.csv`):
one column per resolution of the grid, the segments the profile criterion
picks there stacked over the layers and coloured by their tested function,
marked where every boundary is functionally supported and where the chosen
stages are.
"""
from __future__ import annotations

import pandas as pd
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from ..stage_definition import Stage, StageDefinition
from .saving import saved
from .style import component_colour, legend_outside, new_figure, readable, shade_stages, stage_colour, themed

PANELS = {"ratio": "contribution ratio", "cos_residual": "cosine with\nthe residual stream", "layer_ablation": "% of queries leaving\nrank 1 (one layer\nmean-ablated)",
          "lens_rank_out": "relevant docid's rank\namong docids after\nthe layer (lens, median)",
          "lens_mlp_out_rank_share": "MLP output alone:\nrelevant docid's place\namong docids (lens,\nmedian; 0 first)"}
# drawn in the cosine panel with their own line style: the paper's (after the layer) solid, entering the sublayer dotted
COSINE_STYLES = {"cos_resid_post": "-", "cos_residual": ":"}
LOG_PANELS = {"lens_rank_out"}
OWN_LEGEND = {"cos_residual", "lens_rank_out", "lens_mlp_out_rank_share"}  # panels whose lines are not simply the components


def _panels(means: pd.DataFrame) -> list[str]:
    present = set(means["metric"])
    return [m for m in PANELS if m in present or (m == "cos_residual" and "cos_resid_post" in present)]


def _draw_panel(ax, means: pd.DataFrame, metric: str, label: bool = True) -> None:
    """One metric per component against the layer; the cosine panel holds both residual cosines."""
    scale = 100.0 if metric == "layer_ablation" else 1.0  # the table holds a fraction of queries; the axis says %
    metrics = [m for m in COSINE_STYLES if m in set(means["metric"])] if metric == "cos_residual" else [metric]
    for m in metrics:
        sub = means[means["metric"] == m]
        for component, rows in sub.groupby("component", sort=False):
            name = readable(component) if len(metrics) == 1 else f"{readable(component)}, {'after the layer' if m == 'cos_resid_post' else 'entering the sublayer'}"
            ax.plot(rows["layer"], scale * rows["value"], marker="o", ms=3, color=component_colour(component if component in ("self_attn", "cross_attn", "mlp") else "resid_post"),
                    ls=COSINE_STYLES.get(m, "-"), label=name if label else None)
    if metric == "cos_residual":
        ax.axhline(0, color="grey", lw=0.5)
    if metric in LOG_PANELS:
        ax.set_yscale("log")
    if metric == "lens_mlp_out_rank_share":
        ax.set_ylim(-0.03, 1.03)
        ax.axhline(0.5, color="grey", lw=0.5, ls=":")  # chance


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
    panels = _panels(means)
    n_layers = int(means["layer"].max()) + 1
    frequency = {int(b): float(f) for b, f in zip(stability["boundary"], stability["frequency"])}
    boundaries = definition_boundaries(definition)
    with themed():
        fig, axes = new_figure(len(panels) + 1, 1, figsize=(max(6.5, 0.4 * n_layers + 4), 2.1 * len(panels) + 1.8), sharex=True,
                               height_ratios=[2.0] * len(panels) + [1.0])
        for ax, metric in zip(axes[:-1, 0], panels):
            _draw_panel(ax, means, metric)
            shade_stages(ax, definition, label=ax is axes[0, 0])
            for b in boundaries:
                ax.axvline(b - 0.5, color="k", ls="--", lw=1.0)
            ax.set_ylabel(PANELS[metric], fontsize=8)
            if metric in OWN_LEGEND:
                legend_outside(ax)
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
    panels = _panels(layer_means)
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
                _draw_panel(ax, means, metric, label=col == len(steps) - 1)
                shade_stages(ax, definition, label=row == 0)
                for b in definition_boundaries(definition):
                    ax.axvline(b - 0.5, color="k", ls="--", lw=1.0)
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


def _path_segments(row) -> list[tuple[int, int, str]]:
    spans = [tuple(int(v) for v in part.split("-")) for part in str(row["spans"]).split(" | ")]
    return [(a, b, f) for (a, b), f in zip(spans, str(row["functions"]).split(" | "))]


def plot_stage_path(path_table: pd.DataFrame, n_layers: int | None = None, definition: StageDefinition | None = None, path=None, title: str = ""):
    """The segmentation the profile criterion picks at every resolution of the grid, coloured by tested function (module docstring).

    Columns of `path_table` (a localisation's `stage_path.csv`): value (the resolution), spans ("0-1 | 2-7"),
    functions ("priming | bridging"), admissible (every boundary separates different test outcomes), chosen.
    `n_layers` defaults to the last layer the spans reach, plus one.
    """
    rows = path_table.reset_index(drop=True)
    if n_layers is None:
        n_layers = max(b for _, row in rows.iterrows() for _, b, _ in _path_segments(row)) + 1
    with themed():
        fig, axes = new_figure(1, 1, figsize=(max(6.5, 0.32 * len(rows) + 3), max(3.2, 0.28 * n_layers + 2.0)))
        ax = axes[0, 0]
        seen = {}
        for x, row in rows.iterrows():
            for a, b, function in _path_segments(row):
                colour = stage_colour(function)
                ax.add_patch(Rectangle((x - 0.4, a - 0.5), 0.8, b - a + 1, facecolor=colour, edgecolor="0.3", lw=0.6))
                seen.setdefault(function, colour)
            if bool(row["chosen"]):
                ax.add_patch(Rectangle((x - 0.48, -0.6), 0.96, n_layers + 0.2, fill=False, edgecolor="k", lw=1.8))
            ax.text(x, -0.75, "ok" if bool(row["admissible"]) else "x", ha="center", va="bottom", fontsize=7,
                    color="0.1" if bool(row["admissible"]) else "0.55")
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_ylim(n_layers - 0.3, -1.4)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([f"{v:.3g}" for v in rows["value"]], rotation=90, fontsize=7)
        ax.set_yticks(range(n_layers) if n_layers <= 24 else range(0, n_layers, max(1, n_layers // 12)))
        ax.grid(False)
        ax.set_ylabel("decoder layer")
        chosen = rows[rows["chosen"].astype(bool)]["value"].tolist()
        held = f"chosen stages (black frame) for resolution {min(chosen):.3g}-{max(chosen):.3g}" if chosen else "the chosen stages appear at no resolution of the grid"
        located = "" if definition is None else "; located: " + ", ".join(f"{s.name} {min(s.layers)}-{max(s.layers)}" for s in definition.stages)
        ax.set_xlabel(f"resolution of the profile criterion (the knob); ok: every boundary separates different test outcomes\n{held}{located}", fontsize=8)
        ax.legend([Patch(facecolor=c, edgecolor="0.3") for c in seen.values()], [readable(f) for f in seen], title="tested function",
                  fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        if title:
            fig.suptitle(title)
    return saved(fig, path)

"""One look for every figure: a colour per stage name and per component, readable labels, legends beside the data.

    fig, axes = new_figure(2, 1, figsize=(6, 5))    # a Figure outside pyplot: never auto-shown twice, never leaked
    shade_stages(ax, stages)                        # a band per stage in that stage's colour, named at the top
    legend_outside(ax)                              # to the right of the axes, never over the data
    readable("cross_attn") == "cross-attention"

Figures are made with `matplotlib.figure.Figure`, not `pyplot`, so importing
genir_mech leaves the backend alone: a notebook shows the returned Figure
inline, a script saves it. The seaborn theme applies inside `themed()` only.
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager

import seaborn as sns
from matplotlib.figure import Figure

from ..stage_definition import StageDefinition

# The paper's three stages keep their colour in every figure; other names get a stable colour from their name.
STAGE_COLOURS = {"priming": "#8dd3c7", "bridging": "#fdb462", "interaction": "#bebada"}
EXTRA_STAGE_COLOURS = ["#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f"]

COMPONENT_COLOURS = {"self_attn": "#1f77b4", "cross_attn": "#d62728", "mlp": "#2ca02c", "embedding": "#7f7f7f", "resid_post": "#9467bd", "output": "#8c564b"}

LABELS = {
    "self_attn": "self-attention", "cross_attn": "cross-attention", "mlp": "MLP", "embedding": "embedding",
    "resid_post": "residual stream", "resid_pre": "residual stream (before)", "output": "encoder output",
    "ratio": "contribution ratio", "cos_residual": "cosine with the residual stream", "cos_priming": "cosine with the first stage's MLPs",
    "relevant_rank": "relevant docid", "docid_mean_rank": "docid tokens (mean rank)", "nondocid_median_rank": "other tokens (median rank)",
    "layer": "decoder layer", "head": "head", "position": "position", "component": "component",
    "atp": "AtP", "atp_qk": "AtP*", "denoise": "clean into corrupted", "noise": "corrupted into clean",
}


def readable(name) -> str:
    """The label a reader sees for a column value or name (`cross_attn` -> `cross-attention`); unknown names unchanged."""
    return LABELS.get(str(name), str(name))


def stage_colour(name: str) -> str:
    """The one colour of a stage name, the same in every figure."""
    if name in STAGE_COLOURS:
        return STAGE_COLOURS[name]
    return EXTRA_STAGE_COLOURS[zlib.crc32(name.encode()) % len(EXTRA_STAGE_COLOURS)]


def component_colour(kind: str) -> str:
    """The one colour of a component kind, the same in every figure."""
    return COMPONENT_COLOURS.get(kind, "#17becf")


def component_palette(kinds) -> dict:
    return {k: component_colour(k) for k in kinds}


@contextmanager
def themed(style: str = "whitegrid"):
    """The seaborn theme for one figure, undone afterwards (no global rcParams change)."""
    with sns.axes_style(style), sns.plotting_context("paper"):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, figsize=(6.0, 4.0), **kwargs):
    """A Figure with a grid of axes (always 2-D), made without pyplot."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def shade_stages(ax, stages: StageDefinition | None, offset: float = 0.0, label: bool = True) -> None:
    """A band per stage in its colour over its layers (x = layer + offset), its name at the top of the axes."""
    if stages is None:
        return
    for stage in stages.stages:
        if not stage.layers:
            continue
        lo, hi = min(stage.layers) + offset - 0.5, max(stage.layers) + offset + 0.5
        ax.axvspan(lo, hi, color=stage_colour(stage.name), alpha=0.3, lw=0, zorder=0)
        if label:
            ax.text((lo + hi) / 2, 1.01, stage.name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8,
                    color="0.25", bbox={"facecolor": stage_colour(stage.name), "edgecolor": "none", "pad": 1.5})


def legend_outside(ax, title: str | None = None, **kwargs) -> None:
    """The axes' legend to its right, outside the plotting area, with readable labels."""
    handles, labels = ax.get_legend_handles_labels()
    old = ax.get_legend()
    if old is not None:  # seaborn's legend holds handles that are not artists of the axes
        shown = [t.get_text() for t in old.get_texts()]
        extra = [(h, lab) for h, lab in zip(handles, labels) if lab not in shown]
        handles, labels = [*old.legend_handles, *(h for h, _ in extra)], [*shown, *(lab for _, lab in extra)]
        old.remove()
    if not handles:
        return
    ax.legend(handles, [readable(label) for label in labels], title=title, fontsize=7, title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False, **kwargs)


def drop_legend(ax) -> None:
    """Remove the axes' legend (panels after the first share it)."""
    if ax.get_legend() is not None:
        ax.get_legend().remove()

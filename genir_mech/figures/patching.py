"""Heatmaps of activation patching and attribution summaries (the output of genir_mech.patching.aggregation.aggregate).

    plot_patching(summary, "runs/patch/heads.png", target="head")      # layer x head, one panel per attention kind
    plot_patching(summary, "runs/patch/components.png", target="component")
    heatmap(summary, row="layer", col="position", path="enc.png")      # any two named axes
    plot_node_families(summary, "runs/attribute/figures", "attribution")  # one heatmap per node family present

Colour is the mean over pairs (diverging around 0); small grids are
annotated with their values.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .saving import save_figure
import pandas as pd
import seaborn as sns

from ..errors import GenIRError

# Node families of a patching or attribution summary: (name, rows of the summary, heatmap layout).
# A sweep of mixed or saved specs is drawn family by family, so any summary gets its heatmaps.
FAMILIES = [
    ("resid", lambda s: (s.side == "decoder") & (s.component == "resid_post"), "resid"),
    ("components", lambda s: (s.side == "decoder") & s["head"].isna() & (s.component != "resid_post"), "component"),
    ("heads", lambda s: s["head"].notna(), "head"),
    ("encoder_positions", lambda s: s.site == "encoder.output", "encoder-position"),
    ("encoder_layer_positions", lambda s: (s.side == "encoder") & (s.site != "encoder.output"), "encoder-layer-position"),
]

KIND_ORDER = ["self_attn", "cross_attn", "mlp", "resid_post", "output"]
LAYOUTS = {
    # target: (row axis, column axis, panel axis)
    "resid": ("position", "layer", None),
    "component": ("component", "layer", None),
    "head": ("layer", "head", "component"),
    "encoder-position": ("component", "position", None),
    "encoder-layer-position": ("layer", "position", None),
}


def heatmap(summary: pd.DataFrame, row: str, col: str, path, facet: str | None = None, value: str = "mean", title: str = "", label: str = "") -> Path:
    """One heatmap of `value` over two named axes, with one panel per value of `facet`."""
    if summary.empty:
        raise GenIRError(f"nothing to plot for {path}: the summary table is empty")
    data = summary.copy()
    for axis in (row, col):
        data[axis] = data[axis].astype(object).where(data[axis].notna(), "-")
    panels = [None] if facet is None else [k for k in KIND_ORDER if k in set(data[facet])] + sorted(set(data[facet]) - set(KIND_ORDER))
    grids = []
    for panel in panels:
        part = data if panel is None else data[data[facet] == panel]
        grid = part.pivot_table(index=row, columns=col, values=value, aggfunc="mean", sort=False)
        if row == "component":
            grid = grid.reindex([k for k in KIND_ORDER if k in grid.index] + [k for k in grid.index if k not in KIND_ORDER])
        grids.append((panel, grid))
    limit = max(float(abs(g.to_numpy()).max()) if g.size else 0.0 for _, g in grids) or 1.0
    width = max(g.shape[1] for _, g in grids)
    height = max(g.shape[0] for _, g in grids)
    sns.set_theme(style="white", context="paper")
    fig, axes = plt.subplots(1, len(grids), figsize=(len(grids) * max(3.5, 0.45 * width + 2), max(2.5, 0.45 * height + 1.5)), squeeze=False)
    for ax, (panel, grid) in zip(axes[0], grids):
        annotate = grid.size <= 120
        fmt = ".2f" if limit >= 0.1 else ".3f"
        sns.heatmap(grid, ax=ax, cmap="RdBu_r", center=0.0, vmin=-limit, vmax=limit, annot=annotate, fmt=fmt, annot_kws={"fontsize": 6},
                    cbar_kws={"label": label or value})
        ax.set_title(str(panel) if panel is not None else "", fontsize=9)
        ax.set_xlabel(col)
        ax.set_ylabel(row)
        ax.tick_params(axis="y", rotation=0)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_patching(summary: pd.DataFrame, path, target: str, title: str = "", label: str = "") -> Path:
    """The standard layout for one patch target (see LAYOUTS)."""
    if target not in LAYOUTS:
        raise GenIRError(f"no heatmap layout for target {target!r}; layouts exist for {', '.join(LAYOUTS)}")
    row, col, facet = LAYOUTS[target]
    return heatmap(summary, row, col, path, facet=facet, title=title, label=label)


def plot_node_families(summary: pd.DataFrame, out_dir, prefix: str, title: str = "", label: str = "") -> dict[str, Path]:
    """`<out_dir>/<prefix>_<family>.png` for every node family (FAMILIES) with rows in `summary`."""
    made = {}
    for name, rows, layout in FAMILIES:
        part = summary[rows(summary)]
        if not part.empty:
            made[name] = plot_patching(part, Path(out_dir) / f"{prefix}_{name}.png", layout, title=title, label=label)
    return made

"""Heatmaps of activation patching and attribution summaries (the output of genir_mech.patching.aggregation.aggregate).

    fig = plot_patching(summary, "head", "runs/patch/heads.png")      # layer x head, one panel per attention kind
    fig = plot_patching(summary, "component", "runs/patch/components.png")
    fig = heatmap(summary, row="layer", col="position", path="enc.png", tokens={0: "who", 1: "founded"})  # any two named axes
    made = plot_node_families(summary, "runs/attribute/figures", "attribution", what="AtP* estimate")  # one heatmap per node family

Colour is the mean over pairs (diverging around 0); small grids are
annotated with their values. Encoder positions are labelled with the token
most pairs have there (`tokens`, from the run's position_tokens table), and
each family's title says what was patched.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from ..errors import GenIRError
from .saving import save_figure, saved
from .style import new_figure, readable, themed

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
# What a heatmap of each family shows, for its title.
FAMILY_NOUNS = {
    "resid": "the decoder residual stream after each layer", "components": "each decoder component's output",
    "heads": "each attention head's output", "encoder_positions": "the encoder output at each query position",
    "encoder_layer_positions": "each encoder layer's output at each query position",
}
TARGET_FAMILIES = {"resid": "resid", "component": "components", "head": "heads", "encoder-position": "encoder_positions", "encoder-layer-position": "encoder_layer_positions"}
LAYOUTS = {
    # target: (row axis, column axis, panel axis)
    "resid": ("position", "layer", None),
    "component": ("component", "layer", None),
    "head": ("layer", "head", "component"),
    "encoder-position": ("component", "position", None),
    "encoder-layer-position": ("layer", "position", None),
}


def _tick_labels(values, tokens: dict | None) -> list[str]:
    """Whole numbers without `.0`; `3` -> `3 founded` when the token at position 3 is known."""
    labels = []
    for v in values:
        number = int(v) if isinstance(v, (int, float)) and float(v).is_integer() else None
        text = str(number) if number is not None else str(v)
        labels.append(f"{text} {tokens[number]}" if tokens and number in tokens else text)
    return labels


def heatmap(summary: pd.DataFrame, row: str, col: str, path=None, facet: str | None = None, value: str = "mean", title: str = "", label: str = "",
            tokens: dict[int, str] | None = None):
    """One heatmap of `value` over two named axes, with one panel per value of `facet`; positions labelled with `tokens` when given."""
    if summary.empty:
        raise GenIRError(f"nothing to plot for {path or 'the heatmap'}: the summary table is empty")
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
    labelled = tokens if "position" in (row, col) else None
    with themed("white"):
        fig, axes = new_figure(1, len(grids), figsize=(len(grids) * max(3.5, (0.7 if labelled else 0.45) * width + 2), max(2.8, 0.45 * height + 2.0)))
        for ax, (panel, grid) in zip(axes[0], grids):
            annotate = grid.size <= 120
            fmt = ".2f" if limit >= 0.1 else ".3f"
            sns.heatmap(grid, ax=ax, cmap="RdBu_r", center=0.0, vmin=-limit, vmax=limit, annot=annotate, fmt=fmt, annot_kws={"fontsize": 6},
                        cbar_kws={"label": label or readable(value)},
                        xticklabels=_tick_labels(grid.columns, labelled if col == "position" else None),
                        yticklabels=[readable(v) for v in _tick_labels(grid.index, labelled if row == "position" else None)])
            ax.set_title(readable(panel) if panel is not None else "", fontsize=9)
            ax.set_xlabel(readable(col) + (" (with the most common token there)" if labelled and col == "position" else ""))
            ax.set_ylabel(readable(row))
            ax.tick_params(axis="y", rotation=0)
            if labelled and col == "position":
                ax.tick_params(axis="x", rotation=60)
        if title:
            fig.suptitle(title, fontsize=10)
    return saved(fig, path)


def plot_patching(summary: pd.DataFrame, target: str, path=None, title: str = "", label: str = "", tokens: dict[int, str] | None = None):
    """The standard layout for one patch target (see LAYOUTS)."""
    if target not in LAYOUTS:
        raise GenIRError(f"no heatmap layout for target {target!r}; layouts exist for {', '.join(LAYOUTS)}")
    row, col, facet = LAYOUTS[target]
    return heatmap(summary, row, col, path, facet=facet, title=title, label=label, tokens=tokens)


def family_title(context: str, what: str, family: str) -> str:
    """`dsi-synth, 32 pairs: AtP* estimate` + `when patching each attention head's output`."""
    return f"{context}: {what}\nwhen patching {FAMILY_NOUNS.get(family, family)}"


def plot_node_families(summary: pd.DataFrame, out_dir, prefix: str, context: str = "", what: str = "effect", label: str = "",
                       tokens: dict[int, str] | None = None) -> dict[str, Path]:
    """`<out_dir>/<prefix>_<family>.png` (and .pdf) for every node family (FAMILIES) with rows in `summary`, each titled by what it shows."""
    made = {}
    for name, rows, layout in FAMILIES:
        part = summary[rows(summary)]
        if not part.empty:
            path = Path(out_dir) / f"{prefix}_{name}.png"
            save_figure(plot_patching(part, layout, title=family_title(context, what, name), label=label, tokens=tokens), path)
            made[name] = path
    return made

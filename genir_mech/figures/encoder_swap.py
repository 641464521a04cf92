"""Figure: the encoder-swap experiments side by side.

    fig = plot_swap(removed_per_query, vanilla_per_query, "runs/swap/dsi-synth/swap.png")   # returns the Figure; saves PNG + PDF

Left: Hits@1 per removed-documents variant for A alone, B alone and A's
decoder on B's encoder (bars annotated with counts). Right: cumulative share of
A's correct queries whose relevant document lies within rank r, for A alone,
the vanilla model alone and A's decoder on the vanilla encoder.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .saving import saved
from .style import legend_outside, new_figure, themed


def _hits_bars(ax, per_query: pd.DataFrame) -> None:
    variants = list(dict.fromkeys(per_query["variant"]))
    conditions = list(dict.fromkeys(per_query["condition"]))
    width = 0.8 / len(conditions)
    for j, condition in enumerate(conditions):
        for i, variant in enumerate(variants):
            ranks = per_query[(per_query["variant"] == variant) & (per_query["condition"] == condition)]["rank"]
            hits = int((ranks == 1).sum())
            x = i + (j - (len(conditions) - 1) / 2) * width
            ax.bar(x, 100.0 * hits / len(ranks), width, color=f"C{j}", label=condition if i == 0 else None)
            ax.text(x, 100.0 * hits / len(ranks) + 1, f"{hits}/{len(ranks)}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(variants)), variants, fontsize=8)
    ax.set_ylim(0, 112)
    ax.set_ylabel("Hits@1 (% of queries)")
    ax.set_title("removed documents (B never saw them)", fontsize=9)
    legend_outside(ax, title="condition")


def _rank_cdf(ax, per_query: pd.DataFrame) -> None:
    for (source, condition), rows in per_query.groupby(["encoder_from", "condition"], sort=False):
        ranks = np.sort(rows["rank"].to_numpy())
        ax.step(ranks, np.arange(1, len(ranks) + 1) / len(ranks) * 100, where="post", label=f"{condition} ({source})")
    for r in (1, 10):
        ax.axvline(r, color="grey", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("rank of the relevant document")
    ax.set_ylabel("% of A's correct queries within rank")
    ax.set_title("vanilla encoder", fontsize=9)
    legend_outside(ax, title="condition (encoder from)")


def plot_swap(removed_per_query: pd.DataFrame | None, vanilla_per_query: pd.DataFrame | None, path=None, title: str = ""):
    """Encoder-swap figure: Hits@1 per condition and the rank distribution of each swap, from the per-query tables."""
    panels = [(f, d) for f, d in ((_hits_bars, removed_per_query), (_rank_cdf, vanilla_per_query)) if d is not None and not d.empty]
    with themed("ticks"):
        fig, axes = new_figure(1, max(1, len(panels)), figsize=(7.5 * max(1, len(panels)), 3.6))
        for ax, (draw, data) in zip(axes[0], panels):
            draw(ax, data)
        if title:
            fig.suptitle(title)
    return saved(fig, path)

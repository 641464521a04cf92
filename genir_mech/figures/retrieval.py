"""Figure: where a model ranks each query's relevant document.

    fig = plot_rank_cdf(per_query, "runs/eval/dsi-synth/figures/retrieval_ranks.png", title="dsi-synth, test")

`per_query` is the table `retrieval.evaluate` returns (one row per query with
its `rank`). The curve is the share of queries whose document lies within rank
r; its values at r = 1 and r = 10 are Hits@1 and Hits@10.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .saving import saved
from .style import new_figure, themed


def plot_rank_cdf(per_query: pd.DataFrame, path=None, title: str = ""):
    """Cumulative share of queries within each rank of their relevant document (log rank axis); returns the Figure, saved when `path` is given."""
    ranks = np.sort(per_query["rank"].to_numpy())
    share = np.arange(1, len(ranks) + 1) / max(len(ranks), 1) * 100
    with themed("ticks"):
        fig, axes = new_figure(1, 1, figsize=(5.0, 3.4))
        _draw(axes[0, 0], ranks, share, title)
    return saved(fig, path)


def _draw(ax, ranks, share, title: str) -> None:
    ax.step(ranks, share, where="post")
    for r in (1, 10):
        hit = 100.0 * float((ranks <= r).mean()) if len(ranks) else 0.0
        ax.axvline(r, color="grey", lw=0.6, ls=":")
        ax.annotate(f"Hits@{r} {hit:.1f}%", (r, hit), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ax.set_ylim(0, 102)
    ax.set_xlabel("rank of the relevant document")
    ax.set_ylabel(f"% of {len(ranks)} queries within rank")
    if title:
        ax.set_title(title, fontsize=9)

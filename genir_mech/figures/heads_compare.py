"""Figures of `heads compare`, drawn from its tables: depth profiles with stages, masking curves, attention vs causal scores.

    plot_depth_profiles(head_scores, "out/figures/depth_profile.png")     # one panel per model: scores by relative depth, stages shaded
    plot_masking_curves(masking, "out/figures/masking_curves.png")        # accuracy as top-k vs random-k heads are masked, every model
    plot_attention_vs_causal(head_scores, "out/figures/attention_vs_causal.png")
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .saving import saved
from .style import stage_colour

PROFILE_SCORES = ("attention_score", "qr_score", "patch_effect", "ablation_effect")


def plot_depth_profiles(scores: pd.DataFrame, path: str | Path | None = None):
    """Per model, the mean of each score over a layer's heads against relative depth; each located stage shaded and named."""
    models = list(dict.fromkeys(scores["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        part = scores[scores["model"] == model]
        n_layers = part["layer"].nunique()
        for stage, rows in part.groupby("stage", sort=False):
            low, high = rows["layer"].min() / n_layers, (rows["layer"].max() + 1) / n_layers
            ax.axvspan(low, high, color=stage_colour(str(stage)), alpha=0.15, lw=0)
            ax.text((low + high) / 2, 1.0, str(stage), transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)
        tidy = part.groupby(["rel_depth"])[[c for c in PROFILE_SCORES if part[c].notna().any()]].mean().reset_index()
        tidy = tidy.melt(id_vars="rel_depth", var_name="score", value_name="mean over heads")
        sns.lineplot(tidy, x="rel_depth", y="mean over heads", hue="score", marker="o", ax=ax, legend=ax is axes[0][-1])
        ax.set_xlim(0, 1)
        ax.set_xlabel("relative depth (layer + 0.5) / layers")
        ax.set_title(f"{model} ({part['detector'].iloc[0]} detector)", fontsize=9, pad=14)
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    return saved(fig, path)


def plot_masking_curves(masking: pd.DataFrame, path: str | Path | None = None):
    """Accuracy (NIAH accuracy or Hits@1) against the number of heads masked, top-k (by attention score) vs random-k, every model;
    the band is the 95% interval of the mean over random draws (normal approximation)."""
    rows = masking.copy()
    none = rows[rows["method"] == "none"]
    rows = pd.concat([rows[rows["method"] != "none"], none.assign(method="top"), none.assign(method="random")])
    masks = " / ".join(dict.fromkeys(rows["mask"])) if "mask" in rows else "remove"
    rows["curve"] = rows["model"] + " (" + rows["metric"] + ")"
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    sns.lineplot(rows, x="k", y="value", hue="curve", style="method", markers=True, errorbar=("se", 1.96), ax=ax)
    ax.set_xlabel(f"heads masked (k), {masks} mask")
    ax.set_ylabel("accuracy (Hits@1 or NIAH accuracy)")
    ax.set_ylim(-0.02, 1.02)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), fontsize=7)
    ax.set_title(f"top-k (attention score) vs random-k heads masked ({masks}); band: 95% interval over random draws", fontsize=8)
    return saved(fig, path)


def plot_attention_vs_causal(scores: pd.DataFrame, path: str | Path | None = None):
    """Per head: attention score (x) against |patch effect| (y), one panel per model."""
    models = list(dict.fromkeys(scores["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = scores[scores["model"] == model].assign(causal=lambda d: d["patch_effect"].abs())
        sns.scatterplot(part, x="attention_score", y="causal", hue="stage", ax=ax, s=25)
        ax.set_xlabel(f"{part['detector'].iloc[0]} score")
        ax.set_ylabel("|patch effect|")
        ax.set_title(model, fontsize=9)
        if ax.get_legend() is not None:
            ax.legend(fontsize=6, title=None)
    return saved(fig, path)

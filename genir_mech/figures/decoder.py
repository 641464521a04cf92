"""Figures of the decoder analyses, drawn with seaborn from the tidy result tables.

    plot_contributions(contrib_df, "fig3.png", stages)   # Fig. 3: ratio (top) and cosines (bottom) per layer and component
    plot_lens(lens_df, "fig4.png", stages)               # Fig. 4: rank curves of the residual stream and of component outputs
    plot_reading(reading_by_stage_df, "fig5.png")        # Fig. 5: stacked shares of what each reader reads
    plot_ablation(ablation_df, "ablation.png", stages)   # Table 3 as bars: queries leaving rank 1 per stage, component, method
    plot_layer_ablation(layer_df, "layers.png", stages)  # the same per single layer
    plot_circuit(circuit_df, "circuit.png")              # Table 4 as bars: Hits@k of the intact model and the circuit

Stages, when given, are shaded bands on the layer axis.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .saving import save_figure
from matplotlib.ticker import MaxNLocator
import pandas as pd
import seaborn as sns

from ..stage_definition import StageDefinition

KIND_ORDER = ["self_attn", "cross_attn", "mlp"]
METHOD_ORDER = ["zero", "mean", "cross-model"]


def _present(values, order) -> list:
    seen = list(dict.fromkeys(values))
    return [v for v in order if v in seen] + [v for v in seen if v not in order]


def _shade_stages(ax, stages: StageDefinition | None, scale: float = 1.0, offset: float = 0.0, label: bool = True) -> None:
    if stages is None:
        return
    for i, stage in enumerate(stages.stages):
        if not stage.layers:
            continue
        lo, hi = min(stage.layers) * scale + offset - 0.5 * scale, max(stage.layers) * scale + offset + 0.5 * scale
        ax.axvspan(lo, hi, color=plt.get_cmap("Pastel2")(i % 8), alpha=0.35, lw=0)
        if label:
            ax.text((lo + hi) / 2, 0.98, stage.name, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8, alpha=0.8)


def plot_contributions(df: pd.DataFrame, path, stages: StageDefinition | None = None, title: str = "") -> Path:
    """Fig. 3: top, ||c_out|| / ||layer update||; bottom, cosine with the residual (solid) and with the first stage's MLPs (dashed)."""
    df = df[df.side == "decoder"]
    sns.set_theme(style="whitegrid", context="paper")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.4 * df.layer.nunique() + 3), 5.5), sharex=True)
    hue = [k for k in KIND_ORDER if k in set(df.component)]
    sns.lineplot(data=df[df.metric == "ratio"], x="layer", y="value", hue="component", hue_order=hue, marker="o", errorbar=("pi", 50), estimator="median", ax=top)
    cos = df[df.metric.isin(["cos_residual", "cos_priming"])]
    sns.lineplot(data=cos, x="layer", y="value", hue="component", hue_order=hue, style="metric", style_order=["cos_residual", "cos_priming"], dashes={"cos_residual": (1, 0), "cos_priming": (4, 2)}, marker="o", errorbar=("pi", 50), estimator="median", ax=bottom)
    top.set_ylabel("||c_out|| / ||r_end - r_begin||")
    bottom.set_ylabel("cosine")
    bottom.axhline(0, color="grey", lw=0.6)
    for ax in (top, bottom):
        _shade_stages(ax, stages, label=ax is top)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="best")
    bottom.set_xlabel("decoder layer (median over queries, band: interquartile range)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _residual_position(df: pd.DataFrame, kinds: list[str]) -> pd.Series:
    """x position of a residual probe: layer + fraction of the layer's sublayers done (embedding at -1)."""
    per_layer = len(kinds)
    frac = df.component.map({k: (i + 1) / per_layer for i, k in enumerate(kinds)}).fillna(0.0)
    return (df.layer + frac - 1.0).where(df.component != "embedding", -1.0)


def plot_lens(df: pd.DataFrame, path, stages: StageDefinition | None = None, title: str = "") -> Path:
    """Fig. 4: left, ranks in the residual stream after every sublayer; right, rank of the relevant docid in each component's output."""
    sns.set_theme(style="whitegrid", context="paper")
    kinds = [k for k in KIND_ORDER if k in set(df.component)]
    resid = df[(df.facet.isin(["resid_pre", "resid_post"])) & df.metric.isin(["relevant_rank", "docid_mean_rank", "nondocid_median_rank"])].copy()
    resid["position"] = _residual_position(resid, kinds)
    comp = df[(df.facet == "out") & (df.metric == "relevant_rank")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    sns.lineplot(data=resid, x="position", y="value", hue="metric", estimator="median", errorbar=None, marker=".", ax=left)
    sns.lineplot(data=comp, x="layer", y="value", hue="component", hue_order=kinds, estimator="median", errorbar=None, marker="o", ax=right)
    for ax in (left, right):
        ax.set_yscale("log")
        ax.axhline(1, color="grey", lw=0.6, ls=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # On the left, layer l's sublayers lie in (l - 1, l]: its band is shifted by half a layer.
    _shade_stages(left, stages, offset=-0.5)
    _shade_stages(right, stages)
    left.set_xlabel("residual stream after each sublayer (layer + sublayer fraction; -1 = input embedding)")
    left.set_ylabel("vocabulary rank (median over queries)")
    left.set_title("residual stream", fontsize=9)
    right.set_xlabel("decoder layer")
    right.set_title("relevant docid in each component's output", fontsize=9)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_reading(by_stage: pd.DataFrame, path, stages: StageDefinition | None = None, metric: str = "top_source_share", title: str = "") -> Path:
    """Fig. 5: one stacked bar per reader (stage x type), split by source (stage x type)."""
    sns.set_theme(style="whitegrid", context="paper")
    data = by_stage[by_stage.metric == metric].copy()
    order = ["embedding", *(stages.names() if stages else sorted(set(data.reader_stage)))]
    rank = lambda stage, kind: (order.index(stage) if stage in order else len(order), KIND_ORDER.index(kind) if kind in KIND_ORDER else 9)  # noqa: E731
    data["reader"] = data.reader_stage + "\n" + data.reader_component
    data["source"] = (data.source_stage + " " + data.source_component).where(data.source_component != "embedding", "embedding")
    table = data.pivot_table(index="reader", columns="source", values="value", aggfunc="sum", fill_value=0.0)
    table = table.loc[sorted(table.index, key=lambda r: rank(*r.split("\n")))]
    table = table[sorted(table.columns, key=lambda c: rank(*(c.split(" ") + [c])[:2]))]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(table) + 3), 4.5))
    table.plot(kind="bar", stacked=True, ax=ax, color=sns.color_palette("tab20", len(table.columns)), width=0.8)
    ax.set_ylabel("% of " + ("units whose top source it is" if metric == "top_source_share" else "positive read score"))
    ax.set_xlabel("reader")
    ax.tick_params(axis="x", rotation=0, labelsize=7)
    ax.legend(title="source", fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_ablation(df: pd.DataFrame, path, stages: StageDefinition | None = None, metric: str = "rank>1", title: str = "") -> Path:
    """Table 3 as bars: % of correct queries whose relevant document leaves rank 1, per stage and component; one panel per method."""
    data = df[(df.method != "intact") & (df.metric == metric)]
    intact = df[(df.method == "intact") & (df.metric == metric)].value
    methods = _present(data.method, METHOD_ORDER)
    stage_order = _present(data.stage, stages.names() if stages else [])
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(methods), figsize=(max(4.0, 0.9 * len(stage_order) + 2) * len(methods), 3.6), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        sns.barplot(data=data[data.method == method], x="stage", y="value", hue="component", order=stage_order, hue_order=_present(data.component, KIND_ORDER), ax=ax)
        if len(intact):
            # the intact model's own share is the floor every ablation is read against
            ax.axhline(float(intact.iloc[0]), color="grey", lw=0.8, ls=":")
        ax.set_title(f"{method} ablation", fontsize=9)
        ax.set_xlabel("stage (all its layers ablated together)")
        ax.set_ylabel(f"% of queries with {metric.replace('rank>', 'rank > ')}")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_layer_ablation(df: pd.DataFrame, path, stages: StageDefinition | None = None, metric: str = "rank>1", title: str = "") -> Path:
    """Single-layer ablations: % of queries leaving rank 1 per layer and component; one panel per method, stages shaded."""
    data = df[(df.method != "intact") & (df.metric == metric)]
    methods = _present(data.method, METHOD_ORDER)
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(methods), figsize=(max(5.0, 0.35 * data.layer.nunique() + 3) * len(methods), 3.6), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods):
        sns.lineplot(data=data[data.method == method], x="layer", y="value", hue="component", hue_order=_present(data.component, KIND_ORDER), marker="o", ax=ax)
        _shade_stages(ax, stages)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{method} ablation of one layer", fontsize=9)
        ax.set_xlabel("decoder layer")
        ax.set_ylabel(f"% of queries with {metric.replace('rank>', 'rank > ')}")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_circuit(df: pd.DataFrame, path, title: str = "") -> Path:
    """Table 4 as bars: Hits@1/5/10 of the intact model and of each circuit, labelled with the components kept."""
    hits = df[df.metric.str.startswith("hits@") & df.configuration.isin(["intact", "circuit"])].copy()
    hits["value"] = hits.value.astype(float)
    if hits.value.max() <= 1.0:
        hits["value"] *= 100.0  # fractions and percentages are drawn on one scale
    circuits = list(dict.fromkeys(hits.circuit))
    counts = df[df.metric.isin(["components_kept", "components_total"])].pivot_table(index="circuit", columns="metric", values="value")
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, len(circuits), figsize=(4.0 * len(circuits), 3.4), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], circuits):
        part = hits[hits.circuit == name]
        sns.barplot(data=part, x="metric", y="value", hue="configuration", hue_order=["intact", "circuit"], ax=ax)
        for container in ax.containers:
            ax.bar_label(container, fmt="%.0f", fontsize=7)
        kept = f" ({int(counts.loc[name, 'components_kept'])}/{int(counts.loc[name, 'components_total'])} components kept)" if name in counts.index else ""
        ax.set_title(f"circuit {name!r}{kept}", fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("% of queries")
        ax.set_ylim(0, 110)
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)

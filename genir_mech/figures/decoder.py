"""Figures of the decoder analyses, drawn with seaborn from the tidy result tables.

    fig = plot_contributions(contrib_df, "fig3.png", stages)   # Fig. 3: ratio (top) and cosines (bottom) per layer and component
    fig = plot_lens(lens_df, "fig4.png", stages)               # Fig. 4: rank curves of the residual stream and of component outputs
    fig = plot_reading(reading_by_stage_df, "fig5.png")        # Fig. 5: stacked shares of what each reader reads
    fig = plot_ablation(ablation_df, "ablation.png", stages)   # Table 3 as bars: queries leaving rank 1 per stage, component, method
    fig = plot_layer_ablation(layer_df, "layers.png", stages)  # the same per single layer
    fig = plot_circuit(circuit_df, "circuit.png")              # Table 4 as bars: Hits@k of the intact model and the circuit

Each returns the Figure (shown inline in a notebook) and, given a path, saves
it as PNG and PDF first. Stages, when given, are bands in their own colour
on the layer axis; components have one colour each in every figure.
"""
from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from ..stage_definition import StageDefinition
from .saving import saved
from .style import component_colour, component_palette, drop_legend, legend_outside, new_figure, readable, shade_stages, stage_colour, themed

KIND_ORDER = ["self_attn", "cross_attn", "mlp"]
METHOD_ORDER = ["zero", "mean", "cross-model"]
HATCHES = {"self_attn": "", "cross_attn": "//", "mlp": "..", "embedding": "xx"}


def _present(values, order) -> list:
    seen = list(dict.fromkeys(values))
    return [v for v in order if v in seen] + [v for v in seen if v not in order]


def _threshold_label(metric: str) -> str:
    """`rank>1` -> `% of queries whose relevant document leaves rank 1`."""
    if metric.startswith("rank>"):
        k = metric.removeprefix("rank>")
        return "% of queries whose document\nleaves rank 1" if k == "1" else f"% of queries whose document\nfalls below rank {k}"
    return readable(metric)


def plot_contributions(df: pd.DataFrame, path=None, stages: StageDefinition | None = None, title: str = ""):
    """Fig. 3: top, each component's share of its layer's update; bottom, cosine with the residual (solid) and with the first stage's MLPs (dashed)."""
    df = df[df.side == "decoder"]
    hue = [k for k in KIND_ORDER if k in set(df.component)]
    with themed():
        fig, axes = new_figure(2, 1, figsize=(max(6.5, 0.4 * df.layer.nunique() + 4), 5.5), sharex=True)
        top, bottom = axes[:, 0]
        sns.lineplot(data=df[df.metric == "ratio"], x="layer", y="value", hue="component", hue_order=hue, palette=component_palette(hue),
                     marker="o", errorbar=("pi", 50), estimator="median", ax=top)
        cos = df[df.metric.isin(["cos_residual", "cos_priming"])]
        sns.lineplot(data=cos, x="layer", y="value", hue="component", hue_order=hue, palette=component_palette(hue), style="metric",
                     style_order=["cos_residual", "cos_priming"], dashes={"cos_residual": (1, 0), "cos_priming": (4, 2)}, marker="o",
                     errorbar=("pi", 50), estimator="median", ax=bottom)
        top.set_ylabel("contribution ratio\n(output norm / layer update norm)")
        bottom.set_ylabel("cosine similarity")
        bottom.axhline(0, color="grey", lw=0.6)
        for ax in (top, bottom):
            shade_stages(ax, stages, label=ax is top)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            legend_outside(ax)
        top.set_xlabel("")
        bottom.set_xlabel("decoder layer (line: median over queries; band: interquartile range)")
        if title:
            fig.suptitle(title)
    return saved(fig, path)


def _residual_position(df: pd.DataFrame, kinds: list[str]) -> pd.Series:
    """x position of a residual probe: layer + fraction of the layer's sublayers done (embedding at -1)."""
    per_layer = len(kinds)
    frac = df.component.map({k: (i + 1) / per_layer for i, k in enumerate(kinds)}).fillna(0.0)
    return (df.layer + frac - 1.0).where(df.component != "embedding", -1.0)


def plot_lens(df: pd.DataFrame, path=None, stages: StageDefinition | None = None, title: str = ""):
    """Fig. 4: left, ranks in the residual stream after every sublayer; right, rank of the relevant docid in each component's output."""
    kinds = [k for k in KIND_ORDER if k in set(df.component)]
    resid = df[(df.facet.isin(["resid_pre", "resid_post"])) & df.metric.isin(["relevant_rank", "docid_mean_rank", "nondocid_median_rank"])].copy()
    resid["position"] = _residual_position(resid, kinds)
    comp = df[(df.facet == "out") & (df.metric == "relevant_rank")]
    with themed():
        fig, axes = new_figure(1, 2, figsize=(13, 4.2), sharey=True)
        left, right = axes[0]
        sns.lineplot(data=resid, x="position", y="value", hue="metric", estimator="median", errorbar=None, marker=".", ax=left)
        sns.lineplot(data=comp, x="layer", y="value", hue="component", hue_order=kinds, palette=component_palette(kinds), estimator="median",
                     errorbar=None, marker="o", ax=right)
        for ax in (left, right):
            ax.set_yscale("log")
            ax.axhline(1, color="grey", lw=0.6, ls=":")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        # On the left, layer l's sublayers lie in (l - 1, l]: its band is shifted by half a layer.
        shade_stages(left, stages, offset=-0.5)
        shade_stages(right, stages)
        left.set_xlabel("residual stream after each sublayer of decoder layer x\n(fractions: sublayers within the layer; -1: input embedding)")
        left.set_ylabel("vocabulary rank (median over queries)")
        left.set_title("residual stream", fontsize=9, pad=14)
        right.set_xlabel("decoder layer")
        right.set_title("relevant docid in each component's output", fontsize=9, pad=14)
        legend_outside(left, title="rank of")
        legend_outside(right, title="component")
        if title:
            fig.suptitle(title)
    return saved(fig, path)


def plot_reading(by_stage: pd.DataFrame, path=None, stages: StageDefinition | None = None, metric: str = "top_source_share", title: str = ""):
    """Fig. 5: one stacked bar per reader (stage x type), split by source: colour = the source's stage, hatching = its component."""
    data = by_stage[by_stage.metric == metric].copy()
    order = ["embedding", *(stages.names() if stages else sorted(set(data.reader_stage)))]

    def rank(stage, kind):
        return (order.index(stage) if stage in order else len(order), KIND_ORDER.index(kind) if kind in KIND_ORDER else 9)

    data["source_component"] = data.source_component.where(data.source_component != "embedding", "embedding")
    data["source_stage"] = data.source_stage.where(data.source_component != "embedding", "embedding")
    table = data.pivot_table(index=["reader_stage", "reader_component"], columns=["source_stage", "source_component"], values="value",
                             aggfunc="sum", fill_value=0.0)
    table = table.loc[sorted(table.index, key=lambda r: rank(*r))]
    table = table[sorted(table.columns, key=lambda c: rank(*c))]
    with themed():
        fig, axes = new_figure(1, 1, figsize=(max(6.5, 1.1 * len(table) + 4), 4.5))
        ax = axes[0, 0]
        bottom = pd.Series(0.0, index=range(len(table)))
        for stage, kind in table.columns:
            values = table[(stage, kind)].to_numpy()
            colour = "#d9d9d9" if stage == "embedding" else stage_colour(stage)
            ax.bar(range(len(table)), values, 0.8, bottom=bottom, color=colour, hatch=HATCHES.get(kind, ""), edgecolor="0.3", lw=0.4,
                   label="embedding" if stage == "embedding" else f"{stage}: {readable(kind)}")
            bottom += values
        ax.set_xticks(range(len(table)), [f"{stage}\n{readable(kind)}" for stage, kind in table.index], fontsize=7)
        ax.set_ylabel("% of " + ("units whose top source it is" if metric == "top_source_share" else "positive read score"))
        ax.set_xlabel("reader (stage, component)")
        legend_outside(ax, title="source (colour: stage; hatching: component)")
        if title:
            ax.set_title(title)
    return saved(fig, path)


def plot_ablation(df: pd.DataFrame, path=None, stages: StageDefinition | None = None, metric: str = "rank>1", title: str = ""):
    """Table 3 as bars: % of correct queries whose relevant document leaves rank 1, per stage and component; one panel per method."""
    data = df[(df.method != "intact") & (df.metric == metric)]
    intact = df[(df.method == "intact") & (df.metric == metric)].value
    methods = _present(data.method, METHOD_ORDER)
    stage_order = _present(data.stage, stages.names() if stages else [])
    kinds = _present(data.component, KIND_ORDER)
    with themed():
        fig, axes = new_figure(1, len(methods), figsize=(max(4.0, 0.9 * len(stage_order) + 2) * len(methods) + 1.5, 3.6), sharey=True)
        for ax, method in zip(axes[0], methods):
            sns.barplot(data=data[data.method == method], x="stage", y="value", hue="component", order=stage_order, hue_order=kinds,
                        palette=component_palette(kinds), ax=ax)
            if len(intact):
                # the intact model's own share is the floor every ablation is read against
                ax.axhline(float(intact.iloc[0]), color="grey", lw=0.8, ls=":", label="intact model")
            for tick in ax.get_xticklabels():
                tick.set_bbox({"facecolor": stage_colour(tick.get_text()), "edgecolor": "none", "pad": 1.5})
            ax.set_title(f"{method} ablation", fontsize=9)
            ax.set_xlabel("stage (all its layers ablated together)")
        _finish_panels(fig, axes, _threshold_label(metric), "component ablated", title)
    return saved(fig, path)


def _finish_panels(fig, axes, ylabel: str, legend_title: str, title: str) -> None:
    """One y label per panel, one legend beside the last panel, the figure title."""
    for ax in axes[0]:
        ax.set_ylabel(ylabel)
        if ax is not axes[0, -1]:
            drop_legend(ax)
    legend_outside(axes[0, -1], title=legend_title)
    if title:
        fig.suptitle(title)


def plot_layer_ablation(df: pd.DataFrame, path=None, stages: StageDefinition | None = None, metric: str = "rank>1", title: str = ""):
    """Single-layer ablations: % of queries leaving rank 1 per layer and component; one panel per method, stages shaded."""
    data = df[(df.method != "intact") & (df.metric == metric)]
    methods = _present(data.method, METHOD_ORDER)
    kinds = _present(data.component, KIND_ORDER)
    with themed():
        fig, axes = new_figure(1, len(methods), figsize=(max(5.0, 0.35 * data.layer.nunique() + 3) * len(methods) + 1.5, 3.6), sharey=True)
        for ax, method in zip(axes[0], methods):
            sns.lineplot(data=data[data.method == method], x="layer", y="value", hue="component", hue_order=kinds, palette=component_palette(kinds),
                         marker="o", ax=ax)
            shade_stages(ax, stages)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"{method} ablation of one layer", fontsize=9, pad=14)
            ax.set_xlabel("decoder layer")
        _finish_panels(fig, axes, _threshold_label(metric), "component ablated", title)
    return saved(fig, path)


def plot_circuit(df: pd.DataFrame, path=None, title: str = ""):
    """Table 4 as bars: Hits@1/5/10 of the intact model and of each circuit, labelled with the components kept."""
    hits = df[df.metric.str.startswith("hits@") & df.configuration.isin(["intact", "circuit"])].copy()
    hits["value"] = hits.value.astype(float)
    if hits.value.max() <= 1.0:
        hits["value"] *= 100.0  # fractions and percentages are drawn on one scale
    hits["metric"] = hits.metric.str.replace("hits@", "Hits@", regex=False)
    circuits = list(dict.fromkeys(hits.circuit))
    counts = df[df.metric.isin(["components_kept", "components_total"])].pivot_table(index="circuit", columns="metric", values="value")
    with themed():
        fig, axes = new_figure(1, len(circuits), figsize=(4.0 * len(circuits) + 1.5, 3.4), sharey=True)
        for ax, name in zip(axes[0], circuits):
            part = hits[hits.circuit == name]
            sns.barplot(data=part, x="metric", y="value", hue="configuration", hue_order=["intact", "circuit"],
                        palette={"intact": "0.6", "circuit": component_colour("cross_attn")}, ax=ax)
            for container in ax.containers:
                ax.bar_label(container, fmt="%.0f", fontsize=7)
            kept = f"\n({int(counts.loc[name, 'components_kept'])} of {int(counts.loc[name, 'components_total'])} components kept)" if name in counts.index else ""
            ax.set_title(f"circuit {name!r}{kept}", fontsize=9)
            ax.set_xlabel("")
            ax.set_ylabel("% of queries")
            ax.set_ylim(0, 112)
            if ax is not axes[0, -1]:
                drop_legend(ax)
        legend_outside(axes[0, -1])
        if title:
            fig.suptitle(title)
    return saved(fig, path)

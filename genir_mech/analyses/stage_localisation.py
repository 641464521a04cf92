"""Locate the decoder's stages (priming, bridging, interaction) from contribution and ablation profiles.

    contrib = contributions(gm, texts, query_ids)                          # tidy: side, layer, component, query_id, metric, value
    layers = layer_ablation(gm, texts, docs, method="mean")                # optional tidy per-layer ablation effects
    found = localise_stages(contrib, layers, bootstrap=200, seed=0)
    found.definition.save("runs/stages/dsi-synth/stages.json")             # what the ablation pipelines read
    print(found.summary())

The localiser is a pure function of those tidy tables, so it runs (and is
tested) on any profile, of any depth.

Features, one vector per decoder layer, all dimensionless so no feature needs
re-scaling: each component type's share of the layer's contribution ratios
(ratio_c / sum of ratios, the mean over queries first), its mean cosine with
the residual stream, and, when a per-layer ablation table is given, the
fraction of queries whose relevant document leaves rank 1 when that component
of that layer alone is ablated. `segmentation.segment_profile` splits the
layers into the number of contiguous stages its penalised criterion supports
(one is allowed; three is never forced).

Naming, by evidence (`NamingRules`), in this order:
  1. the dominant component type is the one with the largest mean ratio;
  2. cross-attention dominant                                  -> "bridging";
  3. MLPs dominant, MLP cosine with the residual below 0       -> "interaction";
  4. MLPs dominant and mean-ablating them costs little
     (at most `cheap_ablation` of queries leave rank 1)        -> "priming";
  5. anything else gets a descriptive name such as "mlp-dominant".
The ablation cost of rule 4 is the paper's: the stage's MLPs mean-ablated in
all its layers at once (`stage_ablation_cost`), or, failing that, the mean of
the single-layer mean ablations; without either the stage stays "mlp-dominant".
Repeated names get a suffix ("bridging-2") so every stage name is unique.

Stability: queries are resampled with replacement `bootstrap` times, the
features recomputed from the resample (ablation features, aggregated over
queries, stay fixed) and the segmentation rerun; each boundary's stability is
the share of resamples with a boundary at exactly that layer (and within one
layer of it).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import GenIRError
from ..stage_definition import Stage, StageDefinition
from .change_point import DEFAULT_PENALTY, DEFAULT_RESOLUTION, Segmentation, segment_profile

PAPER_STAGES = ("priming", "bridging", "interaction")
ABLATION_METRIC = "rank>1"  # % of queries whose relevant document leaves rank 1 (analyses.ablation)
# At most this many bootstrap resamples (CLI --bootstrap, sweep bootstrap): each one segments the decoder again, so the
# time grows with the count, and boundary frequencies are exact to the third decimal long before.
MAX_BOOTSTRAP = 100_000


@dataclass(frozen=True)
class NamingRules:
    """Thresholds that turn a stage's measurements into a name (priming, bridging, interaction)."""
    cheap_ablation: float = 0.10  # priming: at most this fraction of queries leave rank 1 when the MLPs are mean-ablated
    negative_cos: float = 0.0  # interaction: the MLPs' mean cosine with the residual lies below this
    ablation_method: str = "mean"


def default_min_stage_size(n_layers: int) -> int:
    """One layer per stage for shallow decoders, about an eighth of the depth for deep ones (3 of 24)."""
    return max(1, n_layers // 8)


# -- features -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryProfile:
    """Per-query contribution metrics as an array: values[metric][query, layer, kind]."""

    layers: tuple[int, ...]
    kinds: tuple[str, ...]
    query_ids: tuple[str, ...]
    values: dict[str, np.ndarray]

    @classmethod
    def from_table(cls, contrib: pd.DataFrame) -> "QueryProfile":
        """Per-query (queries, layers) feature matrices from a `contributions` table."""
        need = {"layer", "component", "query_id", "metric", "value"}
        missing = need - set(contrib.columns)
        if missing:
            raise GenIRError(f"contribution table lacks column(s) {sorted(missing)}; expected the output of analyses.contributions")
        df = contrib[contrib["side"] == "decoder"] if "side" in contrib.columns else contrib
        if df.empty:
            raise GenIRError("contribution table has no decoder rows")
        absent = [m for m in ("ratio", "cos_residual") if m not in set(df["metric"])]
        if absent:
            raise GenIRError(f"contribution table lacks metric(s) {absent}")
        layers = tuple(sorted(int(l) for l in df["layer"].unique()))
        if layers != tuple(range(len(layers))):
            raise GenIRError(f"contribution table covers decoder layers {list(layers)}; the localiser needs every layer 0..{max(layers)}")
        kinds = tuple(dict.fromkeys(df["component"]))
        query_ids = tuple(dict.fromkeys(df["query_id"].astype(str)))
        values = {}
        for metric in ("ratio", "cos_residual"):
            sub = df[df["metric"] == metric]
            cube = sub.pivot_table(index="query_id", columns=["layer", "component"], values="value", aggfunc="mean")
            cube.index = cube.index.astype(str)
            cols = pd.MultiIndex.from_product([layers, kinds])
            cube = cube.reindex(index=list(query_ids), columns=cols)
            if cube.isna().any().any():
                raise GenIRError(f"contribution table: metric {metric!r} is missing for some (query, layer, component)")
            values[metric] = cube.to_numpy().reshape(len(query_ids), len(layers), len(kinds))
        return cls(layers, kinds, query_ids, values)

    def means(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """(layer, kind) means over all queries or over the resampled `rows`."""
        return {m: (v if rows is None else v[rows]).mean(0) for m, v in self.values.items()}


def ablation_matrix(ablation: pd.DataFrame | None, layers: tuple[int, ...], kinds: tuple[str, ...], method: str) -> tuple[np.ndarray | None, list[str]]:
    """(layer, ablated kind) fraction of queries leaving rank 1 under single-layer ablation, and the ablated kinds; (None, []) without a table."""
    if ablation is None or ablation.empty:
        return None, []
    sub = ablation[(ablation["metric"] == ABLATION_METRIC) & ablation["layer"].notna()]
    if "method" in sub.columns:
        sub = sub[sub["method"] == method]
    if sub.empty:
        raise GenIRError(f"ablation table has no {method!r} rows with metric {ABLATION_METRIC!r}; expected the output of analyses.ablation.layer_ablation")
    grid = sub.pivot_table(index="layer", columns="component", values="value", aggfunc="mean")
    ablated = [k for k in kinds if k in grid.columns]
    grid = grid.reindex(index=list(layers), columns=ablated)
    if grid.isna().any().any():
        raise GenIRError("ablation table does not cover every decoder layer for each ablated component")
    return grid.to_numpy() / 100.0, ablated  # the ablation table reports percentages


def layer_features(means: dict[str, np.ndarray], ablation: np.ndarray | None) -> np.ndarray:
    """(n_layers, n_features): contribution shares, residual cosines and (optionally) ablation fractions."""
    ratio = means["ratio"]
    share = ratio / np.clip(ratio.sum(1, keepdims=True), 1e-12, None)
    parts = [share, means["cos_residual"]]
    if ablation is not None:
        parts.append(ablation)
    return np.concatenate(parts, axis=1)


def feature_names(kinds: tuple[str, ...], ablated: list[str]) -> list[str]:
    """Column names of `layer_features`: one per component kind and metric, plus the ablated kinds."""
    return [f"share:{k}" for k in kinds] + [f"cos_residual:{k}" for k in kinds] + [f"ablation:{k}" for k in ablated]


# -- naming ---------------------------------------------------------------------------------------------


def _pretty(kind: str) -> str:
    return kind.replace("_", "-")


def name_stage(dominant: str, mlp_cos: float, mlp_ablation: float | None, rules: NamingRules) -> str:
    """The evidence-based name of one stage (rules in the module docstring)."""
    if dominant == "cross_attn":
        return "bridging"
    if dominant == "mlp" and mlp_cos < rules.negative_cos:
        return "interaction"
    if dominant == "mlp" and mlp_ablation is not None and mlp_ablation <= rules.cheap_ablation:
        return "priming"
    return f"{_pretty(dominant)}-dominant"


def _unique(names: list[str]) -> list[str]:
    seen: Counter = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


# -- result -------------------------------------------------------------------------------------------


@dataclass
class StageLocalisation:
    """Result of `localise_stages`: the stage definition, the evidence behind each stage, and bootstrap stability.

    found = localise_stages(contrib, layer_ablation_table)
    found.definition.save("stages.json"); print(found.summary())
    """
    definition: StageDefinition
    segmentation: Segmentation
    profile: pd.DataFrame  # tidy: layer, feature, value (the segmented features)
    layer_means: pd.DataFrame  # tidy: layer, component, metric, value (contribution metrics and ablation effects, means over queries)
    evidence: pd.DataFrame  # tidy: stage, first_layer, last_layer, dominant, metric, value
    stability: pd.DataFrame  # boundary, selected, frequency, frequency_within_1
    n_stages_distribution: pd.DataFrame  # n_stages, frequency
    n_queries: int
    bootstrap: int
    notes: list[str] = field(default_factory=list)

    @property
    def matches_paper(self) -> bool:
        """True when the stages found are the paper's priming -> bridging -> interaction."""
        return tuple(self.definition.names()) == PAPER_STAGES

    def boundary_stability(self) -> dict[int, float]:
        """Fraction of bootstrap resamples that put a stage boundary before each layer."""
        sel = self.stability[self.stability["selected"]]
        return {int(b): float(f) for b, f in zip(sel["boundary"], sel["frequency"])}

    def summary(self) -> str:
        """A few readable lines: each stage, its evidence, and how stable its boundaries are."""
        n = self.segmentation.n_layers
        lines = [f"{self.segmentation.n_stages} stage(s) over {n} decoder layers ({self.n_queries} queries, {self.bootstrap} bootstrap resamples):"]
        wide = self.evidence.pivot_table(index=["stage", "first_layer", "last_layer", "dominant"], columns="metric", values="value", sort=False)
        for (stage, first, last, dominant), row in wide.iterrows():
            lines.append(f"  {stage:<20} layers {first}-{last}  dominant {dominant}")
            for prefix, label, fmt in (
                ("ratio:", "ratio", "{:.2f}"), ("cos_residual:", "cos with residual", "{:+.2f}"),
                ("layer_ablation:", "single-layer mean ablation, queries leaving rank 1", "{:.0%}"),
                ("stage_ablation:", "whole-stage mean ablation, queries leaving rank 1", "{:.0%}"),
            ):
                facts = [f"{m[len(prefix):]} {fmt.format(v)}" for m, v in row.items() if m.startswith(prefix) and pd.notna(v)]
                if facts:
                    lines.append(f"      {label}: " + ", ".join(facts))
        stab = self.boundary_stability()
        if stab:
            within = dict(zip(self.stability["boundary"], self.stability["frequency_within_1"]))
            lines.append("boundaries (first layer of a new stage): " + ", ".join(f"{b} (stable in {f:.0%} of resamples, {within[b]:.0%} within ±1)" for b, f in stab.items()))
        if self.bootstrap:
            dist = ", ".join(f"{int(k)}: {f:.0%}" for k, f in zip(self.n_stages_distribution["n_stages"], self.n_stages_distribution["frequency"]))
            lines.append(f"number of stages across resamples: {dist}")
        lines.extend(self.notes)
        return "\n".join(lines)


# -- the localiser --------------------------------------------------------------------------------------


StageAblationCost = Callable[[list[tuple[int, int]]], list[float]]


def localise_stages(
    contrib: pd.DataFrame,
    ablation: pd.DataFrame | None = None,
    stage_ablation_cost: StageAblationCost | None = None,
    *,
    min_stage_size: int | None = None,
    max_stages: int | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    penalty: float = DEFAULT_PENALTY,
    resolution: float = DEFAULT_RESOLUTION,
    rules: NamingRules = NamingRules(),
) -> StageLocalisation:
    """Segment the decoder into stages, name them by their evidence, and measure boundary stability.

    `stage_ablation_cost(spans)` returns, per (first, last) span, the fraction
    of queries leaving rank 1 when that span's MLPs are mean-ablated together;
    the stages pipeline passes one that runs analyses.ablation.ablate.
    """
    if bootstrap > MAX_BOOTSTRAP:
        raise GenIRError(f"bootstrap must be at most {MAX_BOOTSTRAP} resamples, got {bootstrap}")
    qp = QueryProfile.from_table(contrib)
    n_layers = len(qp.layers)
    min_size = min_stage_size or default_min_stage_size(n_layers)
    abl, ablated = ablation_matrix(ablation, qp.layers, qp.kinds, rules.ablation_method)
    means = qp.means()
    x = layer_features(means, abl)
    seg = segment_profile(x, min_size, max_stages, penalty, resolution)
    spans = seg.spans()

    # evidence per stage
    ratio, cos = means["ratio"], means["cos_residual"]
    stage_costs = stage_ablation_cost(spans) if stage_ablation_cost is not None and "mlp" in qp.kinds else None
    names, rows = [], []
    for i, (first, last) in enumerate(spans):
        sl = slice(first, last + 1)
        r, c = ratio[sl].mean(0), cos[sl].mean(0)
        dominant = qp.kinds[int(np.argmax(r))]
        facts = {f"ratio:{k}": float(r[j]) for j, k in enumerate(qp.kinds)}
        facts.update({f"cos_residual:{k}": float(c[j]) for j, k in enumerate(qp.kinds)})
        mlp_cost = None
        if abl is not None:
            for j, k in enumerate(ablated):
                facts[f"layer_ablation:{k}"] = float(abl[sl, j].mean())
            if "mlp" in ablated:
                mlp_cost = facts["layer_ablation:mlp"]
        if stage_costs is not None:
            facts["stage_ablation:mlp"] = mlp_cost = float(stage_costs[i])
        mlp_cos = facts.get("cos_residual:mlp", 0.0)
        names.append(name_stage(dominant, mlp_cos, mlp_cost, rules))
        rows.append((first, last, dominant, facts))
    names = _unique(names)
    evidence = pd.DataFrame(
        [{"stage": n, "first_layer": f, "last_layer": l, "dominant": d, "metric": m, "value": v} for n, (f, l, d, facts) in zip(names, rows) for m, v in facts.items()]
    )
    definition = StageDefinition(tuple(Stage(n, tuple(range(f, l + 1))) for n, (f, l) in zip(names, spans)), "genir-mech stages (change-point segmentation)")

    # stability
    rng = np.random.default_rng(seed)
    exact: Counter = Counter()
    near: Counter = Counter()
    n_stages: Counter = Counter()
    nq = len(qp.query_ids)
    for _ in range(bootstrap):
        rows_b = rng.integers(0, nq, nq)
        seg_b = segment_profile(layer_features(qp.means(rows_b), abl), min_size, max_stages, penalty, resolution)
        exact.update(seg_b.boundaries)
        near.update({c for b in seg_b.boundaries for c in (b - 1, b, b + 1)})
        n_stages[seg_b.n_stages] += 1
    chosen = set(seg.boundaries)
    share = (lambda c: c / bootstrap) if bootstrap else (lambda c: float("nan"))
    # explicit columns: a one-layer decoder has no possible boundary, and the table must still read as one
    stability = pd.DataFrame(
        [{"boundary": b, "selected": b in chosen, "frequency": share(exact[b]), "frequency_within_1": share(near[b])} for b in range(1, n_layers)],
        columns=["boundary", "selected", "frequency", "frequency_within_1"],
    ).astype({"boundary": int, "selected": bool})
    dist = pd.DataFrame(sorted(((k, v / bootstrap) for k, v in n_stages.items())), columns=["n_stages", "frequency"])

    names_x = feature_names(qp.kinds, ablated)
    profile = pd.DataFrame([{"layer": l, "feature": f, "value": float(x[l, j])} for l in range(n_layers) for j, f in enumerate(names_x)])
    layer_means = pd.DataFrame(
        [{"layer": l, "component": k, "metric": m, "value": float(v[l, j])} for m, v in means.items() for l in range(n_layers) for j, k in enumerate(qp.kinds)]
        + [{"layer": l, "component": k, "metric": "layer_ablation", "value": float(abl[l, j])} for l in range(n_layers) for j, k in enumerate(ablated)]
    )
    notes = _notes(names, seg, abl is not None or stage_costs is not None)
    if n_layers < len(PAPER_STAGES):
        notes.append(f"The decoder has {n_layers} layer{'s' if n_layers > 1 else ''}: fewer than the paper's {len(PAPER_STAGES)} stages, "
                     f"so at most {n_layers} stage{'s' if n_layers > 1 else ''} can be found.")
    return StageLocalisation(definition, seg, profile, layer_means, evidence, stability, dist, nq, bootstrap, notes)


def _notes(names: list[str], seg: Segmentation, have_ablation: bool) -> list[str]:
    notes = []
    if tuple(names) == PAPER_STAGES:
        notes.append("The profile supports the paper's three stages: priming -> bridging -> interaction.")
    else:
        found = " -> ".join(names)
        notes.append(f"The profile does not show the paper's three stages (priming -> bridging -> interaction); it supports {seg.n_stages}: {found}.")
    if not have_ablation and any(n.startswith("mlp-dominant") for n in names):
        notes.append("No ablation evidence was given, so MLP-dominant stages cannot be confirmed as priming (mean ablation costing little).")
    return notes

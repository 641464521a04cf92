"""Locate the decoder's stages and name them by the paper's definitions, each name a measured test.

    contrib = contributions(gm, texts, query_ids, paper_cosine=True)         # tidy: layer, component, query_id, metric, value
    lens = stage_lens_table(logit_lens(gm, texts, query_ids, docs).ranks, gm.adapter.kinds("decoder"), len(gm.docids))
    found = localise_stages(contrib, layer_ablation_table, span_tests, lens=lens, bootstrap=200)
    found.save("runs/stages/dsi-synth/stages.json")      # the stage definition the ablation pipelines read, with its evidence
    print(found.summary())

The localiser is a pure function of tidy tables and one callback,
`span_tests(spans)`, which ablates the layers of each (first, last) span and
says per query whether the relevant document leaves rank 1 (pipelines.stages
passes one that runs analyses.ablation; tests pass synthetic outcomes).

Candidates. Every decoder layer gets a feature vector (each component's share
of the layer's contribution ratios, its cosines with the residual stream, its
single-layer ablation cost when given); `change_point.optimal_partitions`
gives the least-squares split into k contiguous segments for every k. No knob
enters: k is chosen below.

Tests (`NamingRules`; thresholds are fractions of the correct queries, each
constant below carries its reason):
  priming      zeroing the segment's MLPs sends >= PRIMING_MIN_ZERO_COST of the
               queries off rank 1 (they are necessary) while mean-ablating them
               sends <= PRIMING_MAX_MEAN_COST (their output is the same for every
               query: mean ablation is the paper's evidence of query-agnosticism,
               and the one used here);
  bridging     the attention that reads the query (cross-attention; self-attention
               in a decoder-only model) moves query information: mean-ablating
               it in the segment sends >= BRIDGING_MIN_MEAN_COST off rank 1, or,
               with every other layer's mean-ablated, it alone keeps
               >= BRIDGING_MIN_ALONE_KEPT at rank 1 (redundant layers carry the
               query without being necessary one by one);
  interaction  the MLPs promote the relevant docid: their outputs alone, through
               the logit lens, place it within the top INTERACTION_MAX_RANK_SHARE
               of the docids ((rank - 1) / (n - 1), median query; chance is one
               half), and they turn against the residual: their cosine with
               the residual after the layer (the paper's definition;
               `cos_resid_post`) is below INTERACTION_MAX_COS on average. The
               lens rank gain through the MLP sublayers is reported beside it;
               it is not the test, because it stops at rank 1 (a second half
               of an interaction block has nothing left to gain).

Names, in layer order: the first segment passing bridging is `bridging`; a
later one passing interaction is `interaction` (the paper's Stage III passes
bridging's cost test too); one passing priming before any bridging is
`priming`. Everything else is `unassigned`, with its reason: no definition
met, a function met again (never "bridging-2"), or met out of the paper's
order (priming after bridging, interaction with no bridging before it), which
the summary reports as such.

Count. A boundary is kept only when the segments it separates differ in a
functional test (their pass/fail outcomes differ); two adjacent segments with
the same function are one stage. The chosen segmentation is the finest
optimal k-segmentation all of whose boundaries are kept (k = 1 always
qualifies). The penalised criterion of `change_point` and its resolution
knob play no part in this choice; `path` reports what that criterion picks
over a grid of resolutions and where on the grid the chosen answer lies.

Stability. Each bootstrap resample of the queries recomputes the features,
the candidate segmentations, every test and the choice of k; the result
reports the share of resamples with each number of stages, each boundary,
and the same names over the same layers.

Without `span_tests` no functional test can run: the number of stages is the
penalised criterion's at the given resolution and the names are the profile's
(`profile_names`), marked provisional in the summary and in stages.json.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import GenIRError
from ..stage_definition import Stage, StageDefinition
from ..vocabulary import MAX_BOOTSTRAP, PAPER_STAGES, PRIMING_MAX_MEAN_COST
from . import paper_reference
from .change_point import (
    DEFAULT_PENALTY,
    DEFAULT_RESOLUTION,
    RESOLUTION_GRID,
    Segmentation,
    optimal_partitions,
    penalised_choice,
)

UNASSIGNED = "unassigned"
ABLATION_METRIC = "rank>1"  # % of queries whose relevant document leaves rank 1 (analyses.ablation)

# What span_tests returns per span: bool arrays over the test queries, True where the relevant document was at rank 1
# intact (CORRECT) or where it leaves rank 1 under that ablation.
CORRECT = "correct"
MLP_ZERO, MLP_MEAN, READER_MEAN, READER_ALONE = "mlp:zero", "mlp:mean", "reader:mean", "reader:alone"
SPAN_TEST_KEYS = (MLP_ZERO, MLP_MEAN, READER_MEAN, READER_ALONE)

SpanTests = Callable[[list[tuple[int, int]]], Mapping[tuple[int, int], Mapping[str, np.ndarray]]]


@dataclass(frozen=True)
class NamingRules:
    """The paper's definitions as thresholds, fractions of the correct queries (paper numbers: Table 3, NQ10k, T5-large);
    the module constants below name the defaults."""
    cheap_ablation: float = PRIMING_MAX_MEAN_COST  # priming MLPs are query-agnostic: mean-ablating them is cheap (paper Stage I 0.8%, Stage III 48.2%)
    necessary_ablation: float = 0.5  # priming MLPs are necessary: zeroing them sends at least half off rank 1 (paper Stage I: 92.9%)
    bridging_cost: float = 0.10  # bridging attention carries the query: mean-ablating it sends at least 10% off rank 1 (paper Stage I 4.6%, Stage II 20.5%)
    bridging_alone: float = 0.5  # ... or, every other layer's mean-ablated, it alone keeps at least half at rank 1 (redundant layers)
    interaction_rank_share: float = 0.10  # interaction MLPs write the relevant docid: their outputs place it in the top 10% of docids (0 first, chance 0.5)
    negative_cos: float = 0.0  # ... and turn against the residual after the layer (paper Stage III: every component's cosine is negative)
    ablation_method: str = "mean"  # the single-layer ablation used as a feature (and, without span tests, for provisional names)

    def reasons(self) -> list[tuple[str, float, str]]:
        """(field, value, why) for every threshold, as the summary prints them."""
        return [
            ("necessary_ablation", self.necessary_ablation, "priming MLPs are necessary: zeroing them sends at least this share off rank 1 (paper Stage I: 92.9%)"),
            ("cheap_ablation", self.cheap_ablation, "priming MLPs are query-agnostic: mean-ablating them sends at most this share off rank 1 (paper Stage I: 0.8%)"),
            ("bridging_cost", self.bridging_cost, "bridging attention carries the query: mean-ablating it sends at least this share off rank 1 (paper Stage I 4.6%, II 20.5%)"),
            ("bridging_alone", self.bridging_alone, "or it carries the query redundantly: alone (the others mean-ablated) it keeps at least this share at rank 1"),
            ("interaction_rank_share", self.interaction_rank_share, "interaction MLPs write the relevant docid: their outputs alone place it within this top share of the docids (0 first, chance 0.5)"),
            ("negative_cos", self.negative_cos, "interaction MLPs turn against the residual: mean cosine with the residual after the layer below this (paper: negative)"),
        ]


PRIMING_MIN_ZERO_COST = NamingRules.necessary_ablation
PRIMING_MAX_MEAN_COST = NamingRules.cheap_ablation
BRIDGING_MIN_MEAN_COST = NamingRules.bridging_cost
BRIDGING_MIN_ALONE_KEPT = NamingRules.bridging_alone
INTERACTION_MAX_RANK_SHARE = NamingRules.interaction_rank_share
INTERACTION_MAX_COS = NamingRules.negative_cos


def default_min_stage_size(n_layers: int) -> int:
    """One layer per stage for shallow decoders, about an eighth of the depth for deep ones (3 of 24)."""
    return max(1, n_layers // 8)


def paper_proportional_stages(n_layers: int) -> StageDefinition | None:
    """The paper's T5-large split (layers 0-6 / 7-17 / 18-23 of 24) scaled to `n_layers`; None below three layers."""
    if n_layers < len(PAPER_STAGES):
        return None
    starts = [round(first * n_layers / paper_reference.DECODER_LAYERS) for first, _, _ in paper_reference.STAGES.values()]
    for i in range(1, len(starts)):  # every stage keeps at least one layer
        starts[i] = min(max(starts[i], starts[i - 1] + 1), n_layers - (len(starts) - i))
    ends = [*starts[1:], n_layers]
    spans = ", ".join(f"{a}-{b}" for a, b, _ in paper_reference.STAGES.values())
    return StageDefinition(tuple(Stage(name, tuple(range(a, b))) for name, a, b in zip(PAPER_STAGES, starts, ends)),
                           f"the paper's stages ({spans} of {paper_reference.DECODER_LAYERS} layers) scaled to {n_layers} layers")


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
        """Per-query (queries, layers) feature matrices from a `contributions` table (`cos_resid_post` when it has it)."""
        need = {"layer", "component", "query_id", "metric", "value"}
        missing = need - set(contrib.columns) if contrib is not None else need
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
        for metric in [m for m in ("ratio", "cos_residual", "cos_resid_post") if m in set(df["metric"])]:
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


COSINES = ("cos_residual", "cos_resid_post")


def layer_features(means: dict[str, np.ndarray], ablation: np.ndarray | None) -> np.ndarray:
    """(n_layers, n_features): contribution shares, residual cosines (both definitions when measured) and (optionally) ablation fractions."""
    ratio = means["ratio"]
    share = ratio / np.clip(ratio.sum(1, keepdims=True), 1e-12, None)
    parts = [share] + [means[c] for c in COSINES if c in means]
    if ablation is not None:
        parts.append(ablation)
    return np.concatenate(parts, axis=1)


def feature_names(kinds: tuple[str, ...], ablated: list[str], cosines: Sequence[str] = ("cos_residual",)) -> list[str]:
    """Column names of `layer_features`: one per component kind and metric, plus the ablated kinds."""
    return [f"share:{k}" for k in kinds] + [f"{c}:{k}" for c in COSINES if c in cosines for k in kinds] + [f"ablation:{k}" for k in ablated]


def _spans(starts: Sequence[int], n_layers: int) -> list[tuple[int, int]]:
    ends = [*starts[1:], n_layers]
    return [(int(s), int(e) - 1) for s, e in zip(starts, ends)]


def _span_text(span: tuple[int, int]) -> str:
    return f"{span[0]}-{span[1]}" if span[0] != span[1] else str(span[0])


# -- the logit-lens evidence --------------------------------------------------------------------------


LENS_METRICS = ("mlp_out_rank_share", "rank_in", "rank_out", "mlp_rank_gain", "reader_rank_gain")


def stage_lens_table(ranks: pd.DataFrame, kinds: Sequence[str], n_candidates: int | Mapping[str, int], reader: str = "cross_attn") -> pd.DataFrame:
    """Per query and layer, the logit-lens facts the interaction test and the evidence use (query_id, layer, metric, value):

    `mlp_out_rank_share`: where the relevant docid falls among the docids in the projection of the layer's MLP output
    alone, (rank - 1) / (n - 1): 0 first, 1 last, 0.5 chance (NaN with a single candidate, nothing to rank; a step of
    a multi-token docid has few); `rank_in` / `rank_out`: its rank among the docids in
    the residual entering / leaving the layer; `mlp_rank_gain` / `reader_rank_gain`: log2 of its rank before over
    its rank after the MLP / the query-reading attention sublayer (1: the sublayer halves its rank).
    `ranks` is `logit_lens(...).ranks`; `n_candidates` the number of docids (per query at a docid step)."""
    need = {"query_id", "layer", "component", "facet", "metric", "value"}
    if not need <= set(ranks.columns):
        raise GenIRError(f"lens table lacks column(s) {sorted(need - set(ranks.columns))}; expected logit_lens(...).ranks")
    kinds = list(kinds)
    if "mlp" not in kinds or reader not in kinds:
        raise GenIRError(f"the lens evidence needs the decoder's mlp and {reader} (it has {', '.join(kinds)})")
    r = ranks[(ranks["metric"] == "relevant_doc_rank") & ranks["head"].isna()] if "head" in ranks.columns else ranks[ranks["metric"] == "relevant_doc_rank"]
    wide = r.pivot_table(index="query_id", columns=["layer", "component", "facet"], values="value", aggfunc="first")
    wide.index = wide.index.astype(str)
    n_layers = int(r["layer"].max()) + 1
    qids = list(wide.index)
    counts = np.array([n_candidates[q] for q in qids] if isinstance(n_candidates, Mapping) else [n_candidates] * len(qids), dtype=float)

    def col(layer, component, facet):
        key = (layer, component, facet)
        if key not in wide.columns:
            raise GenIRError(f"lens table has no {facet} probe of layer {layer}'s {component}")
        return wide[key].to_numpy(dtype=float)

    def after(layer, i):  # rank in the residual after sublayer i of `layer` (i = -1: entering the layer)
        if i >= 0:
            return col(layer, kinds[i], "resid_post")
        return col(0, "embedding", "resid_pre") if layer == 0 else after(layer - 1, len(kinds) - 1)

    rows = []
    for layer in range(n_layers):
        m, q = kinds.index("mlp"), kinds.index(reader)
        values = {
            "mlp_out_rank_share": np.where(counts > 1, (col(layer, "mlp", "out") - 1) / np.maximum(counts - 1, 1.0), np.nan),
            "rank_in": after(layer, -1),
            "rank_out": after(layer, len(kinds) - 1),
            "mlp_rank_gain": np.log2(after(layer, m - 1) / after(layer, m)),
            "reader_rank_gain": np.log2(after(layer, q - 1) / after(layer, q)),
        }
        for metric, v in values.items():
            rows.append(pd.DataFrame({"query_id": qids, "layer": layer, "metric": metric, "value": v}))
    return pd.concat(rows, ignore_index=True)


# -- one segment's tests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentTest:
    """The functional tests of one segment (first..last layer) over some queries: the numbers and whether each definition is met."""
    first: int
    last: int
    n_queries: int  # correct queries the ablation numbers are over
    mlp_zero_cost: float  # share of them leaving rank 1 when the segment's MLPs are zeroed
    mlp_mean_cost: float  # ... mean-ablated
    reader_mean_cost: float  # ... when its query-reading attention is mean-ablated
    reader_alone_kept: float  # share staying at rank 1 when every other layer's query-reading attention is mean-ablated (NaN: the whole decoder)
    mlp_out_rank_share: float  # median over queries (of the median over the layers) of the relevant docid's place among the docids in the MLP outputs' lens (0 first, 0.5 chance)
    mlp_cos_resid_post: float  # MLP outputs' mean cosine with the residual after the layer (the paper's)
    mlp_cos_residual: float  # ... with the residual entering the MLP
    rank_in: float  # median rank of the relevant docid among the docids in the lens of the residual entering the segment
    rank_out: float  # ... leaving it
    mlp_rank_gain: float  # median over queries of the doublings of rank the segment's MLP sublayers give the relevant docid
    reader_rank_gain: float  # ... its query-reading attention sublayers
    priming: bool
    bridging: bool
    interaction: bool

    @property
    def span(self) -> tuple[int, int]:
        return (self.first, self.last)

    @property
    def outcome(self) -> tuple[bool, bool, bool]:
        """Which definitions the segment meets (priming, bridging, interaction): two neighbours with the same outcome are one stage."""
        return (self.priming, self.bridging, self.interaction)

    def failures(self, rules: NamingRules, reader: str) -> list[str]:
        """Why each definition is not met, in words with the numbers."""
        out = []
        if not self.priming:
            out.append(f"priming: MLPs zeroed {_pct(self.mlp_zero_cost)} off rank 1 (needs >= {_pct(rules.necessary_ablation)}), "
                       f"mean-ablated {_pct(self.mlp_mean_cost)} (needs <= {_pct(rules.cheap_ablation)})")
        if not self.bridging:
            alone = "" if math.isnan(self.reader_alone_kept) else f", alone keeps {_pct(self.reader_alone_kept)} (or >= {_pct(rules.bridging_alone)})"
            out.append(f"bridging: {reader} mean-ablated {_pct(self.reader_mean_cost)} off rank 1 (needs >= {_pct(rules.bridging_cost)}){alone}")
        if not self.interaction:
            share = "not measured (no lens)" if math.isnan(self.mlp_out_rank_share) else f"{_pct(self.mlp_out_rank_share)} of the way down the docids (needs <= {_pct(rules.interaction_rank_share)})"
            cos = "not measured" if math.isnan(self.mlp_cos_resid_post) else f"{self.mlp_cos_resid_post:+.2f} (needs < {rules.negative_cos:+.2f})"
            out.append(f"interaction: MLP outputs rank the relevant docid at {share}, MLP cosine with the residual after the layer {cos}")
        return out


def _row_nanmedian(a: np.ndarray) -> np.ndarray:
    """Median of each row over its measured values (NaN where a row has none, without a warning)."""
    out = np.full(a.shape[0], np.nan)
    seen = np.isfinite(a).any(1)
    out[seen] = np.nanmedian(a[seen], axis=1)
    return out


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _share(x: float) -> str:
    """A share of resamples: whole percent, one decimal where rounding would hide that it is not 0 or 1."""
    return f"{100 * x:.1f}%" if 0 < x < 0.01 or 0.99 < x < 1 else f"{x:.0%}"


class _SpanData:
    """Per-query arrays of every measured span, so that a resample of the queries re-tests any span without a forward pass."""

    def __init__(self, qp: QueryProfile, test_ids: Sequence[str], outcomes: Mapping, lens: pd.DataFrame | None, reader: str):
        index = {q: i for i, q in enumerate(qp.query_ids)}
        unknown = [q for q in test_ids if q not in index]
        if unknown:
            raise GenIRError(f"{len(unknown)} test queries (e.g. {unknown[0]!r}) are not in the contribution table")
        self.test_rows = np.array([index[q] for q in test_ids], dtype=int)
        self.position = np.full(len(qp.query_ids), -1)
        self.position[self.test_rows] = np.arange(len(test_ids))
        self.n_layers, self.kinds = len(qp.layers), qp.kinds
        self.outcomes = {tuple(int(v) for v in span): {k: np.asarray(a, dtype=bool) for k, a in tests.items()} for span, tests in outcomes.items()}
        for span, tests in self.outcomes.items():
            missing = [k for k in (CORRECT, MLP_ZERO, MLP_MEAN, READER_MEAN) if k not in tests]
            if missing:
                raise GenIRError(f"span tests of layers {_span_text(span)} lack {missing}")
            bad = [k for k, a in tests.items() if a.shape != (len(test_ids),)]
            if bad:
                raise GenIRError(f"span tests of layers {_span_text(span)}: {bad} do not hold one value per test query ({len(test_ids)})")
        mlp = qp.kinds.index("mlp") if "mlp" in qp.kinds else None
        take = lambda metric: qp.values[metric][self.test_rows][:, :, mlp] if metric in qp.values and mlp is not None else None  # noqa: E731
        self.cos_post, self.cos_pre = take("cos_resid_post"), take("cos_residual")
        self.lens = None
        if lens is not None and not lens.empty:
            wide = lens.pivot_table(index="query_id", columns=["metric", "layer"], values="value", aggfunc="first")
            wide.index = wide.index.astype(str)
            wide = wide.reindex(index=list(test_ids))
            self.lens = {m: wide[m].reindex(columns=range(self.n_layers)).to_numpy(dtype=float) for m in LENS_METRICS if m in wide.columns.get_level_values(0)}

    def rows(self, rows: np.ndarray | None) -> np.ndarray:
        """Positions into the test queries of a resample given over all queries (all test queries when None)."""
        if rows is None:
            return np.arange(len(self.test_rows))
        pos = self.position[rows]
        return pos[pos >= 0]

    def test(self, span: tuple[int, int], rows: np.ndarray, rules: NamingRules) -> SegmentTest:
        if span not in self.outcomes:
            raise GenIRError(f"no span tests for layers {_span_text(span)}")
        t = self.outcomes[span]
        correct = t[CORRECT][rows]
        n = int(correct.sum())
        nan = float("nan")
        cost = lambda key: float((t[key][rows] & correct).sum() / n) if n and key in t else nan  # noqa: E731
        whole = span == (0, self.n_layers - 1)
        alone = nan if whole or READER_ALONE not in t else (1.0 - cost(READER_ALONE))
        layers = slice(span[0], span[1] + 1)

        def lens(metric, how):
            if self.lens is None or metric not in self.lens or not len(rows):
                return nan
            per_query = how(self.lens[metric][rows, layers])
            return float(np.nanmedian(per_query)) if np.isfinite(per_query).any() else nan

        def cos(values):
            return nan if values is None or not len(rows) else float(values[rows, layers].mean())

        numbers = dict(
            mlp_zero_cost=cost(MLP_ZERO), mlp_mean_cost=cost(MLP_MEAN), reader_mean_cost=cost(READER_MEAN), reader_alone_kept=alone,
            mlp_out_rank_share=lens("mlp_out_rank_share", _row_nanmedian),
            mlp_cos_resid_post=cos(self.cos_post), mlp_cos_residual=cos(self.cos_pre),
            rank_in=lens("rank_in", lambda a: a[:, 0]), rank_out=lens("rank_out", lambda a: a[:, -1]),
            mlp_rank_gain=lens("mlp_rank_gain", lambda a: a.sum(1)), reader_rank_gain=lens("reader_rank_gain", lambda a: a.sum(1)),
        )
        ge = lambda x, th: not math.isnan(x) and x >= th  # noqa: E731
        le = lambda x, th: not math.isnan(x) and x <= th  # noqa: E731
        priming = ge(numbers["mlp_zero_cost"], rules.necessary_ablation) and le(numbers["mlp_mean_cost"], rules.cheap_ablation)
        bridging = ge(numbers["reader_mean_cost"], rules.bridging_cost) or ge(alone, rules.bridging_alone)
        interaction = le(numbers["mlp_out_rank_share"], rules.interaction_rank_share) and (not math.isnan(numbers["mlp_cos_resid_post"])
                                                                                             and numbers["mlp_cos_resid_post"] < rules.negative_cos)
        return SegmentTest(span[0], span[1], n, **numbers, priming=priming, bridging=bridging, interaction=interaction)


# -- names ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """A segment's name (one of the paper's three or `unassigned`), its function label, and why."""
    name: str
    function: str  # priming | bridging | interaction | unassigned
    reason: str
    out_of_order: bool = False


def name_segments(tests: Sequence[SegmentTest], rules: NamingRules = NamingRules(), reader: str = "cross_attn") -> list[Named]:
    """The paper's names for consecutive segments from their tests, in layer order (module docstring: the rules)."""
    seen: dict[str, tuple[int, int]] = {}
    out = []
    for t in tests:
        also = [f for f, ok in zip(PAPER_STAGES, t.outcome) if ok]
        if t.bridging and "bridging" not in seen:
            function, reason = "bridging", f"{reader} carries the query"
        elif t.interaction and "bridging" in seen and "interaction" not in seen:
            function, reason = "interaction", "the MLPs promote the relevant docid and turn against the residual, after bridging"
        elif t.priming and "bridging" not in seen and "priming" not in seen:
            function, reason = "priming", "necessary, query-agnostic MLPs before bridging"
        else:
            function = UNASSIGNED
            order = False
            if t.priming and "bridging" in seen:
                reason, order = f"meets priming's test but comes after bridging (layers {_span_text(seen['bridging'])}): out of the paper's order", True
            elif t.interaction and "bridging" not in seen:
                reason, order = "meets interaction's test but no bridging stage comes before it: out of the paper's order", True
            elif also:
                again = also[0]
                reason = f"meets {again}'s test again ({again} is layers {_span_text(seen[again])})"
            else:
                reason = "meets no definition: " + "; ".join(t.failures(rules, reader))
            out.append(Named(UNASSIGNED, UNASSIGNED, reason, order))
            continue
        seen[function] = t.span
        others = [f for f in also if f != function]
        if others:
            reason += f"; also meets {' and '.join(others)}'s test (not separated from it in this model)"
        out.append(Named(function, function, reason))
    return _unique_unassigned(out, [t.span for t in tests])


def _unique_unassigned(named: list[Named], spans: Sequence[tuple[int, int]]) -> list[Named]:
    """Unassigned segments are told apart by their layers when there are several (a stage definition needs unique names)."""
    if sum(n.function == UNASSIGNED for n in named) < 2:
        return named
    return [Named(f"{UNASSIGNED} (layers {_span_text(s)})", n.function, n.reason, n.out_of_order) if n.function == UNASSIGNED else n
            for n, s in zip(named, spans)]


def admissible(tests: Sequence[SegmentTest]) -> bool:
    """Every boundary separates segments with different test outcomes (two neighbours with the same function are one stage)."""
    return all(a.outcome != b.outcome for a, b in zip(tests, tests[1:]))


def name_stage(dominant: str, mlp_cos: float, mlp_ablation: float | None, rules: NamingRules, reader: str = "cross_attn") -> str:
    """The provisional name of one segment from its contribution profile alone (no functional test ran)."""
    if dominant == reader:
        return "bridging"
    if dominant == "mlp" and mlp_cos < rules.negative_cos:
        return "interaction"
    if dominant == "mlp" and mlp_ablation is not None and mlp_ablation <= rules.cheap_ablation:
        return "priming"
    return UNASSIGNED


# -- result -------------------------------------------------------------------------------------------


@dataclass
class StageLocalisation:
    """Result of `localise_stages`: the stage definition, each stage's evidence, how the count was chosen, and its stability.

    found = localise_stages(contrib, layer_ablation_table, span_tests, lens=lens)
    found.save("stages.json"); print(found.summary())
    """
    definition: StageDefinition
    segmentation: Segmentation
    profile: pd.DataFrame  # tidy: layer, feature, value (the segmented features)
    layer_means: pd.DataFrame  # tidy: layer, component, metric, value (contribution metrics, ablation effects and lens facts, means over queries)
    evidence: pd.DataFrame  # tidy: stage, first_layer, last_layer, dominant, metric, value
    stability: pd.DataFrame  # boundary, selected, frequency, frequency_within_1
    n_stages_distribution: pd.DataFrame  # n_stages, frequency
    n_queries: int
    bootstrap: int
    notes: list[str] = field(default_factory=list)
    tests: pd.DataFrame | None = None  # one row per segment of the chosen (and any extra) segmentation: numbers, thresholds, verdicts
    path: pd.DataFrame | None = None  # the penalised criterion's segmentation at every resolution of the grid, with its functional reading
    naming: str = "functional"  # functional: the paper's definitions tested; profile: provisional names from the contribution profile
    rules: NamingRules = field(default_factory=NamingRules)
    count: dict = field(default_factory=dict)  # how the number of stages was chosen and how it holds up
    reasons: list[str] = field(default_factory=list)  # per stage, why it has its name

    @property
    def matches_paper(self) -> bool:
        """True when the stages found are the paper's priming -> bridging -> interaction."""
        return tuple(self.definition.names()) == PAPER_STAGES

    def boundary_stability(self) -> dict[int, float]:
        """Fraction of bootstrap resamples that put a stage boundary before each chosen boundary layer."""
        sel = self.stability[self.stability["selected"]]
        return {int(b): float(f) for b, f in zip(sel["boundary"], sel["frequency"])}

    def to_json(self) -> dict:
        """The stage definition (what StageDefinition.load reads) with each stage's tests, the thresholds and the count's evidence."""
        data = self.definition.to_json()
        rows = {} if self.tests is None else {(int(r.first_layer), int(r.last_layer)): r for r in self.tests[self.tests["stages"] == "located"].itertuples()}
        for stage, reason in zip(data["stages"], self.reasons or [""] * len(data["stages"])):
            span = (min(stage["layers"]), max(stage["layers"]))
            stage["reason"] = reason
            if span in rows:
                r = rows[span]
                stage["tests"] = {k: _round(getattr(r, k)) for k in TEST_COLUMNS}
        data["naming"] = self.naming
        data["thresholds"] = {name: {"value": value, "reason": why} for name, value, why in self.rules.reasons()}
        data["count"] = _round(self.count)
        data["matches_paper"] = self.matches_paper
        return data

    def save(self, path: str | Path) -> Path:
        """stages.json: the definition every ablation pipeline reads (StageDefinition.load), with the evidence (`to_json`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    def summary(self) -> str:
        """Readable lines: each stage, the tests behind its name, how many stages and why, stability, thresholds."""
        n = self.segmentation.n_layers
        k = len(self.definition.stages)
        tested = "" if self.tests is None else f"; functional tests on {int(self.tests['n_queries'].max())} of them"
        lines = [f"{k} stage(s) over {n} decoder layers ({self.n_queries} queries{tested}, {self.bootstrap} bootstrap resamples):"]
        wide = self.evidence.pivot_table(index=["stage", "first_layer", "last_layer", "dominant"], columns="metric", values="value", sort=False)
        rows = {} if self.tests is None else {(int(r.first_layer), int(r.last_layer)): r for r in self.tests[self.tests["stages"] == "located"].itertuples()}
        for ((stage, first, last, dominant), row), reason in zip(wide.iterrows(), self.reasons or [""] * len(wide)):
            short = "meets no definition (tests below)" if reason.startswith("meets no definition") and (int(first), int(last)) in rows else reason
            lines.append(f"  {stage:<24} layers {_span_text((int(first), int(last)))}  largest contribution ratio: {dominant}" + (f"  ({short})" if short else ""))
            r = rows.get((int(first), int(last)))
            if r is not None:
                lines.extend("      " + line for line in _test_lines(r))
            else:
                ratios = ", ".join(f"{m[6:]} {v:.2f}" for m, v in row.items() if m.startswith("ratio:") and pd.notna(v))
                cosines = ", ".join(f"{m[13:]} {v:+.2f}" for m, v in row.items() if m.startswith("cos_residual:") and pd.notna(v))
                lines.append(f"      ratio: {ratios}; cosine with the residual entering the sublayer: {cosines}")
                abl = ", ".join(f"{m[15:]} {v:.0%}" for m, v in row.items() if m.startswith("layer_ablation:") and pd.notna(v))
                if abl:
                    lines.append(f"      single-layer mean ablation, queries leaving rank 1: {abl}")
        for key in ("criterion", "path", "bootstrap", "order"):
            if self.count.get(key):
                lines.append(f"{key}: {self.count[key]}")
        stab = self.boundary_stability()
        if stab:
            within = dict(zip(self.stability["boundary"], self.stability["frequency_within_1"]))
            lines.append("boundaries (first layer of a new stage): " + ", ".join(f"{b} (in {_share(f)} of resamples, {_share(within[b])} within ±1)" for b, f in stab.items()))
        if self.bootstrap:
            dist = ", ".join(f"{int(c)}: {_share(f)}" for c, f in zip(self.n_stages_distribution["n_stages"], self.n_stages_distribution["frequency"]))
            lines.append(f"number of stages across resamples: {dist}")
        lines.extend(self.notes)
        if self.naming == "functional":
            lines.append("thresholds (fractions of the correct queries):")
            lines.extend(f"  {name} = {value:g}: {why}" for name, value, why in self.rules.reasons())
        return "\n".join(lines)


TEST_COLUMNS = ("n_queries", "mlp_zero_cost", "mlp_mean_cost", "reader_mean_cost", "reader_alone_kept", "mlp_out_rank_share",
                "mlp_cos_resid_post", "mlp_cos_residual", "rank_in", "rank_out", "mlp_rank_gain", "reader_rank_gain",
                "priming", "bridging", "interaction")


def _test_lines(r) -> list[str]:
    alone = "" if pd.isna(r.reader_alone_kept) else f"; alone keeps {_pct(r.reader_alone_kept)} at rank 1"
    lens = "" if pd.isna(r.rank_in) else (f"lens: relevant docid's rank among docids {r.rank_in:.0f} -> {r.rank_out:.0f} (median), "
                                         f"MLP sublayers gain {r.mlp_rank_gain:.1f} doublings, {r.reader} {r.reader_rank_gain:.1f}")
    share = "n/a" if pd.isna(r.mlp_out_rank_share) else _pct(r.mlp_out_rank_share)
    lines = [
        f"priming {'yes' if r.priming else 'no '}: MLPs zeroed {_pct(r.mlp_zero_cost)} off rank 1, mean-ablated {_pct(r.mlp_mean_cost)}",
        f"bridging {'yes' if r.bridging else 'no '}: {r.reader} mean-ablated {_pct(r.reader_mean_cost)} off rank 1{alone}",
        f"interaction {'yes' if r.interaction else 'no '}: MLP outputs place the relevant docid {share} of the way down the docids; MLP cosine with the residual "
        f"after the layer {r.mlp_cos_resid_post:+.2f} (entering the MLP {r.mlp_cos_residual:+.2f})",
    ]
    return lines + ([lens] if lens else [])


def _round(value, digits: int = 4):
    """JSON-ready copy with floats rounded (stages.json must read the same for the same measurements)."""
    if isinstance(value, dict):
        return {str(k): _round(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v, digits) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else round(float(value), digits)
    return value


# -- the localiser --------------------------------------------------------------------------------------


def localise_stages(
    contrib: pd.DataFrame,
    ablation: pd.DataFrame | None = None,
    span_tests: SpanTests | None = None,
    *,
    lens: pd.DataFrame | None = None,
    test_query_ids: Sequence[str] | None = None,
    reader: str | None = None,
    extra: Mapping[str, StageDefinition] | None = None,
    min_stage_size: int | None = None,
    max_stages: int | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    penalty: float = DEFAULT_PENALTY,
    resolution: float = DEFAULT_RESOLUTION,
    grid: Sequence[float] = RESOLUTION_GRID,
    rules: NamingRules = NamingRules(),
) -> StageLocalisation:
    """Segment the decoder into stages, name them by the paper's definitions, choose their number by those tests, and bootstrap it all.

    `span_tests(spans)` ablates each (first, last) span over the test queries (`test_query_ids`, default every query
    of `contrib`) and returns {span: {CORRECT, MLP_ZERO, MLP_MEAN, READER_MEAN, READER_ALONE: bool per query}}; `lens`
    is `stage_lens_table(...)` over the same queries; `reader` the attention that reads the query (default: cross-attention
    when the table has it, else self-attention, as in a decoder-only model); `extra` named stage
    definitions (e.g. the paper's proportional split) tested beside the located ones. Without `span_tests` the count and
    the names come from the contribution profile (module docstring).
    """
    if bootstrap > MAX_BOOTSTRAP:
        raise GenIRError(f"bootstrap must be at most {MAX_BOOTSTRAP} resamples, got {bootstrap}")
    qp = QueryProfile.from_table(contrib)
    reader = reader or ("cross_attn" if "cross_attn" in qp.kinds else "self_attn")
    n_layers = len(qp.layers)
    min_size = min_stage_size or default_min_stage_size(n_layers)
    if min_size < 1 or min_size > n_layers:
        raise GenIRError(f"min_stage_size {min_size} (CLI: --min-stage-size): must lie between 1 and the number of decoder layers ({n_layers})")
    k_max = min(max_stages or n_layers, n_layers // min_size)
    abl, ablated = ablation_matrix(ablation, qp.layers, qp.kinds, rules.ablation_method)
    x = layer_features(qp.means(), abl)
    parts = optimal_partitions(x, k_max, min_size)
    rng = np.random.default_rng(seed)
    nq = len(qp.query_ids)
    resamples = [rng.integers(0, nq, nq) for _ in range(bootstrap)]
    boot_parts = [optimal_partitions(layer_features(qp.means(rows), abl), k_max, min_size) for rows in resamples]
    reference = penalised_choice(x, parts, penalty, resolution)

    if span_tests is None:
        extra = None  # nothing to test them with
        chooser = _ProfileChooser(qp, abl, ablated, rules, reader, penalty, resolution)
        data = None
    else:
        if reader not in qp.kinds or "mlp" not in qp.kinds:
            raise GenIRError(f"functional stage tests need the decoder's mlp and {reader} (the contribution table has {', '.join(qp.kinds)})")
        spans = {s for p in [parts, *boot_parts] for _, starts in p.values() for s in _spans(starts, n_layers)}
        for d in (extra or {}).values():
            spans |= set(_spans(_starts_of(d, n_layers), n_layers))
        test_ids = [str(q) for q in (test_query_ids if test_query_ids is not None else qp.query_ids)]
        data = _SpanData(qp, test_ids, span_tests(sorted(spans)), lens, reader)
        chooser = _FunctionalChooser(data, rules, reader)

    main = chooser.choose(x, parts, None)
    starts = main.starts
    seg = Segmentation(starts, n_layers, reference.sse, reference.criterion)
    definition = StageDefinition(tuple(Stage(n.name, tuple(range(a, b + 1))) for n, (a, b) in zip(main.named, seg.spans())),
                                 "stage localisation" + (" (functional tests)" if data is not None else " (contribution profile only)"))

    # bootstrap: features, candidates, tests and the choice redone on every resample
    exact: Counter = Counter()
    near: Counter = Counter()
    n_stages: Counter = Counter()
    same_names = same_all = 0
    for rows, p in zip(resamples, boot_parts):
        pick = chooser.choose(layer_features(qp.means(rows), abl), p, rows)
        exact.update(pick.starts[1:])
        near.update({c for b in pick.starts[1:] for c in (b - 1, b, b + 1)})
        n_stages[len(pick.starts)] += 1
        same_names += pick.functions == main.functions
        same_all += pick.functions == main.functions and pick.starts == main.starts
    chosen = set(seg.boundaries)
    share = (lambda c: c / bootstrap) if bootstrap else (lambda c: float("nan"))
    # explicit columns: a one-layer decoder has no possible boundary, and the table must still read as one
    stability = pd.DataFrame(
        [{"boundary": b, "selected": b in chosen, "frequency": share(exact[b]), "frequency_within_1": share(near[b])} for b in range(1, n_layers)],
        columns=["boundary", "selected", "frequency", "frequency_within_1"],
    ).astype({"boundary": int, "selected": bool})
    dist = pd.DataFrame(sorted(((k, v / bootstrap) for k, v in n_stages.items())), columns=["n_stages", "frequency"])

    # the knob path: what the penalised criterion picks at each resolution, read with the tests
    path_rows = []
    for r in grid:
        reading = chooser.read(penalised_choice(x, parts, penalty, float(r)).starts, None)
        spans_r = _spans(reading.starts, n_layers)
        path_rows.append({"knob": "resolution", "value": float(r), "penalty": float(penalty), "n_stages": len(spans_r),
                          "boundaries": ",".join(map(str, reading.starts[1:])), "spans": " | ".join(f"{a}-{b}" for a, b in spans_r),
                          "functions": " | ".join(n.function for n in reading.named), "admissible": reading.admissible,
                          "chosen": reading.starts == starts})
    path = pd.DataFrame(path_rows)

    evidence, tests = _evidence(qp, abl, ablated, data, seg, main, extra, rules, reader, chooser)
    cosines = [c for c in COSINES if c in qp.values]
    names_x = feature_names(qp.kinds, ablated, cosines)
    profile = pd.DataFrame([{"layer": l, "feature": f, "value": float(x[l, j])} for l in range(n_layers) for j, f in enumerate(names_x)])
    means = qp.means()
    layer_means = [{"layer": l, "component": k, "metric": m, "value": float(v[l, j])} for m, v in means.items() for l in range(n_layers) for j, k in enumerate(qp.kinds)]
    layer_means += [{"layer": l, "component": k, "metric": "layer_ablation", "value": float(abl[l, j])} for l in range(n_layers) for j, k in enumerate(ablated)]
    if data is not None and data.lens is not None:
        for metric, values in data.lens.items():
            component = "mlp" if metric.startswith("mlp") else reader if metric.startswith("reader") else "residual"
            medians = _row_nanmedian(values.T)  # per layer, over the queries measured
            layer_means += [{"layer": l, "component": component, "metric": f"lens_{metric}", "value": float(medians[l])} for l in range(n_layers)]
    layer_means = pd.DataFrame(layer_means)

    count = _count_facts(main, seg, path, resolution, bootstrap, n_stages, same_names, same_all, data is not None, k_max)
    notes = _notes(main, seg, data is not None)
    if n_layers < len(PAPER_STAGES):
        notes.append(f"The decoder has {n_layers} layer{'s' if n_layers > 1 else ''}: fewer than the paper's {len(PAPER_STAGES)} stages, "
                     f"so at most {n_layers} stage{'s' if n_layers > 1 else ''} can be found.")
    return StageLocalisation(definition, seg, profile, layer_means, evidence, stability, dist, nq, bootstrap, notes, tests, path,
                             "functional" if data is not None else "profile", rules, count, [n.reason for n in main.named])


@dataclass(frozen=True)
class _Choice:
    starts: tuple[int, ...]
    named: list[Named]
    tests: list[SegmentTest] | None
    admissible: bool = True

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(n.function for n in self.named)


class _FunctionalChooser:
    """The finest optimal k-segmentation whose every boundary separates segments with different test outcomes."""

    def __init__(self, data: _SpanData, rules: NamingRules, reader: str):
        self.data, self.rules, self.reader = data, rules, reader

    def read(self, starts, rows) -> _Choice:
        r = self.data.rows(rows)
        tests = [self.data.test(s, r, self.rules) for s in _spans(starts, self.data.n_layers)]
        return _Choice(tuple(starts), name_segments(tests, self.rules, self.reader), tests, admissible(tests))

    def choose(self, x, parts, rows) -> _Choice:
        for k in sorted(parts, reverse=True):
            reading = self.read(parts[k][1], rows)
            if reading.admissible:
                return reading
        raise GenIRError("no segmentation qualifies (k = 1 always should)")  # pragma: no cover


class _ProfileChooser:
    """Without functional tests: the penalised criterion's segmentation, provisional names, neighbours with one name merged."""

    def __init__(self, qp, abl, ablated, rules, reader, penalty, resolution):
        self.qp, self.abl, self.ablated, self.rules, self.reader = qp, abl, ablated, rules, reader
        self.penalty, self.resolution = penalty, resolution

    def _names(self, starts, rows) -> list[str]:
        means = self.qp.means(rows)
        ratio = means["ratio"]
        cos = means.get("cos_resid_post", means["cos_residual"])
        names = []
        for a, b in _spans(starts, len(self.qp.layers)):
            r = ratio[a:b + 1].mean(0)
            dominant = self.qp.kinds[int(np.argmax(r))]
            mlp = self.qp.kinds.index("mlp") if "mlp" in self.qp.kinds else None
            mlp_cos = float(cos[a:b + 1, mlp].mean()) if mlp is not None else 0.0
            cost = float(self.abl[a:b + 1, self.ablated.index("mlp")].mean()) if self.abl is not None and "mlp" in self.ablated else None
            names.append(name_stage(dominant, mlp_cos, cost, self.rules, self.reader))
        return names

    def read(self, starts, rows) -> _Choice:
        starts = list(starts)
        while True:  # neighbours with one name are one stage; re-name the merged span
            names = self._names(starts, rows)
            merged = [s for i, s in enumerate(starts) if i == 0 or names[i] != names[i - 1]]
            if merged == starts:
                break
            starts = merged
        named, seen = [], {}
        spans = _spans(starts, len(self.qp.layers))
        for name, span in zip(names, spans):
            if name == UNASSIGNED:
                named.append(Named(UNASSIGNED, UNASSIGNED, "provisional: no paper stage from the contribution profile"))
            elif name in seen:
                named.append(Named(UNASSIGNED, UNASSIGNED, f"provisional: the profile of {name} again ({name} is layers {_span_text(seen[name])})"))
            else:
                seen[name] = span
                named.append(Named(name, name, "provisional: from the contribution profile, no functional test ran"))
        return _Choice(tuple(starts), _unique_unassigned(named, spans), None)

    def choose(self, x, parts, rows) -> _Choice:
        return self.read(penalised_choice(x, parts, self.penalty, self.resolution).starts, rows)


def _evidence(qp, abl, ablated, data, seg, main: _Choice, extra, rules, reader, chooser):
    """The long evidence table of the located stages, and the wide test table (located and extra segmentations)."""
    means = qp.means()
    rows = []
    for named, (first, last), t in zip(main.named, seg.spans(), main.tests or [None] * seg.n_stages):
        sl = slice(first, last + 1)
        r = means["ratio"][sl].mean(0)
        dominant = qp.kinds[int(np.argmax(r))]
        facts = {f"ratio:{k}": float(r[j]) for j, k in enumerate(qp.kinds)}
        for c in COSINES:
            if c in means:
                facts.update({f"{c}:{k}": float(means[c][sl, j].mean()) for j, k in enumerate(qp.kinds)})
        if abl is not None:
            facts.update({f"layer_ablation:{k}": float(abl[sl, j].mean()) for j, k in enumerate(ablated)})
        if t is not None:
            facts.update({f"test:{k}": float(getattr(t, k)) for k in TEST_COLUMNS})
        rows += [{"stage": named.name, "first_layer": first, "last_layer": last, "dominant": dominant, "metric": m, "value": v} for m, v in facts.items()]
    evidence = pd.DataFrame(rows, columns=["stage", "first_layer", "last_layer", "dominant", "metric", "value"])
    if data is None:
        return evidence, None
    table = []
    sets = [("located", [n.name for n in main.named], main)]
    for label, definition in (extra or {}).items():
        sets.append((label, definition.names(), chooser.read(_starts_of(definition, seg.n_layers), None)))
    for label, names, reading in sets:
        for name, named, t in zip(names, reading.named, reading.tests):
            table.append({"stages": label, "stage": name, "first_layer": t.first, "last_layer": t.last, "function": named.function,
                          "reason": named.reason, "reader": reader, **{k: getattr(t, k) for k in TEST_COLUMNS}})
    thresholds = {f"threshold_{name}": value for name, value, _ in rules.reasons()}
    return evidence, pd.DataFrame(table).assign(**thresholds)


def _starts_of(definition: StageDefinition, n_layers: int) -> tuple[int, ...]:
    """First layers of a definition whose stages are contiguous, in order and cover every layer (what a segmentation is)."""
    spans = [(min(st.layers), max(st.layers)) for st in definition.stages]
    if [l for st in definition.stages for l in st.layers] != list(range(n_layers)) or any(len(st.layers) != b - a + 1 for st, (a, b) in zip(definition.stages, spans)):
        raise GenIRError(f"stage definition {definition.names()} is not contiguous stages covering layers 0..{n_layers - 1} in order")
    return tuple(a for a, _ in spans)


def _count_facts(main: _Choice, seg: Segmentation, path: pd.DataFrame, resolution: float, bootstrap: int, n_stages: Counter,
                 same_names: int, same_all: int, functional: bool, k_max: int) -> dict:
    """How the number of stages was chosen and how far the answer holds: along the knob and across resamples."""
    held = path[path["chosen"]]["value"].tolist()
    grid = f"{path['value'].min():g}-{path['value'].max():g}"
    at_default = path.iloc[(path["value"] - resolution).abs().argsort().iloc[0]]
    if held:
        where = (f"the penalised criterion alone gives this segmentation for resolution {min(held):g}-{max(held):g} "
                 f"({len(held)} of {len(path)} grid points, grid {grid})")
    else:
        where = f"no resolution on the grid {grid} makes the penalised criterion give this segmentation"
    where += f"; at resolution {at_default['value']:g} it gives {int(at_default['n_stages'])} stage(s)"
    if functional:
        criterion = (f"the finest of the optimal k-segmentations (k = 1..{k_max}) whose every boundary separates segments with "
                     f"different test outcomes: {seg.n_stages} segment(s); the resolution knob does not enter")
    else:
        criterion = (f"no functional tests: the penalised criterion at resolution {resolution:g} ({seg.n_stages} segment(s)), "
                     "neighbours with one provisional name merged; the names are provisional")
    facts = {"criterion": criterion, "path": where, "resolution_range": [min(held), max(held)] if held else None, "n_stages": seg.n_stages}
    if bootstrap:
        facts["bootstrap"] = (f"{bootstrap} resamples of the queries, features, candidates, tests and the count redone in each: "
                              f"{_share(n_stages[seg.n_stages] / bootstrap)} give {seg.n_stages} stage(s), {_share(same_names / bootstrap)} the same names in order, "
                              f"{_share(same_all / bootstrap)} the same names over the same layers")
        facts["bootstrap_same_count"] = n_stages[seg.n_stages] / bootstrap
        facts["bootstrap_same_names"] = same_names / bootstrap
        facts["bootstrap_same_stages"] = same_all / bootstrap
    disorder = [n.reason for n in main.named if n.out_of_order]
    facts["order"] = ("out of the paper's order: " + "; ".join(disorder)) if disorder else ""
    facts["out_of_order"] = bool(disorder)
    return facts


def _notes(main: _Choice, seg: Segmentation, functional: bool) -> list[str]:
    names = [n.name for n in main.named]
    if tuple(names) == PAPER_STAGES:
        return ["The decoder shows the paper's three stages: priming -> bridging -> interaction."]
    found = " -> ".join(names)
    notes = [f"The decoder does not show the paper's three stages (priming -> bridging -> interaction); it shows {seg.n_stages}: {found}."]
    missing = [s for s in PAPER_STAGES if s not in names]
    if functional and missing:
        notes.append(f"No segment meets the definition of {', '.join(missing)} in the paper's order.")
    if not functional:
        notes.append("No functional test ran (no ablations): the names come from the contribution profile and are provisional.")
    return notes

"""Ablate component outputs (zero, mean, or another checkpoint's) and see where the relevant document goes (paper Table 3).

    stages = StageDefinition.parse("priming=0-2,bridging=3-5,interaction=6-7")
    df = ablate(gm, texts, relevant_docs, stages, kinds=("mlp", "cross_attn"), methods=("zero", "mean"))
    df = ablate(gm, texts, relevant_docs, stages, methods=("cross-model",), other=load_genir("checkpoints/t5-synth-base"))
    df = layer_ablation(gm, texts, relevant_docs, kinds=("mlp",), method="zero")      # one component per layer

An ablation is an `Intervention` (genir_mech.interventions) whose specs
replace component outputs with `zero`, `mean` or `other-model` values; its
labels (stage, component, method) become table columns. Every ablation runs
through the one `InterventionExecutor`: each query batch is encoded once and
fanned out to one row per (ablation, query), many ablations per forward pass.

Methods: `zero`; `mean`, the component's mean output over reference queries
(by default the queries being ablated: the paper's correct validation
queries), padding masked for encoder sites; `cross-model`, the same
component's output in another checkpoint on the same query.

Results: % of queries whose relevant document leaves rank 1 (`rank>1`) or falls
below rank 5, 10, 100 (`rank>5`, ...), and the mean rank, among the docids
(`rank...`) and in the whole vocabulary (`vocab_rank...`, the paper's protocol).

At a decoding step of a multi-token docid (`view`, a retrieval.steps.StepView
of the same queries) the decoder is teacher-forced to the step's prefix, the
means are taken at that step, and the ranks are those of the correct next
docid token: among the trie-valid continuations (`rank...`) and in the
vocabulary (`vocab_rank...`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from ..errors import GenIRError
from ..interventions import Intervention, InterventionExecutor, Replacements, check_compatible, other_model_values, site_means
from ..models.components import Site
from ..retrieval import RANK_THRESHOLDS, beyond_rank_percent, rank_of, scorer_for
from ..stage_definition import StageDefinition
from ..vocabulary import ABLATION_METHODS
from .long_frame import long_frame
from .query_batches import check_view, query_batches

# Method names as the tables and the CLI spell them; "cross-model" is the intervention value "other-model".
METHODS = ABLATION_METHODS
# Kept for callers written before interventions existed: an ablation is an Intervention.
Ablation = Intervention


def stage_ablations(gm, stages: StageDefinition, kinds: Sequence[str], methods: Sequence[str]) -> list[Intervention]:
    """One ablation per stage x component type x method: that type in all layers of the stage at once."""
    stages.check(gm.n_layers("decoder"))
    _check_kinds(gm, kinds)
    _check_methods(methods)
    return [
        Intervention.of([Site("decoder", l, kind) for l in stage.layers], method, stage=stage.name, component=kind, method=method)
        for stage in stages.stages
        for kind in kinds
        for method in methods
    ]


def _check_kinds(gm, kinds):
    bad = [k for k in kinds if k not in gm.adapter.kinds("decoder")]
    if bad:
        raise GenIRError(f"unknown component type(s) {bad}; the decoder has {', '.join(gm.adapter.kinds('decoder'))}")


def _check_methods(methods):
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise GenIRError(f"unknown ablation method(s) {bad}; choose from {', '.join(METHODS)}")


def component_means(gm, texts: list[str], sites: Sequence[Site], batch_size: int = 64, decoder_inputs: torch.Tensor | None = None) -> dict[Site, torch.Tensor]:
    """Mean output of each site over `texts`: per decoder position (T, d) for decoder sites,
    over non-padding tokens (d,) for encoder sites (interventions.site_means); `decoder_inputs`: at a decoding step."""
    return site_means(gm, texts, sites, batch_size, decoder_inputs)


def ablation_logits_chunks(
    gm,
    texts: list[str],
    ablations: Sequence[Intervention],
    means: dict[Site, torch.Tensor] | None = None,
    other=None,
    batch_size: int = 64,
    rows_per_forward: int | None = 4096,
    progress: bool = False,
    backend=None,
    decoder_inputs: torch.Tensor | None = None,
    **executor_options,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (ablation index, query index, first-step logits) per chunk of rows, many ablations per forward pass
    (`executor_options`: the executor's `max_memory` and `resume`; rows_per_forward=None: rows from max_memory)."""
    executor = InterventionExecutor(gm, ablations, rows_per_forward, backend, **executor_options)
    mean_sites = executor.sites_with("mean")
    if mean_sites and means is None:
        raise GenIRError("mean ablation needs component means (component_means(gm, reference_texts, sites))")
    missing = [s.name for s in mean_sites if s not in means]
    if missing:
        raise GenIRError(f"no mean values for {', '.join(sorted(missing))}")
    other_sites = executor.sites_with("other-model")
    if other_sites:
        if other is None:
            raise GenIRError("cross-model ablation needs another checkpoint (other=load_genir(path))")
        check_compatible(gm, other, texts, other_sites)
    for rows, batch in query_batches(gm, texts, batch_size, encode=False, progress=progress, desc="ablations", decoder_inputs=decoder_inputs):
        # The executor encodes each query batch once for every decoder-side ablation.
        values = Replacements(means=means or {}, other=other_model_values(other, batch, other_sites) if other_sites else {})
        for out in executor.row_logits(batch, values):
            yield out.intervention, out.item + rows.start, out.logits


@dataclass
class AblationRanks:
    """Rank of each query's relevant document under each ablation, among docids and in the vocabulary."""
    doc_rank: torch.Tensor  # (n_ablations, n_queries) rank among docids
    vocab_rank: torch.Tensor  # (n_ablations, n_queries) rank in the whole vocabulary


def ablation_ranks(gm, texts: list[str], relevant_docs: list[str], ablations: Sequence[Intervention], view=None, **kwargs) -> AblationRanks:
    """Rank of each query's relevant document under each ablation (kwargs: see ablation_logits_chunks);
    with `view` (a StepView of the same queries), of its correct next docid token at that decoding step."""
    if len(texts) != len(relevant_docs):
        raise GenIRError(f"{len(texts)} queries but {len(relevant_docs)} relevant documents")
    if view is not None:
        return _step_ranks(gm, texts, ablations, view, **kwargs)
    scorer = scorer_for(gm)
    doc_cols = scorer.columns(relevant_docs)
    vocab_cols = torch.tensor([gm.docids.token_id(d) for d in relevant_docs])
    doc_rank = torch.zeros(len(ablations), len(texts), dtype=torch.long)
    vocab_rank = torch.zeros_like(doc_rank)
    for cfg, query, logits in ablation_logits_chunks(gm, texts, ablations, **kwargs):
        logits = logits.float().cpu()
        doc_rank[cfg, query] = rank_of(scorer.score_logits(logits), doc_cols[query])
        vocab_rank[cfg, query] = rank_of(logits, vocab_cols[query])
    return AblationRanks(doc_rank, vocab_rank)


def _step_ranks(gm, texts, ablations, view, **kwargs) -> AblationRanks:
    check_view(view, texts)
    doc_rank = torch.zeros(len(ablations), len(texts), dtype=torch.long)
    vocab_rank = torch.zeros_like(doc_rank)
    for cfg, query, logits in ablation_logits_chunks(gm, texts, ablations, decoder_inputs=view.decoder_inputs, **kwargs):
        logits = logits.float().cpu()
        doc_rank[cfg, query] = view.rank(logits, query)
        vocab_rank[cfg, query] = view.vocab_rank(logits, query)
    return AblationRanks(doc_rank, vocab_rank)


def rank_metrics(ranks: AblationRanks) -> dict[str, torch.Tensor]:
    """(n_ablations,) per metric: % of queries beyond each rank threshold, and the mean rank."""
    out = {}
    for prefix, r in (("rank", ranks.doc_rank), ("vocab_rank", ranks.vocab_rank)):
        for k in RANK_THRESHOLDS:
            out[f"{prefix}>{k}"] = beyond_rank_percent(r, k)
        out[f"mean_{prefix}"] = r.double().mean(1)
    return out


def _needed_means(gm, ablations, mean_texts, batch_size, decoder_inputs=None):
    sites = list(dict.fromkeys(s for a in ablations for s, value in a.replace if value == "mean"))
    return component_means(gm, mean_texts, sites, batch_size, decoder_inputs) if sites else None


def evaluate_ablations(
    gm,
    texts: list[str],
    relevant_docs: list[str],
    ablations: Sequence[Intervention],
    other=None,
    mean_texts: list[str] | None = None,
    batch_size: int = 64,
    rows_per_forward: int = 4096,
    progress: bool = False,
    view=None,
) -> pd.DataFrame:
    """Tidy table: the labels of each ablation, then metric and value; an `intact` row (no ablation) comes first.
    `view`: at a decoding step (module docstring); the means are then taken at that step over the ablated queries."""
    ablations = [Intervention((), {k: "intact" for k in (ablations[0].labels if ablations else {})})] + list(ablations)
    if view is not None and mean_texts is not None:
        raise GenIRError("mean_texts cannot be combined with a decoding step: step means are taken over the ablated queries' own prefixes")
    means = _needed_means(gm, ablations, mean_texts if mean_texts is not None else texts, batch_size, None if view is None else view.decoder_inputs)
    ranks = ablation_ranks(gm, texts, relevant_docs, ablations, view, means=means, other=other, batch_size=batch_size, rows_per_forward=rows_per_forward, progress=progress)
    metrics = rank_metrics(ranks)
    values = torch.stack(list(metrics.values()), dim=1)
    frame = long_frame(values, {"ablation": range(len(ablations)), "metric": list(metrics)})
    labels = pd.DataFrame([a.labels for a in ablations])
    frame = labels.iloc[frame.pop("ablation")].reset_index(drop=True).join(frame)
    frame["n_queries"] = len(texts)
    return frame


def ablate(
    gm,
    texts: list[str],
    relevant_docs: list[str],
    stages: StageDefinition,
    kinds: Sequence[str] | None = None,  # default: every sublayer kind of the decoder
    methods: Sequence[str] = ("zero", "mean"),
    other=None,
    mean_texts: list[str] | None = None,
    batch_size: int = 64,
    rows_per_forward: int = 4096,
    progress: bool = False,
    view=None,
) -> pd.DataFrame:
    """Stage x component-type x method ablations (Table 3). Columns: stage, component, method, metric, value, n_queries.
    `view`: at a decoding step of a multi-token docid (module docstring)."""
    ablations = stage_ablations(gm, stages, kinds or gm.adapter.kinds("decoder"), methods)
    return evaluate_ablations(gm, texts, relevant_docs, ablations, other, mean_texts, batch_size, rows_per_forward, progress, view)


def layer_ablation(
    gm,
    texts: list[str],
    relevant_docs: list[str],
    kinds: Sequence[str] | None = None,  # default: every sublayer kind of the decoder
    method: str | Sequence[str] = "zero",
    other=None,
    mean_texts: list[str] | None = None,
    batch_size: int = 64,
    rows_per_forward: int = 4096,
    progress: bool = False,
    view=None,
) -> pd.DataFrame:
    """One component in one layer at a time (`view`: at a decoding step). Columns: layer, component, method, metric, value, n_queries
    (the intact model has no layer (empty), component and method `intact`)."""
    kinds = kinds or gm.adapter.kinds("decoder")
    _check_kinds(gm, kinds)
    methods = [method] if isinstance(method, str) else list(method)
    _check_methods(methods)
    ablations = [
        Intervention.of([Site("decoder", layer, kind)], m, layer=layer, component=kind, method=m)
        for layer in range(gm.n_layers("decoder"))
        for kind in kinds
        for m in methods
    ]
    df = evaluate_ablations(gm, texts, relevant_docs, ablations, other, mean_texts, batch_size, rows_per_forward, progress, view)
    # "not applicable" is empty in every table (no layer, no head, no position), never a sentinel like -1
    df["layer"] = df["layer"].where(df["method"] != "intact").astype("Int64")
    return df

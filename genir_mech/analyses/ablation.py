"""Ablate component outputs (zero, mean, or another checkpoint's) and see where the relevant document goes (paper Table 3).

    stages = StageDefinition.parse("priming=0-2,bridging=3-5,interaction=6-7")
    df = ablate(gm, texts, relevant_docs, stages, kinds=("mlp", "cross_attn"), methods=("zero", "mean"))
    df = ablate(gm, texts, relevant_docs, stages, methods=("cross-model",), other=load_genir("checkpoints/t5-synth-base"))
    df = layer_ablation(gm, texts, relevant_docs, kinds=("mlp",), method="zero")      # one component per layer

An `Ablation` is a set of (component, method) replacements. Many ablations are
evaluated in one forward pass: each query batch is encoded once, fanned out to
one row per (ablation, query) with `QueryBatch.select`, and every written site
replaces its output only in the rows whose ablation names it (row masks).

Methods: `zero`; `mean`, the component's mean output over reference queries
(by default the queries being ablated: the paper's correct validation
queries), padding masked for encoder sites; `cross-model`, the same
component's output in another checkpoint on the same query.

Results: % of queries whose relevant document leaves rank 1 (`rank>1`) or falls
below rank 5, 10, 100 (`rank>5`, ...), and the mean rank, among the docids
(`rank...`) and in the whole vocabulary (`vocab_rank...`, the paper's protocol).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..errors import GenIRError
from ..models.components import Site
from ..models.execution import QueryBatch, run
from ..retrieval import RANK_THRESHOLDS, beyond_rank_percent, rank_of, scorer_for
from ..stage_definition import StageDefinition
from .tidy import long_frame, query_batches

METHODS = ("zero", "mean", "cross-model")


@dataclass
class Ablation:
    """Replace each listed component output by `method`; `labels` become table columns (stage, component, method)."""

    replace: tuple[tuple[Site, str], ...]
    labels: dict = field(default_factory=dict)

    def __post_init__(self):
        for site, method in self.replace:
            if method not in METHODS:
                raise GenIRError(f"unknown ablation method {method!r} for {site.name}; choose from {', '.join(METHODS)}")

    @classmethod
    def of(cls, sites: Sequence[Site], how: str, **labels) -> "Ablation":
        return cls(tuple((s, how) for s in sites), labels)

    @property
    def sites(self) -> list[Site]:
        return [s for s, _ in self.replace]


def stage_ablations(gm, stages: StageDefinition, kinds: Sequence[str], methods: Sequence[str]) -> list[Ablation]:
    """One ablation per stage x component type x method: that type in all layers of the stage at once."""
    stages.check(gm.n_layers("decoder"))
    _check_kinds(gm, kinds)
    return [
        Ablation.of([Site("decoder", l, kind) for l in stage.layers], method, stage=stage.name, component=kind, method=method)
        for stage in stages.stages
        for kind in kinds
        for method in methods
    ]


def _check_kinds(gm, kinds):
    bad = [k for k in kinds if k not in gm.adapter.kinds("decoder")]
    if bad:
        raise GenIRError(f"unknown component type(s) {bad}; the decoder has {', '.join(gm.adapter.kinds('decoder'))}")


# -- replacement values ---------------------------------------------------------------------------


@torch.no_grad()
def component_means(gm, texts: list[str], sites: Sequence[Site], batch_size: int = 64) -> dict[Site, torch.Tensor]:
    """Mean output of each site over `texts`: per decoder position (T, d) for decoder sites,
    over non-padding tokens (d,) for encoder sites."""
    sites = list(dict.fromkeys(sites))
    encoder = any(s.side == "encoder" for s in sites)
    sums: dict[Site, torch.Tensor] = {}
    counts: dict[Site, torch.Tensor] = {}
    for _, batch in query_batches(gm, texts, batch_size, encode=not encoder):
        values = run(gm, batch, reads=sites).values
        for site in sites:
            v = values[site]
            if site.side == "encoder":
                w = batch.attention_mask.to(v.dtype)[..., None]
                total, n = (v * w).sum((0, 1)), w.sum((0, 1))
            else:
                total, n = v.sum(0), torch.tensor(float(v.shape[0]))
            sums[site] = sums.get(site, 0) + total
            counts[site] = counts.get(site, 0) + n
    return {s: sums[s] / counts[s] for s in sites}


def check_compatible(gm, other, texts: list[str], sites: Sequence[Site]) -> None:
    """Refuse cross-model patching between models whose residual streams or query tokens differ."""
    if other.adapter.d_model != gm.adapter.d_model:
        raise GenIRError(
            f"cross-model ablation: {other.path} has d_model {other.adapter.d_model} but {gm.path} has {gm.adapter.d_model}; "
            "component outputs can only be swapped between models of equal width"
        )
    for site in dict.fromkeys(sites):
        if site.layer >= other.n_layers(site.side):
            raise GenIRError(f"cross-model ablation: {other.path} has {other.n_layers(site.side)} {site.side} layers, so it has no {site.name}")
    mine, theirs = gm.batch(texts), other.batch(texts)
    if mine.input_ids.shape != theirs.input_ids.shape or not torch.equal(mine.input_ids.cpu(), theirs.input_ids.cpu()):
        rows = range(min(len(mine.input_ids), len(theirs.input_ids)))
        first = next((i for i in rows if not torch.equal(mine.input_ids[i].cpu(), theirs.input_ids[i].cpu())), 0)
        raise GenIRError(
            f"cross-model ablation: the tokenizers of {gm.path} and {other.path} split query {texts[first]!r} differently; "
            "the other checkpoint must share the tokenizer (e.g. the base model the GenIR model was fine-tuned from)"
        )


# -- the engine -------------------------------------------------------------------------------------


def _row_writes(ablations, cfg_of_row, query_of_row, means, cross, shape_of) -> dict:
    """One write per touched site: rows whose ablation names the site get its replacement."""
    plan: dict[Site, list[tuple[int, str]]] = {}
    for c, ablation in enumerate(ablations):
        for site, method in ablation.replace:
            plan.setdefault(site, []).append((c, method))
    writes = {}
    for site, entries in plan.items():
        rows = len(cfg_of_row)
        mask = torch.zeros(rows, dtype=torch.bool)
        replacement = None
        for c, method in entries:
            hit = cfg_of_row == c
            mask |= hit
            if method == "zero":
                continue
            if replacement is None:
                replacement = torch.zeros(rows, *shape_of(site))
            if method == "mean":
                replacement[hit] = means[site].expand(int(hit.sum()), *shape_of(site))
            else:
                replacement[hit] = cross[site][query_of_row[hit]]
        writes[site] = _masked_write(mask, replacement)
    return writes


def _masked_write(mask: torch.Tensor, replacement: torch.Tensor | None):
    def write(current: torch.Tensor) -> torch.Tensor:
        keep = mask.to(current.device).view(-1, *([1] * (current.dim() - 1)))
        new = torch.zeros((), dtype=current.dtype, device=current.device) if replacement is None else replacement.to(current)
        return torch.where(keep, new, current)

    return write


def ablation_logits_chunks(
    gm,
    texts: list[str],
    ablations: Sequence[Ablation],
    means: dict[Site, torch.Tensor] | None = None,
    other=None,
    batch_size: int = 64,
    rows_per_forward: int = 4096,
    progress: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (ablation index, query index, first-step logits) per row, many ablations per forward pass."""
    ablations = list(ablations)
    sites = [s for a in ablations for s in a.sites]
    methods = {m for a in ablations for _, m in a.replace}
    if "mean" in methods and means is None:
        raise GenIRError("mean ablation needs component means (component_means(gm, reference_texts, sites))")
    missing = [s.name for a in ablations for s, m in a.replace if m == "mean" and s not in means]
    if missing:
        raise GenIRError(f"no mean values for {', '.join(sorted(set(missing)))}")
    cross_sites = list(dict.fromkeys(s for a in ablations for s, m in a.replace if m == "cross-model"))
    if cross_sites:
        if other is None:
            raise GenIRError("cross-model ablation needs another checkpoint (other=load_genir(path); CLI: --other)")
        check_compatible(gm, other, texts, cross_sites)
    # The encoder runs once per query batch unless an ablation rewrites encoder sites.
    encode = all(s.side == "decoder" for s in sites)
    per_pass = max(1, rows_per_forward // min(batch_size, len(texts) or 1))
    for rows, batch in query_batches(gm, texts, batch_size, encode=encode, progress=progress, desc="ablations"):
        n = len(batch)
        cross = run(other, other.batch(texts[rows]), reads=cross_sites).values if cross_sites else {}
        for first in range(0, len(ablations), per_pass):
            chunk = ablations[first : first + per_pass]
            cfg_of_row = torch.arange(len(chunk)).repeat_interleave(n)
            query_of_row = torch.arange(n).repeat(len(chunk))
            fanned = batch.select(query_of_row)
            shapes = _site_shapes(gm, fanned)
            writes = _row_writes(chunk, cfg_of_row, query_of_row, means or {}, cross, shapes)
            logits = run(gm, fanned, writes=writes).logits
            yield cfg_of_row + first, query_of_row + rows.start, logits


def _site_shapes(gm, batch: QueryBatch):
    """Per-row shape of a site's output: (T, d_model), T from the side's sequence length."""
    dec_len = 1 if batch.decoder_input_ids is None else batch.decoder_input_ids.shape[1]
    enc_len = batch.input_ids.shape[1]
    return lambda site: (dec_len if site.side == "decoder" else enc_len, gm.adapter.d_model)


@dataclass
class AblationRanks:
    doc_rank: torch.Tensor  # (n_ablations, n_queries) rank among docids
    vocab_rank: torch.Tensor  # (n_ablations, n_queries) rank in the whole vocabulary


def ablation_ranks(gm, texts: list[str], relevant_docs: list[str], ablations: Sequence[Ablation], **kwargs) -> AblationRanks:
    """Rank of each query's relevant document under each ablation (kwargs: see ablation_logits_chunks)."""
    if len(texts) != len(relevant_docs):
        raise GenIRError(f"{len(texts)} queries but {len(relevant_docs)} relevant documents")
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


def rank_metrics(ranks: AblationRanks) -> dict[str, torch.Tensor]:
    """(n_ablations,) per metric: % of queries beyond each rank threshold, and the mean rank."""
    out = {}
    for prefix, r in (("rank", ranks.doc_rank), ("vocab_rank", ranks.vocab_rank)):
        for k in RANK_THRESHOLDS:
            out[f"{prefix}>{k}"] = beyond_rank_percent(r, k)
        out[f"mean_{prefix}"] = r.double().mean(1)
    return out


def _needed_means(gm, ablations, mean_texts, batch_size):
    sites = list(dict.fromkeys(s for a in ablations for s, m in a.replace if m == "mean"))
    return component_means(gm, mean_texts, sites, batch_size) if sites else None


def evaluate_ablations(
    gm,
    texts: list[str],
    relevant_docs: list[str],
    ablations: Sequence[Ablation],
    other=None,
    mean_texts: list[str] | None = None,
    batch_size: int = 64,
    rows_per_forward: int = 4096,
    progress: bool = False,
) -> pd.DataFrame:
    """Tidy table: the labels of each ablation, then metric and value; an `intact` row (no ablation) comes first."""
    ablations = [Ablation((), {k: "intact" for k in (ablations[0].labels if ablations else {})})] + list(ablations)
    means = _needed_means(gm, ablations, mean_texts if mean_texts is not None else texts, batch_size)
    ranks = ablation_ranks(gm, texts, relevant_docs, ablations, means=means, other=other, batch_size=batch_size, rows_per_forward=rows_per_forward, progress=progress)
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
    kinds: Sequence[str] = ("self_attn", "cross_attn", "mlp"),
    methods: Sequence[str] = ("zero", "mean"),
    other=None,
    mean_texts: list[str] | None = None,
    batch_size: int = 64,
    rows_per_forward: int = 4096,
    progress: bool = False,
) -> pd.DataFrame:
    """Stage x component-type x method ablations (Table 3). Columns: stage, component, method, metric, value, n_queries."""
    ablations = stage_ablations(gm, stages, kinds, methods)
    return evaluate_ablations(gm, texts, relevant_docs, ablations, other, mean_texts, batch_size, rows_per_forward, progress)


def layer_ablation(
    gm,
    texts: list[str],
    relevant_docs: list[str],
    kinds: Sequence[str] = ("self_attn", "cross_attn", "mlp"),
    method: str | Sequence[str] = "zero",
    other=None,
    mean_texts: list[str] | None = None,
    batch_size: int = 64,
    rows_per_forward: int = 4096,
    progress: bool = False,
) -> pd.DataFrame:
    """One component in one layer at a time. Columns: layer, component, method, metric, value, n_queries
    (the intact model has layer -1, component and method `intact`)."""
    _check_kinds(gm, kinds)
    methods = [method] if isinstance(method, str) else list(method)
    ablations = [
        Ablation.of([Site("decoder", layer, kind)], m, layer=layer, component=kind, method=m)
        for layer in range(gm.n_layers("decoder"))
        for kind in kinds
        for m in methods
    ]
    df = evaluate_ablations(gm, texts, relevant_docs, ablations, other, mean_texts, batch_size, rows_per_forward, progress)
    df["layer"] = df["layer"].where(df["method"] != "intact", -1).astype(int)
    return df

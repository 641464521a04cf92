"""Vocabulary projection (logit lens) of the decoder's residual stream, components and query-reading heads (paper Fig. 4, Tables 5-6).

    lens = logit_lens(gm, texts, query_ids, relevant_docs)
    lens.ranks        # query_id, layer, component, facet, head, metric, value
    lens.head_tokens  # query_id, query, layer, head, rank, token, logit  (top-k tokens of each query-reading head)

Each probed vector is projected with the model's own final norm, output
scaling and unembedding (`gm.adapter.project`), at the decoder step that ranks
the documents. Probes (`facet`):

- `resid_pre` of layer 0 (the decoder input embedding) and `resid_post` of every
  sublayer: the residual after each self-attention, cross-attention and MLP
  (the MLP's is the residual after the whole layer; in a post-LayerNorm model,
  BART or BERT, it is projected through the LayerNorm that follows it);
- `out`: every component output on its own;
- `head`: the contribution of every head of the attention that reads the
  query (`gm.adapter.query_reading_kind`: cross-attention in encoder-decoders,
  self-attention in decoder-only models); `head` column, NA ("no head") elsewhere.

Metrics per probe and query: `relevant_rank` (vocabulary rank of the relevant
docid), `relevant_doc_rank` (its rank among docids only), `docid_mean_rank`
(mean vocabulary rank of all docid tokens), `nondocid_median_rank`, and
`pct_docids_top{10,100,1000}` (% of the top-k vocabulary entries that are
docids; k is capped at the vocabulary size).

At a decoding step of a multi-token docid (`view`, a retrieval.steps.StepView)
the decoder is teacher-forced to the step's prefix, the relevant token is the
correct next docid token s[t], and "docids" are the trie-valid continuations
of the prefix: `relevant_doc_rank` is its rank among them, `relevant_rank` in
the whole vocabulary. At step 0 of atomic docids this is the table above.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..errors import GenIRError
from ..models.components import Site
from ..models.execution import run
from .long_frame import long_frame
from .query_batches import check_view, query_batches

TOP_K_SHARES = (10, 100, 1000)
HEAD_TOKEN_COLUMNS = ["query_id", "query", "layer", "head", "rank", "token", "logit"]


@dataclass
class LensResult:
    """The logit lens's two tables: ranks per probe and query, and decoded top tokens per head."""
    ranks: pd.DataFrame
    head_tokens: pd.DataFrame


@dataclass(frozen=True)
class Probe:
    """One projected vector: a layer's residual, a component's output or one head's contribution."""
    layer: int
    component: str
    facet: str  # resid_pre | resid_post | out | head
    head: int | None = None  # None (NA in tables) for probes that are not one head


def _probes(gm) -> tuple[list[Probe], list[Site]]:
    """Every probe in forward order, and the sites that must be read to build them."""
    probes, reads = [Probe(0, "embedding", "resid_pre")], [Site("decoder", 0, "", "resid_pre")]
    for layer in range(gm.n_layers("decoder")):
        for kind in gm.adapter.kinds("decoder"):
            reads += [Site("decoder", layer, kind), Site("decoder", layer, kind, "resid_post")]
            probes += [Probe(layer, kind, "out"), Probe(layer, kind, "resid_post")]
            if kind == gm.adapter.query_reading_kind:
                reads.append(Site("decoder", layer, kind, "heads"))
                probes += [Probe(layer, kind, "head", h) for h in range(gm.adapter.n_heads)]
    return probes, reads


def _probe_vectors(gm, values: dict, probes: list[Probe]) -> torch.Tensor:
    """(B, P, d_model) vectors at the last decoder position, in `probes` order."""
    vectors, heads_done = [], set()
    for p in probes:
        if p.facet == "head":
            if p.layer in heads_done:
                continue
            heads_done.add(p.layer)
            site = Site("decoder", p.layer, p.component, "heads")
            vectors.append(gm.adapter.head_contributions(Site("decoder", p.layer, p.component), values[site][:, -1]))
            continue
        site = Site("decoder", 0, "", "resid_pre") if p.component == "embedding" else Site("decoder", p.layer, p.component, p.facet)
        vector = values[site][:, -1]
        norm = gm.adapter.post_norm(site) if p.facet == "resid_post" else None
        if norm is not None:  # a post-LayerNorm model reads its residual through the LayerNorm that follows it (adapters/post_norm.py)
            vector = norm(vector)
        vectors.append(vector.unsqueeze(1))
    return torch.cat(vectors, dim=1)


def vocabulary_ranks(logits: torch.Tensor) -> torch.Tensor:
    """1-based rank of every vocabulary entry in each row (ties broken by index, as topk does)."""
    order = logits.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(1, logits.shape[-1] + 1, device=logits.device).expand_as(order))
    return ranks


def lens_metrics(gm, logits: torch.Tensor, relevant_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, P) per metric from (B, P, vocab) projected logits and (B,) relevant docid token ids."""
    return candidate_metrics(logits, relevant_tokens, gm.docids.vocab_ids)


def candidate_metrics(logits: torch.Tensor, relevant_tokens: torch.Tensor, candidates: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, P) per metric, the docid metrics taken over `candidates` (every docid token, or the valid continuations of a step)."""
    vocab = logits.shape[-1]
    ranks = vocabulary_ranks(logits)
    candidates = candidates.to(logits.device)
    is_docid = torch.zeros(vocab, dtype=torch.bool, device=logits.device)
    is_docid[candidates] = True
    doc_ranks = ranks[..., candidates]
    relevant = ranks.gather(-1, relevant_tokens.view(-1, 1, 1).expand(-1, ranks.shape[1], 1)).squeeze(-1)
    out = {
        "relevant_rank": relevant.double(),
        "relevant_doc_rank": (doc_ranks <= relevant.unsqueeze(-1)).sum(-1).double(),
        "docid_mean_rank": doc_ranks.double().mean(-1),
        "nondocid_median_rank": ranks[..., ~is_docid].double().median(-1).values,
    }
    for k in TOP_K_SHARES:
        top = logits.topk(min(k, vocab), dim=-1).indices
        out[f"pct_docids_top{k}"] = 100.0 * is_docid[top].double().mean(-1)
    return out


def step_metrics(logits: torch.Tensor, view, rows: slice) -> dict[str, torch.Tensor]:
    """`candidate_metrics` of the queries `rows` of a StepView: each query's docid metrics over its own valid continuations."""
    group, tokens = view.group[rows], view.tokens[rows]
    out: dict[str, torch.Tensor] = {}
    for g, cand in enumerate(view.candidates):
        hit = (group == g).nonzero()[:, 0]
        if not len(hit):
            continue
        part = candidate_metrics(logits[hit.to(logits.device)], tokens[hit].to(logits.device), cand)
        for name, value in part.items():
            out.setdefault(name, torch.empty(logits.shape[:2], dtype=value.dtype, device=logits.device))[hit.to(logits.device)] = value
    return out


@torch.no_grad()
def logit_lens(
    gm,
    texts: list[str],
    query_ids: list[str],
    relevant_docs: list[str],
    batch_size: int = 64,
    top_k: int = 10,
    n_examples: int = 32,
    progress: bool = False,
    view=None,
) -> LensResult:
    """Project every probe of every query; keep top-k head tokens for the first `n_examples` queries.
    `view` (a StepView of the same queries): at that decoding step, the docid metrics over the valid continuations."""
    if not len(texts) == len(query_ids) == len(relevant_docs):
        raise GenIRError(f"{len(texts)} queries, {len(query_ids)} query ids and {len(relevant_docs)} relevant documents: the lists must match")
    check_view(view, texts)
    probes, reads = _probes(gm)
    labels = pd.DataFrame([vars(p) for p in probes])
    relevant_tokens = None if view is not None else torch.tensor([gm.docids.token_id(d) for d in relevant_docs])
    head_probes = [i for i, p in enumerate(probes) if p.facet == "head"]
    rank_frames, token_frames = [], []
    decoder_inputs = None if view is None else view.decoder_inputs
    for rows, batch in query_batches(gm, texts, batch_size, progress=progress, desc="logit lens", decoder_inputs=decoder_inputs):
        values = run(gm, batch, reads=reads).values
        logits = gm.adapter.project(_probe_vectors(gm, values, probes)).float()
        metrics = lens_metrics(gm, logits, relevant_tokens[rows].to(logits.device)) if view is None else step_metrics(logits, view, rows)
        frame = long_frame(torch.stack(list(metrics.values()), -1), {"query_id": query_ids[rows], "probe": range(len(probes)), "metric": list(metrics)})
        rank_frames.append(frame)
        examples = max(0, min(n_examples - rows.start, len(batch)))
        if examples and head_probes and top_k > 0:
            token_frames.append(_head_tokens(gm, logits[:examples, head_probes], [probes[i] for i in head_probes], query_ids[rows][:examples], texts[rows][:examples], top_k))
    ranks = pd.concat(rank_frames, ignore_index=True)
    ranks = labels.iloc[ranks.pop("probe")].reset_index(drop=True).join(ranks)
    ranks = ranks[["query_id", "layer", "component", "facet", "head", "metric", "value"]]
    ranks["head"] = ranks["head"].astype("Int64")
    head_tokens = pd.concat(token_frames, ignore_index=True) if token_frames else pd.DataFrame(columns=HEAD_TOKEN_COLUMNS)
    return LensResult(ranks, head_tokens)


def _head_tokens(gm, logits: torch.Tensor, probes: list[Probe], query_ids: list[str], texts: list[str], top_k: int) -> pd.DataFrame:
    top = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
    tokens = gm.tokenizer.convert_ids_to_tokens(top.indices.reshape(-1).tolist())
    frame = long_frame(top.values, {"query_id": query_ids, "probe": range(len(probes)), "rank": range(1, top.indices.shape[-1] + 1)})
    frame["layer"] = [probes[i].layer for i in frame.probe]
    frame["head"] = [probes[i].head for i in frame.pop("probe")]
    frame["token"] = tokens
    frame["query"] = frame.query_id.map(dict(zip(query_ids, texts)))
    return frame.rename(columns={"value": "logit"})[HEAD_TOKEN_COLUMNS]


def docid_share_by_layer(ranks: pd.DataFrame, component: str = "cross_attn") -> pd.DataFrame:
    """Table 5 rows: mean % of docid tokens in the top-k of each layer's `component` output projection."""
    share = ranks[(ranks.component == component) & (ranks.facet == "out") & ranks.metric.str.startswith("pct_docids_top")]
    return share.groupby(["layer", "metric"], as_index=False).value.mean()

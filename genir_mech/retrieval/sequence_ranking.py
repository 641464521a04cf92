"""Exact ranking of multi-token docids: the log-probability of every valid docid (its tokens, then eos) given the query.

    scores = trie_log_probs(gm, gm.batch(texts), gm.docids)          # (queries, n_docs), exact, prefixes shared
    scores = top_k_log_probs(gm, gm.batch(texts), gm.docids, k=100)  # exact top 100 (the rest -inf), pruned walk
    scores = teacher_forced_log_probs(gm, gm.batch(texts), gm.docids) # the same, one teacher-forced pass per docid

The trie walk decodes the docid trie level by level with the decoder's
key/value cache: at step t it runs one new token for each distinct prefix of
length t (per query), so a prefix shared by many docids is decoded once, and
the cache rows are re-indexed from parent prefix to child. A docid's score is
the sum of its tokens' log-probabilities plus that of eos (a docid may be a
prefix of another: "5" and "52"). The log-probabilities are over the full
vocabulary, exactly what teacher forcing gives and what HF beam search sums.

A docid's log-probability is at most that of each of its prefixes, so a walk
may drop every prefix below a floor and still score exactly every document
above it: `top_k_log_probs` takes the floor from a beam over the trie and
returns the exact top k at a fraction of the full walk's cost on a trained model.
"""
from __future__ import annotations

import torch
from transformers.modeling_outputs import BaseModelOutput

from ..docids import SequenceDocids
from ..errors import GenIRError

# Rows (query x prefix) decoded in one forward pass of the walk; each row holds every decoder layer's
# cross-attention keys/values, so this bounds memory (~165 KB a row for the embedded checkpoints).
ROWS_PER_FORWARD = 4096


def require_encoder_decoder(gm) -> None:
    """Multi-token ranking decodes after the query through the decoder's cache; this build supports encoder-decoder models."""
    if "encoder" not in gm.adapter.sides:
        raise GenIRError(f"{gm.path}: multi-token docids are ranked for encoder-decoder models; a {gm.adapter.family} model is decoder-only")


@torch.no_grad()
def trie_log_probs(gm, batch, docids: SequenceDocids, rows_per_forward: int = ROWS_PER_FORWARD, floor: torch.Tensor | None = None,
                   beam: int | None = None) -> torch.Tensor:
    """(B, n_docs) log P(docid tokens + eos | query) of every document, by a cached walk over the docid trie.

    `floor` (B,): a prefix whose log-probability is below its query's floor is not extended (a docid's log-probability
    is at most its prefixes'), and a document scoring below it gets -inf; every document scoring at least the floor keeps
    its exact score. `beam`: keep only each query's `beam` best prefixes at every step (beam search over the trie; the
    documents found keep exact scores). Queries are taken in groups so that a group's widest trie level fits in
    `rows_per_forward` rows.
    """
    require_encoder_decoder(gm)
    if rows_per_forward < 1:
        raise GenIRError(f"rows_per_forward must be positive, got {rows_per_forward}")
    widest = beam or max(len(level.prefixes) for level in docids.levels())
    group = max(1, rows_per_forward // widest)
    batch = gm.encode(batch)
    floors = floor if floor is not None else torch.full((len(batch),), float("-inf"))
    return torch.cat([_walk(gm, batch.encoder_hidden[i : i + group], batch.attention_mask[i : i + group], docids,
                            floors[i : i + group].to(batch.encoder_hidden.device), beam)
                      for i in range(0, len(batch), group)])


def _walk(gm, hidden: torch.Tensor, mask: torch.Tensor, docids: SequenceDocids, floor: torch.Tensor, beam: int | None) -> torch.Tensor:
    n_queries, device = hidden.shape[0], hidden.device
    scores = torch.full((n_queries, len(docids)), float("-inf"), device=device)
    row_query = torch.arange(n_queries, device=device)  # rows: (query, prefix) pairs still being extended
    row_prefix = torch.zeros(n_queries, dtype=torch.long, device=device)
    cumulative = torch.zeros(n_queries, device=device)  # log-prob of each row's prefix
    tokens = gm.start_ids(n_queries).to(device)
    cache = None
    for level in docids.levels():
        out = gm.hf_model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[row_query]), attention_mask=mask[row_query],
                          decoder_input_ids=tokens, cache=cache, use_cache=True)
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        # every (row, valid next token) edge, rows in order
        counts = level.n_edges.to(device)[row_prefix]
        edge_row = torch.repeat_interleave(torch.arange(len(row_prefix), device=device), counts)
        within = torch.arange(len(edge_row), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        edge = level.first_edge.to(device)[row_prefix][edge_row] + within
        token = level.token.to(device)[edge]
        score = cumulative[edge_row] + logp[edge_row, token]
        query = row_query[edge_row]
        doc = level.doc.to(device)[edge]
        above = score >= floor[query]
        ends = (doc >= 0) & above
        scores[query[ends], doc[ends]] = score[ends]
        keep = (doc < 0) & above
        if beam is not None:
            keep &= _best_per_query(score, query, keep, beam)
        if not bool(keep.any()):
            break
        select = edge_row[keep]
        cache = out.cache
        cache.reorder_cache(select)
        row_query, row_prefix, cumulative = query[keep], level.child.to(device)[edge][keep], score[keep]
        tokens = token[keep].view(-1, 1)
    return scores


def _best_per_query(score: torch.Tensor, query: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the `k` best eligible edges of each query (ties broken by position)."""
    masked = torch.where(eligible, score, torch.full_like(score, float("-inf")))
    order = torch.argsort(masked, descending=True, stable=True)
    order = order[torch.argsort(query[order], stable=True)]  # by query, best first within each
    sorted_query = query[order]
    first = torch.searchsorted(sorted_query, sorted_query, right=False)
    rank = torch.arange(len(order), device=score.device) - first
    best = torch.zeros_like(eligible)
    best[order[rank < k]] = True
    return best & eligible


@torch.no_grad()
def top_k_log_probs(gm, batch, docids: SequenceDocids, k: int, must_score: list[list[str]] | None = None,
                    rows_per_forward: int = ROWS_PER_FORWARD) -> torch.Tensor:
    """(B, n_docs) exact log-probabilities of every document in each query's top `k` (and of every document scoring at
    least as high as the documents in `must_score[i]`); every other document -inf, being known to score lower.

    A beam of `k` over the trie finds k documents with exact scores; the k-th best is a lower bound on the true k-th
    best score, so a walk that prunes every prefix below it (and below the must-score documents' scores) misses no
    document of the exact top k.
    """
    found = trie_log_probs(gm, batch, docids, rows_per_forward, beam=k)
    # Margin below each bound: the pruning walk's sums round differently from the beam's and the teacher-forced
    # passes', and a document exactly at the bound would otherwise be pruned by rounding (seen: the 100th of a top 100).
    margin = 1e-4
    floor = found.topk(min(k, found.shape[1]), dim=1).values[:, -1] - margin
    if must_score is not None:
        for i, docs in enumerate(must_score):
            if docs:
                row = teacher_forced_log_probs(gm, type(batch)(batch.input_ids[i : i + 1], batch.attention_mask[i : i + 1]), docids, docs)
                floor[i] = torch.minimum(floor[i], row.min() - margin)
    return trie_log_probs(gm, batch, docids, rows_per_forward, floor=floor)


@torch.no_grad()
def teacher_forced_log_probs(gm, batch, docids: SequenceDocids, doc_ids: list[str] | None = None) -> torch.Tensor:
    """(B, len(doc_ids)) log P(docid + eos | query) by one uncached teacher-forced pass per docid (all queries at once).

    The reference the trie walk is tested against, and the floor of naive scoring in the benchmark.
    """
    require_encoder_decoder(gm)
    doc_ids = docids.doc_ids if doc_ids is None else doc_ids
    batch = gm.encode(batch)
    start = gm.start_ids(len(batch))
    columns = []
    for doc in doc_ids:
        target = torch.tensor(docids.target_ids(doc), device=start.device)
        inputs = torch.cat([start, target[:-1].expand(len(batch), -1)], dim=1)
        kwargs = gm.model_inputs(type(batch)(batch.input_ids, batch.attention_mask, batch.encoder_hidden, inputs))
        logp = torch.log_softmax(gm.hf_model(**kwargs).logits.float(), dim=-1)
        columns.append(logp.gather(-1, target.expand(len(batch), -1).unsqueeze(-1)).squeeze(-1).sum(-1))
    return torch.stack(columns, dim=1)

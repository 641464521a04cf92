"""Exact ranking of multi-token docids: the log-probability of every valid docid (its tokens, then eos) given the query.

    scores = trie_log_probs(gm, gm.batch(texts), gm.docids)          # (queries, n_docs), exact, prefixes shared
    scores = teacher_forced_log_probs(gm, gm.batch(texts), gm.docids) # the same, one teacher-forced pass per docid

The trie walk decodes the docid trie level by level with the decoder's
key/value cache: at step t it runs one new token for each distinct prefix of
length t (per query), so a prefix shared by many docids is decoded once, and
the cache rows are re-indexed from parent prefix to child. A docid's score is
the sum of its tokens' log-probabilities plus that of eos (a docid may be a
prefix of another: "5" and "52"). The log-probabilities are over the full
vocabulary, exactly what teacher forcing gives and what HF beam search sums.
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
def trie_log_probs(gm, batch, docids: SequenceDocids, rows_per_forward: int = ROWS_PER_FORWARD) -> torch.Tensor:
    """(B, n_docs) log P(docid tokens + eos | query) of every document, by a cached walk over the docid trie.

    Queries are taken in groups so that a group's widest trie level fits in `rows_per_forward` rows.
    """
    require_encoder_decoder(gm)
    if rows_per_forward < 1:
        raise GenIRError(f"rows_per_forward must be positive, got {rows_per_forward}")
    levels = docids.levels()
    widest = max(len(level.prefixes) for level in levels)
    group = max(1, rows_per_forward // widest)
    batch = gm.encode(batch)
    return torch.cat([_walk(gm, batch.encoder_hidden[i : i + group], batch.attention_mask[i : i + group], docids)
                      for i in range(0, len(batch), group)])


def _walk(gm, hidden: torch.Tensor, mask: torch.Tensor, docids: SequenceDocids) -> torch.Tensor:
    n_queries, device = hidden.shape[0], hidden.device
    scores = torch.full((n_queries, len(docids)), float("-inf"), device=device)
    cumulative = torch.zeros(n_queries, 1, device=device)  # log-prob of each row's prefix; rows are query-major
    tokens = gm.start_ids(n_queries).to(device)
    rows = torch.arange(n_queries, device=device)  # each row's query
    cache = None
    for level in docids.levels():
        width = len(level.prefixes)
        out = gm.hf_model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[rows]), attention_mask=mask[rows],
                          decoder_input_ids=tokens, cache=cache, use_cache=True)
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1).view(n_queries, width, -1)
        parent, token = level.parent.to(device), level.token.to(device)
        edge = cumulative[:, parent] + logp[:, parent, token]  # (queries, edges)
        ends = level.doc >= 0
        scores[:, level.doc[ends].to(device)] = edge[:, ends.to(device)]
        goes_on = ~ends
        if not bool(goes_on.any()):
            break
        # next rows: one per (query, child prefix), in the child order of the next level
        child_parent = parent[goes_on.to(device)]
        cumulative = edge[:, goes_on.to(device)]
        select = (torch.arange(n_queries, device=device)[:, None] * width + child_parent[None, :]).reshape(-1)
        cache = out.cache
        cache.reorder_cache(select)
        rows = rows[select]
        tokens = token[goes_on.to(device)].repeat(n_queries).view(-1, 1)
    return scores


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

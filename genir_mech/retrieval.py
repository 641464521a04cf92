"""Rank documents with a GenIR model and score the ranking with ir_measures.

    result = rank_queries(model, tokenizer, scheme, ["who founded zorblax", ...])
    metrics, per_query = evaluate(model, tokenizer, scheme, dataset, split="test")

Ranking is one decoder step from the decoder start token, with the query
padded and masked; documents are ordered by their docid logits. The rank of
the relevant docid in the whole vocabulary (the paper's protocol) is kept too.
"""
from __future__ import annotations

from dataclasses import dataclass

import ir_measures
import pandas as pd
import torch
from ir_measures import RR, Success

from .data.corpus import RetrievalDataset
from .docids import AtomicDocids
from .errors import GenIRError

METRICS = {"hits@1": Success @ 1, "hits@5": Success @ 5, "hits@10": Success @ 10, "mrr": RR}
RUN_DEPTH = 100


def tokenize_queries(tokenizer, texts: list[str], max_length: int = 64) -> dict[str, torch.Tensor]:
    if not texts:
        raise GenIRError("empty query set: nothing to rank")
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def decoder_start_ids(model, batch: int) -> torch.Tensor:
    start = model.config.decoder_start_token_id
    if start is None:
        raise GenIRError(f"{model.config.name_or_path or type(model).__name__}: config has no decoder_start_token_id")
    return torch.full((batch, 1), start, dtype=torch.long, device=model.device)


@torch.no_grad()
def first_step_logits(model, tokenizer, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """(n_queries, vocab) logits of the first decoder step, batched with attention masks."""
    out = []
    for start in range(0, len(texts), batch_size):
        enc = tokenize_queries(tokenizer, texts[start : start + batch_size])
        enc = {k: v.to(model.device) for k, v in enc.items()}
        logits = model(**enc, decoder_input_ids=decoder_start_ids(model, enc["input_ids"].shape[0])).logits
        out.append(logits[:, 0].float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def rank_of(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of column `target[i]` in row i of `scores` (ties count against the target)."""
    chosen = scores.gather(1, target.view(-1, 1))
    return (scores >= chosen).sum(1)


@dataclass
class Ranking:
    query_ids: list[str]
    doc_scores: torch.Tensor  # (n_queries, n_docs), columns in scheme.doc_ids order
    vocab_logits: torch.Tensor  # (n_queries, vocab)

    def run(self, scheme: AtomicDocids, depth: int = RUN_DEPTH) -> list[ir_measures.ScoredDoc]:
        top = self.doc_scores.topk(min(depth, self.doc_scores.shape[1]), dim=1)
        docs = scheme.doc_ids
        return [
            ir_measures.ScoredDoc(qid, docs[j], float(s))
            for qid, vals, idx in zip(self.query_ids, top.values.tolist(), top.indices.tolist())
            for s, j in zip(vals, idx)
        ]


def rank_queries(model, tokenizer, scheme: AtomicDocids, texts: list[str], query_ids: list[str] | None = None, batch_size: int = 256) -> Ranking:
    logits = first_step_logits(model, tokenizer, texts, batch_size)
    return Ranking(query_ids or [str(i) for i in range(len(texts))], scheme.scores(logits), logits)


def evaluate(model, tokenizer, scheme: AtomicDocids, dataset: RetrievalDataset, split: str = "test", batch_size: int = 256) -> tuple[dict, pd.DataFrame]:
    """Hits@1/5/10 and MRR over `split`, plus a per-query table with ranks and correctness."""
    queries = dataset.split(split)
    if not queries:
        raise GenIRError(f"empty query set: split {split!r} has no queries (splits: {', '.join(dataset.splits) or 'none'})")
    ids = [q.query_id for q in queries]
    ranking = rank_queries(model, tokenizer, scheme, [q.text for q in queries], ids, batch_size)
    relevant = [dataset.relevant(i) for i in ids]
    doc_cols = torch.tensor([scheme.index(d) for d in relevant])
    vocab_cols = torch.tensor([scheme.token_id(d) for d in relevant])
    doc_rank = rank_of(ranking.doc_scores, doc_cols)
    vocab_rank = rank_of(ranking.vocab_logits, vocab_cols)
    qrels = [ir_measures.Qrel(i, d, 1) for i, d in zip(ids, relevant)]
    agg = ir_measures.calc_aggregate(list(METRICS.values()), qrels, ranking.run(scheme))
    metrics = {name: float(agg[m]) for name, m in METRICS.items()}
    metrics["hits@1_vocab"] = float((vocab_rank == 1).float().mean())
    metrics["n_queries"] = len(ids)
    per_query = pd.DataFrame(
        {
            "query_id": ids,
            "query": [q.text for q in queries],
            "relevant_doc": relevant,
            "rank": doc_rank.tolist(),
            "vocab_rank": vocab_rank.tolist(),
            "correct": (doc_rank == 1).tolist(),
        }
    )
    return metrics, per_query


def correct_queries(model, tokenizer, scheme: AtomicDocids, dataset: RetrievalDataset, split: str = "validation", batch_size: int = 256) -> list:
    """Queries of `split` whose relevant document the model ranks first: the set every analysis aggregates over."""
    _, per_query = evaluate(model, tokenizer, scheme, dataset, split, batch_size)
    keep = set(per_query.loc[per_query.correct, "query_id"])
    return [q for q in dataset.split(split) if q.query_id in keep]

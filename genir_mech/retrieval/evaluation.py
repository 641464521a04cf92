"""Rank a query split with a GenIR model and score the ranking with ir_measures.

    ranking = rank_texts(gm, ["who founded zorblax", ...])
    metrics, per_query = evaluate(gm, dataset, split="test")
    queries = correct_queries(gm, dataset, "validation")      # the set every analysis aggregates over

Queries are padded and masked in batches; documents are ordered by the
model's scorer (`scorer_for(gm)`). For atomic docids the rank of the relevant
docid in the whole vocabulary (the paper's protocol) is kept too.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import ir_measures
import pandas as pd
import torch
from ir_measures import RR, Success

from ..data.corpus import RetrievalDataset
from ..errors import GenIRError
from ..models.genir_model import MAX_QUERY_TOKENS
from .ranks import rank_of
from .scoring import scorer_for

METRICS = {"hits@1": Success @ 1, "hits@5": Success @ 5, "hits@10": Success @ 10, "mrr": RR}
RUN_DEPTH = 100


@dataclass
class Ranking:
    """Document scores of a list of queries: the input of every retrieval metric."""

    query_ids: list[str]
    doc_ids: list[str]  # column order of doc_scores
    doc_scores: torch.Tensor  # (n_queries, n_docs)
    logits: torch.Tensor  # (n_queries, vocab) ranking-step logits, for vocabulary ranks

    def scored_docs(self, depth: int = RUN_DEPTH) -> list[ir_measures.ScoredDoc]:
        """The top `depth` documents per query as an ir_measures run."""
        top = self.doc_scores.topk(min(depth, self.doc_scores.shape[1]), dim=1)
        return [
            ir_measures.ScoredDoc(qid, self.doc_ids[j], float(s))
            for qid, vals, idx in zip(self.query_ids, top.values.tolist(), top.indices.tolist())
            for s, j in zip(vals, idx)
        ]


@torch.no_grad()
def rank_texts(gm, texts: list[str], query_ids: list[str] | None = None, batch_size: int = 256) -> Ranking:
    """Score every document for every query text, `batch_size` queries per forward pass."""
    if not texts:
        raise GenIRError("empty query set: nothing to rank")
    if batch_size < 1:
        raise GenIRError(f"batch_size must be positive, got {batch_size}")
    truncated = gm.n_truncated(texts)
    if truncated:
        warnings.warn(f"{truncated} of {len(texts)} queries are longer than {MAX_QUERY_TOKENS} tokens and are truncated to their first {MAX_QUERY_TOKENS}",
                      stacklevel=2)
    # checked per batch: a NaN logit ranks like any score and gives plausible-looking metrics
    logits = torch.cat([gm.check_finite(gm.logits(gm.batch(texts[i : i + batch_size])).float().cpu(), "ranking logits")
                        for i in range(0, len(texts), batch_size)])
    scorer = scorer_for(gm)
    return Ranking(query_ids or [str(i) for i in range(len(texts))], scorer.doc_ids, scorer.score_logits(logits), logits)


def evaluate(gm, dataset: RetrievalDataset, split: str = "test", batch_size: int = 256) -> tuple[dict, pd.DataFrame]:
    """Hits@1/5/10 and MRR over `split` (ir_measures), plus a per-query table with ranks and correctness.

        metrics, per_query = evaluate(gm, dataset, "test")
        metrics["hits@1"], per_query[per_query.correct].query_id
    """
    queries = dataset.split(split)
    if not queries:
        raise GenIRError(f"empty query set: split {split!r} has no queries (splits: {', '.join(dataset.splits) or 'none'})")
    ids = [q.query_id for q in queries]
    ranking = rank_texts(gm, [q.text for q in queries], ids, batch_size)
    relevant = [dataset.relevant(i) for i in ids]
    doc_rank = rank_of(ranking.doc_scores, scorer_for(gm).columns(relevant))
    vocab_rank = rank_of(ranking.logits, torch.tensor([gm.docids.token_id(d) for d in relevant]))
    qrels = [ir_measures.Qrel(i, d, 1) for i, d in zip(ids, relevant)]
    agg = ir_measures.calc_aggregate(list(METRICS.values()), qrels, ranking.scored_docs())
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


def correct_queries(gm, dataset: RetrievalDataset, split: str = "validation", batch_size: int = 256) -> list:
    """Queries of `split` whose relevant document the model ranks first: the set every analysis aggregates over."""
    _, per_query = evaluate(gm, dataset, split, batch_size)
    keep = set(per_query.loc[per_query.correct, "query_id"])
    return [q for q in dataset.split(split) if q.query_id in keep]

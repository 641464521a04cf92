"""Rank a query split with a GenIR model and score the ranking with ir_measures.

    ranking = rank_texts(gm, ["who founded zorblax", ...])
    metrics, per_query = evaluate(gm, dataset, split="test")          # Success@1, RR, nDCG@10, ... (+ hits@1, mrr aliases)
    queries = correct_queries(gm, dataset, "validation")              # the set every analysis aggregates over
    targets = correct_query_targets(gm, dataset, "validation")        # query id -> the document analyses follow
    ranking.write_trec_run("run.txt", depth=100)                      # TREC run file

Every metric is computed by ir_measures on the full qrels: every relevant
document of a query counts, with its grade (nDCG uses the grades; Success, RR
and R count grade >= 1 as relevant).

A query is *correct* when the document the model ranks first is relevant
(grade > 0): Success@1 of that query. For a single-relevant query that is "its
relevant document is at rank 1", as before. Every analysis aggregates over the
correct queries and follows, for each, the document the model ranks first (its
*target*: `correct_query_targets`); `rank` in the per-query table is the rank
of the best-ranked relevant document, so `correct == (rank == 1)`.

Queries are padded and masked in batches; documents are ordered by the
model's scorer (`scorer_for(gm)`). For atomic docids the rank of the target
docid in the whole vocabulary (the paper's protocol) is kept too.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import ir_measures
import pandas as pd
import torch

from ..data.corpus import RetrievalDataset
from ..errors import GenIRError
from ..progress import bar
from ..provenance import written_atomically
from .measures import DEFAULT_MEASURES, aliases_of, parse_measures
from .ranks import rank_of
from .scoring import scorer_for

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
            if s > float("-inf")  # not retrieved (outside a beam)
        ]

    def write_trec_run(self, path: str | Path, depth: int = RUN_DEPTH, tag: str = "genir_mech") -> Path:
        """The top `depth` documents per query as a TREC run file (`qid Q0 docid rank score tag`), written atomically."""
        lines = []
        for qid, docs in _by_query(self.scored_docs(depth)):
            lines += [f"{qid} Q0 {d.doc_id} {rank} {d.score:.6f} {tag}\n" for rank, d in enumerate(docs, start=1)]
        path = Path(path)
        with written_atomically(path) as tmp:
            Path(tmp).write_text("".join(lines))
        return path


def _by_query(scored: list) -> list[tuple[str, list]]:
    groups: dict[str, list] = {}
    for d in scored:
        groups.setdefault(d.query_id, []).append(d)
    return list(groups.items())


@torch.no_grad()
def rank_texts(gm, texts: list[str], query_ids: list[str] | None = None, batch_size: int = 256, ranker: str = "exact",
               beams: int = 10, depth: int | None = None, must_score: list[list[str]] | None = None) -> Ranking:
    """Score every document for every query text, `batch_size` queries per forward pass; warns how many queries are truncated.

    `ranker`: "exact" (every document's score) or "beam" (prefix-constrained beam search with `beams` beams: the documents it
    finds keep their exact scores, the others score -inf and are left out of runs). For multi-token docids, `depth`
    ranks only each query's exact top `depth` documents and every document scoring at least as high as those in
    `must_score[i]` (the others -inf, known to score lower): exact metrics on a run of that depth at a fraction of the cost.
    """
    if not texts:
        raise GenIRError("empty query set: nothing to rank")
    if batch_size < 1:
        raise GenIRError(f"batch_size must be positive, got {batch_size}")
    unreadable = gm.unreadable(texts)
    if unreadable:
        i = unreadable[0]
        raise GenIRError(f"texts[{i}] {texts[i][:40]!r} tokenizes to nothing {gm.name} can read (only unknown, padding or boundary tokens; "
                         f"{len(unreadable)} of {len(texts)} texts); it would be ranked on <unk> alone: leave it out (evaluate does)")
    truncated = gm.n_truncated(texts)
    if truncated:
        limit = gm.max_query_tokens
        warnings.warn(f"{truncated} of {len(texts)} queries are longer than {limit} tokens and are truncated to their first {limit} "
                      "(CLI: --max-query-tokens)", stacklevel=2)
    # checked per batch: a NaN logit ranks like any score and gives plausible-looking metrics
    scorer = scorer_for(gm)
    scores, logits = [], []
    for i in bar(range(0, len(texts), batch_size), desc="ranking", unit="batch", leave=False, disable=len(texts) <= batch_size):
        must = must_score[i : i + batch_size] if must_score is not None else None
        s, lg = scorer.score_and_logits(gm, gm.batch(texts[i : i + batch_size]), ranker, beams, depth, must)
        logits.append(gm.check_finite(lg.float().cpu(), "ranking logits"))
        scores.append(s.float().cpu())
    return Ranking(query_ids or [str(i) for i in range(len(texts))], scorer.doc_ids, torch.cat(scores), torch.cat(logits))


def best_relevant_ranks(scores: torch.Tensor, columns: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of `scores`: the rank of its best-ranked relevant column and that column.

    `columns[i]` holds the score columns of row i's relevant documents. The rank is 1 + the number of
    non-relevant columns scoring at least as high: a tie with a non-relevant document counts against the
    relevant one (as in `rank_of`), a tie between relevant documents does not, so rank 1 <=> the first
    document is relevant.
    """
    rows = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, c in enumerate(columns)])
    flat = torch.cat(columns)
    ranks = rank_of(scores[rows], flat)
    best_rank = torch.full((len(columns),), torch.iinfo(torch.long).max, dtype=torch.long).scatter_reduce(0, rows, ranks, "amin")
    is_best = ranks == best_rank[rows]
    # relevant columns tied with the best one share its rank_of value; rank_of counted them against it
    tied = torch.zeros(len(columns), dtype=torch.long).scatter_add(0, rows, is_best.long())
    # the column achieving it: the first of a row's relevant columns at the best rank
    first = torch.full((len(columns),), len(flat), dtype=torch.long).scatter_reduce(
        0, rows[is_best], torch.arange(len(flat))[is_best], "amin")
    return best_rank - tied + 1, flat[first]


def readable_queries(gm, queries: list, split: str) -> list:
    """`queries` without those that tokenize to nothing `gm` can read (`GenIRModel.unreadable`: only unknown, padding
    or boundary tokens), with one warning counting them; a GenIRError when none is left.

    Such a query (only emoji or control characters under a word-level vocabulary) would be ranked on <unk> alone and
    count as a real result, so it is left out of the ranking and of every metric (n_queries counts the rest).
    """
    unreadable = gm.unreadable([q.text for q in queries]) if queries else []
    if not unreadable:
        return queries
    first = queries[unreadable[0]]
    what = (f"tokenize to nothing {gm.name} can read (only unknown, padding or boundary tokens, e.g. query {first.query_id!r}: "
            f"{first.text[:40]!r})")
    if len(unreadable) == len(queries):
        raise GenIRError(f"all {len(queries)} queries of split {split!r} {what}: nothing to rank; check the data's language and "
                         "encoding against the model's vocabulary")
    warnings.warn(f"{len(unreadable)} of {len(queries)} queries of split {split!r} {what}; they are left out of the ranking and the metrics",
                  stacklevel=3)
    left_out = set(unreadable)
    return [q for i, q in enumerate(queries) if i not in left_out]


def judgements(dataset: RetrievalDataset, query_ids: list[str]) -> list[ir_measures.Qrel]:
    """Every judgement of `query_ids` with its grade, as ir_measures qrels."""
    return [ir_measures.Qrel(q, d, g) for q in dict.fromkeys(query_ids) for d, g in sorted(dataset.grades.get(q, {}).items())]


def evaluate(gm, dataset: RetrievalDataset, split: str | None = "test", batch_size: int = 256,
             measures: str | tuple[str, ...] = DEFAULT_MEASURES, ranking: Ranking | None = None, depth: int = RUN_DEPTH,
             ranker: str = "exact", beams: int = 10, full: bool = False) -> tuple[dict, pd.DataFrame]:
    """ir_measures metrics over `split` on the full graded qrels, plus a per-query table with ranks and correctness.

        metrics, per_query = evaluate(gm, dataset, "test")
        metrics["Success@1"] == metrics["hits@1"], per_query[per_query.correct].query_id

    `split=None` picks the split that exists (test, validation, train in that order); metrics["split"] says which.
    Measures read the top `depth` documents per query (`ranking`: a `rank_texts` result of this split, to reuse one).
    `ranker`: "exact" or "beam" (`beams` beams; documents outside the beam are not retrieved). The exact ranking of
    multi-token docids scores the exact top `depth` and every document up to each query's relevant ones (all the
    metrics and ranks need), or every document with `full`.
    Queries that tokenize to nothing the model can read (`readable_queries`) are left out with a warning counting them.
    Per-query columns: query_id, query, relevant_doc (the best-ranked relevant document: the target analyses follow),
    n_relevant, top_doc (the model's first document), rank (of relevant_doc among documents), vocab_rank (of its docid
    token in the vocabulary), correct (top_doc is relevant, i.e. rank == 1), and one column per measure.
    """
    split = dataset.resolve_split(split, ("test", "validation", "train"))
    queries = readable_queries(gm, dataset.split(split), split)  # a query the model cannot read is left out, with a warning
    ids = [q.query_id for q in queries]
    if ranking is None:
        must = None if full else [sorted(dataset.relevant_docs(i)) for i in ids]
        ranking = rank_texts(gm, [q.text for q in queries], ids, batch_size, ranker, beams, None if full else depth, must)
    if ranking.query_ids != ids:
        raise GenIRError(f"the ranking given does not hold the queries of split {split!r} in order")
    scorer = scorer_for(gm)
    ranks, target_cols = best_relevant_ranks(ranking.doc_scores, [scorer.columns(sorted(dataset.relevant_docs(i))) for i in ids])
    targets = [ranking.doc_ids[c] for c in target_cols.tolist()]
    # rank of the target's first docid token in the whole vocabulary at the first step (the paper's protocol for atomic docids)
    vocab_rank = rank_of(ranking.logits, torch.tensor([gm.docids.target_ids(d)[0] for d in targets]))
    measure_objs = parse_measures(measures)
    run = ranking.scored_docs(depth)
    qrels = judgements(dataset, ids)
    agg = ir_measures.calc_aggregate(measure_objs, qrels, run)
    metrics = {str(m): float(agg[m]) for m in measure_objs}
    metrics.update(aliases_of(metrics))
    metrics["hits@1_vocab"] = float((vocab_rank == 1).float().mean())
    metrics["n_queries"] = len(ids)
    metrics["split"] = split
    per_measure: dict[str, dict[str, float]] = {str(m): {} for m in measure_objs}
    for row in ir_measures.iter_calc(measure_objs, qrels, run):
        per_measure[str(row.measure)][row.query_id] = float(row.value)
    top_doc = [ranking.doc_ids[j] for j in ranking.doc_scores.argmax(dim=1).tolist()]
    per_query = pd.DataFrame(
        {
            "query_id": ids,
            "query": [q.text for q in queries],
            "relevant_doc": targets,
            "n_relevant": [len(dataset.qrels[i]) for i in ids],
            "top_doc": top_doc,
            "rank": ranks.tolist(),
            "vocab_rank": vocab_rank.tolist(),
            "correct": (ranks == 1).tolist(),
            **{name: [values.get(i, 0.0) for i in ids] for name, values in per_measure.items()},
        }
    )
    return metrics, per_query


def correct_query_targets(gm, dataset: RetrievalDataset, split: str | None = "validation", batch_size: int = 256) -> dict[str, str]:
    """Query id -> target document of each correct query of `split` (module docstring: the definition), in split order.

    The target is the document the model ranks first, which is relevant; for single-relevant data it is the
    query's relevant document. `split=None` picks the split that exists, with a warning naming it.
    """
    chosen = dataset.resolve_split(split)
    if split is None and chosen != "validation":
        warnings.warn(f"no validation queries; using split {chosen!r} (splits: {', '.join(dataset.splits)}; CLI: --split)", stacklevel=2)
    # Depth 1: correctness needs the exact top document and the relevant ones, not the top 100 (for multi-token docids
    # the pruned trie walk then skips every prefix below the best document found: the bulk of the walk).
    _, per_query = evaluate(gm, dataset, chosen, batch_size, measures=("Success@1",), depth=1)
    correct = per_query[per_query.correct]
    return dict(zip(correct["query_id"], correct["relevant_doc"]))


def correct_queries(gm, dataset: RetrievalDataset, split: str | None = "validation", batch_size: int = 256) -> list:
    """Queries of `split` whose first-ranked document is relevant (module docstring): the set every analysis aggregates over."""
    keep = correct_query_targets(gm, dataset, split, batch_size)
    return [q for q in dataset.split(dataset.resolve_split(split)) if q.query_id in keep]

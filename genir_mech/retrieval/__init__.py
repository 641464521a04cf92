"""Retrieval: score documents for a batch of queries, rank them, and measure the ranking.

    scores = scorer_for(gm).score(gm, gm.batch(texts))       # (queries, n_docs), one column per document
    scores = scorer_for(gm).score_logits(run(gm, batch).logits) # the same from an instrumented run
    ranks = rank_of(scores, scorer_for(gm).columns(relevant_docs))
    metrics, per_query = evaluate(gm, dataset, split="test")

scoring: the one scorer interface every analysis uses (atomic docids today;
multi-token and in-context scorers plug in here); ranks: the one set of rank
metrics; evaluation: ranking a split and scoring it with ir_measures; steps: what
an analysis reads at decoding step t of a multi-token docid (the scorer's step view).
"""
from .evaluation import Ranking, best_relevant_ranks, correct_queries, correct_query_targets, evaluate, judgements, rank_texts
from .measures import ALIASES, DEFAULT_MEASURES, parse_measures
from .ranks import RANK_THRESHOLDS, beyond_rank_percent, hits_at, rank_of, rank_summary
from .scoring import AtomicScorer, RetrievalScorer, SequenceScorer, scorer_for
from .steps import StepView, resolve_steps, step_view

__all__ = [
    "Ranking", "best_relevant_ranks", "correct_queries", "correct_query_targets", "evaluate", "judgements", "rank_texts",
    "ALIASES", "DEFAULT_MEASURES", "parse_measures", "RANK_THRESHOLDS", "beyond_rank_percent", "hits_at", "rank_of",
    "rank_summary", "AtomicScorer", "RetrievalScorer", "SequenceScorer", "scorer_for",
    "StepView", "resolve_steps", "step_view",  # every analysis per decoding step of a multi-token docid
]

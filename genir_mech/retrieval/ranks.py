"""Rank metrics: the one place genir_mech turns scores into ranks and ranks into numbers.

    ranks = rank_of(scores, columns)          # 1-based, ties count against the target
    hits_at(ranks, 10), beyond_rank_percent(ranks, 1), rank_summary(ranks)

Whole-split retrieval metrics (Hits@k, MRR over a run file) go through
ir_measures in `evaluation`; these are the per-query rank statistics that
ablations, circuits, the encoder swap and patching metrics report.
"""
from __future__ import annotations

import torch

# The paper's Table 3 reports how many queries leave rank 1 and fall below ranks 5, 10, 100.
RANK_THRESHOLDS = (1, 5, 10, 100)


def rank_of(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of column `target[i]` in row i of `scores` (ties count against the target)."""
    chosen = scores.gather(-1, target.to(scores.device).view(-1, 1))
    return (scores >= chosen).sum(-1)


def hits_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of queries at rank <= k, along the last axis."""
    return (ranks <= k).double().mean(-1)


def beyond_rank_percent(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """% of queries ranked below k (rank > k), along the last axis."""
    return 100.0 * (ranks > k).double().mean(-1)


def rank_summary(ranks: torch.Tensor) -> dict[str, float]:
    """Count, Hits@1 (also as a count), Hits@10, MRR, mean and median rank of a 1-D rank tensor."""
    n = len(ranks)
    nan = float("nan")
    r = ranks.double()
    return {
        "n_queries": n,
        "hits@1_count": int((ranks == 1).sum()),
        "hits@1": float(hits_at(ranks, 1)) if n else nan,
        "hits@10": float(hits_at(ranks, 10)) if n else nan,
        "mrr": float((1.0 / r).mean()) if n else nan,
        "mean_rank": float(r.mean()) if n else nan,
        "median_rank": float(r.median()) if n else nan,
    }

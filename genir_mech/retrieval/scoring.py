"""The retrieval scorer: how a GenIR model's decoder output becomes one score per document.

    scorer = scorer_for(gm)                                           # AtomicScorer(gm.docids) for atomic docids
    scores = scorer.score(gm, gm.batch(["who founded zorblax"]))      # (1, n_docs)
    scores = scorer.score_logits(run(gm, batch, writes=...).logits)   # the same columns from a patched run
    cols = scorer.columns(["17", "3"])                                # column of each document

Every analysis (evaluation, ablations, circuits, patching metrics, the encoder
swap) asks a scorer, never the tokenizer, for document scores. Atomic docids
need one decoder step: the score of a document is the logit of its token. A
multi-token scheme (sequence log-probability over a trie) or an in-context
scorer (QRHead) implements the same three methods.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..docids import AtomicDocids


class RetrievalScorer(ABC):
    """Turns a model's output on a query batch into (queries, n_docs) document scores."""

    @property
    @abstractmethod
    def doc_ids(self) -> list[str]:
        """Documents in column order."""

    @abstractmethod
    def score(self, gm, batch) -> torch.Tensor:
        """(B, n_docs) scores of every document for each query of `batch` (uninstrumented forward pass)."""

    @abstractmethod
    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, n_docs) scores from the ranking-step logits an instrumented `run` returns."""

    def columns(self, doc_ids: list[str]) -> torch.Tensor:
        """(len(doc_ids),) column of each document in the score matrix."""
        index = {d: i for i, d in enumerate(self.doc_ids)}
        return torch.tensor([index[str(d)] for d in doc_ids], dtype=torch.long)


class AtomicScorer(RetrievalScorer):
    """One added vocabulary token per document: a document's score is its token's logit at the first decoder step."""

    def __init__(self, docids: AtomicDocids):
        self.docids = docids

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in column order (the docid scheme's order)."""
        return self.docids.doc_ids

    @torch.no_grad()
    def score(self, gm, batch) -> torch.Tensor:
        """(B, n_docs) docid logits of the first decoder step."""
        return self.score_logits(gm.logits(batch))

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, n_docs) docid columns of ranking-step logits."""
        return self.docids.scores(logits)

    def columns(self, doc_ids: list[str]) -> torch.Tensor:
        # index() raises a GenIRError naming an unknown docid
        """Column of each document; GenIRError names an unknown docid."""
        return torch.tensor([self.docids.index(d) for d in doc_ids], dtype=torch.long)


def scorer_for(gm) -> RetrievalScorer:
    """The scorer of a loaded model: the one it was loaded with, else the atomic scorer of its docids."""
    return gm.scorer if gm.scorer is not None else AtomicScorer(gm.docids)

"""The retrieval scorer: how a GenIR model's decoder output becomes one score per document.

    scorer = scorer_for(gm)                                           # AtomicScorer or SequenceScorer, from the model card's scheme
    scores = scorer.score(gm, gm.batch(["who founded zorblax"]))      # (1, n_docs)
    scores = scorer.score_logits(run(gm, batch, writes=...).logits)   # the same columns from a patched run
    cols = scorer.columns(["17", "3"])                                # column of each document

Every analysis (evaluation, ablations, circuits, patching metrics, the encoder
swap) asks a scorer, never the tokenizer, for document scores. Atomic docids
need one decoder step: the score of a document is the logit of its token.
Multi-token docids (`SequenceScorer`) score a document by the log-probability
of its whole token sequence, exactly, over the docid trie
(`sequence_ranking`). An in-context scorer (QRHead) implements the same methods.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..docids import AtomicDocids, SequenceDocids
from ..errors import GenIRError
from .beam_ranking import beam_log_probs
from .sequence_ranking import ROWS_PER_FORWARD, trie_log_probs


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

    def score_and_logits(self, gm, batch, ranker: str = "exact", beams: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_docs) scores and the (B, vocab) first-step logits of one query batch (what a ranking keeps).

        `ranker="beam"`: what beam search with `beams` beams returns; for one-step docids that is the exact top `beams`
        (every other document -inf).
        """
        check_ranker(ranker)
        logits = gm.logits(batch)
        scores = self.score_logits(logits)
        return (top_only(scores, beams) if ranker == "beam" else scores), logits

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


class SequenceScorer(RetrievalScorer):
    """Multi-token docids: a document's score is log P(its tokens, then eos | query), exact over the docid trie."""

    def __init__(self, docids: SequenceDocids, rows_per_forward: int = ROWS_PER_FORWARD):
        self.docids, self.rows_per_forward = docids, rows_per_forward

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in column order (the docid scheme's order)."""
        return self.docids.doc_ids

    def score(self, gm, batch) -> torch.Tensor:
        """(B, n_docs) exact sequence log-probabilities (one cached walk over the trie per query group)."""
        return trie_log_probs(gm, batch, self.docids, self.rows_per_forward)

    def score_and_logits(self, gm, batch, ranker: str = "exact", beams: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_docs) exact scores (or, `ranker="beam"`, constrained beam search's) and the (B, vocab) logits of the first docid step."""
        check_ranker(ranker)
        scores = beam_log_probs(gm, batch, self.docids, beams) if ranker == "beam" else self.score(gm, batch)
        return scores, gm.logits(batch)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Refused: first-step logits alone do not rank multi-token docids."""
        raise GenIRError(f"{self.docids.scheme} docids span {self.docids.max_length} decoder steps: an analysis that reads only the "
                         "first step's logits cannot rank them")

    def columns(self, doc_ids: list[str]) -> torch.Tensor:
        """Column of each document; GenIRError names an unknown docid and the mapping file."""
        return torch.tensor([self.docids.index(d) for d in doc_ids], dtype=torch.long)


RANKERS = ("exact", "beam")


def check_ranker(ranker: str) -> None:
    """Refuse an unknown ranker name."""
    if ranker not in RANKERS:
        raise GenIRError(f"ranker must be one of {', '.join(RANKERS)}, got {ranker!r}")


def top_only(scores: torch.Tensor, k: int) -> torch.Tensor:
    """`scores` with all but each row's top `k` set to -inf: what a beam of `k` returns for one-step docids."""
    keep = scores.topk(min(k, scores.shape[-1]), dim=-1).indices
    return torch.full_like(scores, float("-inf")).scatter(-1, keep, scores.gather(-1, keep))


def scorer_for(gm) -> RetrievalScorer:
    """The scorer of a loaded model: the one it was loaded with, else the one of its docid scheme (read from the model card on load)."""
    if gm.scorer is not None:
        return gm.scorer
    if isinstance(gm.docids, SequenceDocids):
        return SequenceScorer(gm.docids)
    return AtomicScorer(gm.docids)

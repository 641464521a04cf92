"""Patching metrics: plain callables `metric(logits, targets) -> (rows,)` on first-step decoder logits.

    logit_diff(logits, targets)                      # logit of the clean docid minus that of the corrupted docid
    METRICS["clean_prob_docids"](logits, targets)    # softmax over docid tokens only
    my_metric = lambda logits, t: logits.gather(1, t.clean_token[:, None])[:, 0]   # plug in your own

`targets` is a `PairTargets`: per row, the vocabulary ids of the clean and the
corrupted pair's relevant docid, plus all docid token ids. Every metric returns
one value per row, so the engine scores a whole batch of patches at once.
The normalised patch effect, (value - corrupted) / (clean - corrupted), is
derived from any metric by the engine: 0 is the corrupted run, 1 the clean run.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..retrieval.ranks import rank_of


@dataclass
class PairTargets:
    """Per row of a patching batch: the clean and corrupted relevant docid tokens, plus every docid token.

    At a decoding step t of a multi-token docid (patching.pairs.tokenize_pairs with `step`) the tokens are the
    docids' tokens s[t] and the "docid tokens" are the trie-valid continuations of each pair's shared prefix
    s[:t]: one row per pair, padded with -1, since pairs with different prefixes have different continuations.
    """
    clean_token: torch.Tensor  # (rows,) vocabulary id of the clean query's relevant docid (at a step: its token there)
    corrupted_token: torch.Tensor  # (rows,) vocabulary id of the corrupted query's relevant docid
    docid_tokens: torch.Tensor  # (n_docs,) vocabulary ids of every docid; at a step (rows, K) valid continuations, -1 = none

    def select(self, rows: torch.Tensor) -> "PairTargets":
        """The targets of some rows (repeats allowed), as the engine fans pairs out to patches."""
        docs = self.docid_tokens[rows] if self.docid_tokens.dim() == 2 else self.docid_tokens
        return PairTargets(self.clean_token[rows], self.corrupted_token[rows], docs)


Metric = Callable[[torch.Tensor, PairTargets], torch.Tensor]


def _pick(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, tokens.view(-1, 1).to(logits.device))[:, 0]


def _docid_scores(logits: torch.Tensor, targets: PairTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, n_docs) docid logits and, per row, the column of the clean docid (at a step: -inf where a row has no candidate)."""
    vocab = targets.docid_tokens.to(logits.device)
    if vocab.dim() == 2:  # per-row valid continuations of a decoding step
        col = (vocab == targets.clean_token.to(logits.device)[:, None]).float().argmax(1)
        docs = logits.gather(1, vocab.clamp_min(0)).masked_fill(vocab < 0, float("-inf"))
        return docs, col
    col = (vocab[None, :] == targets.clean_token.to(logits.device)[:, None]).float().argmax(1)
    return logits[:, vocab], col


def logit_diff(logits: torch.Tensor, targets: PairTargets) -> torch.Tensor:
    """Logit of the clean docid minus the logit of the corrupted docid (preferred: no softmax saturation)."""
    return _pick(logits, targets.clean_token) - _pick(logits, targets.corrupted_token)


def clean_prob_docids(logits: torch.Tensor, targets: PairTargets) -> torch.Tensor:
    """Probability of the clean docid under a softmax over the docid tokens only (the ranking's view)."""
    docs, col = _docid_scores(logits, targets)
    return docs.softmax(-1).gather(1, col[:, None])[:, 0]


def clean_prob_vocab(logits: torch.Tensor, targets: PairTargets) -> torch.Tensor:
    """Probability of the clean docid under a softmax over the whole vocabulary (the model's own output distribution)."""
    return _pick(logits.log_softmax(-1), targets.clean_token).exp()


def clean_rank(logits: torch.Tensor, targets: PairTargets) -> torch.Tensor:
    """1-based rank of the clean docid among all docids (1 = retrieved first)."""
    docs, col = _docid_scores(logits, targets)
    return rank_of(docs, col).to(logits.dtype)


METRICS: dict[str, Metric] = {
    "logit_diff": logit_diff,
    "clean_prob_docids": clean_prob_docids,
    "clean_prob_vocab": clean_prob_vocab,
    "clean_rank": clean_rank,
}

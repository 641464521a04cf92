"""Document identifiers: which vocabulary entries name documents.

    scheme = AtomicDocids.detect(tokenizer)          # finds @DOC_ID_<id>@ added tokens
    scheme = AtomicDocids.detect(tokenizer, pattern=r"<doc(\\d+)>")   # explicit override
    scheme.token_id("42"); scheme.doc_id(token_id)

Atomic docids give each document one added token; ranking is one decoder step.
`DocidScheme` is the interface a multi-token scheme (naive string or semantic
ids) will implement later: everything else in genir_mech asks the scheme,
never the tokenizer, which tokens are documents.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod

import torch

from .errors import GenIRError

DEFAULT_PATTERN = r"@DOC_ID_(.+?)@"


def docid_token(doc_id: str) -> str:
    """The added-token spelling used by the public DSI-large checkpoints."""
    return f"@DOC_ID_{doc_id}@"


class DocidScheme(ABC):
    """Maps documents to decoder targets and decoder scores back to document ranks."""

    @property
    @abstractmethod
    def doc_ids(self) -> list[str]:
        """Document ids in column order of `scores`."""

    @abstractmethod
    def scores(self, first_step_logits: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) logits of the first decoder step -> (batch, n_docs) scores."""

    @abstractmethod
    def target_ids(self, doc_id: str) -> list[int]:
        """Decoder label sequence for a document."""


class AtomicDocids(DocidScheme):
    """One added vocabulary token per document."""

    def __init__(self, token_ids: dict[str, int]):
        if not token_ids:
            raise GenIRError("no docid tokens: the tokenizer has no added tokens matching the docid pattern")
        self._doc_ids = sorted(token_ids, key=doc_order_key)
        self._token_of = dict(token_ids)
        self._doc_of = {t: d for d, t in token_ids.items()}
        self._index = {d: i for i, d in enumerate(self._doc_ids)}
        self.vocab_ids = torch.tensor([self._token_of[d] for d in self._doc_ids], dtype=torch.long)

    @classmethod
    def detect(cls, tokenizer, pattern: str | None = None) -> "AtomicDocids":
        """Find docid tokens among the tokenizer's added tokens (or, failing that, its vocabulary)."""
        try:
            regex = re.compile(pattern or DEFAULT_PATTERN)
        except re.error as exc:
            raise GenIRError(f"docid_pattern {pattern!r} (CLI: --docid-pattern) is not a valid regular expression ({exc})") from None
        if regex.groups < 1:
            raise GenIRError(f"docid pattern {regex.pattern!r} needs one capture group for the document id")
        added = tokenizer.get_added_vocab()
        found = {m.group(1): i for tok, i in added.items() if (m := regex.fullmatch(tok))}
        if not found:
            found = {m.group(1): i for tok, i in tokenizer.get_vocab().items() if (m := regex.fullmatch(tok))}
        if not found:
            raise GenIRError(
                f"no docid tokens match {regex.pattern!r} in the tokenizer ({len(added)} added tokens); "
                "pass docid_pattern= (CLI: --docid-pattern) for another spelling"
            )
        return cls(found)

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in column order of `scores` (numeric ids in numeric order)."""
        return self._doc_ids

    def __len__(self) -> int:
        return len(self._doc_ids)

    def token_id(self, doc_id: str) -> int:
        """Vocabulary id of a document's token (GenIRError for an unknown document)."""
        try:
            return self._token_of[str(doc_id)]
        except KeyError:
            raise GenIRError(f"unknown docid {doc_id!r}: the model has no token for it ({len(self)} docids known)") from None

    def doc_id(self, token_id: int) -> str | None:
        """The document a vocabulary id names, or None for an ordinary token."""
        return self._doc_of.get(int(token_id))

    def index(self, doc_id: str) -> int:
        """Position of a document among `doc_ids` (the column of `scores`)."""
        self.token_id(doc_id)
        return self._index[str(doc_id)]

    def scores(self, first_step_logits: torch.Tensor) -> torch.Tensor:
        """Docid columns of ranking-step logits: (..., vocab) -> (..., n_docs)."""
        return first_step_logits[..., self.vocab_ids.to(first_step_logits.device)]

    def target_ids(self, doc_id: str) -> list[int]:
        """The one-token decoder label of a document."""
        return [self.token_id(doc_id)]

    def is_docid_mask(self, vocab_size: int) -> torch.Tensor:
        """(vocab_size,) boolean mask of the docid tokens."""
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[self.vocab_ids] = True
        return mask


def doc_order_key(s: str):
    """Sort key that puts numeric document ids in numeric order (2 before 10), then the others alphabetically."""
    return (0, int(s), "") if s.isdigit() else (1, 0, s)

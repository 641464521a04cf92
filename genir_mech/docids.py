"""Document identifiers: which vocabulary entries name documents.

    scheme = AtomicDocids.detect(tokenizer)          # finds @DOC_ID_<id>@ added tokens
    scheme = AtomicDocids.detect(tokenizer, pattern=r"<doc(\\d+)>")   # explicit override
    scheme.token_id("42"); scheme.doc_id(token_id)

    mapping = DocidMapping.read("checkpoints/dsi-synth-semantic/docids.json")   # docid -> token strings
    scheme = SequenceDocids.from_mapping(mapping, tokenizer)                   # token ids + prefix trie
    scheme.sequence("42"), scheme.target_ids("42"), scheme.children(())

Atomic docids give each document one added token; ranking is one decoder step.
Sequence docids (naive digit strings, semantic cluster paths, titles) name a
document by several tokens ended by eos; `SequenceDocids` holds their prefix
trie. Everything else in genir_mech asks the scheme, never the tokenizer,
which tokens are documents.
"""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import GenIRError
from .provenance import written_atomically
from .vocabulary import DOCID_SCHEMES

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


# ---------------------------------------------------------------------------------------------------------------------
# Multi-token docids: a document is a sequence of vocabulary tokens, decoded one per step and ended by eos.

# naive: digits of the document number; semantic: hierarchical k-means path; title: GENRE-style unique title
ATOMIC, SEQUENCE_SCHEMES = DOCID_SCHEMES[0], DOCID_SCHEMES[1:]
MAPPING_FILE = "docids.json"  # the docid -> token strings mapping, next to a model trained on a sequence scheme


@dataclass
class DocidMapping:
    """A sequence docid assignment as token strings (no tokenizer needed): what `genir-mech data docids` writes.

        mapping = DocidMapping.read("checkpoints/dsi-synth-semantic/docids.json")
        mapping.scheme, mapping.sequences["17"]            # 'semantic', ('3', '0', '7')
    """

    scheme: str
    sequences: dict[str, tuple[str, ...]]  # doc id -> token strings, in document order
    config: dict = field(default_factory=dict)  # how it was built (seed, c, depth, ...): recorded, not interpreted
    data_hash: str | None = None
    source: str = "<memory>"  # the file it was read from, for error messages

    def __post_init__(self):
        if self.scheme not in SEQUENCE_SCHEMES:
            raise GenIRError(f"{self.source}: docid scheme {self.scheme!r} is not a sequence scheme ({', '.join(SEQUENCE_SCHEMES)})")
        self.sequences = {str(d): tuple(str(t) for t in s) for d, s in sorted(self.sequences.items(), key=lambda kv: doc_order_key(str(kv[0])))}
        if not self.sequences:
            raise GenIRError(f"{self.source}: the docid mapping names no documents")
        seen: dict[tuple[str, ...], str] = {}
        for doc, seq in self.sequences.items():
            if not seq:
                raise GenIRError(f"{self.source}: docid {doc!r} has an empty token sequence")
            if seq in seen:
                raise GenIRError(f"{self.source}: docids {seen[seq]!r} and {doc!r} have the same token sequence {' '.join(seq)!r}; "
                                 "every document needs its own")
            seen[seq] = doc

    @property
    def tokens(self) -> list[str]:
        """Every token string the mapping uses, sorted (what a tokenizer must hold)."""
        return sorted({t for seq in self.sequences.values() for t in seq}, key=doc_order_key)

    @classmethod
    def read(cls, path: str | Path) -> "DocidMapping":
        """The mapping in a `docids.json` file (or a checkpoint directory holding one); one-line GenIRError naming the file otherwise."""
        path = Path(path)
        if path.is_dir():
            path = path / MAPPING_FILE
        if not path.is_file():
            raise GenIRError(f"{path}: no docid mapping file (write one with `genir-mech data docids --scheme ...`)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise GenIRError(f"{path}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise GenIRError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("docids"), dict) or "scheme" not in raw:
            raise GenIRError(f"{path}: expected a JSON object with 'scheme' and 'docids' (doc id -> list of token strings)")
        for doc, seq in raw["docids"].items():
            if not isinstance(seq, list) or not all(isinstance(t, str) and t for t in seq):
                raise GenIRError(f"{path}: docid {doc!r}: expected a list of non-empty token strings, got {seq!r}")
        return cls(raw["scheme"], raw["docids"], raw.get("config") or {}, raw.get("data_hash"), str(path))

    def write(self, path: str | Path) -> Path:
        """Write the mapping as JSON (one document per line, so diffs stay readable), atomically."""
        path = Path(path)
        if path.is_dir():
            path = path / MAPPING_FILE
        lines = [f"  {json.dumps(d)}: {json.dumps(list(s))}" for d, s in self.sequences.items()]
        head = json.dumps({"scheme": self.scheme, "config": self.config, "data_hash": self.data_hash})[:-1]
        with written_atomically(path) as tmp:
            Path(tmp).write_text(head + ', "docids": {\n' + ",\n".join(lines) + "\n}}\n", encoding="utf-8")
        return path


@dataclass(frozen=True)
class TrieLevel:
    """One decoder step of the docid trie, as index arrays for a batched walk.

    prefixes: the distinct prefixes of length t that continue (the rows decoded at step t);
    parent/token: every valid (prefix, next token) edge; doc: the document an edge ends (its token is eos) or -1;
    child: for a non-eos edge, its prefix's row at step t + 1, else -1. Edges are grouped by prefix:
    prefix p owns edges first_edge[p] .. first_edge[p] + n_edges[p] - 1.
    """

    prefixes: list[tuple[int, ...]]
    parent: torch.Tensor
    token: torch.Tensor
    doc: torch.Tensor
    child: torch.Tensor

    @property
    def n_edges(self) -> torch.Tensor:
        """(len(prefixes),) number of valid next tokens of each prefix."""
        return torch.bincount(self.parent, minlength=len(self.prefixes))

    @property
    def first_edge(self) -> torch.Tensor:
        """(len(prefixes),) index of each prefix's first edge."""
        counts = self.n_edges
        return torch.cumsum(counts, 0) - counts


class SequenceDocids(DocidScheme):
    """Documents named by token sequences (naive digits, semantic cluster paths, titles), with their prefix trie.

        docids = SequenceDocids.load("checkpoints/dsi-synth-semantic", tokenizer)
        docids.sequence("17")          # (token ids...), the decoder targets without eos
        docids.target_ids("17")        # + [eos]
        docids.children(())           # token ids valid at the first step; eos is valid after a complete docid

    Ranking needs every step (retrieval.SequenceScorer), so `scores` of first-step logits is refused.
    """

    def __init__(self, scheme: str, sequences: dict[str, tuple[int, ...]], eos_id: int, source: str = "<memory>"):
        if scheme not in SEQUENCE_SCHEMES:
            raise GenIRError(f"{source}: docid scheme {scheme!r} is not a sequence scheme ({', '.join(SEQUENCE_SCHEMES)})")
        self.scheme, self.eos_id, self.source = scheme, int(eos_id), source
        self._doc_ids = sorted(sequences, key=doc_order_key)
        self._sequence = {d: tuple(int(t) for t in sequences[d]) for d in self._doc_ids}
        self._index = {d: i for i, d in enumerate(self._doc_ids)}
        self._doc_at: dict[tuple[int, ...], str] = {}
        self._children: dict[tuple[int, ...], list[int]] = {}
        for doc in self._doc_ids:
            seq = self._sequence[doc]
            if not seq:
                raise GenIRError(f"{source}: docid {doc!r} has an empty token sequence")
            if self.eos_id in seq:
                raise GenIRError(f"{source}: docid {doc!r} contains the end-of-sequence token (id {self.eos_id})")
            if seq in self._doc_at:
                raise GenIRError(f"{source}: docids {self._doc_at[seq]!r} and {doc!r} have the same token sequence; every document needs its own")
            self._doc_at[seq] = doc
            for t in range(len(seq)):
                kids = self._children.setdefault(seq[:t], [])
                if seq[t] not in kids:
                    kids.append(seq[t])
            self._children.setdefault(seq, []).append(self.eos_id)
        for kids in self._children.values():
            kids.sort()
        self._levels: list[TrieLevel] | None = None

    @classmethod
    def from_mapping(cls, mapping: DocidMapping, tokenizer) -> "SequenceDocids":
        """Token ids of a mapping's token strings; GenIRError naming the file and docid for a token the vocabulary lacks."""
        vocab = tokenizer.get_vocab()
        ids = {}
        for doc, seq in mapping.sequences.items():
            missing = [t for t in seq if t not in vocab]
            if missing:
                raise GenIRError(f"{mapping.source}: docid {doc!r} uses token(s) {', '.join(map(repr, missing[:3]))} missing from the "
                                 f"tokenizer's vocabulary ({len(vocab)} tokens); train with this mapping (`genir-mech train --docids`) to add them")
            ids[doc] = tuple(vocab[t] for t in seq)
        return cls(mapping.scheme, ids, tokenizer.eos_token_id, mapping.source)

    @classmethod
    def load(cls, path: str | Path, tokenizer) -> "SequenceDocids":
        """The scheme of a `docids.json` file or of a checkpoint directory holding one."""
        return cls.from_mapping(DocidMapping.read(path), tokenizer)

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in column order of every score matrix (numeric ids in numeric order)."""
        return self._doc_ids

    def __len__(self) -> int:
        return len(self._doc_ids)

    @property
    def max_length(self) -> int:
        """Tokens of the longest docid (eos not counted)."""
        return max(len(s) for s in self._sequence.values())

    def sequence(self, doc_id: str) -> tuple[int, ...]:
        """Token ids of a document's docid, without eos (GenIRError for an unknown document)."""
        try:
            return self._sequence[str(doc_id)]
        except KeyError:
            raise GenIRError(f"unknown docid {doc_id!r}: the docid mapping {self.source} does not name it ({len(self)} docids known)") from None

    def target_ids(self, doc_id: str) -> list[int]:
        """Decoder labels of a document: its docid tokens, then eos."""
        return [*self.sequence(doc_id), self.eos_id]

    def index(self, doc_id: str) -> int:
        """Position of a document among `doc_ids` (its score column)."""
        self.sequence(doc_id)
        return self._index[str(doc_id)]

    def children(self, prefix: tuple[int, ...] | list[int]) -> list[int]:
        """Token ids valid after `prefix` (eos when `prefix` is a complete docid); [] when `prefix` leads to no docid."""
        return list(self._children.get(tuple(int(t) for t in prefix), ()))

    def doc_at(self, tokens: tuple[int, ...] | list[int]) -> str | None:
        """The document whose docid is exactly `tokens` (a trailing eos is allowed), or None."""
        tokens = tuple(int(t) for t in tokens)
        if tokens and tokens[-1] == self.eos_id:
            tokens = tokens[:-1]
        return self._doc_at.get(tokens)

    def n_prefixes(self) -> int:
        """Distinct non-empty prefixes in the trie, complete docids included (each is decoded once by the exact ranking)."""
        return len(self._children) - 1

    def levels(self) -> list[TrieLevel]:
        """The trie as one `TrieLevel` per decoder step (computed once): the plan of the exact ranking's walk."""
        if self._levels is None:
            levels, rows = [], [()]
            while rows:
                parent, token, doc, child, next_rows = [], [], [], [], []
                for p, prefix in enumerate(rows):
                    for tok in self._children[prefix]:
                        parent.append(p)
                        token.append(tok)
                        if tok == self.eos_id:
                            doc.append(self._index[self._doc_at[prefix]])
                            child.append(-1)
                        else:
                            doc.append(-1)
                            child.append(len(next_rows))
                            next_rows.append(prefix + (tok,))
                as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
                levels.append(TrieLevel(rows, as_long(parent), as_long(token), as_long(doc), as_long(child)))
                rows = next_rows
            self._levels = levels
        return self._levels

    def scores(self, first_step_logits: torch.Tensor) -> torch.Tensor:
        """Refused: a multi-token docid is scored over all its steps (genir_mech.retrieval.SequenceScorer)."""
        raise GenIRError(f"{self.scheme} docids span several decoder steps; first-step logits do not rank documents "
                         "(use genir_mech.retrieval.scorer_for(gm).score(gm, batch))")

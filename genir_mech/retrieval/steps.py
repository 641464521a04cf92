"""The step view of the scorer: what an analysis reads at decoder step t of a multi-token docid.

    view = step_view(gm, relevant_docs, step=1)       # teacher-forced prefixes [start] + s[:1], targets s[1]
    view.decoder_inputs                                # (n, 2) decoder inputs; None at step 0 (today's ranking step)
    view.tokens                                        # (n,) the correct next docid token s[t] of each query
    view.rank(logits)                                  # (n,) its rank among the trie-valid continuations of s[:t]
    steps = resolve_steps(gm, "all")                   # [0, 1, ..., max_length - 1]

For a query whose target document d has the token sequence s, the decoder
input at step t is [start] + s[:t] (a decoder-only model: s[:t] after the
query) and the metric at step t is read at decoder position t, the last one:
the logit, log-probability or rank of s[t]. Ranks are among the trie-valid
continuations of the prefix s[:t] (`candidates`), so a rank of 1 means the
model would pick s[t] under prefix-constrained decoding. Every per-step
analysis (contributions, logit lens, ablations, stage localisation, patching)
builds its inputs here; none of them knows how docids are spelled.

Atomic docids are one-token sequences: step 0 has no prefix (`decoder_inputs`
is None, exactly the ranking step every analysis used before) and its
candidates are every docid token, in the scheme's column order, so step 0
reproduces the atomic results bit for bit. A scheme with sequences
(`SequenceDocids`: `sequence(doc)`, `children(prefix)`, `max_length`) is read
through the same three questions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import GenIRError
from ..vocabulary import ALL_STEPS
from .ranks import rank_of


class _AtomicSequences:
    """An atomic scheme seen as one-token sequences: every docid token is a valid first token."""

    def __init__(self, docids):
        self.docids = docids
        self.max_length = 1
        self.scheme = "atomic"

    def sequence(self, doc_id: str) -> tuple[int, ...]:
        return (self.docids.token_id(doc_id),)

    def children(self, prefix: tuple[int, ...]) -> list[int]:
        return self.docids.vocab_ids.tolist() if not prefix else []


def sequences_of(gm):
    """The model's docid scheme as token sequences with a prefix trie (`sequence`, `children`, `max_length`)."""
    scheme = gm.docids
    if scheme is None:
        raise GenIRError(f"{gm.path}: the model has no docid scheme, so it has no decoding steps to analyse")
    return scheme if hasattr(scheme, "sequence") and hasattr(scheme, "children") else _AtomicSequences(scheme)


def scheme_name(gm) -> str:
    """The scheme's name for messages (atomic, naive, semantic, title)."""
    return str(getattr(sequences_of(gm), "scheme", "sequence"))


def check_step(gm, step: int) -> int:
    """`step`, unless the model's docids are shorter: then a one-line GenIRError naming the model, scheme and length."""
    length = int(sequences_of(gm).max_length)
    if not isinstance(step, int) or step < 0:
        raise GenIRError(f"step must be a decoding step 0, 1, ...; got {step!r} (CLI: --step)")
    if step >= length:
        raise GenIRError(f"--step {step} is beyond the docid length of {gm.path}: its {scheme_name(gm)} docids have at most {length} "
                         f"token{'s' if length != 1 else ''} (steps 0-{length - 1})")
    return step


def require_steps(gm, steps, analysis: str) -> None:
    """A multi-token docid has no single ranking step: an analysis that follows a document's token needs a step (one line otherwise)."""
    if steps is not None or gm.docids is None:
        return
    scheme = sequences_of(gm)
    if not isinstance(scheme, _AtomicSequences):
        raise GenIRError(f"{gm.path} has {scheme_name(gm)} docids of up to {scheme.max_length} tokens: {analysis} follows one docid token, "
                         "so give the decoding step (CLI: --step t or --steps all)")


def resolve_steps(gm, steps) -> list[int]:
    """The decoding steps asked for: `"all"` -> 0..max_length-1, an int or a list of ints -> checked against the scheme."""
    if steps == ALL_STEPS:
        return list(range(int(sequences_of(gm).max_length)))
    return [check_step(gm, s) for s in ([steps] if isinstance(steps, int) else list(steps))]


def covering(gm, docs: list[str], step: int) -> int:
    """How many of `docs` have a docid token at `step` (a shorter docid has ended before it)."""
    scheme = sequences_of(gm)
    return sum(len(scheme.sequence(str(d))) > step for d in docs)


@dataclass
class StepView:
    """Per query: the teacher-forced decoder input, the correct next token and the trie-valid continuations at one step.

    `rows` are the positions of the queries this step covers in the list given
    to `step_view` (a document whose sequence ends before the step has no
    token there and is left out); every tensor below is over those rows.
    """

    step: int
    rows: list[int]
    decoder_inputs: torch.Tensor | None  # (n, step + 1) [start] + s[:step]; None: the ranking step of atomic docids
    tokens: torch.Tensor  # (n,) the correct next token s[step]
    group: torch.Tensor  # (n,) index into `candidates`: queries whose prefixes are equal share one set
    candidates: list[torch.Tensor]  # per group, the vocabulary ids of the valid continuations (the scheme's order)

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, rows) -> "StepView":
        """The view of some of its queries (positions into this view, repeats allowed)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        pick = None if self.decoder_inputs is None else self.decoder_inputs.index_select(0, index.to(self.decoder_inputs.device))
        return StepView(self.step, [self.rows[i] for i in index.tolist()], pick, self.tokens[index], self.group[index], self.candidates)

    def candidate_mask(self, vocab_size: int, group: int = 0) -> torch.Tensor:
        """(vocab_size,) True at the valid continuations of one group."""
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        mask[self.candidates[group]] = True
        return mask

    def column(self) -> torch.Tensor:
        """(n,) position of each query's correct token among its group's candidates."""
        out = torch.empty(len(self.tokens), dtype=torch.long)
        for g, cand in enumerate(self.candidates):
            hit = (self.group == g).nonzero()[:, 0]
            if len(hit):
                out[hit] = (cand[None, :] == self.tokens[hit, None]).long().argmax(1)
        return out

    def rank(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """1-based rank of the correct token among the valid continuations, per logits row (`rows`: the query of each row)."""
        rows = torch.arange(len(logits)) if rows is None else torch.as_tensor(rows, dtype=torch.long).cpu()
        group, column = self.group[rows], self.column()[rows]
        out = torch.empty(len(logits), dtype=torch.long)
        for g, cand in enumerate(self.candidates):
            hit = (group == g).nonzero()[:, 0]
            if len(hit):
                scores = logits.index_select(0, hit.to(logits.device))[:, cand.to(logits.device)]
                out[hit] = rank_of(scores, column[hit]).cpu()
        return out

    def vocab_rank(self, logits: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """1-based rank of the correct token in the whole vocabulary, per logits row."""
        rows = torch.arange(len(logits)) if rows is None else torch.as_tensor(rows, dtype=torch.long).cpu()
        return rank_of(logits, self.tokens[rows]).cpu()


def step_view(gm, docs: list[str], step: int) -> StepView:
    """The step-`step` view of each query's target document (module docstring). GenIRError: a step beyond the docid length."""
    scheme = sequences_of(gm)
    check_step(gm, step)
    sequences = [tuple(int(t) for t in scheme.sequence(str(d))) for d in docs]
    rows = [i for i, s in enumerate(sequences) if len(s) > step]
    if not rows:
        raise GenIRError(f"{gm.path}: none of the {len(docs)} target documents has a token at step {step}")
    prefixes = [sequences[i][:step] for i in rows]
    groups: dict[tuple[int, ...], int] = {}
    for p in prefixes:
        groups.setdefault(p, len(groups))
    candidates = [torch.tensor(list(scheme.children(p)), dtype=torch.long) for p in groups]
    tokens = torch.tensor([sequences[i][step] for i in rows], dtype=torch.long)
    decoder_inputs = None
    if step > 0:
        prefix = torch.tensor(prefixes, dtype=torch.long, device=gm.device)
        decoder_inputs = torch.cat([gm.start_ids(len(rows)), prefix], 1) if gm.adapter.has("encoder") else prefix
    return StepView(step, rows, decoder_inputs, tokens, torch.tensor([groups[p] for p in prefixes], dtype=torch.long), candidates)

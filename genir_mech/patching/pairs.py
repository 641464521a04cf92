"""Clean/corrupted query pairs for activation patching: where they come from and how they line up.

    pairs = dataset_pairs(dataset)                       # the synthetic generator's matched pairs
    pairs = read_pairs("my_pairs.jsonl", dataset)        # user pairs: texts (+ docids) or query ids
    pairs, report = keep_correct(gm, pairs)              # both queries retrieve their own document first
    batch = tokenize_pairs(gm, pairs)                    # refuses pairs whose token lengths differ ...
    batch = tokenize_pairs(gm, pairs, align="left-pad")  # ... unless the user picks an alignment

A pair file is JSONL (one object per line) or CSV (a header row) with either
`clean`, `corrupted` (query texts) and optionally `clean_doc`, `corrupted_doc`
(when omitted, the document the model itself retrieves first for each text), or
`clean_query_id`, `corrupted_query_id` (texts and relevant documents come from
the dataset). `pair_id` is optional. Errors name the file and line.

Positions must mean the same thing in both queries of a pair, so pairs whose
tokenizations differ in length are refused unless an alignment is chosen:
`right-pad` pads the shorter query at its end (positions aligned from the
start), `left-pad` pads it at its start (aligned from the end, so the final
tokens and EOS line up). Padding is always masked.

Decoder-only models (`gm.adapter.padding_side == "left"`) rank at the last
position, so every query ends in the last column: rows are padded on the
left, pairs of unequal length can only be aligned with `left-pad`, and every
position of the query is a decoder position (`PairBatch.decoder_length`).
"""
from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..data.loaders import iter_jsonl, read_utf8
from ..errors import GenIRError
from ..models.execution import QueryBatch
from ..retrieval import rank_of, rank_texts, scorer_for
from ..retrieval.steps import check_step, sequences_of, step_view
from ..vocabulary import PAIR_ALIGNMENTS
from .metrics import PairTargets

ALIGNMENTS = PAIR_ALIGNMENTS


@dataclass(frozen=True)
class QueryPair:
    pair_id: str
    clean: str
    corrupted: str
    clean_doc: str | None = None
    corrupted_doc: str | None = None
    decides: str = ""  # what differs between the two queries (synthetic pairs: "entity" or "founder")


@dataclass
class PairBatch:
    """Tokenized pairs: row i of `clean` and row i of `corrupted` are the same pair, positions aligned."""

    pairs: list[QueryPair]
    clean: QueryBatch
    corrupted: QueryBatch
    # (P,) aligned length of each pair: positions >= length are padding in both queries
    # (decoder-only layout: positions < width - length are).
    lengths: torch.Tensor
    targets: PairTargets
    clean_tokens: list[list[str]]  # aligned token strings per pair (padding included), to label positions
    corrupted_tokens: list[list[str]]
    decoder_only: bool = False  # the query itself runs through the decoder (left-padded, no encoder)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def width(self) -> int:
        return self.clean.input_ids.shape[1]

    @property
    def decoder_length(self) -> int:
        """Decoder positions of one ranking step: 1 (the start token) for atomic docids; every query position in a decoder-only model."""
        decoded = 0 if self.clean.decoder_input_ids is None else self.clean.decoder_input_ids.shape[1]
        if self.decoder_only:
            return self.width + decoded
        return decoded or 1

    def select(self, rows: list[int]) -> "PairBatch":
        index = torch.tensor(rows, dtype=torch.long)
        return PairBatch(
            [self.pairs[i] for i in rows], self.clean.select(index), self.corrupted.select(index), self.lengths[index],
            self.targets.select(index), [self.clean_tokens[i] for i in rows], [self.corrupted_tokens[i] for i in rows], self.decoder_only,
        )


def dataset_pairs(dataset, n: int | None = None) -> list[QueryPair]:
    """The dataset's own matched clean/corrupted pairs (the synthetic generator makes them), the first `n` if given.

        pairs, report = keep_correct(gm, dataset_pairs(dataset, 64))
    """
    if not dataset.pairs:
        raise GenIRError("the dataset has no matched clean/corrupted pairs; give a pairs file (CLI: --pairs FILE)")
    pairs = [
        QueryPair(str(p.get("pair_id", f"p{i}")), p["clean"], p["corrupted"], str(p["clean_doc"]), str(p["corrupted_doc"]), p.get("decides", ""))
        for i, p in enumerate(dataset.pairs)
    ]
    return pairs[:n] if n else pairs


def _pair_from_record(record: dict, where: str, index: int, dataset) -> QueryPair:
    pair_id = str(record.get("pair_id") or f"p{index}")
    has_text = record.get("clean") and record.get("corrupted")
    has_ids = record.get("clean_query_id") and record.get("corrupted_query_id")
    if has_ids and not has_text:
        if dataset is None:
            raise GenIRError(f"{where}: query ids need a dataset to look them up; give the dataset (CLI: --data)")
        try:
            clean_q, corrupted_q = dataset.query(str(record["clean_query_id"])), dataset.query(str(record["corrupted_query_id"]))
            return QueryPair(pair_id, clean_q.text, corrupted_q.text, dataset.relevant(clean_q.query_id), dataset.relevant(corrupted_q.query_id), str(record.get("decides") or ""))
        except GenIRError as exc:
            raise GenIRError(f"{where}: {exc}") from None
    if not has_text:
        raise GenIRError(f"{where}: a pair needs 'clean' and 'corrupted' query texts, or 'clean_query_id' and 'corrupted_query_id'")
    docs = [record.get("clean_doc"), record.get("corrupted_doc")]
    if (docs[0] in (None, "")) != (docs[1] in (None, "")):
        raise GenIRError(f"{where}: give both 'clean_doc' and 'corrupted_doc', or neither (then the model's own top documents are used)")
    docs = [None if d in (None, "") else str(d) for d in docs]
    return QueryPair(pair_id, str(record["clean"]), str(record["corrupted"]), docs[0], docs[1], str(record.get("decides") or ""))


def read_pairs(path: str | Path, dataset=None) -> list[QueryPair]:
    """Pairs from a JSONL or CSV file; every error names the file and line."""
    path = Path(path)
    if not path.exists():
        raise GenIRError(f"{path}: no such pairs file")
    pairs: list[QueryPair] = []
    if path.suffix.lower() == ".csv":
        rows = csv.DictReader(io.StringIO(read_utf8(path), newline=""))  # not UTF-8: one line naming the file and line
        for line_no, record in enumerate(rows, start=2):  # line 1 is the header
            pairs.append(_pair_from_record(record, f"{path}, line {line_no}", len(pairs), dataset))
    else:
        for line_no, record in iter_jsonl(path):
            pairs.append(_pair_from_record(record, f"{path}, line {line_no}", len(pairs), dataset))
    if not pairs:
        raise GenIRError(f"{path}: no pairs in the file")
    seen: set[str] = set()
    for p in pairs:
        if p.pair_id in seen:
            raise GenIRError(f"{path}: pair_id {p.pair_id!r} appears twice")
        seen.add(p.pair_id)
    return pairs


def with_model_docs(gm, pairs: list[QueryPair], batch_size: int = 256) -> list[QueryPair]:
    """Fill in missing docids with the document the model retrieves first for each query text."""
    missing = [p for p in pairs if p.clean_doc is None]
    if not missing:
        return pairs
    texts = [t for p in missing for t in (p.clean, p.corrupted)]
    ranking = rank_texts(gm, texts, batch_size=batch_size, depth=1)  # the first document only: for multi-token docids a pruned walk
    top = ranking.doc_scores.argmax(1).tolist()
    filled = {p.pair_id: (ranking.doc_ids[top[2 * i]], ranking.doc_ids[top[2 * i + 1]]) for i, p in enumerate(missing)}
    return [p if p.clean_doc is not None else QueryPair(p.pair_id, p.clean, p.corrupted, *filled[p.pair_id], p.decides) for p in pairs]


def keep_correct(gm, pairs: list[QueryPair], batch_size: int = 256) -> tuple[list[QueryPair], pd.DataFrame]:
    """Keep pairs where the model ranks the clean doc first for the clean query and the corrupted doc first for the corrupted one.

    Pairs whose two documents coincide are dropped too: their logit
    difference is zero by construction. Returns the kept pairs and a table of
    every pair with its ranks and the reason it was dropped, if it was.
    """
    pairs = with_model_docs(gm, pairs, batch_size)
    texts = [t for p in pairs for t in (p.clean, p.corrupted)]
    # Depth 1 plus each query's own document: that document's rank is exact (every document above it is scored), and for
    # multi-token docids the trie walk skips every prefix below it (most of a full ranking's work).
    docs = [d for p in pairs for d in (p.clean_doc, p.corrupted_doc)]
    ranking = rank_texts(gm, texts, batch_size=batch_size, depth=1, must_score=[[d] for d in docs])
    ranks = rank_of(ranking.doc_scores, scorer_for(gm).columns(docs)).view(-1, 2)
    rows, kept = [], []
    for p, (rc, rx) in zip(pairs, ranks.tolist()):
        reason = "same document" if p.clean_doc == p.corrupted_doc else ("" if rc == 1 and rx == 1 else "not both ranked first")
        rows.append({"pair_id": p.pair_id, "clean": p.clean, "corrupted": p.corrupted, "clean_doc": p.clean_doc, "corrupted_doc": p.corrupted_doc,
                     "decides": p.decides, "clean_rank": rc, "corrupted_rank": rx, "kept": not reason, "dropped_because": reason})
        if not reason:
            kept.append(p)
    return kept, pd.DataFrame(rows)


def diverges_at(gm, pair: QueryPair, step: int) -> bool:
    """True when the pair's two docids share their first `step` tokens and differ at token `step`: step `step` decides between them."""
    scheme = sequences_of(gm)
    a, b = scheme.sequence(pair.clean_doc), scheme.sequence(pair.corrupted_doc)
    return len(a) > step and len(b) > step and a[:step] == b[:step] and a[step] != b[step]


def step_targets(gm, pairs: list[QueryPair], step: int) -> tuple[PairTargets, torch.Tensor | None]:
    """The patching targets at decoding step `step` (retrieval.steps): each docid's token there, the valid continuations of the
    pair's shared prefix (one padded row per pair), and the decoder inputs of that prefix (None at step 0 of atomic docids).
    GenIRError naming the first pair whose docids do not diverge at `step`."""
    check_step(gm, step)
    bad = [p for p in pairs if not diverges_at(gm, p, step)]
    if bad:
        p = bad[0]
        raise GenIRError(f"pair {p.pair_id}: documents {p.clean_doc!r} and {p.corrupted_doc!r} do not share a docid prefix that diverges at step {step} "
                         f"({len(bad)} of {len(pairs)} pairs); patching at a step needs pairs that step decides (pairs.step_pairs)")
    clean, corrupted = step_view(gm, [p.clean_doc for p in pairs], step), step_view(gm, [p.corrupted_doc for p in pairs], step)
    if step == 0 and len(clean.candidates) == 1:
        candidates = clean.candidates[0]  # every pair shares the empty prefix: one set, as atomic docids have always had
    else:
        width = max(len(c) for c in clean.candidates)
        candidates = torch.full((len(pairs), width), -1, dtype=torch.long)
        for row, g in enumerate(clean.group.tolist()):
            candidates[row, : len(clean.candidates[g])] = clean.candidates[g]
    return PairTargets(clean.tokens, corrupted.tokens, candidates), clean.decoder_inputs


def step_pairs(gm, queries: list, docs: list[str], step: int, n: int | None = None, seed: int = 0) -> list[QueryPair]:
    """Pairs of queries that decoding step `step` decides: their documents' docids share the first `step` tokens and differ
    at token `step`, and the two queries have the same token length (so positions line up) and, where known, the same
    template (so they differ only in what names the document). Each query is the clean side of at most one pair; seeded.

    `queries` are corpus Query objects (text, template) and `docs` the document each one's analysis follows.
    """
    scheme = sequences_of(gm)
    check_step(gm, step)
    lengths = [len(r) for r in gm.token_rows([q.text for q in queries])]
    buckets: dict[tuple, list[int]] = {}
    for i, (q, d) in enumerate(zip(queries, docs)):
        seq = scheme.sequence(d)
        if len(seq) > step:
            buckets.setdefault((getattr(q, "template", None), lengths[i], seq[:step]), []).append(i)
    rng = random.Random(seed)
    pairs = []
    for key in sorted(buckets, key=str):
        members = buckets[key]
        for i in members:
            partners = [j for j in members if scheme.sequence(docs[j])[step] != scheme.sequence(docs[i])[step]]
            if partners:
                j = rng.choice(partners)
                pairs.append(QueryPair(f"s{step}-{queries[i].query_id}-{queries[j].query_id}", queries[i].text, queries[j].text, docs[i], docs[j], f"step {step}"))
    rng.shuffle(pairs)
    return pairs[:n] if n else pairs


def tokenize_pairs(gm, pairs: list[QueryPair], align: str | None = None, step: int | None = None) -> PairBatch:
    """Tokenize clean and corrupted queries into one width with positions aligned per pair.

    Without `align`, pairs of unequal token length are refused (the message
    names them); with it, the shorter query is padded as described above.
    A decoder-only model gets the left layout of the module docstring.
    With `step` (a decoding step of a multi-token docid) both queries of a pair are teacher-forced to the prefix their
    docids share, and the targets are the docids' tokens at that step (`step_targets`).
    """
    if not pairs:
        raise GenIRError("no pairs to patch")
    if align is not None and align not in ALIGNMENTS:
        raise GenIRError(f"unknown alignment {align!r}; choose {' or '.join(ALIGNMENTS)}")
    # A decoder-only model ranks at the last position, so every query must end in the last column.
    end_aligned = gm.adapter.padding_side == "left"
    if end_aligned and align == "right-pad":
        raise GenIRError(
            f"align='right-pad' cannot be used with {gm.path}: a decoder-only model ranks at the last query position, "
            "so queries are aligned from the end; use align='left-pad'"
        )
    pairs = with_model_docs(gm, pairs)
    clean_ids, corrupted_ids = gm.token_rows([p.clean for p in pairs]), gm.token_rows([p.corrupted for p in pairs])
    mismatched = [(p, len(a), len(b)) for p, a, b in zip(pairs, clean_ids, corrupted_ids) if len(a) != len(b)]
    if mismatched and align is None:
        shown = "; ".join(f"pair {p.pair_id}: clean {p.clean!r} has {a} tokens, corrupted {p.corrupted!r} has {b}" for p, a, b in mismatched[:5])
        more = f" (and {len(mismatched) - 5} more)" if len(mismatched) > 5 else ""
        raise GenIRError(
            f"{len(mismatched)} pair(s) tokenize to different lengths, so token positions would not line up: {shown}{more}. "
            "Use pairs of equal token length, or choose an alignment: align='left-pad' or 'right-pad' (CLI: --align)"
        )
    pad = gm.tokenizer.pad_token_id
    lengths = [max(len(a), len(b)) for a, b in zip(clean_ids, corrupted_ids)]
    width = max(lengths)

    def layout(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, n) in enumerate(zip(rows, lengths)):
            if end_aligned:
                start = width - len(row)  # every query ends in the last column, the ranking position
            else:
                start = n - len(row) if align == "left-pad" else 0  # left-pad: shorter query ends where the longer one does
            ids[i, start : start + len(row)] = torch.tensor(row)
            mask[i, start : start + len(row)] = 1
        return ids.to(gm.device), mask.to(gm.device)

    clean, corrupted = QueryBatch(*layout(clean_ids)), QueryBatch(*layout(corrupted_ids))
    if step is None:
        targets = PairTargets(
            torch.tensor([gm.docids.token_id(p.clean_doc) for p in pairs]),
            torch.tensor([gm.docids.token_id(p.corrupted_doc) for p in pairs]),
            gm.docids.vocab_ids,
        )
    else:
        targets, prefixes = step_targets(gm, pairs, step)
        clean.decoder_input_ids = corrupted.decoder_input_ids = prefixes
    strings = lambda qb: [gm.tokenizer.convert_ids_to_tokens(row.tolist()) for row in qb.input_ids]  # noqa: E731
    return PairBatch(list(pairs), clean, corrupted, torch.tensor(lengths), targets, strings(clean), strings(corrupted), decoder_only=not gm.adapter.has("encoder"))

"""Encoder swap: run model A's decoder on model B's encoder output (paper Table 2). Does the decoder hold the corpus?

    a, b = load_genir("checkpoints/dsi-synth"), load_genir("checkpoints/dsi-synth-rd1")
    ranks = swapped_ranks(a, b, texts, relevant_docs)      # rank of each relevant document among A's docids
    summary, per_query = removed_docs_experiment(a, [b], dataset)          # experiment 1
    summary, per_query = vanilla_encoder_experiment(a, base, dataset)      # experiment 2

Both models see the same queries with one tokenization (A's, checked equal to
B's), and documents are ranked once, by A's first-step docid logits. B's
encoder runs once per query batch; A is then called with that cached encoder
output and its own encoder never runs.

Experiment 1: B was trained without some documents (its model card lists them
under "removed_documents"). The queries are those of the removed documents in
the held-out splits (test and validation by default) that A ranks first; the
controls are A alone and B alone on the same queries.
Experiment 2: B is the pretrained base (a "vanilla" encoder that never saw a
docid); the queries are A's correct queries of one split.

Metrics come from the rank of the relevant document among all docids (no depth
cut-off): MRR, Hits@1 (also as a count), Hits@10, mean and median rank.
"""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ..errors import GenIRError
from ..models.execution import QueryBatch
from ..models.model_card import ModelCard
from ..retrieval import correct_query_targets, rank_of, rank_summary, rank_texts, scorer_for
from ..retrieval.evaluation import readable_queries
from .query_batches import query_batches

A_ALONE, B_ALONE, SWAPPED = "A alone", "B alone", "A decoder + B encoder"
SEEN_CONTROL = "A decoder + B encoder, documents B saw"


def check_swappable(decoder_model, encoder_model) -> None:
    """Refuse a swap of models without an encoder and cross-attention, or whose residual width, tokenizer or docid vocabulary differ."""
    a, b = decoder_model, encoder_model
    for gm in (a, b):
        gm.adapter.require("encoder", "cross_attn", analysis="the encoder swap")
    if a.adapter.d_model != b.adapter.d_model:
        raise GenIRError(f"encoder swap: {b.path} has d_model {b.adapter.d_model} but {a.path} has {a.adapter.d_model}; encoder outputs only fit a decoder of the same width")
    full_a, full_b = a.tokenizer.get_vocab(), b.tokenizer.get_vocab()
    # docid tokens are compared separately below, so a corpus difference is reported as one
    docid_strings = {t for full, gm in ((full_a, a), (full_b, b)) for t, i in full.items() if gm.docids.doc_id(i) is not None}
    vocab_a = {t: i for t, i in full_a.items() if t not in docid_strings}
    vocab_b = {t: i for t, i in full_b.items() if t not in docid_strings}
    if vocab_a != vocab_b:
        only_a = sorted(set(vocab_a.items()) - set(vocab_b.items()))[:3]
        only_b = sorted(set(vocab_b.items()) - set(vocab_a.items()))[:3]
        raise GenIRError(
            f"encoder swap: the tokenizers of {a.path} ({len(vocab_a)} tokens) and {b.path} ({len(vocab_b)} tokens) differ "
            f"(e.g. only in A: {only_a}, only in B: {only_b}); both models must tokenize queries identically"
        )
    docs_a = {d: a.docids.token_id(d) for d in a.docids.doc_ids}
    docs_b = {d: b.docids.token_id(d) for d in b.docids.doc_ids}
    if docs_a != docs_b:
        only_a, only_b = sorted(set(docs_a) - set(docs_b))[:5], sorted(set(docs_b) - set(docs_a))[:5]
        raise GenIRError(
            f"encoder swap: the docid vocabularies of {a.path} ({len(docs_a)} docids) and {b.path} ({len(docs_b)} docids) differ "
            f"(only in A: {only_a}, only in B: {only_b}, or the same docids on different token ids); the models must index one corpus"
        )


@torch.no_grad()
def swapped_logits(decoder_model, encoder_model, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """(n_queries, vocab) first-step logits of the decoder model given the encoder model's output."""
    a, b = decoder_model, encoder_model
    check_swappable(a, b)
    out = []
    for _, batch in query_batches(a, texts, batch_size, encode=False):
        hidden = b.encode(batch).encoder_hidden.to(a.device)
        out.append(a.logits(QueryBatch(batch.input_ids, batch.attention_mask, hidden)).float().cpu())
    return torch.cat(out)


def swapped_ranks(decoder_model, encoder_model, texts: list[str], relevant_docs: list[str], batch_size: int = 64) -> torch.Tensor:
    """(n_queries,) rank of each relevant document among the decoder model's docids, given the encoder model's output."""
    if len(texts) != len(relevant_docs):
        raise GenIRError(f"{len(texts)} queries but {len(relevant_docs)} relevant documents")
    scorer = scorer_for(decoder_model)
    return rank_of(scorer.score_logits(swapped_logits(decoder_model, encoder_model, texts, batch_size)), scorer.columns(relevant_docs))


def own_ranks(gm, texts: list[str], relevant_docs: list[str], batch_size: int = 64) -> torch.Tensor:
    """A model on its own: the swap with itself, which is exactly its normal forward pass."""
    return swapped_ranks(gm, gm, texts, relevant_docs, batch_size)


Condition = tuple[list, list[str], torch.Tensor]  # queries, their relevant documents, ranks


def _frames(label: dict, conditions: dict[str, Condition]) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = pd.DataFrame(
        [
            {**label, "condition": c, "metric": m, "value": float(v)}
            for c, (_, docs, r) in conditions.items()
            for m, v in {**rank_summary(r), "n_documents": len(set(docs))}.items()
        ]
    )
    per_query = pd.DataFrame(
        [
            {**label, "condition": c, "query_id": q.query_id, "split": q.split, "relevant_doc": d, "rank": int(rank)}
            for c, (queries, docs, r) in conditions.items()
            for q, d, rank in zip(queries, docs, r.tolist())
        ]
    )
    return summary, per_query


def _ranked_first_by(a, queries: list, dataset, batch_size: int, among: set[str] | None = None) -> tuple[list, list[str], list[str]]:
    """The queries A gets right (its first document is relevant, and one of `among` when given), with that document and their texts."""
    queries = readable_queries(a, queries, ", ".join(sorted({q.split for q in queries})))  # unreadable ones: left out, with a warning
    texts = [q.text for q in queries]
    ranking = rank_texts(a, texts, [q.query_id for q in queries], batch_size)
    top = [ranking.doc_ids[j] for j in ranking.doc_scores.argmax(dim=1).tolist()]
    keep = [i for i, (q, d) in enumerate(zip(queries, top)) if d in dataset.qrels.get(q.query_id, ()) and (among is None or d in among)]
    return [queries[i] for i in keep], [top[i] for i in keep], [texts[i] for i in keep]


def removed_documents(gm) -> list[str]:
    """Documents a checkpoint was trained without (from its model card); GenIRError when it lists none."""
    removed = ModelCard.read(gm.path).removed_documents
    if not removed:
        raise GenIRError(f"{gm.path}: its model_card.json lists no removed_documents; experiment 1 needs a model trained without some documents")
    return removed


def check_same_data(a, b) -> None:
    """Refuse a swap between models trained on different corpora: removed ids would mean different documents."""
    ha, hb = ModelCard.read(a.path).data_hash, ModelCard.read(b.path).data_hash
    if ha and hb and ha != hb:
        raise GenIRError(f"encoder swap: {a.path} was trained on data {ha} but {b.path} on {hb}; removed document ids only mean something within one corpus")


def removed_docs_experiment(
    a, variants: Sequence, dataset, splits: Sequence[str] = ("test", "validation"), batch_size: int = 64, seen_control: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Experiment 1 (Table 2): A's decoder on each variant's encoder output, over the removed documents' queries A gets right.

    With `seen_control`, the swap is also measured on A's correct queries of
    the documents B did see: if it fails there too, the encoders are simply
    incompatible; if it works there but not on the removed documents, B's
    encoder lacks something about those documents that A's decoder needs.

    Tables have columns variant, splits, condition, metric, value (summary) and
    variant, splits, condition, query_id, split, relevant_doc, rank (per query).
    """
    summaries, per_queries = [], []
    for b in variants:
        check_swappable(a, b)
        check_same_data(a, b)
        removed = set(removed_documents(b))
        unknown = sorted(removed - set(dataset.documents))
        if unknown:
            raise GenIRError(f"{b.path}: removed documents {unknown[:5]} are not in the dataset; give the data the models were trained on (CLI: --data)")
        held_out = [q for s in splits for q in dataset.split(s)]
        candidates = [q for q in held_out if dataset.qrels.get(q.query_id, set()) & removed]
        if not candidates:
            raise GenIRError(f"{b.path}: no {'/'.join(splits)} queries for its {len(removed)} removed documents; try more splits (splits=, CLI: --splits)")
        queries, docs, texts = _ranked_first_by(a, candidates, dataset, batch_size, among=removed)
        if not queries:
            raise GenIRError(f"{a.path} ranks none of the {len(candidates)} queries of {b.path}'s removed documents first; nothing to swap")
        conditions = {
            A_ALONE: (queries, docs, own_ranks(a, texts, docs, batch_size)),
            B_ALONE: (queries, docs, own_ranks(b, texts, docs, batch_size)),
            SWAPPED: (queries, docs, swapped_ranks(a, b, texts, docs, batch_size)),
        }
        seen_candidates = [q for q in held_out if dataset.qrels.get(q.query_id, set()) - removed]
        if seen_control and seen_candidates:
            seen_q, seen_d, seen_t = _ranked_first_by(a, seen_candidates, dataset, batch_size, among=set(dataset.documents) - removed)
            if seen_q:
                conditions[SEEN_CONTROL] = (seen_q, seen_d, swapped_ranks(a, b, seen_t, seen_d, batch_size))
        label = {"variant": b.name, "splits": ",".join(splits)}
        summary, per_query = _frames(label, conditions)
        extra = pd.DataFrame(
            [
                {**label, "condition": "", "metric": "n_removed_documents", "value": float(len(removed))},
                {**label, "condition": "", "metric": "n_candidate_queries", "value": float(len(candidates))},
            ]
        )
        summaries.append(pd.concat([summary, extra], ignore_index=True))
        per_queries.append(per_query)
    if not summaries:
        raise GenIRError("experiment 1 needs at least one removed-documents variant (variants=, CLI: --encoder-from)")
    return pd.concat(summaries, ignore_index=True), pd.concat(per_queries, ignore_index=True)


def vanilla_encoder_experiment(a, vanilla, dataset, split: str = "validation", batch_size: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Experiment 2: A's decoder on a never-fine-tuned encoder, over A's correct queries of `split`."""
    check_swappable(a, vanilla)
    targets = correct_query_targets(a, dataset, split, batch_size)  # the document A ranks first, which is relevant
    queries = [q for q in dataset.split(split) if q.query_id in targets]
    if not queries:
        raise GenIRError(f"{a.path} has no correct {split} queries; experiment 2 has nothing to measure")
    docs = [targets[q.query_id] for q in queries]
    texts = [q.text for q in queries]
    conditions = {
        A_ALONE: (queries, docs, own_ranks(a, texts, docs, batch_size)),
        B_ALONE: (queries, docs, own_ranks(vanilla, texts, docs, batch_size)),
        SWAPPED: (queries, docs, swapped_ranks(a, vanilla, texts, docs, batch_size)),
    }
    return _frames({"encoder_from": vanilla.name, "split": split}, conditions)

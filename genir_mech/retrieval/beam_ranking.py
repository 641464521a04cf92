"""Prefix-constrained beam search over multi-token docids: the ranking deployed GenIR systems return.

    scores = beam_log_probs(gm, gm.batch(texts), gm.docids, beams=10)   # (queries, n_docs); -inf outside the beam

HF `generate` decodes with `TrieLogitsProcessor`, which leaves only the tokens
the docid trie allows after each row's prefix (eos once a docid is complete).
Length penalty 0 makes a hypothesis' score its summed log-probability over the
full vocabulary, the same quantity the exact ranking computes, so the `beams`
documents beam search returns carry their exact scores and every other
document scores -inf (not found). With `beams` as large as the number of
documents, beam search is exact.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from ..docids import SequenceDocids
from ..errors import GenIRError
from .sequence_ranking import require_encoder_decoder


class TrieLogitsProcessor(LogitsProcessor):
    """Masks every token the docid trie does not allow after a row's decoded prefix (the decoder start token dropped)."""

    def __init__(self, docids: SequenceDocids, n_start_tokens: int = 1):
        self.docids, self.n_start = docids, n_start_tokens
        self._allowed: dict[tuple[int, ...], torch.Tensor] = {}

    def _allowed_ids(self, prefix: tuple[int, ...]) -> torch.Tensor:
        if prefix not in self._allowed:
            # a finished row (eos decoded, then padding) may continue with anything: generate ignores it
            self._allowed[prefix] = torch.tensor(self.docids.children(prefix) or [self.docids.eos_id], dtype=torch.long)
        return self._allowed[prefix]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(input_ids[:, self.n_start :].tolist()):
            mask[row, self._allowed_ids(tuple(ids)).to(scores.device)] = 0.0
        return scores + mask


@torch.no_grad()
def beam_log_probs(gm, batch, docids: SequenceDocids, beams: int = 10) -> torch.Tensor:
    """(B, n_docs) log P(docid + eos | query) of the `beams` documents constrained beam search finds per query; -inf for the rest."""
    require_encoder_decoder(gm)
    if beams < 1:
        raise GenIRError(f"beams must be positive, got {beams} (CLI: --beams)")
    beams = min(beams, len(docids))
    out = gm.hf_model.generate(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, num_beams=beams, num_return_sequences=beams,
        max_new_tokens=docids.max_length + 1, length_penalty=0.0, early_stopping=True, do_sample=False,
        logits_processor=LogitsProcessorList([TrieLogitsProcessor(docids)]), output_scores=True, return_dict_in_generate=True,
        decoder_start_token_id=gm.decoder_start_id, eos_token_id=docids.eos_id, pad_token_id=gm.tokenizer.pad_token_id,
        # a fresh cache that grows a layer at a time: generate's own is sized by the encoder's depth and fails on a deeper decoder
        cache=EncoderDecoderCache(DynamicCache(), DynamicCache()), use_cache=True,
    )
    scores = torch.full((len(batch), len(docids)), float("-inf"))
    sequences, seq_scores = out.sequences[:, 1:].tolist(), out.sequences_scores.float().cpu()
    for row, (tokens, score) in enumerate(zip(sequences, seq_scores.tolist())):
        doc = docids.doc_at(_until_eos(tokens, docids.eos_id))
        if doc is not None and score > float("-inf"):
            query = row // beams
            column = docids.index(doc)
            scores[query, column] = max(scores[query, column].item(), score)
    return scores


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens

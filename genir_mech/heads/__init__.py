"""Retrieval heads of decoder-only models: Wu et al.'s retrieval score, head masking, QRHead (query-focused retrieval heads).

    from genir_mech.heads import retrieval_scores, masked_niah, qr_token_scores, detect_qr_heads, qr_rankings
    result = retrieval_scores(lm, niah_trials(NiahConfig()))           # per-head scores, per-trial outcomes
    table = masked_niah(lm, trials, {"top-k": [top], "random-k": draws}, mask="uniform")   # or "remove"
    heads = detect_qr_heads(qr_token_scores(lm, detection), detection, top_k=16)

Modules, one job each: prompts (long prompts as batches, token spans),
decoding (batched KV-cached greedy decoding with per-step attention rows; encoder-decoder
answers with cross-attention rows), retrieval_score, masking (uniform attention or removal, and random controls), qr.
`heads compare` (both architectures): query_reading (which heads read the query, the model's task,
their attention rows), head_scores (QR mass on deciding tokens, patching and ablation, head lens),
niah_pairs (NIAH clean/corrupted pairs), model_scores (every score of one model), comparison (statistics).
"""
from .decoding import Decoded, greedy_decode, resolve_attention_path
from .masking import MASKS, head_mask, masked_greedy_decode, masked_logits, masked_niah, random_control, random_heads, uniform_attention
from .prompts import max_positions, prompt_batch, token_span
from .qr import answer_rankings, bm25_rankings, detect_qr_heads, evaluate_rankings, qr_rankings, qr_token_scores
from .retrieval_score import RETRIEVAL_THRESHOLD, NoSuccessfulTrialWarning, RetrievalScores, retrieval_scores

__all__ = [
    "Decoded", "MASKS", "NoSuccessfulTrialWarning", "RETRIEVAL_THRESHOLD", "RetrievalScores", "answer_rankings", "bm25_rankings", "detect_qr_heads",
    "evaluate_rankings", "greedy_decode", "head_mask", "masked_greedy_decode", "masked_logits", "masked_niah", "max_positions", "prompt_batch", "qr_rankings",
    "qr_token_scores", "random_control", "random_heads", "resolve_attention_path", "retrieval_scores", "token_span", "uniform_attention",
]

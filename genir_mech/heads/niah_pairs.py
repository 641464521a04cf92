"""Clean/corrupted pairs of needle-in-a-haystack trials, so NIAH models are patched by the same engine as GenIR models.

    batch = niah_pair_batch(lm, trials)      # corrupted = the same haystack whose needle holds another trial's code
    causal_head_scores(lm, batch)            # heads.head_scores: patching and ablation on the first answer token

The corrupted prompt of a trial is its prompt with the needle's code replaced
by the code of the next trial (cyclically) that differs in its first token
and tokenizes to the same length, so every position lines up. The metric
targets are the first answer token of each (the logit difference clean code
minus corrupted code at the predicting position). Prompts are left-padded as
for decoding (the haystack in the encoder of an encoder-decoder model).
"""
from __future__ import annotations

import torch

from ..data.niah import NiahTrial
from ..errors import GenIRError
from ..patching.metrics import PairTargets
from ..patching.pairs import PairBatch, QueryPair
from .prompts import prompt_batch, prompt_token_ids


def first_answer_token(tokenizer, trial: NiahTrial) -> int:
    """The first token of the trial's answer as the model generates it (after the prompt)."""
    ids = tokenizer(" " + trial.answer, add_special_tokens=False)["input_ids"]
    return int(ids[0])


def _code(trial: NiahTrial) -> str:
    """The code words: what the needle says after its lead-in, which the answer repeats."""
    return trial.answer


def niah_pairs(tokenizer, trials: list[NiahTrial]) -> list[tuple[NiahTrial, str, int, int]]:
    """(trial, corrupted prompt, clean first token, corrupted first token) for every trial that has a partner."""
    out = []
    for i, trial in enumerate(trials):
        length = len(prompt_token_ids(tokenizer, trial.prompt))
        clean_token = first_answer_token(tokenizer, trial)
        for other in trials[i + 1:] + trials[:i]:
            other_token = first_answer_token(tokenizer, other)
            if other_token == clean_token or _code(other) not in other.needle or _code(trial) not in trial.needle:
                continue
            needle = trial.needle.replace(_code(trial), _code(other))
            corrupted = trial.prompt.replace(trial.needle, needle)
            if len(prompt_token_ids(tokenizer, corrupted)) == length:
                out.append((trial, corrupted, clean_token, other_token))
                break
    return out


def niah_pair_batch(gm, trials: list[NiahTrial]) -> PairBatch:
    """A `PairBatch` of NIAH trials and their corrupted twins (see the module docstring); GenIRError when no trial has a partner."""
    pairs = niah_pairs(gm.tokenizer, trials)
    if not pairs:
        raise GenIRError(f"{gm.path}: no needle-in-a-haystack trial has a partner whose code tokenizes to the same length; cannot build patching pairs")
    clean = prompt_batch(gm, [t.prompt for t, *_ in pairs], names=[t.trial_id for t, *_ in pairs])
    corrupted = prompt_batch(gm, [c for _, c, *_ in pairs], names=[t.trial_id for t, *_ in pairs])
    targets = PairTargets(torch.tensor([a for *_, a, _ in pairs]), torch.tensor([b for *_, b in pairs]), torch.empty(0, dtype=torch.long))
    decoder_only = "encoder" not in gm.adapter.sides
    # Decoder-only pairs are end-aligned (padding before `width - length`); the encoder side of the executor reads
    # `lengths` as right padding, so an encoder-decoder pair claims its full width (heads are patched, not positions).
    lengths = clean.attention_mask.sum(1).cpu() if decoder_only else torch.full((len(pairs),), clean.input_ids.shape[1])
    tokens = lambda qb: [gm.tokenizer.convert_ids_to_tokens(row.tolist()) for row in qb.input_ids]  # noqa: E731
    query_pairs = [QueryPair(t.trial_id, t.prompt, c, decides="code") for t, c, *_ in pairs]
    return PairBatch(query_pairs, clean, corrupted, lengths, targets, tokens(clean), tokens(corrupted), decoder_only=decoder_only)


def differing_mask(batch: PairBatch) -> torch.Tensor:
    """(P, T) bool: the columns where the clean and corrupted prompts differ (the needle's code: corrupting it changes the answer)."""
    return (batch.clean.input_ids != batch.corrupted.input_ids).cpu()

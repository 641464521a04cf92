"""The retrieval score of every attention head (Wu et al. 2024) over needle-in-a-haystack trials, batched.

    trials = niah_trials(NiahConfig(lengths=(256, 512)))       # genir_mech.data.niah, or load_niah(path)
    result = retrieval_scores(lm, trials, batch_size=16)
    result.scores          # tidy: layer, head, retrieval_score, n_successful, is_retrieval_head
    result.trials          # tidy: trial_id, context_length, depth, answer_tokens, generated, rouge1_recall, success

The score as the reference code (retrieval_head_detection.py) defines it:
the answer is decoded greedily, one token per step, after a prefill of the
prompt without its last token; at each step a head scores a hit when its
most-attended position (top-1 of the step's attention row) lies inside the
answer's span in the needle and holds the token being generated. A trial's
score is hits / the answer's length in tokens (the reference's
`real_needle`: here the code words "w1 w2 w3", not the whole needle "the
access code of X is w1 w2 w3 ."), so a head that copies the whole answer
scores 1 (a model that copies from the answer again after it counts again,
as in the reference, and can score above 1). A head's retrieval score is its mean over the successful trials
(answer ROUGE-1 recall > 0.5); it is a retrieval head at >= 0.1.

Unlike the reference code: trials run in batches (left-padded, one KV-cached
decoding loop), layer and head counts come from the config, the answer's
span is located by character offsets inside the needle (the reference takes
the first window whose token set overlaps the answer's by > 90%) and checked:
a needle or answer that tokenizes differently inside the haystack is refused,
not silently mis-scored. Decoding stops at the end-of-sequence token or after
the answer's length plus two tokens (the reference: 50 tokens or a newline).
When no trial succeeds the scores are NaN with a warning rather than an empty
table or zeros.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import GenIRError
from .decoding import decode_answers
from ..data.niah import NiahTrial, needle_token_span
from .prompts import pad_offsets, prompt_batch, token_span

RETRIEVAL_THRESHOLD = 0.1  # Wu et al.: a retrieval head scores at least 0.1
SUCCESS_RECALL = 0.5  # a trial counts when the answer's ROUGE-1 recall exceeds this


class NoSuccessfulTrialWarning(UserWarning):
    """No needle-in-a-haystack trial was answered: retrieval scores are undefined (NaN)."""


@dataclass
class RetrievalScores:
    """Per-head retrieval scores and per-trial outcomes of one sweep."""

    scores: pd.DataFrame  # layer, head, retrieval_score, n_successful, is_retrieval_head
    trials: pd.DataFrame  # trial_id, context_length, depth, answer, answer_tokens, generated, rouge1_recall, success, exact_match
    per_trial: torch.Tensor  # (trials, L, H) each trial's score (successful or not)

    @property
    def accuracy(self) -> float:
        """Fraction of trials answered (ROUGE-1 recall > 0.5), the reference's criterion."""
        return float(self.trials.success.mean()) if len(self.trials) else float("nan")

    @property
    def exact_match(self) -> float:
        """Fraction of trials whose generated words are exactly the answer's."""
        return float(self.trials.exact_match.mean()) if len(self.trials) else float("nan")

    def ranked_heads(self) -> list[tuple[int, int]]:
        """(layer, head) by decreasing retrieval score (NaN last)."""
        order = self.scores.sort_values(["retrieval_score", "layer", "head"], ascending=[False, True, True], na_position="last")
        return [(int(l), int(h)) for l, h in zip(order["layer"], order["head"])]


def words(text: str) -> list[str]:
    """Lower-cased word tokens for ROUGE-1."""
    return re.findall(r"\w+", text.lower())


def rouge1_recall(answer: str, generated: str) -> float:
    """ROUGE-1 recall: the share of the answer's words (with multiplicity) found in the generated text."""
    want, got = words(answer), words(generated)
    if not want:
        return 0.0
    pool = {}
    for w in got:
        pool[w] = pool.get(w, 0) + 1
    hits = 0
    for w in want:
        if pool.get(w, 0) > 0:
            pool[w] -= 1
            hits += 1
    return hits / len(want)


def answer_budget(tokenizer, trials: list[NiahTrial], extra: int = 2) -> int:
    """Tokens to generate: the longest answer in tokens plus `extra` (room for the end-of-sequence token)."""
    return max(len(tokenizer(t.answer, add_special_tokens=False)["input_ids"]) for t in trials) + extra


def answer_token_span(tokenizer, trial: NiahTrial) -> tuple[int, int]:
    """[start, end) of the answer inside the needle, over the prompt's tokens (no special tokens): what a retrieval head copies.

    GenIRError naming the trial when the answer is not part of the needle, or when the needle or the answer
    tokenizes differently inside the prompt than on its own.
    """
    needle_start, needle_end = needle_token_span(tokenizer, trial, add_special_tokens=False)
    at = trial.needle.find(trial.answer) if trial.answer else -1
    if at < 0:
        raise GenIRError(f"trial {trial.trial_id}: the answer {trial.answer!r} is not part of the needle {trial.needle!r}; "
                         "the retrieval score counts copies of the answer from the needle")
    start, end = token_span(tokenizer, trial.prompt, trial.answer, what=f"answer of trial {trial.trial_id}",
                            start_char=trial.prompt.index(trial.needle) + at)
    if start < needle_start or end > needle_end:
        raise GenIRError(f"trial {trial.trial_id}: the answer's tokens {start}-{end} lie outside the needle's {needle_start}-{needle_end}")
    return start, end


def step_hits(top_positions: torch.Tensor, live: torch.Tensor, tokens: torch.Tensor, sequence: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    """(B, L, H) count of steps where a head's most-attended column is inside the answer's span and holds the generated token.

    top_positions (B, S, L, H) columns of the padded sequence; live (B, S); tokens (B, S) generated at each step;
    sequence (B, T) the prompt ids (padded); spans (B, 2) the answer's [start, end) columns.
    """
    b, s, n_layers, n_heads = top_positions.shape
    flat = top_positions.reshape(b, -1).clamp(max=sequence.shape[1] - 1)
    held = sequence.gather(1, flat).reshape(b, s, n_layers, n_heads)  # the token at each most-attended column
    inside = (top_positions >= spans[:, 0, None, None, None]) & (top_positions < spans[:, 1, None, None, None])
    hit = inside & (held == tokens[:, :, None, None]) & live[:, :, None, None]
    return hit.sum(1)


def retrieval_scores(gm, trials: list[NiahTrial], batch_size: int = 16, attention: str = "auto", max_new_tokens: int | None = None,
                     progress: bool = True) -> RetrievalScores:
    """Score every head of `gm` on `trials` (see the module docstring); `attention`: auto, recompute or eager."""
    if not trials:
        raise GenIRError("no needle-in-a-haystack trials to score")
    budget = max_new_tokens or answer_budget(gm.tokenizer, trials)
    n_layers, n_heads = gm.n_layers("decoder"), gm.adapter.n_heads  # encoder-decoder: the decoder's cross-attention heads
    per_trial = torch.zeros(len(trials), n_layers, n_heads)
    rows = []
    order = sorted(range(len(trials)), key=lambda i: len(trials[i].prompt))  # similar lengths share a batch: less padding
    bar = tqdm(total=len(trials), desc="retrieval score", unit="trial", disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        chunk = [trials[i] for i in order[start:start + batch_size]]
        spans = torch.tensor([answer_token_span(gm.tokenizer, t) for t in chunk])
        batch = prompt_batch(gm, [t.prompt for t in chunk], reserve=budget, names=[t.trial_id for t in chunk])
        spans = (spans + pad_offsets(batch).cpu()[:, None]).to(gm.device)
        out = decode_answers(gm, batch, budget, attention=attention)
        hits = step_hits(out.top_positions, out.live, out.tokens, batch.input_ids, spans)
        length = (spans[:, 1] - spans[:, 0]).clamp_min(1)
        scores = (hits.float() / length[:, None, None]).cpu()
        for trial, index, text, score, n in zip(chunk, order[start:start + batch_size], out.texts(gm.tokenizer), scores, length.tolist()):
            per_trial[index] = score
            recall = rouge1_recall(trial.answer, text)
            rows.append({"trial_id": trial.trial_id, "context_length": trial.context_length, "depth": trial.depth, "answer": trial.answer,
                         "answer_tokens": int(n), "generated": text, "rouge1_recall": recall, "success": recall > SUCCESS_RECALL,
                         "exact_match": words(text) == words(trial.answer), "_index": index})
        bar.update(len(chunk))
    bar.close()
    table = pd.DataFrame(rows).sort_values("_index").drop(columns="_index").reset_index(drop=True)
    return RetrievalScores(head_table(per_trial, torch.tensor(table.success.to_numpy())), table, per_trial)


def head_table(per_trial: torch.Tensor, success: torch.Tensor) -> pd.DataFrame:
    """Tidy per-head table: the mean score over successful trials (NaN, with a warning, when none succeeded)."""
    n = int(success.sum())
    n_layers, n_heads = per_trial.shape[1:]
    if n == 0:
        warnings.warn(f"no needle-in-a-haystack trial succeeded (0 of {len(success)} answers with ROUGE-1 recall > {SUCCESS_RECALL}): "
                      "retrieval scores are undefined (NaN); check the model and the prompts", NoSuccessfulTrialWarning, stacklevel=3)
        mean = torch.full((n_layers, n_heads), float("nan"))
    else:
        mean = per_trial[success].mean(0)
    layer, head = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), indexing="ij")
    frame = pd.DataFrame({"layer": layer.flatten().numpy(), "head": head.flatten().numpy(), "retrieval_score": mean.flatten().numpy(),
                          "n_successful": n, "n_trials": len(success)})
    frame["is_retrieval_head"] = frame.retrieval_score >= RETRIEVAL_THRESHOLD
    return frame

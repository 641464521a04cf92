"""The retrieval score is Wu et al.'s: per-head scores equal a batch-1 implementation of the reference code's definition
(written here from its description), on the committed lm-niah; a planted head that copies the whole answer scores 1."""
from __future__ import annotations

import re
from collections import Counter

import pytest
import torch

from genir_mech.data.niah import NiahConfig, NiahTrial, niah_trials
from genir_mech.embedded import embedded_checkpoint
from genir_mech.errors import GenIRError
from genir_mech.heads.retrieval_score import answer_budget, answer_token_span, retrieval_scores
from genir_mech.testing import COPY_HEAD, copy_needle_trials, planted_copy_model


def _recall(answer: str, generated: str) -> float:
    want, got = Counter(re.findall(r"\w+", answer.lower())), Counter(re.findall(r"\w+", generated.lower()))
    return sum(min(n, got[w]) for w, n in want.items()) / max(1, sum(want.values()))


def _answer_window(prompt_ids: list[int], answer_ids: list[int]) -> tuple[int, int]:
    """The reference's span: the first window of len(answer) prompt tokens whose token set holds > 90% of the answer's."""
    want = set(answer_ids)
    for i in range(len(prompt_ids)):
        if len(set(prompt_ids[i:i + len(answer_ids)]) & want) / len(want) > 0.9:
            return i, i + len(answer_ids)
    raise AssertionError("answer not found in the prompt")


@torch.no_grad()
def reference_scores(model, tokenizer, trials: list[NiahTrial], budget: int) -> torch.Tensor:
    """(L, H) mean over successful trials of hits / answer tokens, one trial at a time with eager attention weights:
    prefill all but the last prompt token, then one token per step; a hit when a head's top-1 attended position of the
    step's row lies in the answer's span and holds the token the step generates."""
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    kept = []
    for trial in trials:
        ids = tokenizer(trial.prompt, add_special_tokens=False)["input_ids"]
        start, end = _answer_window(ids, tokenizer(trial.answer, add_special_tokens=False)["input_ids"])
        prefix = model(input_ids=torch.tensor([ids[:-1]]), use_cache=True)
        cache, token = prefix.cache, ids[-1]
        score, generated = torch.zeros(n_layers, n_heads, dtype=torch.float64), []
        for _ in range(budget):
            out = model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True, output_attentions=True)
            cache, token = out.cache, int(out.logits[0, -1].argmax())
            generated.append(token)
            for layer, weights in enumerate(out.attentions):
                for head, top in enumerate(weights[0, :, -1].argmax(-1).tolist()):
                    if start <= top < end and ids[top] == token:
                        score[layer, head] += 1 / (end - start)
            if token == tokenizer.eos_token_id:
                break
        if _recall(trial.answer, tokenizer.decode(generated, skip_special_tokens=True)) > 0.5:
            kept.append(score)
    assert kept, "no trial succeeded: the comparison would be vacuous"
    return torch.stack(kept).mean(0)


def test_per_head_scores_equal_the_reference_definition_on_lm_niah():
    from genir_mech.models.loading import load_lm

    gm = load_lm(str(embedded_checkpoint("lm-niah")))
    trials = niah_trials(NiahConfig(lengths=(128, 256, 512), depths=(0.0, 0.5, 1.0), trials_per_cell=2, seed=0, split="test"))
    ours = retrieval_scores(gm, trials, batch_size=8, progress=False)
    implementation = gm.hf_model.config._attn_implementation
    gm.hf_model.set_attn_implementation("eager")
    try:
        reference = reference_scores(gm.hf_model, gm.tokenizer, trials, answer_budget(gm.tokenizer, trials))
    finally:
        gm.hf_model.set_attn_implementation(implementation)
    table = ours.scores.set_index(["layer", "head"]).retrieval_score
    mine = torch.tensor([[table[(l, h)] for h in range(reference.shape[1])] for l in range(reference.shape[0])], dtype=torch.float64)
    torch.testing.assert_close(mine, reference, atol=1e-6, rtol=0)
    assert set(ours.trials.answer_tokens) == {3}  # the three code words, not the ten tokens of the needle
    assert reference.max() > 0.1 and (reference > 0).sum() > 1  # heads score: the comparison is not vacuous


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_planted_head_that_copies_the_whole_answer_scores_one(family):
    gm, vocab = planted_copy_model(family)
    trials = copy_needle_trials(vocab, n=8)
    # The planted model never ends its answer: decode exactly the answer (one token), as a model that stops would.
    result = retrieval_scores(gm, trials, batch_size=4, max_new_tokens=1, progress=False)
    assert result.accuracy == 1.0
    scores = result.scores.set_index(["layer", "head"]).retrieval_score
    assert scores[COPY_HEAD] == pytest.approx(1.0, abs=1e-6)
    assert scores.drop(COPY_HEAD).max() < 0.1
    # Every step that copies from the answer counts, as in the reference code: copying it again scores above 1.
    longer = retrieval_scores(gm, trials, batch_size=4, max_new_tokens=3, progress=False)
    assert longer.scores.set_index(["layer", "head"]).retrieval_score[COPY_HEAD] > 1.5


def test_an_answer_outside_its_needle_is_refused():
    gm, vocab = planted_copy_model("llama")
    trial = copy_needle_trials(vocab, n=1)[0]
    stray = NiahTrial(trial.trial_id, trial.context_length, trial.depth, trial.prompt, vocab[5] + "x", trial.needle, trial.question)
    with pytest.raises(GenIRError, match="is not part of the needle"):
        answer_token_span(gm.tokenizer, stray)

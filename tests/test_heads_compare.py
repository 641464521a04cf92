"""`heads compare`: planted query-reading heads of both architectures are singled out by every score; comparisons are consistent; refusals are one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from genir_mech.errors import GenIRError
from genir_mech.heads.comparison import effect_shares, spearman_ci, sparsity
from genir_mech.heads.head_scores import causal_head_scores, deciding_mask, deciding_positions, head_lens, qr_head_scores
from genir_mech.heads.masking import head_label
from genir_mech.heads.model_scores import HeadScores, effect_sets, masking_conditions, masking_ks
from genir_mech.heads.query_reading import model_task, predicting_attention, query_kind
from genir_mech.patching.pairs import QueryPair, tokenize_pairs
from genir_mech.pipelines.heads_compare import compare_model, comparison_table, genir_question, CompareConfig
from genir_mech.stage_definition import Stage, StageDefinition
from genir_mech.testing import mark_tokens, plant_attention_head, plant_cross_attention_head, tiny_genir, tiny_llama_genir

ROOT = Path(__file__).resolve().parents[1]
PLANTED = (1, 2)
WORDS = ("fikan", "theklaiklom", "zapeivund")


def _ids(gm, *tokens):
    return [gm.tokenizer.convert_tokens_to_ids(t) for t in tokens]


def _planted(arch: str):
    """A model whose planted head reads the query word at a known position and writes docid 11 when that word is `fikan`."""
    if arch == "cross":
        gm = tiny_genir(encoder_layers=2, decoder_layers=3, d_model=32)
        mark_tokens(gm, _ids(gm, WORDS[0], "@DOC_ID_11@"), dim=0, amount=12.0)
        mark_tokens(gm, [gm.decoder_start_id], dim=1, amount=12.0)
        plant_cross_attention_head(gm, *PLANTED, query_dim=1, key_dim=0)
    else:
        gm = tiny_llama_genir(layers=3, num_kv_heads=4)
        mark_tokens(gm, _ids(gm, WORDS[0], "@DOC_ID_11@"), dim=0, amount=12.0)
        mark_tokens(gm, [gm.tokenizer.eos_token_id], dim=1, amount=12.0)  # the predicting (last) position carries the query dimension
        plant_attention_head(gm, *PLANTED, query_dim=1, key_dim=0, copy=True, blind_dims=(0, 1))
    pairs = [QueryPair(f"p{i}", f"{lead} {WORDS[0]}", f"{lead} {other}", "11", "8")
             for i, (lead, other) in enumerate([("who founded", WORDS[1]), ("who founded", WORDS[2]), ("where is", WORDS[1]), ("where is", WORDS[2])])]
    return gm, tokenize_pairs(gm, pairs)


def _best(frame: pd.DataFrame, column: str) -> tuple[int, int]:
    row = frame.loc[frame[column].idxmax()]
    return int(row["layer"]), int(row["head"])


@pytest.mark.parametrize("arch", ["cross", "self"])
def test_every_score_singles_out_the_planted_query_reading_head(arch):
    gm, batch = _planted(arch)
    assert query_kind(gm) == ("cross_attn" if arch == "cross" else "self_attn")
    deciding = deciding_positions(gm, batch)
    word_column = {i: [t for t, tok in enumerate(batch.clean_tokens[i]) if tok == WORDS[0]][0] for i in range(len(batch))}
    for i, pair in enumerate(batch.pairs):  # the patched query word is the one deciding position of every pair
        rows = deciding[(deciding.pair_id == pair.pair_id) & deciding.deciding]
        assert rows.position.tolist() == [word_column[i]]
    qr = qr_head_scores(gm, batch, deciding_mask(batch, deciding))
    assert divmod(int(qr.argmax()), qr.shape[1]) == PLANTED and float(qr.max()) > 0.5
    causal = causal_head_scores(gm, batch, mask="remove")
    assert _best(causal, "patch_effect") == PLANTED and causal.patch_effect.max() > 0.9
    assert _best(causal, "ablation_effect") == PLANTED and causal.ablation_effect.max() > 0.9
    others = causal[(causal["layer"] != PLANTED[0]) | (causal["head"] != PLANTED[1])]
    assert others.patch_effect.abs().max() < 0.1 and others.ablation_effect.abs().max() < 0.1  # the rest of the model moves the docids a little
    # Uniform attention keeps the mean of the head's values (the query word among a few tokens): a smaller loss, still the planted head's alone.
    uniform = causal_head_scores(gm, batch, mask="uniform")
    assert _best(uniform, "ablation_effect") == PLANTED and uniform.ablation_effect.max() > 0.2
    assert uniform.set_index(["layer", "head"]).drop(PLANTED).ablation_effect.abs().max() < 0.05
    lens = head_lens(gm, batch.clean, batch.targets.clean_token)
    assert _best(lens.assign(neg=-lens.target_rank), "neg") == PLANTED
    assert lens.set_index(["layer", "head"]).loc[PLANTED, "target_rank"] == 1


def test_predicting_attention_rows_are_distributions_over_the_query():
    gm, batch = _planted("cross")
    weights = predicting_attention(gm, batch.clean)
    assert weights.shape == (len(batch), gm.n_layers(), gm.adapter.n_heads, batch.width)
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5)


def _head_scores(name: str, seed: int) -> HeadScores:
    """A per-head table of the shape score_heads returns (numbers drawn from a seed)."""
    rng = torch.Generator().manual_seed(seed)
    rows = [{"model": name, "layer": l, "head": h, "rel_depth": (l + 0.5) / 4, "stage": "bridging" if l < 2 else "interaction",
             "patch_effect": float(torch.rand(1, generator=rng)), "ablation_effect": float(torch.rand(1, generator=rng)),
             "docid_share_top10": 0.5, "target_rank": 3.0, "qr_score": float(torch.rand(1, generator=rng)), "retrieval_score": float("nan"),
             "detector": "qr"} for l in range(4) for h in range(4)]
    scores = pd.DataFrame(rows)
    scores["attention_score"] = scores["qr_score"]
    scores["mask"] = "uniform"
    conditions = masking_conditions(scores, masking_ks(16, None), 10, seed)
    masking = pd.DataFrame([{"mask": "uniform", "method": m, "k": k, "draw": d, "heads": head_label(h), "metric": "hits@1",
                             "value": 1.0 - 0.05 * k - (0.01 * d if m == "random" else 0.0)} for m, k, d, h in conditions])
    sets = effect_sets(scores, 2, 20, seed)
    effect = dict(zip(zip(scores["layer"], scores["head"]), scores["patch_effect"]))
    set_effects = pd.DataFrame([{"mask": "uniform", "set": kind, "k": len(h), "draw": d, "heads": head_label(h), "effect": max(effect[x] for x in h)}
                                for kind, d, h in sets])
    stages = StageDefinition((Stage("bridging", (0, 1)), Stage("interaction", (2, 3))))
    return HeadScores(name, "genir", "self_attn", scores, masking, stages, pd.DataFrame(), {"data_hash": "x"}, set_effects)


def test_a_model_compared_with_itself_gives_identical_columns():
    config = CompareConfig(bootstrap=200)
    one, two = _head_scores("a", 0), _head_scores("b", 0)
    table = comparison_table({"a": compare_model(one, config), "b": compare_model(two, config)})
    assert table.loc["a"].equals(table.loc["b"])
    other = comparison_table({"a": compare_model(one, config), "c": compare_model(_head_scores("c", 1), config)})
    assert not other.loc["a"].equals(other.loc["c"])  # the comparison can tell two models apart


def test_effect_shares_come_from_joint_masking_with_an_interval_over_draws():
    result = _head_scores("a", 0)
    shares = effect_shares(result.set_effects)
    effects = result.set_effects.set_index("set")
    random = result.set_effects[result.set_effects["set"] == "random-k"]
    assert shares["mask"] == "uniform" and shares["k"] == 2 and shares["draws"] == 20 and shares["random_draws_distinct"] == random.heads.nunique()
    assert shares["topk_effect_share"] == effects.loc["top-k", "effect"] and shares["all_heads_effect_share"] == effects.loc["all heads", "effect"]
    low, high = shares["random_k_effect_share_ci"]
    assert shares["random_k_effect_share"] == pytest.approx(random.effect.mean()) and low < shares["random_k_effect_share"] < high
    assert not set(shares["topk_heads"]) & {h for heads in random.heads for h in heads.split()}  # random sets come from outside the top-k
    same = result.set_effects.assign(effect=0.5)
    assert effect_shares(same)["random_k_effect_share_ci"] == [0.5, 0.5]


def test_sparsity_and_spearman_on_known_tables():
    scores = _head_scores("a", 0).scores
    scores["patch_effect"] = 0.0
    scores.loc[0, "patch_effect"] = 1.0
    assert sparsity(scores)["causal"] == 1 / len(scores)
    rho = spearman_ci(scores["qr_score"], scores["qr_score"] * 2 + 1, resamples=100)
    assert rho["rho"] == pytest.approx(1.0) and rho["ci"][0] == pytest.approx(1.0)


def test_masking_curves_stop_at_a_third_of_the_heads_and_draw_independent_sets():
    assert masking_ks(8, None) == [1, 2] and masking_ks(32, None) == [1, 2, 4, 8] and masking_ks(8, (1, 2, 4)) == [1, 2]
    scores = _head_scores("a", 0).scores
    conditions = masking_conditions(scores, [2], 10, 0)
    top = [h for m, _, _, h in conditions if m == "top"][0]
    draws = [h for m, _, _, h in conditions if m == "random"]
    assert len(draws) == 10 and len({tuple(d) for d in draws}) > 1 and not {h for d in draws for h in d} & set(top)


def test_the_two_genir_models_question_is_answered_from_the_numbers():
    config = CompareConfig(bootstrap=50)
    a, b = _head_scores("enc-dec", 0), _head_scores("dec-only", 0)
    a.kind = "cross_attn"
    q = genir_question({"enc-dec": compare_model(a, config), "dec-only": compare_model(b, config)})
    assert q["same_relative_depth"] and q["depth_centre_gap"] == 0 and q["bridging_and_interaction"]


def test_a_model_without_a_retrieval_task_is_refused_in_one_line(tmp_path):
    gm = tiny_genir()
    gm.docids = None
    with pytest.raises(GenIRError, match="neither a GenIR model"):
        model_task(gm)
    out = subprocess.run([sys.executable, "-m", "genir_mech.cli", "heads", "compare", "--models", str(ROOT / "checkpoints" / "t5-synth-base"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "neither a GenIR model" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_compare_masks_one_way_per_run():
    import argparse

    from genir_mech.verbs.heads import add_arguments, compare_handler

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(GenIRError, match="one way per run: --mask uniform"):
        compare_handler(parser.parse_args(["compare", "--mask", "both"]))
    assert CompareConfig().mask == "uniform" and CompareConfig().random_draws >= 10


@pytest.mark.parametrize("progress", [False, True])
def test_progress_false_silences_the_helpers_bars_too(progress, monkeypatch, tmp_path):
    """`heads compare --json` (progress=False) prints no bar, not even the ranking of a split deep below score_heads."""
    import genir_mech.pipelines.heads_compare as pipeline
    from genir_mech.progress import bar

    seen = []

    def score_heads(*args, **kwargs):
        seen.append(bar(range(3), desc="ranking").disable)
        raise GenIRError("stop here")

    monkeypatch.setattr(pipeline, "score_heads", score_heads)
    with pytest.raises(GenIRError, match="stop here"):
        pipeline.run_heads_compare({"m": object()}, None, tmp_path / "out", CompareConfig(), progress=progress)
    assert seen == [not progress]


def test_a_model_whose_decoder_cannot_read_the_query_is_refused(monkeypatch):
    gm = tiny_genir()
    monkeypatch.setattr(type(gm.adapter), "kinds", lambda self, side: ("self_attn", "mlp"))
    with pytest.raises(GenIRError, match="no cross-attention"):
        query_kind(gm)


def test_a_missing_default_checkpoint_is_named_in_one_line(tmp_path, monkeypatch):
    import genir_mech.pipelines.heads_compare as hc

    monkeypatch.setattr(hc, "DEFAULT_MODELS", (str(tmp_path / "absent-model"),))
    with pytest.raises(GenIRError, match="absent-model: default model of heads compare is missing"):
        hc.check_models(list(hc.DEFAULT_MODELS), defaults=True)


def test_encoder_decoder_answers_record_cross_attention_and_unmasked_decoding_is_the_same():
    from genir_mech.heads.decoding import seq2seq_greedy_decode
    from genir_mech.heads.masking import masked_greedy_decode, masked_logits
    from genir_mech.heads.prompts import prompt_batch
    from genir_mech.testing import toy_queries

    gm = tiny_genir(decoder_layers=2)
    batch = prompt_batch(gm, toy_queries(gm, 4))
    out = seq2seq_greedy_decode(gm, batch, 3)
    gm.hf_model.set_attn_implementation("eager")
    dec = torch.cat([gm.start_ids(len(batch)), out.tokens[:, :-1]], 1)
    ref = gm.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=dec, output_attentions=True)
    eager = torch.stack([layer.argmax(-1) for layer in ref.cross_attentions], 2).permute(0, 3, 2, 1)  # (B, steps, L, H)
    assert torch.equal(out.top_positions, eager[:, :out.top_positions.shape[1]])
    every = [(l, h) for l in range(2) for h in range(4)]
    for mask in ("uniform", "remove"):
        assert torch.equal(masked_greedy_decode(gm, batch, 3, [], mask, "cross_attn").tokens, out.tokens)
        assert not torch.allclose(masked_logits(gm, batch, every, mask, "cross_attn"), gm.logits(batch))
    assert not torch.equal(masked_greedy_decode(gm, batch, 3, every, "remove", "cross_attn").tokens, out.tokens)


def test_uniform_masking_of_a_cross_attention_head_is_its_query_zeroed():
    from genir_mech.heads.masking import masked_logits
    from genir_mech.models.adapters import module_at
    from genir_mech.models.components import Site
    from genir_mech.testing import toy_queries

    gm = tiny_genir(decoder_layers=2)
    batch = gm.batch(toy_queries(gm, 4))  # right-padded encoder: padding must stay invisible to the uniform head
    layer, head, d = 1, 2, gm.adapter.d_head
    query = module_at(gm.hf_model, gm.adapter.hook(Site("decoder", layer, "cross_attn")).path).q

    def zero(module, args, out):
        out = out.clone()
        out[..., head * d:(head + 1) * d] = 0
        return out

    handle = query.register_forward_hook(zero)
    try:
        by_hand = gm.logits(batch)
    finally:
        handle.remove()
    torch.testing.assert_close(masked_logits(gm, batch, [(layer, head)], "uniform", "cross_attn"), by_hand, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(gm.logits(batch), by_hand)


@pytest.mark.parametrize("mask", ["uniform", "remove"])
def test_a_sets_effect_is_its_joint_masking_not_the_sum_of_its_heads(mask):
    from genir_mech.heads.head_scores import masking_effects
    from genir_mech.heads.masking import masked_logits
    from genir_mech.patching.metrics import logit_diff

    gm, batch = _planted("self")
    pair = [PLANTED, (0, 1)]
    joint, first, second = masking_effects(gm, batch, [pair, [PLANTED], [(0, 1)]], mask)
    clean, corrupted = (logit_diff(gm.logits(b), batch.targets) for b in (batch.clean, batch.corrupted))
    by_hand = 1 - ((logit_diff(masked_logits(gm, batch.clean, pair, mask), batch.targets) - corrupted) / (clean - corrupted)).mean()
    assert joint == pytest.approx(float(by_hand), abs=1e-5)
    assert abs(joint - (first + second)) > 1e-3  # single-head effects do not add up
    causal = causal_head_scores(gm, batch, mask=mask).set_index(["layer", "head"]).ablation_effect
    assert causal[PLANTED] == pytest.approx(first, abs=1e-6) and causal[(0, 1)] == pytest.approx(second, abs=1e-6)


def _niah_trials(gm):
    """Two NIAH trials on the toy vocabulary (same lead-in length, different codes), as the NIAH generator writes them."""
    from genir_mech.data.niah import LEAD_IN, NEEDLE, PROMPT, QUESTION, NiahTrial
    from genir_mech.testing import toy_queries

    words = [w for q in toy_queries(gm, 8) for w in q.split()]
    trials = []
    for i, (entity, code) in enumerate([(words[0], words[1]), (words[2], words[3])]):
        needle = NEEDLE.format(entity=entity, code=code)
        context = f"{' '.join(words[4:9])} . {needle} {' '.join(words[9:13])} ."
        prompt = PROMPT.format(context=context, question=QUESTION.format(entity=entity), lead_in=LEAD_IN.format(entity=entity))
        trials.append(NiahTrial(f"t{i}", 16, 0.5, prompt, code, needle, QUESTION.format(entity=entity)))
    return trials


def test_a_niah_seq2seq_model_with_a_decoder_prefix_reads_the_lead_in_in_its_decoder(tmp_path):
    """A card with prompt_format.decoder_prefix: encoder = prompt up to "answer :" + </s>, decoder = start + lead-in, as trained."""
    from genir_mech.data.niah import split_lead_in
    from genir_mech.heads.decoding import seq2seq_greedy_decode
    from genir_mech.heads.masking import masked_greedy_decode
    from genir_mech.heads.niah_pairs import niah_pair_batch
    from genir_mech.heads.prompts import prompt_batch
    from genir_mech.models.model_card import ModelCard

    gm = tiny_genir(decoder_layers=2)
    gm.path = str(tmp_path)
    trials = _niah_trials(gm)
    prompts = [t.prompt for t in trials]
    assert prompt_batch(gm, prompts).decoder_input_ids is None  # no card: the whole prompt in the encoder, as before
    ModelCard(objective="niah", extra={"prompt_format": {"decoder_prefix": "start + lead-in"}}).write(tmp_path)
    batch = prompt_batch(gm, prompts)
    tok = gm.tokenizer
    for row, mask, dec, prompt in zip(batch.input_ids, batch.attention_mask, batch.decoder_input_ids, prompts):
        encoder_text, lead_in = split_lead_in(prompt)
        assert lead_in and row[mask.bool()].tolist() == tok(encoder_text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert dec.tolist() == [gm.decoder_start_id] + tok(lead_in, add_special_tokens=False)["input_ids"]
    out = seq2seq_greedy_decode(gm, batch, 3)
    dec = batch.decoder_input_ids
    for _ in range(out.tokens.shape[1]):  # reference: plain HF greedy decoding from the same prefix
        logits = gm.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=dec).logits[:, -1]
        dec = torch.cat([dec, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(out.tokens, dec[:, batch.decoder_input_ids.shape[1]:])
    for mask in ("uniform", "remove"):
        assert torch.equal(masked_greedy_decode(gm, batch, 3, [], mask, "cross_attn").tokens, out.tokens)
    pairs = niah_pair_batch(gm, trials)
    assert torch.equal(pairs.clean.decoder_input_ids, pairs.corrupted.decoder_input_ids)
    assert pairs.clean.decoder_input_ids.shape[1] == batch.decoder_input_ids.shape[1]

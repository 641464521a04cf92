"""Retrieval heads: attention rows (recompute == eager), planted copying and query-focused heads found, masking removes a head, bad input."""
from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from genir_mech.data.incontext import DOCUMENT, PROMPT, InContextDocument, InContextExample
from genir_mech.data.niah import NiahTrial
from genir_mech.docids import docid_token
from genir_mech.errors import GenIRError
from genir_mech.heads.decoding import greedy_decode, resolve_attention_path
from genir_mech.heads.masking import masked_greedy_decode, masked_logits, random_control
from genir_mech.heads.prompts import prompt_batch
from genir_mech.heads.qr import detect_qr_heads, evaluate_rankings, qr_rankings, qr_token_scores
from genir_mech.heads.retrieval_score import NoSuccessfulTrialWarning, retrieval_scores
from genir_mech.models.adapters import module_at
from genir_mech.models.components import Site
from genir_mech.models.loading import check_logit_lens, load_genir, load_lm
from genir_mech.testing import (COPY_HEAD, copy_needle_trials, copy_vocabulary, mark_tokens, plant_attention_head, planted_copy_model, tiny_gpt2_genir,
                                tiny_llama_genir, toy_queries)

FACTORIES = {"llama": lambda: tiny_llama_genir(layers=2, num_kv_heads=4), "gpt2": lambda: tiny_gpt2_genir(layers=2)}
PLANTED = COPY_HEAD  # (layer, head) of the planted head


def _vocab(gm):
    return copy_vocabulary(gm)


def _copy_model(name):
    """A planted copying head: PLANTED attends from every position to the marked needle token and writes it to the logits."""
    return planted_copy_model(name)


def _needle_trials(vocab, n=12, seed=0):
    return copy_needle_trials(vocab, n, seed)


@pytest.mark.parametrize("name", FACTORIES)
def test_recompute_and_eager_attention_rows_agree_and_batched_equals_one_by_one(name):
    gm = FACTORIES[name]()
    texts = toy_queries(gm, 5)
    batch = prompt_batch(gm, texts)
    recompute = greedy_decode(gm, batch, 5, attention="recompute")
    eager = greedy_decode(gm, batch, 5, attention="eager")
    plain = greedy_decode(gm, batch, 5)
    assert torch.equal(recompute.tokens, plain.tokens) and torch.equal(eager.tokens, plain.tokens)
    assert torch.equal(recompute.top_positions, eager.top_positions)
    assert recompute.top_positions.float().std() > 0  # heads look at different places: the comparison is not vacuous
    for i, text in enumerate(texts):
        one = greedy_decode(gm, prompt_batch(gm, [text]), 5, attention="recompute")
        steps = one.tokens.shape[1]
        offset = int((batch.attention_mask[i] == 0).sum())
        assert torch.equal(one.tokens[0], recompute.tokens[i, :steps])
        assert torch.equal(one.top_positions[0], recompute.top_positions[i, :steps] - offset)


@pytest.mark.parametrize("name", FACTORIES)
def test_the_retrieval_score_finds_exactly_the_planted_copying_head(name):
    gm, vocab = _copy_model(name)
    result = retrieval_scores(gm, _needle_trials(vocab), batch_size=3, progress=False)
    assert result.accuracy == 1.0
    found = result.scores[result.scores.is_retrieval_head]
    assert list(zip(found.layer, found["head"])) == [PLANTED]
    assert result.ranked_heads()[0] == PLANTED
    eager = retrieval_scores(gm, _needle_trials(vocab), batch_size=8, attention="eager", progress=False)
    torch.testing.assert_close(torch.tensor(eager.scores.retrieval_score.values), torch.tensor(result.scores.retrieval_score.values))


def _qr_examples(vocab, n=6, seed=0):
    rng, marked, query_word, out = random.Random(seed), vocab[0], vocab[1], []
    for i in range(n):
        relevant = rng.randrange(4)
        docs = []
        for k in range(4):
            words = [rng.choice(vocab[2:]) for _ in range(6)]
            if k == relevant:
                words[3] = marked
            docs.append(InContextDocument(str(k), rng.choice(vocab[2:]), " ".join(words)))
        query = f"{rng.choice(vocab[2:])} {query_word} {rng.choice(vocab[2:])}"
        body = " ".join(DOCUMENT.format(docid=docid_token(d.doc_id), title=d.title, text=d.text) for d in docs)
        out.append(InContextExample(f"e{i}", "detection", docs, query, [str(relevant)], PROMPT.format(documents=body, query=query), docid_token(str(relevant))))
    return out


@pytest.mark.parametrize("name", FACTORIES)
def test_qr_detection_finds_exactly_the_planted_query_focused_head(name):
    gm = FACTORIES[name]()
    vocab = _vocab(gm)
    mark_tokens(gm, [gm.tokenizer.convert_tokens_to_ids(vocab[0])], dim=0, amount=6.0)  # the relevant document's token
    mark_tokens(gm, [gm.tokenizer.convert_tokens_to_ids(vocab[1])], dim=2, amount=6.0)  # the query's token
    plant_attention_head(gm, *PLANTED, query_dim=2, key_dim=0, blind_dims=(0, 2))
    examples = _qr_examples(vocab)
    scored = qr_token_scores(gm, examples, batch_size=4, progress=False)
    table = detect_qr_heads(scored, examples, top_k=1)
    assert list(zip(table[table.selected].layer, table[table.selected]["head"])) == [PLANTED]
    metrics = evaluate_rankings({"qr": qr_rankings(scored, examples, [PLANTED])}, {e.example_id: {e.relevant[0]: 1} for e in examples})
    assert metrics.set_index("metric").value["recall@1"] == 1.0
    with pytest.raises(GenIRError, match="labelled split is empty"):
        detect_qr_heads([], [], top_k=1)


def _query_zeroed(gm, layer, head):
    """A hand-written hook that zeroes one head's query states (Wu et al.'s masking): q_proj output, or the query third of GPT-2's c_attn."""
    d = gm.adapter.d_head
    attn = module_at(gm.hf_model, gm.adapter.hook(Site("decoder", layer, "self_attn")).path)
    projection = attn.q_proj if hasattr(attn, "q_proj") else attn.c_attn  # GPT-2: [q | k | v] columns, q first

    def zero(module, args, out):
        out = out.clone()
        out[..., head * d:(head + 1) * d] = 0
        return out

    return projection.register_forward_hook(zero)


MASKED = {**FACTORIES, "llama-gqa": lambda: tiny_llama_genir(layers=2, num_kv_heads=2), "qwen2": lambda: tiny_llama_genir(layers=2, model_type="qwen2")}


@pytest.mark.parametrize("name", MASKED)
def test_masking_a_head_removes_its_output_or_flattens_its_attention_exactly(name):
    gm = MASKED[name]()
    batch = prompt_batch(gm, toy_queries(gm, 4))  # left-padded: padding must stay invisible to a uniform head
    plain = greedy_decode(gm, batch, 4)
    for mask in ("uniform", "remove"):
        assert torch.equal(masked_greedy_decode(gm, batch, 4, [], mask).tokens, plain.tokens)  # nothing masked is the model
    layer, head, d = 1, 1, gm.adapter.d_head
    module = module_at(gm.hf_model, gm.adapter.hook(Site("decoder", layer, "self_attn", "heads")).path)

    def remove(mod, args):
        x = args[0].clone()
        x[..., head * d:(head + 1) * d] = 0
        return (x,)

    for mask, handle in (("remove", lambda: module.register_forward_pre_hook(remove)), ("uniform", lambda: _query_zeroed(gm, layer, head))):
        hook = handle()
        try:
            by_hand, by_hand_logits = greedy_decode(gm, batch, 4), gm.logits(batch)
        finally:
            hook.remove()
        masked = masked_greedy_decode(gm, batch, 4, [(layer, head)], mask).tokens
        assert torch.equal(masked, by_hand.tokens), mask
        torch.testing.assert_close(masked_logits(gm, batch, [(layer, head)], mask), by_hand_logits, atol=1e-5, rtol=1e-5)
        assert not torch.equal(masked, plain.tokens), mask
    assert not torch.allclose(masked_logits(gm, batch, [(0, 2)], "uniform"), masked_logits(gm, batch, [(0, 2)], "remove"))  # two different maskings


@pytest.mark.parametrize("name", FACTORIES)
def test_masking_the_planted_copying_head_breaks_niah_either_way(name):
    gm, vocab = _copy_model(name)
    trials = _needle_trials(vocab, n=4)
    batch = prompt_batch(gm, [t.prompt for t in trials])
    marked = gm.tokenizer.convert_tokens_to_ids(vocab[0])
    for mask in ("uniform", "remove"):
        intact = masked_greedy_decode(gm, batch, 2, [], mask).tokens
        top = masked_greedy_decode(gm, batch, 2, [PLANTED], mask).tokens
        assert (intact[:, 0] == marked).all() and (top[:, 0] != marked).all(), mask


def test_random_controls_are_independent_draws_and_say_when_sets_repeat():
    heads = [(l, h) for l in range(2) for h in range(4)]
    many = random_control(heads, [], k=1, draws=10, seed=0)  # 7 candidates: 7 possible sets for 10 draws
    assert many.top == [(0, 0)] and (0, 0) not in {h for d in many.draws for h in d} and len(many.draws) == 10
    assert many.possible == 7 and many.distinct <= 7 and "7 possible sets" in many.note()
    assert many.draws == random_control(heads, [], k=1, draws=10, seed=0).draws != random_control(heads, [], k=1, draws=10, seed=1).draws
    half = random_control(heads, [], k=4, draws=10, seed=0)  # the other half of 8 heads: one set, drawn every time
    assert half.distinct == 1 and "not a random control" in half.note() and half.record()["random_draws_distinct"] == 1
    wide = random_control([(l, h) for l in range(4) for h in range(8)], [], k=2, draws=10, seed=0)
    assert wide.distinct == 10 and wide.note() is None and "random_k_note" not in wide.record()
    excluded = random_control(heads, [(0, 1), (0, 2)], k=1, draws=5, seed=0)  # other retrieval heads are no candidates
    assert len(excluded.candidates) == 5 and not {(0, 1), (0, 2)} & {h for d in excluded.draws for h in d}
    assert random_control(heads, heads[1:], k=1, draws=5).note().startswith("only 0 candidate heads")


@pytest.mark.parametrize("factory", [tiny_llama_genir, tiny_gpt2_genir])
def test_decoder_only_checkpoints_load_by_path_with_the_lens_self_check(factory):
    gm = factory()
    with tempfile.TemporaryDirectory() as folder:
        gm.hf_model.save_pretrained(folder)
        gm.tokenizer.save_pretrained(folder)
        batch = gm.batch(toy_queries(gm, 3))
        for loaded in (load_lm(folder), load_genir(folder)):  # as a language model, and as a GenIR model (its tokenizer has docids)
            assert loaded.adapter.family == gm.adapter.family and check_logit_lens(loaded) < 1e-4
            torch.testing.assert_close(loaded.logits(batch), gm.logits(batch))


# -- bad input ---------------------------------------------------------------------------------------


def test_no_attention_weights_and_no_recompute_path_is_one_error(monkeypatch):
    gm = tiny_llama_genir(layers=1)

    def no_recompute(site, batch):
        raise GenIRError("no recompute")

    def no_eager(name):
        raise ValueError("eager is not supported")

    monkeypatch.setattr(gm.adapter, "attention", no_recompute)
    monkeypatch.setattr(gm.hf_model, "set_attn_implementation", no_eager)
    with pytest.raises(GenIRError, match="no attention weights available.*no recompute path"):
        resolve_attention_path(gm, "auto")


def test_a_context_longer_than_the_models_positions_is_refused():
    gm = tiny_llama_genir(layers=1)  # 128 positions
    with pytest.raises(GenIRError, match="prompt long: 200 tokens exceed the 128 positions"):
        prompt_batch(gm, [" ".join(["zorblax"] * 200)], names=["long"])


def test_a_needle_that_tokenizes_differently_in_the_haystack_is_refused():
    gm = tiny_gpt2_genir(layers=1)
    trial = NiahTrial("glued", 10, 0.5, "the river flows past zorblaxcity today answer :", "zorblax", "zorblax", "q")
    with pytest.raises(GenIRError, match="glued.*tokenizes differently inside the haystack"):
        retrieval_scores(gm, [trial], progress=False)


def test_no_successful_trial_warns_and_gives_nan_scores_not_an_empty_table():
    gm = tiny_llama_genir(layers=1)
    vocab = _vocab(gm)
    trials = _needle_trials(vocab, n=2)
    trials = [NiahTrial(t.trial_id, t.context_length, t.depth, t.prompt, t.needle, t.needle, t.question) for t in trials]
    with pytest.warns(NoSuccessfulTrialWarning, match="no needle-in-a-haystack trial succeeded"):
        result = retrieval_scores(gm, trials, max_new_tokens=1, progress=False)  # one word of a three-word answer: recall 1/3 at most
    assert len(result.scores) == gm.n_layers() * gm.adapter.n_heads and result.scores.retrieval_score.isna().all()
    assert not result.scores.is_retrieval_head.any()


# -- the verb: bad input is one line, exit code 2 ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-lm")
    gm = tiny_llama_genir(layers=1)
    gm.hf_model.save_pretrained(folder)
    gm.tokenizer.save_pretrained(folder)
    return folder


def _one_line_error(argv, capsys):
    from genir_mech.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in "".join(err), err
    return err[0]


def test_heads_verb_refuses_bad_arguments_and_inputs_in_one_line(tiny_lm_folder, tmp_path, capsys):
    from genir_mech.data.incontext import InContextConfig, incontext_examples, save_incontext

    assert "--lengths" in _one_line_error(["heads", "detect", "--model", str(tiny_lm_folder), "--lengths", "0,128"], capsys)
    assert "--depths" in _one_line_error(["heads", "detect", "--model", str(tiny_lm_folder), "--depths", "0,2"], capsys)
    assert "encoder-decoder" in _one_line_error(["heads", "detect", "--model", str(Path(__file__).resolve().parents[1] / "checkpoints" / "dsi-synth"), "--out", str(tmp_path / "a")], capsys)
    line = _one_line_error(["heads", "detect", "--model", str(tiny_lm_folder), "--lengths", "512", "--depths", "0.5", "--trials-per-cell", "1",
                            "--out", str(tmp_path / "b")], capsys)
    assert "exceed the 128 positions" in line
    data = tmp_path / "data"
    data.mkdir()
    assert "incontext.jsonl: missing" in _one_line_error(["heads", "qr-retrieve", "--model", str(tiny_lm_folder), "--data", str(data), "--out", str(tmp_path / "c")], capsys)
    save_incontext([e for e in incontext_examples(InContextConfig(n_detection=1, n_test=2, n_docs=2)) if e.split == "test"], data / "incontext.jsonl")
    assert "labelled (detection) split is empty" in _one_line_error(["heads", "qr-retrieve", "--model", str(tiny_lm_folder), "--data", str(data), "--out", str(tmp_path / "d")], capsys)
    assert not list(tmp_path.rglob("*.csv"))


def test_the_detect_pipeline_writes_tables_figures_and_a_summary_on_the_planted_model(tmp_path):
    from genir_mech.data.incontext import save_incontext
    from genir_mech.data.niah import save_niah
    from genir_mech.pipelines.heads import HeadsConfig, run_heads_detect

    gm, vocab = _copy_model("llama")
    data = tmp_path / "data"
    data.mkdir()
    save_niah(_needle_trials(vocab, n=6), data / "niah.jsonl")
    save_incontext(_qr_examples(vocab, n=4), data / "incontext.jsonl")
    out = tmp_path / "out"
    summary = run_heads_detect(gm, str(data), out, HeadsConfig(batch_size=3), progress=False)
    assert summary["niah_accuracy"] == 1.0 and summary["n_heads"] == 8 and summary["n_retrieval_heads"] == 1 and summary["top_k"] == 1
    assert summary["masked_heads"] == ["L1H2"] and summary["mask"] == "uniform" and set(summary["masking"]) == {"uniform", "remove"}
    assert summary["random_candidates"] == 7 and summary["random_draws"] == 10 and summary["random_draws_distinct"] <= 7 and "random_k_note" in summary
    for mask, result in summary["masking"].items():
        assert result["mask"] == mask and result["masked_top_k_accuracy"] == 0.0 and result["unmasked_accuracy"] == 1.0
        low, high = result["masked_random_k_accuracy_ci95"]
        assert low <= result["masked_random_k_accuracy"] <= high and len(result["masked_random_k_accuracy_per_draw"]) == 10
    assert summary["masked_top_k_accuracy"] == summary["masking"]["uniform"]["masked_top_k_accuracy"]
    masking = pd.read_csv(out / "masking.csv")
    assert set(masking["mask"]) == {"uniform", "remove"} and masking.groupby("mask").draw.max().tolist() == [9, 9]
    for name in ("retrieval_scores.csv", "niah_trials.csv", "masking.csv", "qr_heads.csv", "COMPLETE.json", "figures/masking_heatmaps.png",
                 "figures/retrieval_scores.png", "figures/qr_scores.png"):
        assert (out / name).is_file(), name
    assert "model_hash" in (out / "retrieval_scores.provenance.json").read_text()
    from genir_mech.pipelines.rendering import redraw

    assert {"retrieval_scores", "qr_scores", "masking_heatmaps"} <= set(redraw(out, tmp_path / "redrawn"))

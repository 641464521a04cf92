"""NIAH and in-context retrieval data (genir_mech.data.niah / incontext), the niah training objective, and checkpoints/lm-niah."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from genir_mech.cli import main
from genir_mech.data.incontext import InContextConfig, entity_name, incontext_examples, incontext_qrels, load_incontext, save_incontext
from genir_mech.data.niah import (NiahConfig, NiahTrial, code_split, count_words, load_niah, needle_token_span, needle_vocabulary,
                                  niah_trials, save_niah)
from genir_mech.data.synthetic import SyntheticConfig, generate_corpus
from genir_mech.docids import docid_token
from genir_mech.errors import GenIRError

ROOT = Path(__file__).resolve().parents[1]
LM_NIAH = ROOT / "checkpoints" / "lm-niah"
CARD = json.loads((LM_NIAH / "model_card.json").read_text()) if (LM_NIAH / "model_card.json").exists() else {}
SMALL = NiahConfig(lengths=(64, 160), depths=(0.0, 0.3, 0.7, 1.0), trials_per_cell=2, seed=3)


@pytest.fixture(scope="module")
def trials():
    return niah_trials(SMALL)


@pytest.fixture(scope="module")
def lm_tokenizer():
    from genir_mech.training.lm_train import lm_tokenizer as build
    return build(SyntheticConfig())


def context_of(trial: NiahTrial) -> str:
    return trial.prompt[: trial.prompt.rindex(" question :")]


# -- NIAH --------------------------------------------------------------------------------------------------------

def test_niah_is_deterministic_for_a_seed_and_differs_across_seeds(trials):
    assert niah_trials(SMALL) == trials
    other = niah_trials(NiahConfig(**{**SMALL.__dict__, "seed": 4}))
    assert [t.prompt for t in other] != [t.prompt for t in trials]
    assert [(t.context_length, t.depth) for t in trials] == [(n, d) for n in SMALL.lengths for d in SMALL.depths for _ in range(2)]


def test_needle_occurs_once_and_states_a_fact_the_filler_lacks(trials):
    vocab = needle_vocabulary(SMALL)
    corpus = generate_corpus(SyntheticConfig(n_docs=1000, seed=0))
    corpus_words = {w for text in corpus.documents.values() for w in text.split()}
    assert not set(vocab.words()) & corpus_words
    for t in trials:
        assert t.prompt.count(t.needle) == 1
        code = t.answer.split()
        entity = re.search(r"code of (\S+) is", t.needle).group(1)
        assert t.needle == f"the access code of {entity} is {t.answer} ."
        assert t.question == f"what is the access code of {entity} ?"
        # the prompt ends with the needle's own lead-in: the answer is a copy of what follows it in the haystack
        assert t.prompt.endswith(f" question : {t.question} answer : the access code of {entity} is")
        assert t.needle == t.prompt[t.prompt.rindex("answer : ") + len("answer : "):] + f" {t.answer} ."
        filler = context_of(t).replace(t.needle, " ").split()
        assert not {entity, *code, "access"} & set(filler), t.trial_id
        assert entity in vocab.test_entities and code_split(tuple(code)) == "test"


def test_train_and_test_needles_never_share_an_entity_or_a_code():
    train = niah_trials(NiahConfig(lengths=(48,), depths=(0.5,), trials_per_cell=40, split="train"))
    test = niah_trials(NiahConfig(lengths=(48,), depths=(0.5,), trials_per_cell=40, split="test"))
    entity = lambda t: t.needle.split()[4]  # noqa: E731
    assert not {entity(t) for t in train} & {entity(t) for t in test}
    assert not {t.answer for t in train} & {t.answer for t in test}


def test_context_fills_its_length_and_the_needle_sits_at_the_requested_depth(trials):
    longest_sentence = 20  # words of the longest synthetic-corpus sentence (with its '.')
    for t in trials:
        context = context_of(t)
        assert t.context_length - 1 <= count_words(context) <= t.context_length
        before = count_words(context[: context.index(t.needle)])
        filler = count_words(context) - count_words(t.needle)
        assert abs(before / filler - t.depth) <= longest_sentence / filler, (t.trial_id, before, filler)
    assert all(context_of(t).startswith(t.needle) for t in trials if t.depth == 0.0)
    assert all(context_of(t).endswith(t.needle) for t in trials if t.depth == 1.0)


def test_lengths_are_counted_in_the_given_tokenizer(lm_tokenizer):
    for t in niah_trials(NiahConfig(lengths=(100,), depths=(0.5,), trials_per_cell=3), lm_tokenizer):
        assert len(lm_tokenizer(context_of(t))["input_ids"]) <= 100


def test_needle_token_span_holds_exactly_the_needle_tokens(trials, lm_tokenizer):
    for t in trials:
        start, end = needle_token_span(lm_tokenizer, t)
        ids = lm_tokenizer(t.prompt)["input_ids"]
        assert ids[start:end] == lm_tokenizer(t.needle, add_special_tokens=False)["input_ids"]
        assert lm_tokenizer.decode(ids[start:end]) == t.needle


def test_needle_token_span_refuses_a_needle_that_tokenizes_differently_in_the_haystack(trials, lm_tokenizer):
    t = trials[3]
    glued = NiahTrial(t.trial_id, t.context_length, t.depth, t.prompt.replace(" " + t.needle, "xyz" + t.needle), t.answer, t.needle, t.question)
    with pytest.raises(GenIRError, match=r"tokenizes differently inside the haystack \(token \d+ \('\w*xyzthe'\) crosses"):
        needle_token_span(lm_tokenizer, glued)
    twice = NiahTrial(t.trial_id, t.context_length, t.depth, t.prompt + " " + t.needle, t.answer, t.needle, t.question)
    with pytest.raises(GenIRError, match="occurs 2 times"):
        needle_token_span(lm_tokenizer, twice)


def test_niah_files_round_trip_and_bad_lines_name_file_and_line(trials, tmp_path):
    path = tmp_path / "niah.jsonl"
    save_niah(trials, path)
    assert load_niah(path) == trials
    rows = path.read_text().splitlines()
    bad = json.loads(rows[1])
    bad["depth"] = "deep"
    path.write_text("\n".join([rows[0], json.dumps(bad)]) + "\n")
    with pytest.raises(GenIRError, match=r"niah.jsonl, line 2: field 'depth' must be float"):
        load_niah(path)
    bad = json.loads(rows[1])
    del bad["needle"]
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(GenIRError, match="line 1: missing field.*needle"):
        load_niah(path)


@pytest.mark.parametrize("change,message", [
    ({"lengths": (8,)}, "at least 16 tokens"), ({"depths": (1.5,)}, "shares between 0 and 1"), ({"split": "dev"}, "split must be one of"),
    ({"trials_per_cell": 0}, "trials_per_cell must be at least 1"),
])
def test_bad_niah_configs_are_refused(change, message):
    with pytest.raises(GenIRError, match=message):
        niah_trials(NiahConfig(**change))


# -- in-context retrieval ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples():
    return incontext_examples(InContextConfig(n_train=20, n_detection=10, n_test=20, n_docs=6, seed=2))


def test_incontext_is_deterministic_and_its_qrels_match_the_prompt(examples):
    assert incontext_examples(InContextConfig(n_train=20, n_detection=10, n_test=20, n_docs=6, seed=2)) == examples
    corpus = generate_corpus(SyntheticConfig())
    qrels = incontext_qrels(examples)
    for ex in examples:
        ids = [d.doc_id for d in ex.documents]
        assert len(ex.documents) == 6 and len(set(ids)) == 6
        assert qrels[ex.example_id] == {ex.relevant[0]: 1} and ex.answer == docid_token(ex.relevant[0])
        relevant = next(d for d in ex.documents if d.doc_id == ex.relevant[0])
        corpus_id = ex.corpus_doc_ids[ids.index(relevant.doc_id)]
        assert corpus.documents[corpus_id] == relevant.text and entity_name(relevant.text) == relevant.title
        # the query names something (the entity or its founder) of the relevant document and of no other in the prompt
        others = [d for d in ex.documents if d is not relevant]
        assert {w for w in ex.query.split() if w in relevant.text.split() and all(w not in d.text.split() for d in others)}, ex.query
        for d in ex.documents:
            assert f"{docid_token(d.doc_id)} title : {d.title} text : {d.text}" in ex.prompt
        assert ex.prompt.endswith(f"question : {ex.query} answer :")


def test_incontext_splits_ask_about_disjoint_documents_with_their_own_templates(examples):
    by_split = {s: {ex.corpus_doc_ids[[d.doc_id for d in ex.documents].index(ex.relevant[0])] for ex in examples if ex.split == s}
                for s in ("train", "detection", "test")}
    assert all(by_split.values())
    assert not by_split["train"] & by_split["test"] and not by_split["detection"] & by_split["test"] and not by_split["train"] & by_split["detection"]


def test_incontext_files_round_trip(examples, tmp_path):
    save_incontext(examples, tmp_path / "incontext.jsonl")
    assert load_incontext(tmp_path / "incontext.jsonl") == examples


# -- command line ----------------------------------------------------------------------------------------------

def test_data_verb_writes_niah_and_incontext_files_and_keeps_the_corpus_default(tmp_path, capsys):
    assert main(["data", "niah", "--out", str(tmp_path / "n"), "--lengths", "64,160", "--depths", "0,0.3,0.7,1", "--seed", "3", "--json"]) == 0
    assert load_niah(tmp_path / "n" / "niah.jsonl") == niah_trials(SMALL)
    assert main(["data", "incontext", "--out", str(tmp_path / "i"), "--n-test", "4", "--n-detection", "2", "--n-docs", "5"]) == 0
    assert [ex.split for ex in load_incontext(tmp_path / "i" / "incontext.jsonl")] == ["detection"] * 2 + ["test"] * 4
    assert main(["data", "--data", "synthetic:n_docs=30,seed=1", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "documents.jsonl").exists()
    capsys.readouterr()


@pytest.mark.parametrize("argv,expected", [
    ("data niah --out {out} --depths 0,2", "--depths: must be between 0 and 1, got 2"),
    ("data niah --out {out} --lengths 0", "--lengths: must be a positive integer, got 0"),
    ("data niah --out {out} --lengths 8", "lengths must be context lengths of at least 16 tokens"),
    ("data niah --out {out} --tokenizer /no/such/tok", "/no/such/tok: no such tokenizer directory"),
    ("data niah --out {out} --data {out}", "must be a 'synthetic:...' spec"),
    ("data incontext --out {out} --n-docs 1", "n_docs (documents per prompt) must be at least 2"),
    ("data incontext --out {out} --n-docs 20 --id-pool 10", "id_pool 10 is smaller than n_docs 20"),
    ("data fish --out {out}", "invalid choice: 'fish'"),
    ("train --objective niah --out {out} --niah-lengths 128,x", "--niah-lengths: expected a positive integer, got 'x'"),
    ("train --objective niah --out {out} --encoder-layers 2", "--encoder-layers is a shape option of the T5 (--arch t5) models"),
    ("train --objective dsi --out {out} --num-kv-heads 2", "--num-kv-heads is a shape option of the Llama (--arch llama) models"),
    ("train --objective niah --out {out} --num-heads 3 --num-kv-heads 2", "d_model 64 is not divisible by num_heads 3"),
    ("train --objective niah --out {out} --base {out}", "no config.json there"),
    ("train --objective niah --out {out} --base checkpoints/dsi-synth", "objective niah continues decoder-only Llama checkpoints"),
    ("train --objective niah --out {out} --tokenizer checkpoints/dsi-synth", "--tokenizer cannot be used with it"),
])
def test_bad_arguments_are_one_line_errors(argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "o").mkdir()
    code = main([a.format(out=tmp_path / "o") for a in argv.split()])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert expected in err[0], err


# -- training ----------------------------------------------------------------------------------------------------

TINY_LM = ["--objective", "niah", "--d-model", "16", "--d-ff", "32", "--num-heads", "2", "--num-kv-heads", "1", "--layers", "1",
           "--max-positions", "128", "--niah-lengths", "32", "--incontext-docs", "2", "--examples-per-epoch", "8", "--batch-size", "4",
           "--warmup-steps", "1"]


def test_niah_objective_trains_resumes_and_writes_a_decoder_only_card(tmp_path, capsys):
    out = str(tmp_path / "lm")
    assert main(["train", "--out", out, "--epochs", "1", *TINY_LM]) == 0
    assert main(["train", "--out", out, "--epochs", "2", *TINY_LM]) == 0
    assert "resuming" in capsys.readouterr().out
    card = json.loads((tmp_path / "lm" / "model_card.json").read_text())
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert card["architecture"] == "decoder-only" and card["objective"] == "niah" and "niah_prompt" in card["prompt_format"]
    assert set(card["metrics"]["niah_test"]["by_length_depth"]["32"]) == {"0", "0.25", "0.5", "0.75", "1"}
    assert {"detection", "test"} <= set(card["metrics"]["incontext"])
    assert "| 32 |" in (tmp_path / "lm" / "niah_accuracy.md").read_text()
    # other mixture arguments are refused, naming what differs; the same command again does nothing
    assert main(["train", "--out", out, "--epochs", "2", *TINY_LM[:-2], "--warmup-steps", "1", "--incontext-share", "0.9"]) == 2
    assert "incontext_share" in capsys.readouterr().err
    assert main(["train", "--out", out, "--epochs", "2", *TINY_LM]) == 0
    assert "nothing to do" in capsys.readouterr().out
    from genir_mech.models.loading import load_genir
    gm = load_genir(out)  # the self-check (logit lens of the final residual == logits) runs on load
    assert gm.adapter.family == "llama" and gm.adapter.sides == ("decoder",) and len(gm.docids) == 100


def test_answer_loss_equals_the_models_own_loss_on_answer_labels(lm_tokenizer):
    from genir_mech.training.architecture import LlamaShape
    from genir_mech.training.lm_objectives import AnswerLoss, LMTask, lm_examples
    from genir_mech.training.loop import collate
    torch.manual_seed(0)
    model = LlamaShape(d_model=16, d_ff=32, num_heads=2, num_kv_heads=1, layers=1, max_positions=128).build(lm_tokenizer)
    examples = lm_examples(LMTask(niah_lengths=(32,), incontext_docs=(2,), examples_per_epoch=6), lm_tokenizer, SyntheticConfig(), 0, 0, 128)
    assert all(sum(y != -100 for y in labels) in (2, 4) for _, labels in examples)  # docid + </s>, or 3 code words + </s>
    batch = collate(examples, lm_tokenizer.pad_token_id)
    assert torch.allclose(AnswerLoss(model)(**batch).loss, model(**batch).loss, atol=1e-5)


# -- the committed checkpoint ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm_niah():
    from genir_mech.models.loading import load_genir
    return load_genir(str(LM_NIAH))


def greedy_answers(gm, prompts: list[str], max_new_tokens: int = 5) -> list[str]:
    tok = gm.tokenizer
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = gm.hf_model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return [tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=False).split("</s>")[0].strip() for row in out]


def held_out_trials(card: dict) -> list[NiahTrial]:
    # a fresh draw of held-out needles (another seed than the card's grid) at the longest trained length
    return niah_trials(NiahConfig(lengths=(max(card["task"]["niah_lengths"]),), depths=(0.0, 0.5, 1.0), trials_per_cell=4, seed=7))


def test_lm_niah_is_a_decoder_only_checkpoint_whose_reported_accuracy_is_greedy_decoding(lm_niah):
    from genir_mech.training.lm_objectives import answer_correct
    assert CARD["architecture"] == "decoder-only" and lm_niah.adapter.sides == ("decoder",)
    trials = held_out_trials(CARD)
    answers = greedy_answers(lm_niah, [t.prompt for t in trials])
    # teacher-forced exact match (what training reports) agrees with greedy decoding trial by trial
    assert answer_correct(lm_niah.hf_model, lm_niah.tokenizer, [t.prompt for t in trials], [t.answer for t in trials]) == \
        [a == t.answer for a, t in zip(answers, trials)]


def test_lm_niah_answers_held_out_needles_and_in_context_queries(lm_niah):
    trials = held_out_trials(CARD)
    answers = greedy_answers(lm_niah, [t.prompt for t in trials])
    assert sum(a == t.answer for a, t in zip(answers, trials)) >= 0.9 * len(trials), list(zip(answers, [t.answer for t in trials]))
    examples = incontext_examples(InContextConfig(n_detection=0, n_test=8, seed=7, n_docs=max(CARD["task"]["incontext_docs"])))
    answers = greedy_answers(lm_niah, [e.prompt for e in examples], max_new_tokens=2)
    assert sum(a == e.answer for a, e in zip(answers, examples)) >= CARD["metrics"]["incontext"]["test"]["accuracy"] * len(examples) - 3

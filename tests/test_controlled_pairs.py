"""The controlled-pair objectives of issue 13: NIAH on a T5 (`--objective niah --arch t5`) and DSI on a decoder-only
Llama (`--objective dsi --arch llama`), trained tiny here; and the committed t5-niah / lm-dsi-synth checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genir_mech.cli import main
from genir_mech.data.synthetic import SyntheticConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_T5_NIAH = ["--objective", "niah", "--arch", "t5", "--d-model", "16", "--d-ff", "32", "--num-heads", "2", "--encoder-layers", "1",
                "--decoder-layers", "1", "--dropout", "0", "--niah-lengths", "32", "--incontext-docs", "2", "--examples-per-epoch", "8",
                "--batch-size", "4", "--warmup-steps", "1"]
TINY_LM_DSI = ["--objective", "dsi", "--arch", "llama", "--data", "synthetic:n_docs=20,seed=0", "--d-model", "32", "--d-ff", "64",
               "--num-heads", "4", "--num-kv-heads", "2", "--layers", "2", "--max-positions", "96", "--batch-size", "16",
               "--warmup-steps", "2", "--lr", "3e-3"]


# -- the T5 niah objective --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def t5_niah_tokenizer():
    from genir_mech.training.lm_train import lm_tokenizer
    return lm_tokenizer(SyntheticConfig(), encoder_decoder=True)


def test_t5_niah_loss_is_on_the_answer_tokens_only(t5_niah_tokenizer):
    from genir_mech.data.niah import LEAD_IN, split_lead_in
    from genir_mech.training.architecture import T5Shape
    from genir_mech.training.lm_objectives import LMTask, encode_seq2seq_example, task_prompts, lm_examples
    from genir_mech.training.loop import collate
    tok = t5_niah_tokenizer
    task = LMTask(niah_lengths=(32,), incontext_docs=(2,), examples_per_epoch=6, incontext_share=0.5)
    pairs = task_prompts(task, SyntheticConfig(), 0 * 100_003 + 0, 6)
    examples = lm_examples(task, tok, SyntheticConfig(), 0, 0, None, encode_seq2seq_example)
    kinds = set()
    for (prompt, answer), (encoder_ids, labels, decoder_ids) in zip(pairs, examples):
        encoder_text, lead_in = split_lead_in(prompt)
        kinds.add(bool(lead_in))
        # a NIAH prompt's trailing lead-in leaves the encoder for the decoder prefix; an in-context prompt has none
        assert (encoder_text + " " + lead_in if lead_in else encoder_text) == prompt
        assert encoder_text.endswith("answer :") and (not lead_in or lead_in.split()[:4] == LEAD_IN.split()[:4])
        assert encoder_ids == tok(encoder_text)["input_ids"] and encoder_ids[-1] == tok.eos_token_id
        prefix = tok(lead_in, add_special_tokens=False)["input_ids"] if lead_in else []
        # decoder: start token, the lead-in, the answer (teacher-forced); labels: -100 over the lead-in, then answer + </s>
        assert decoder_ids == [tok.pad_token_id] + prefix + labels[len(prefix):-1] and len(decoder_ids) == len(labels)
        assert labels[:len(prefix)] == [-100] * len(prefix)
        assert tok.decode(labels[len(prefix):-1]) == answer and labels[-1] == tok.eos_token_id
    assert kinds == {True, False}
    torch.manual_seed(0)
    model = T5Shape(d_model=16, d_ff=32, num_heads=2, encoder_layers=1, decoder_layers=1, dropout=0.0).build(tok).eval()
    batch = collate(examples, tok.pad_token_id)
    logits = model(**batch).logits
    answer = batch["labels"] != -100
    by_hand = torch.nn.functional.cross_entropy(logits[answer], batch["labels"][answer])
    assert torch.allclose(model(**batch).loss, by_hand, atol=1e-6)
    # every answer token, and no lead-in or padding token, is learned
    assert int(answer.sum()) == sum(len([y for y in ys if y != -100]) for _, ys, _ in examples)
    # right padding of the decoder changes no scored position: one example alone gives the same logits
    for i in range(len(examples)):
        alone = model(**collate([examples[i]], tok.pad_token_id)).logits[0]
        assert torch.allclose(logits[i, : len(alone)], alone, atol=1e-5)


def test_t5_niah_trains_loads_and_reports_greedy_accuracy(tmp_path, capsys):
    from genir_mech.data.niah import LEAD_IN, NiahConfig, niah_trials, split_lead_in
    from genir_mech.models.loading import load_genir
    from genir_mech.training.lm_objectives import answer_correct
    out = str(tmp_path / "t5")
    assert main(["train", "--out", out, "--epochs", "1", *TINY_T5_NIAH]) == 0
    card = json.loads((tmp_path / "t5" / "model_card.json").read_text())
    assert card["architecture"] == "encoder-decoder" and card["arch"] == "t5" and card["objective"] == "niah"
    fmt = card["prompt_format"]
    assert "encoder_input" in fmt and fmt["niah_prompt"].endswith("is") and fmt["niah_encoder_prompt"].endswith("answer :")
    assert fmt["niah_prompt"] == fmt["niah_encoder_prompt"] + " " + LEAD_IN and LEAD_IN in fmt["decoder_prefix"]
    assert "| 32 |" in (tmp_path / "t5" / "niah_accuracy.md").read_text()
    # the same command resumes nothing; a Llama run into the same folder is refused, naming the architecture
    assert main(["train", "--out", out, "--epochs", "1", *TINY_T5_NIAH]) == 0 and "nothing to do" in capsys.readouterr().out
    gm = load_genir(out)  # self-check: the lens of the final decoder residual reproduces the logits
    assert gm.adapter.family == "t5" and gm.adapter.sides == ("encoder", "decoder") and len(gm.docids) == 100
    trials = niah_trials(NiahConfig(lengths=(32,), depths=(0.0, 1.0), trials_per_cell=3, seed=5))
    encoder_texts, lead_ins = zip(*(split_lead_in(t.prompt) for t in trials))
    enc = gm.tokenizer(list(encoder_texts), return_tensors="pt", padding=True)
    # the decoder prefix the card describes: the start token, then the lead-in (one length: entities are one word)
    prefix = [[gm.hf_model.config.decoder_start_token_id] + gm.tokenizer(lead, add_special_tokens=False)["input_ids"] for lead in lead_ins]
    assert len({len(p) for p in prefix}) == 1
    with torch.no_grad():
        generated = gm.hf_model.generate(**enc, decoder_input_ids=torch.tensor(prefix), max_new_tokens=5, do_sample=False)
    new_tokens = generated[:, len(prefix[0]):]
    greedy = [gm.tokenizer.decode(row, skip_special_tokens=False).replace("<pad>", "").split("</s>")[0].strip() for row in new_tokens]
    # teacher-forced exact match (what training reports) is greedy decoding after the prefix, trial by trial
    assert answer_correct(gm.hf_model, gm.tokenizer, [t.prompt for t in trials], [t.answer for t in trials]) == [g == t.answer for g, t in zip(greedy, trials)]


# -- the decoder-only dsi objective -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lm_dsi(tmp_path_factory):
    out = tmp_path_factory.mktemp("lmdsi") / "m"
    assert main(["train", "--out", str(out), "--epochs", "3", *TINY_LM_DSI]) == 0
    return out


def test_lm_dsi_prompt_is_built_by_the_tokenizer_and_the_label_is_the_docid_after_it(lm_dsi):
    from genir_mech.data.loaders import load_dataset
    from genir_mech.docids import AtomicDocids
    from genir_mech.models.loading import load_genir
    from genir_mech.training.lm_dsi import PROMPT, lm_dsi_examples
    card = json.loads((lm_dsi / "model_card.json").read_text())
    fmt = card["prompt_format"]
    assert card["architecture"] == "decoder-only" and card["arch"] == "llama" and fmt["template"] == PROMPT
    gm = load_genir(str(lm_dsi))
    ds = load_dataset("synthetic:n_docs=20,seed=0")
    query = ds.split("test")[0].text.lower()  # words of the corpus (the tokenizer lower-cases)
    row = gm.token_rows([query])[0]
    words = gm.tokenizer.convert_ids_to_tokens(row)
    first, from_end = fmt["query_tokens"]["first"], fmt["query_tokens"]["last_exclusive_from_end"]
    assert " ".join(words) == PROMPT.format(query=" ".join(gm.tokenizer.tokenize(query)))  # "query : <query words> docid :"
    assert row[first:len(row) - from_end] == gm.tokenizer(query, add_special_tokens=False)["input_ids"]
    # the template spelled out and read without the post-processor is the same prompt (how heads code can rebuild it)
    assert gm.tokenizer(PROMPT.format(query=query), add_special_tokens=False)["input_ids"] == row
    examples = lm_dsi_examples(ds, gm.tokenizer, AtomicDocids.detect(gm.tokenizer), 0, 0, 0.2)
    train = ds.split("train")
    assert len(examples) == sum(len(ds.qrels[q.query_id]) for q in train) + max(len(ds.documents), round(0.2 * len(train)))
    for ids, labels in examples:
        # one label, on the last position: the docid token that follows "docid :"
        assert labels[:-1] == [-100] * (len(ids) - 1) and gm.docids.doc_id(labels[-1]) is not None
        assert gm.tokenizer.convert_ids_to_tokens(ids[-3:-1]) == ["docid", ":"]


def test_lm_dsi_round_trips_through_load_and_the_scorer(lm_dsi, capsys):
    from genir_mech.models.loading import load_genir
    from genir_mech.retrieval import evaluate, scorer_for
    from genir_mech.data.loaders import load_dataset
    card = json.loads((lm_dsi / "model_card.json").read_text())
    gm = load_genir(str(lm_dsi))
    assert gm.adapter.family == "llama" and gm.adapter.sides == ("decoder",) and len(gm.docids) == 20
    texts = [q.text for q in load_dataset("synthetic:n_docs=20,seed=0").split("test")[:6]]
    scorer = scorer_for(gm)
    batched = scorer.score(gm, gm.batch(texts))
    one_by_one = torch.cat([scorer.score(gm, gm.batch([t])) for t in texts])
    assert batched.shape == (6, 20) and torch.allclose(batched, one_by_one, atol=1e-5)  # left padding changes no score
    # the eval verb, the card and a fresh evaluation agree
    metrics, _ = evaluate(gm, load_dataset(card["data"]), "test")
    assert metrics["hits@1"] == card["metrics"]["test"]["hits@1"]
    assert main(["eval", "--model", str(lm_dsi), "--split", "test", "--out", str(lm_dsi.parent / "eval"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["hits@1"] == card["metrics"]["test"]["hits@1"] and printed["mrr"] == pytest.approx(card["metrics"]["test"]["mrr"])


def test_decoder_analyses_run_on_a_decoder_only_dsi_model(lm_dsi, capsys):
    for verb in ("contributions", "lens"):
        argv = [verb, "--model", str(lm_dsi), "--split", "train", "--max-queries", "4", "--out", str(lm_dsi.parent / verb), "--json"]
        assert main(argv) == 0, capsys.readouterr().err
        assert (lm_dsi.parent / verb / "COMPLETE.json").exists()


# -- bad arguments ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    ("train --objective dsi --arch llama --init minilm --out {out}", "drop --arch llama"),
    ("train --objective dsi --arch llama --encoder-layers 2 --out {out}", "--encoder-layers is a shape option of the T5 (--arch t5) models"),
    ("train --objective niah --arch t5 --num-kv-heads 2 --out {out}", "--num-kv-heads is a shape option of the Llama (--arch llama) models"),
    ("train --objective span --arch llama --out {out}", "objective span trains encoder-decoder T5 models only"),
    ("train --objective dsi --arch llama --tokenizer checkpoints/dsi-synth --out {out}", "--arch llama builds its own word-level prompt tokenizer"),
    ("train --objective dsi --arch llama --base checkpoints/dsi-synth --out {out}", "continues decoder-only Llama checkpoints"),
    ("train --objective niah --arch t5 --base checkpoints/lm-niah --out {out}", "train continues encoder-decoder T5 checkpoints only"),
    ("train --objective dsi --arch gpt --out {out}", "invalid choice: 'gpt'"),
])
def test_bad_architecture_arguments_are_one_line_errors(argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = main([a.format(out=tmp_path / "o") for a in argv.split()])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert expected in err[0], err


def test_the_verbs_architectures_are_the_trainers():
    from genir_mech.training.train import ARCHS, DEFAULT_ARCH, OBJECTIVES
    from genir_mech.verbs.train import ARCHS as VERB_ARCHS
    assert VERB_ARCHS == ARCHS and set(DEFAULT_ARCH) == set(OBJECTIVES)

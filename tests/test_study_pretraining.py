"""The pretraining study (issue 14): the subword tokenizer option, the study pipeline on tiny models, its bad input."""
from __future__ import annotations

import json

import pytest
import torch

from genir_mech.cli import main
from genir_mech.data.loaders import load_dataset
from genir_mech.docids import docid_token
from genir_mech.models.model_card import ModelCard
from genir_mech.pipelines.study_pretraining import MODELS, StudyConfig, StudyModel, entity_names, pieces_per_entity, run_study
from genir_mech.testing import tiny_bert2bert_genir
from genir_mech.training.architecture import T5Shape
from genir_mech.training.loop import LoopConfig
from genir_mech.training.tokenizer import build_tokenizer
from genir_mech.training.train import TrainRequest

TINY_DATA = "synthetic:n_docs=20,seed=0,n_pairs=16"
UNSEEN_NAME = "zoubrakelith"  # made up, not a name of the corpus


@pytest.fixture(scope="module")
def corpus():
    ds = load_dataset("synthetic:n_docs=200,seed=0")
    return ds, list(ds.documents.values()) + [q.text for q in ds.queries]


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_subword_tokenizer_splits_unseen_names_and_keeps_docids_atomic(kind, corpus):
    ds, texts = corpus
    tok = build_tokenizer(texts, ds.documents, kind=kind, vocab_size=300)
    assert UNSEEN_NAME not in " ".join(texts)
    assert len(tok.tokenize(UNSEEN_NAME)) > 1
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)  # T5's conventions, as the word-level one
    doc = sorted(ds.documents)[7]
    ids = tok(f"where is {UNSEEN_NAME} {docid_token(doc)}")["input_ids"]
    assert tok.convert_tokens_to_ids(docid_token(doc)) in ids  # one token, not pieces of it
    assert tok.decode(tok(f"where is {UNSEEN_NAME}")["input_ids"], skip_special_tokens=True) == f"where is {UNSEEN_NAME}"
    # the corpus's own entity names split too (word-level: one token each)
    names = entity_names(ds)
    assert len(names) == len(ds.documents)
    assert pieces_per_entity(tok, names) > 1.5
    assert pieces_per_entity(build_tokenizer(texts, ds.documents), names) == 1.0


def test_subword_tokenizer_option_is_refused_where_it_cannot_apply(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "x"), "--data", TINY_DATA, "--init", "minilm", "--tokenizer-kind", "bpe"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--tokenizer-kind bpe" in err[0], err


def _tiny_specs(tmp_path):
    """The study's four names on tiny models: three T5s trained for one epoch by the study itself, a saved tiny BERT2BERT."""
    shape = T5Shape(d_model=32, d_ff=64, num_heads=4, encoder_layers=1, decoder_layers=2, dropout=0.0)
    loop = LoopConfig(epochs=1, batch_size=128, warmup_steps=0, patience=1)

    def req(out, objective="dsi", **kw):
        return TrainRequest(TINY_DATA, str(tmp_path / out), objective, shape=shape, loop=loop, **kw)

    trained, init = tiny_bert2bert_genir(decoder_layers=2), tiny_bert2bert_genir(decoder_layers=2)
    with torch.no_grad():
        for p in init.hf_model.parameters():
            p.mul_(0.5)  # another model with the same tokenizer: the "un-fine-tuned" one
    for name, gm in (("b2b", trained), ("b2b-init", init)):
        gm.hf_model.save_pretrained(tmp_path / name)
        gm.tokenizer.save_pretrained(tmp_path / name)
    ModelCard(objective="dsi", data=TINY_DATA).write(tmp_path / "b2b")
    return {
        "t5-scratch": StudyModel("t5-scratch", (req("scratch"),), "tiny T5 from scratch"),
        "t5-span": StudyModel("t5-span", (req("span-base", "span"), req("span", base=str(tmp_path / "span-base"))), "tiny T5, span base"),
        "bert2bert-minilm": StudyModel("bert2bert-minilm", (), "tiny BERT2BERT", initial=str(tmp_path / "b2b-init"),
                                       checkpoint=str(tmp_path / "b2b"), from_pretrained=True),
        "t5-span-subword": StudyModel("t5-span-subword", (req("sub-base", "span", tokenizer_kind="bpe", vocab_size=150),
                                                          req("sub", base=str(tmp_path / "sub-base"))), "tiny T5, span base, BPE"),
    }


def test_study_on_tiny_models_writes_the_summary_figure_and_table(tmp_path):
    specs = _tiny_specs(tmp_path)
    out = tmp_path / "study"
    config = StudyConfig(data=TINY_DATA, max_queries=8, bootstrap=2, stage_args={"ablation": False})
    summary = run_study(tmp_path, out, config, progress=False, specs=specs)
    written = json.loads((out / "summary.json").read_text())
    assert list(written["models"]) == list(MODELS)
    for name, r in written["models"].items():
        for key in ("hits@1", "n_stages", "stage_spans", "stage_names", "epochs", "train_minutes", "pieces_per_entity"):
            assert key in r, (name, key)
        assert 0.0 <= r["hits@1"] <= 1.0
        if r["n_stages"] is not None:  # a model with too few correct queries says why instead
            assert len(r["stage_spans"]) == len(r["stage_names"]) == r["n_stages"]
            assert r["stage_spans"][0][0] == 0 and r["stage_spans"][-1][1] == r["decoder_layers"] - 1
        else:
            assert "correct queries" in r["analysis_error"]
    assert written["models"]["t5-scratch"]["epochs"] == 1 and written["models"]["t5-scratch"]["pretrained"] is False
    assert written["models"]["t5-span-subword"]["pieces_per_entity"] > written["models"]["t5-span"]["pieces_per_entity"] == 1.0
    for f in ("study_profiles.png", "study_profiles.pdf", "stages_vs_paper.md", "stages_vs_paper.tex", "SUMMARY.md", "numbers.tex"):
        assert (out / f).stat().st_size > 0, f
    table = (out / "stages_vs_paper.md").read_text()
    assert "T5-large (paper, NQ10k)" in table and "92.9" in table  # the paper's rows, from analyses/paper_reference.py
    assert "Did pretraining produce a priming stage?" in (out / "SUMMARY.md").read_text()
    assert "\\newcommand{\\gmStudyScratchHitsOne}" in (out / "numbers.tex").read_text()
    # a second run reuses every model's analyses (the finished trainings are no-ops)
    again = run_study(tmp_path, out, config, progress=False, specs=specs)
    assert {n: r["hits@1"] for n, r in again["models"].items()} == {n: r["hits@1"] for n, r in summary["models"].items()}


@pytest.mark.parametrize("argv, expected", [
    (["study", "pretraining", "--models", "t5-scratch,t5-large"], "unknown study models 't5-large'"),
    (["study", "pretraining", "--models-dir", "{tmp}/no-such-dir"], "no-such-dir: no such directory"),
    (["study", "pretraining", "--models-dir", "{tmp}", "--no-train", "--models", "t5-scratch", "--out", "{tmp}/out"], "t5-scratch needs"),
    (["study", "pretrain"], "invalid choice: 'pretrain'"),
    (["study", "pretraining", "--snapshot", "t5-xl"], "unknown study models 't5-xl'"),
    (["study", "pretraining", "--models-dir", "{tmp}", "--models", "t5-scratch", "--snapshot", "t5-scratch", "--out", "{tmp}/out"], "no resume state"),
])
def test_study_bad_input_is_one_line(argv, expected, tmp_path, capsys):
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("genir-mech study: error: "), err
    assert expected in err[0], err
    assert not (tmp_path / "out" / "summary.json").exists()

"""Foundation invariants: component tree, logit lens, batching, docids, data, bad input."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from genir_mech.data.loaders import load_beir, load_dataset, load_dsi_jsonl, save_dsi_jsonl
from genir_mech.data.synthetic import SyntheticConfig, generate_corpus
from genir_mech.docids import AtomicDocids, docid_token
from genir_mech.errors import GenIRError
from genir_mech.models.components import Site
from genir_mech.models.execution import run
from genir_mech.models.loading import check_logit_lens, load_genir
from genir_mech.testing import tiny_genir, tiny_llama_genir, toy_queries
from genir_mech.retrieval import evaluate, rank_texts


@pytest.fixture(scope="module")
def gm():
    return tiny_genir(encoder_layers=2, decoder_layers=3)


@pytest.fixture(scope="module")
def texts(gm):
    qs = toy_queries(gm, 6)
    assert len({len(q.split()) for q in qs}) > 1, "toy queries must differ in length so padding is exercised"
    return qs


# The component tree, head sums, logit lens, attention recompute, residual
# bookkeeping and batching of every family are checked in test_adapter_contract.py.


def test_self_check_rejects_a_wrong_adapter(gm, monkeypatch):
    monkeypatch.setattr(type(gm.adapter), "output_scale", property(lambda self: 1.0))
    with pytest.raises(GenIRError, match="self-check failed"):
        check_logit_lens(gm)


def test_batched_ranking_equals_one_by_one(gm, texts):
    batched = rank_texts(gm, texts, batch_size=len(texts)).logits
    single = torch.cat([rank_texts(gm, [t]).logits for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    # without the attention mask, padding changes the result: the mask is what makes them equal
    batch = gm.batch(texts)
    unmasked = gm.hf_model(input_ids=batch.input_ids, decoder_input_ids=torch.full((len(texts), 1), gm.decoder_start_id)).logits[:, 0]
    padded_rows = (batch.attention_mask == 0).any(1)
    assert padded_rows.any()
    assert not torch.allclose(unmasked[padded_rows], single[padded_rows], atol=1e-4)


@pytest.mark.parametrize("factory", [tiny_genir, tiny_llama_genir], ids=["t5", "llama"])
def test_multi_invoke_trace_equals_one_batch(factory):
    # Invokes of different widths are padded on the adapter's side (left for decoder-only models).
    gm = factory()
    texts = toy_queries(gm, 6)
    assert gm.batch(texts[:3]).input_ids.shape[1] != gm.batch(texts[3:]).input_ids.shape[1], "the halves must differ in width"
    batch = gm.batch(texts)
    expected = gm.logits(batch)
    halves = [gm.batch(texts[:3]), gm.batch(texts[3:])]
    with torch.no_grad():
        with gm.nn.trace() as tracer:
            with tracer.invoke(**gm.model_inputs(halves[0])):
                first = gm.nn.output.logits[:, -1].save()
            with tracer.invoke(**gm.model_inputs(halves[1])):
                second = gm.nn.output.logits[:, -1].save()
    assert first.shape[0] == 3 and second.shape[0] == len(texts) - 3
    torch.testing.assert_close(torch.cat([first, second]), expected, atol=1e-5, rtol=1e-5)


def test_encoder_reuse_gives_same_logits(gm, texts):
    batch = gm.batch(texts)
    torch.testing.assert_close(run(gm, gm.encode(batch)).logits, run(gm, batch).logits)
    with pytest.raises(GenIRError, match="cached encoder output"):
        run(gm, gm.encode(batch), reads=[Site.parse("encoder.layers.0.mlp")])


def test_counts_come_from_the_config():
    deep = tiny_genir(encoder_layers=1, decoder_layers=5, num_heads=2)
    assert deep.n_layers("decoder") == 5 and deep.n_layers("encoder") == 1 and deep.adapter.n_heads == 2
    assert len(deep.components("decoder")) == 15
    with pytest.raises(GenIRError, match="has 5 layers"):
        deep.adapter.hook(Site.parse("decoder.layers.5.mlp"))


def test_docid_detection_on_a_dsi_large_style_tokenizer(tmp_path):
    """The public DSI-large tokenizers are T5 tokenizers with @DOC_ID_<id>@ added tokens appended to the vocabulary."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2, "the": 3, "@": 4}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": [f"<extra_id_{i}>" for i in range(3)]})
    tok.add_tokens([AddedToken(docid_token(d), normalized=False) for d in ["0", "1", "10", "2", "x7"]])
    tok.save_pretrained(tmp_path)
    scheme = AtomicDocids.detect(PreTrainedTokenizerFast.from_pretrained(tmp_path))
    assert scheme.doc_ids == ["0", "1", "2", "10", "x7"]
    assert tok.convert_ids_to_tokens(scheme.token_id("10")) == "@DOC_ID_10@"
    assert tok("the @DOC_ID_2@").input_ids[1] == scheme.token_id("2")
    with pytest.raises(GenIRError, match="unknown docid '99'"):
        scheme.token_id("99")
    with pytest.raises(GenIRError, match="no docid tokens match"):
        AtomicDocids.detect(tok, pattern=r"<doc(\d+)>")
    override = AtomicDocids.detect(tok, pattern=r"<extra_id_(\d+)>")
    assert override.doc_ids == ["0", "1", "2"]


def test_corpus_generation_is_deterministic():
    a, b = generate_corpus(SyntheticConfig(n_docs=50, seed=3)), generate_corpus(SyntheticConfig(n_docs=50, seed=3))
    assert a.documents == b.documents and a.queries == b.queries and a.pairs == b.pairs
    assert a.data_hash() == b.data_hash()
    assert generate_corpus(SyntheticConfig(n_docs=50, seed=4)).data_hash() != a.data_hash()


def test_held_out_templates_are_unseen_and_pairs_are_matched():
    ds = generate_corpus(SyntheticConfig(n_docs=80, seed=0))
    train_templates = {q.template for q in ds.split("train")}
    for split in ("validation", "test"):
        assert ds.split(split) and not ({q.template for q in ds.split(split)} & train_templates)
    for p in ds.pairs:
        assert len(p["clean"].split()) == len(p["corrupted"].split())
        diff = [i for i, (x, y) in enumerate(zip(p["clean"].split(), p["corrupted"].split())) if x != y]
        assert 1 <= len(diff) <= 2 and p["clean_doc"] != p["corrupted_doc"]


def test_attribute_overlap_controls_ambiguity():
    few = generate_corpus(SyntheticConfig(n_docs=100, attribute_values=2))
    many = generate_corpus(SyntheticConfig(n_docs=100, attribute_values=24))
    def regions(ds):
        return {q.text.split()[-1] for q in ds.split("train") if q.template == "{name} {region}"}

    assert len(regions(few)) == 2 < len(regions(many))


def test_dsi_jsonl_and_beir_round_trip(tmp_path):
    ds = generate_corpus(SyntheticConfig(n_docs=10))
    save_dsi_jsonl(ds, tmp_path / "dsi")
    back = load_dataset(str(tmp_path / "dsi"))
    assert back.documents == ds.documents and {q.query_id for q in back.queries} == {q.query_id for q in ds.queries}
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in ds.documents.items()))
    # only the judged (test) queries: the synthetic generator names train and test queries alike (t<doc>-<n>), and
    # one BEIR queries.jsonl cannot hold two texts under one id (load_beir refuses that)
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q.query_id, "text": q.text}) + "\n" for q in ds.split("test")))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q.query_id}\t{ds.relevant(q.query_id)}\t1\n" for q in ds.split("test")))
    loaded = load_beir(beir)
    assert len(loaded.split("test")) == len(ds.split("test")) and loaded.relevant(ds.split("test")[0].query_id) == ds.relevant(ds.split("test")[0].query_id)


def test_broken_jsonl_line_names_file_and_line(tmp_path):
    (tmp_path / "documents.jsonl").write_text('{"doc_id": "0", "text": "a"}\n{"doc_id": "1", "text": "b"\n')
    (tmp_path / "queries.jsonl").write_text('{"text": "q", "doc_id": "0"}\n')
    with pytest.raises(GenIRError, match=r"documents.jsonl, line 2: not valid JSON"):
        load_dsi_jsonl(tmp_path / "documents.jsonl", tmp_path / "queries.jsonl")
    (tmp_path / "documents.jsonl").write_text('{"doc_id": "0", "text": "a"}\n')
    (tmp_path / "queries.jsonl").write_text('{"text": "q", "doc_id": "0"}\n{"text": "q2", "doc_id": "7"}\n')
    with pytest.raises(GenIRError, match=r"queries.jsonl, line 2: unknown document '7'"):
        load_dsi_jsonl(tmp_path / "documents.jsonl", tmp_path / "queries.jsonl")


def test_unsupported_family_is_refused_naming_the_supported_ones(tmp_path):
    # an encoder-only BERT (masked LM): no decoder to emit docids, so no family takes it
    BertForMaskedLM(BertConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=8, intermediate_size=16, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(GenIRError, match=r"no genir_mech adapter for model_type 'bert' \(decoder-only or encoder-only\).*llama.*gpt2"):
        load_genir(str(tmp_path))


def test_a_decoder_only_checkpoint_loads_and_passes_the_self_check(tmp_path):
    gm = tiny_llama_genir(layers=2)
    gm.hf_model.save_pretrained(tmp_path)
    gm.tokenizer.save_pretrained(tmp_path)
    loaded = load_genir(str(tmp_path))
    assert loaded.adapter.family == "llama" and loaded.adapter.sides == ("decoder",) and loaded.docids.doc_ids == gm.docids.doc_ids
    texts = toy_queries(gm, 4)
    torch.testing.assert_close(loaded.logits(loaded.batch(texts)), gm.logits(gm.batch(texts)))
    assert loaded.encode(loaded.batch(texts)).encoder_hidden is None
    with pytest.raises(GenIRError, match="no decoder start token"):
        loaded.start_ids(1)


def test_missing_checkpoint_and_empty_query_set(gm):
    with pytest.raises(GenIRError, match="no such checkpoint"):
        load_genir("./does/not/exist")
    ds = generate_corpus(SyntheticConfig(n_docs=5))
    with pytest.raises(GenIRError, match="empty query set"):
        evaluate(gm, ds, split="nosuchsplit")

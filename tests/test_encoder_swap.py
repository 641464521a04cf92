"""Encoder swap: A's decoder on B's encoder output; identity, composition, refusals, both experiments end to end."""
from __future__ import annotations

import json

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from genir_mech.analyses.encoder_swap import (
    A_ALONE,
    B_ALONE,
    SEEN_CONTROL,
    SWAPPED,
    removed_docs_experiment,
    swapped_logits,
    swapped_ranks,
    vanilla_encoder_experiment,
)
from genir_mech.data.corpus import Query, RetrievalDataset
from genir_mech.data.loaders import save_dsi_jsonl
from genir_mech.docids import AtomicDocids
from genir_mech.errors import GenIRError
from genir_mech.models.loading import load_genir
from genir_mech.testing import tiny_genir, toy_queries
from genir_mech.retrieval import rank_of
from genir_mech.figures.tables import removed_docs_table, vanilla_table
from genir_mech.pipelines.swap import SwapConfig, run_swap


def _model(**kw):
    return tiny_genir(encoder_layers=2, decoder_layers=2, **kw)


def _perturbed_encoder(scale: float = 0.5, seed: int = 1):
    """Same weights as _model() except the encoder: same tokenizer, docids and width, different encoder output."""
    gm = _model()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gm.hf_model.encoder.block.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen) * p.std())
    return gm


@pytest.fixture(scope="module")
def a():
    return _model()


@pytest.fixture(scope="module")
def texts(a):
    return toy_queries(a, 12)


def test_swapping_a_model_with_itself_changes_nothing(a, texts):
    own = a.logits(a.batch(texts))
    assert torch.equal(swapped_logits(a, a, texts), own)
    assert torch.equal(swapped_logits(a, _model(), texts), own)  # an identical copy
    # smaller batches pad differently: equal up to float rounding, same ranking
    assert torch.allclose(swapped_logits(a, a, texts, batch_size=5), own, atol=1e-5)
    docs = [a.docids.doc_ids[i % len(a.docids)] for i in range(len(texts))]
    expected = rank_of(a.docids.scores(own), torch.tensor([a.docids.index(d) for d in docs]))
    assert swapped_ranks(a, _model(), texts, docs, batch_size=5).tolist() == expected.tolist()


def test_swap_is_a_decoder_on_the_other_encoder_output(a, texts):
    b = _perturbed_encoder()
    batch = a.batch(texts)
    with torch.no_grad():
        hidden = b.hf_model.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        manual = a.hf_model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=batch.attention_mask, decoder_input_ids=a.start_ids(len(texts))).logits[:, -1]
    swapped = swapped_logits(a, b, texts, batch_size=4)
    assert torch.allclose(swapped, manual, atol=1e-5)
    assert not torch.allclose(swapped, a.logits(batch), atol=1e-3), "the perturbed encoder must change A's output"


def test_mismatched_models_are_refused(a, texts):
    with pytest.raises(GenIRError, match="d_model 48"):
        swapped_logits(a, _model(d_model=48), texts)
    with pytest.raises(GenIRError, match="tokenizers"):
        swapped_logits(a, _model(n_docs=30), texts)
    fewer = _model()
    fewer.docids = AtomicDocids({d: a.docids.token_id(d) for d in a.docids.doc_ids[:5]})
    with pytest.raises(GenIRError, match="docid vocabularies"):
        swapped_logits(a, fewer, texts)


def _dataset_a_gets_right(a, texts) -> RetrievalDataset:
    """Queries whose relevant document is, by construction, the one A ranks first (half test, half validation)."""
    top = a.docids.scores(a.logits(a.batch(texts))).argmax(1).tolist()
    queries = [Query(f"q{i}", t, "test" if i % 2 else "validation") for i, t in enumerate(texts)]
    qrels = {q.query_id: {a.docids.doc_ids[j]} for q, j in zip(queries, top)}
    return RetrievalDataset({d: f"document {d}" for d in a.docids.doc_ids}, queries, qrels)


def _save(gm, path, card=None):
    gm.hf_model.save_pretrained(path)
    gm.tokenizer.save_pretrained(path)
    if card is not None:
        (path / "model_card.json").write_text(json.dumps(card))
    return load_genir(str(path))


def test_removed_documents_experiment(a, texts, tmp_path):
    ds = _dataset_a_gets_right(a, texts)
    removed = sorted({ds.relevant(q.query_id) for q in ds.queries})[:1]
    same = _save(_model(), tmp_path / "same", {"removed_documents": removed})
    other = _save(_perturbed_encoder(), tmp_path / "other", {"removed_documents": removed})
    summary, per_query = removed_docs_experiment(a, [same, other], ds, splits=("test", "validation"))
    expected = [q for q in ds.queries if ds.relevant(q.query_id) in removed]
    seen = [q for q in ds.queries if ds.relevant(q.query_id) not in removed]
    assert seen and expected
    for variant in ("same", "other"):
        rows = per_query[per_query["variant"] == variant]
        assert set(rows.loc[rows["condition"] != SEEN_CONTROL, "query_id"]) == {q.query_id for q in expected}
        assert set(rows.loc[rows["condition"] == SEEN_CONTROL, "query_id"]) == {q.query_id for q in seen}
        assert (rows.loc[rows["condition"] == A_ALONE, "rank"] == 1).all()
    same_rows = per_query[per_query["variant"] == "same"]
    for condition in (B_ALONE, SWAPPED):  # a model with itself: every condition identical
        assert same_rows.loc[same_rows["condition"] == condition, "rank"].tolist() == [1] * len(expected)
    assert (same_rows.loc[same_rows["condition"] == SEEN_CONTROL, "rank"] == 1).all()
    swap = per_query[(per_query["variant"] == "other") & (per_query["condition"] == SWAPPED)]
    docs = [ds.relevant(q) for q in swap["query_id"]]
    texts_removed = [ds.query(q).text for q in swap["query_id"]]
    assert swap["rank"].tolist() == swapped_ranks(a, other, texts_removed, docs).tolist()
    table = removed_docs_table(summary)
    n = len(expected)
    same_swap = table[(table["encoder from (B)"] == "same") & (table["condition"] == SWAPPED)]
    assert same_swap["Hits@1"].item() == f"{n}/{n}"
    assert same_swap["queries (docs)"].item() == f"{n} ({len(removed)})"
    hits = summary[(summary["variant"] == "other") & (summary["condition"] == SWAPPED) & (summary["metric"] == "hits@1_count")]["value"].item()
    assert hits == (swap["rank"] == 1).sum()


def test_removed_documents_experiment_needs_a_card(a, texts, tmp_path):
    with pytest.raises(GenIRError, match="removed_documents"):
        removed_docs_experiment(a, [_save(_model(), tmp_path / "plain", {})], _dataset_a_gets_right(a, texts))


def test_vanilla_encoder_experiment_and_report(a, texts, tmp_path):
    ds = _dataset_a_gets_right(a, texts)
    save_dsi_jsonl(ds, tmp_path / "data")
    a_path = tmp_path / "a"
    _save(a, a_path, {"data": str(tmp_path / "data")})
    removed = sorted({ds.relevant(q.query_id) for q in ds.queries})[:2]
    _save(_perturbed_encoder(seed=2), tmp_path / "rd", {"removed_documents": removed, "data": str(tmp_path / "data")})
    vanilla = _save(_perturbed_encoder(scale=2.0, seed=3), tmp_path / "vanilla", {})
    summary, per_query = vanilla_encoder_experiment(a, vanilla, ds, split="validation")
    assert set(per_query["query_id"]) == {q.query_id for q in ds.split("validation")}
    swap = per_query[per_query["condition"] == SWAPPED]["rank"]
    row = vanilla_table(summary).set_index("condition").loc[SWAPPED]
    assert row["mean rank"] == pytest.approx(swap.mean(), abs=0.05)
    assert row["% within rank 10"] == pytest.approx(100 * (swap <= 10).mean(), abs=0.05)

    a_loaded = load_genir(str(a_path))
    out = run_swap(a_loaded, ds, tmp_path / "out", SwapConfig(), encoders=[load_genir(str(tmp_path / "rd")), vanilla])
    assert set(out) >= {"removed_docs", "vanilla", "figures"}
    for name in ("swap_removed_docs.csv", "swap_removed_docs.provenance.json", "swap_vanilla.csv", "tables/table2_swap_removed_docs.md", "tables/table2_swap_vanilla.tex", "figures/swap.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "A decoder + B encoder" in (tmp_path / "out" / "tables" / "table2_swap_removed_docs.md").read_text()

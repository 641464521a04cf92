"""The existing analyses run end to end on every encoder-decoder family of issue 14 (BART, BERT2BERT, mT5, T5Gemma), each through the one engine.

Per family, on its tiny random model (genir_mech.testing): contributions, the
logit lens, stage ablation (zero and mean) and head patching, each with an
invariant that fails when the family's adapter or the shared code breaks:
the lens of the last residual is the model's own ranking, clean->clean head
patching changes nothing, a zero ablation of every MLP changes the logits,
and a cross-attention planted in one layer is what head patching finds.
"""
from __future__ import annotations

import numpy as np
import pytest

from genir_mech.analyses.ablation import ablate
from genir_mech.analyses.contributions import contributions
from genir_mech.analyses.logit_lens import logit_lens
from genir_mech.analyses.reading import reading
from genir_mech.errors import GenIRError
from genir_mech.models.loading import load_genir
from genir_mech.patching.attribution import NODE_KEYS, attribute, attribution_nodes
from genir_mech.patching.engine import head_sweep, sweep
from genir_mech.patching.metrics import logit_diff
from genir_mech.patching.pairs import QueryPair, dataset_pairs, tokenize_pairs
from genir_mech.stage_definition import StageDefinition
from genir_mech.testing import (
    linearised,
    planted_cross_attention,
    tiny_bart_genir,
    tiny_bert2bert_genir,
    tiny_mt5_genir,
    tiny_t5gemma_genir,
    toy_queries,
    toy_tokenizer,
)

N_DOCS = 20
FACTORIES = {"bart": tiny_bart_genir, "bert2bert": tiny_bert2bert_genir, "mt5": tiny_mt5_genir, "t5gemma": tiny_t5gemma_genir}


@pytest.fixture(scope="module", params=list(FACTORIES))
def family(request):
    gm = FACTORIES[request.param](encoder_layers=2, decoder_layers=3, n_docs=N_DOCS)
    texts = toy_queries(gm, 6)
    top = gm.docids.scores(gm.logits(gm.batch(texts))).argmax(1)
    return request.param, gm, texts, [gm.docids.doc_ids[i] for i in top]


def test_a_saved_model_loads_by_path_and_passes_the_self_check(family, tmp_path):
    name, gm, texts, _ = family
    gm.hf_model.save_pretrained(tmp_path)
    gm.tokenizer.save_pretrained(tmp_path)
    loaded = load_genir(str(tmp_path))  # the config picks the family; the lens self-check runs on load
    assert loaded.adapter.family == gm.adapter.family and type(loaded.hf_model) is type(gm.hf_model)
    np.testing.assert_allclose(loaded.logits(loaded.batch(texts)).numpy(), gm.logits(gm.batch(texts)).numpy(), atol=1e-5)


def test_contributions_cover_every_component(family):
    _, gm, texts, _ = family
    df = contributions(gm, texts, [str(i) for i in range(len(texts))], sides=("encoder", "decoder"))
    assert set(df.component) == {"self_attn", "cross_attn", "mlp"} and df.value.notna().all()
    ratio = df[(df.side == "decoder") & (df.metric == "ratio")]
    assert len(ratio) == len(texts) * len(gm.components("decoder")) and (ratio.value > 0).all()


def test_the_lens_of_the_last_residual_is_the_models_own_ranking(family):
    _, gm, texts, docs = family
    lens = logit_lens(gm, texts, [str(i) for i in range(len(texts))], docs, batch_size=4)
    last = lens.ranks[(lens.ranks.facet == "resid_post") & (lens.ranks.component == "mlp") & (lens.ranks.layer == gm.n_layers() - 1)]
    assert (last[last.metric == "relevant_doc_rank"].value == 1).all()
    heads = lens.ranks[lens.ranks.facet == "head"]
    assert set(heads.component) == {"cross_attn"} and heads["head"].nunique() == gm.adapter.n_heads


def test_stage_ablation_runs_and_mean_cross_attention_erases_the_query(family):
    _, gm, texts, docs = family
    stages = StageDefinition.parse(f"all=0-{gm.n_layers() - 1}")
    df = ablate(gm, texts, docs, stages, kinds=("mlp", "cross_attn"), methods=("zero", "mean"))
    assert set(df.method) == {"intact", "zero", "mean"} and df.value.notna().all()
    rank = df[df.metric == "mean_rank"].set_index(["component", "method"]).value
    assert rank["intact", "intact"] == 1.0  # every query ranks its (top) document first before any ablation
    # At the ranking step only cross-attention reads the query: its mean over the queries makes every query rank alike,
    # so queries whose documents differ cannot all keep theirs first.
    assert len(set(docs)) > 1 and rank["cross_attn", "mean"] > 1.0


def test_clean_into_clean_head_patching_changes_nothing(family):
    _, gm, _, _ = family
    dataset = toy_tokenizer(N_DOCS, 0)[1]
    same = [QueryPair(p.pair_id, p.clean, p.clean, p.clean_doc, p.corrupted_doc) for p in dataset_pairs(dataset)[:4]]
    table = head_sweep(gm, tokenize_pairs(gm, same), metrics={"logit_diff": logit_diff})
    assert set(table.component) == {"self_attn", "cross_attn"}
    np.testing.assert_allclose(table["value"], table["corrupted"], atol=2e-5)


@pytest.mark.parametrize("name", ["bart", "bert2bert"])
def test_a_planted_cross_attention_layer_tops_the_head_sweep(name):
    gm = planted_cross_attention(FACTORIES[name](encoder_layers=2, decoder_layers=3, n_docs=N_DOCS), layers=[1])
    batch = tokenize_pairs(gm, dataset_pairs(toy_tokenizer(N_DOCS, 0)[1])[:8])
    table = head_sweep(gm, batch, kinds=("cross_attn",), metrics={"logit_diff": logit_diff})
    effect = (table["value"] - table["corrupted"]).abs().groupby(table["layer"]).mean()
    assert effect.idxmax() == 1 and effect.drop(1).max() < 1e-5 < effect[1]


@pytest.mark.parametrize("name", ["bart", "bert2bert"])
def test_component_reading_refuses_a_post_layernorm_model(name):
    gm = FACTORIES[name](n_docs=N_DOCS)
    with pytest.raises(GenIRError, match="post-LayerNorm"):
        reading(gm, toy_queries(gm, 2))


@pytest.mark.parametrize("name", ["bart", "bert2bert"])
def test_attribution_patching_is_exact_on_a_linearised_post_layernorm_model(name):
    # The adapter lists every LayerNorm and activation (linearisable_modules); with them gone and queries zeroed
    # (weights and biases), the model is affine and AtP's first-order estimate must equal exact patching.
    gm = linearised(FACTORIES[name](encoder_layers=2, decoder_layers=2, n_docs=N_DOCS), uniform_attention=True)
    batch = tokenize_pairs(gm, dataset_pairs(toy_tokenizer(N_DOCS, 0)[1])[:4])
    nodes = attribution_nodes(gm, batch.width)
    estimate = attribute(gm, batch, nodes=nodes, qk_fix=False)
    exact = sweep(gm, batch, nodes, metrics={"logit_diff": logit_diff})
    exact["exact"] = exact["value"] - exact["corrupted"]
    merged = estimate.merge(exact[["pair_id", *NODE_KEYS, "exact"]], on=["pair_id", *NODE_KEYS], validate="many_to_one")
    scale = merged["exact"].abs().max()
    assert len(merged) == len(estimate) and scale > 0.1
    np.testing.assert_allclose(merged["estimate"], merged["exact"], atol=1e-4 * scale)


def test_attribution_patching_runs_on_every_family(family):
    # BERT2BERT and T5Gemma embed decoder tokens with their own matrix: AtP must let gradients reach both.
    name, gm, _, _ = family
    batch = tokenize_pairs(gm, dataset_pairs(toy_tokenizer(N_DOCS, 0)[1])[:3])
    table = attribute(gm, batch, nodes=attribution_nodes(gm, batch.width))
    assert set(table.method) == {"atp", "atp_qk"} and np.isfinite(table["estimate"]).all() and (table["estimate"] != 0).any()

"""Decoder analyses: ablation invariants, batching, logit lens, planted mechanism, reading, circuits, figures and verbs."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from genir_mech.analyses.ablation import Ablation, ablate, ablation_logits_chunks, ablation_ranks, component_means, layer_ablation
from genir_mech.analyses.circuit import components_kept, evaluate_circuits, paper_circuit, parse_circuit
from genir_mech.analyses.contributions import contributions
from genir_mech.analyses.logit_lens import logit_lens
from genir_mech.analyses.reading import cross_attention_read_scores, mlp_read_scores, reading
from genir_mech.cli import main
from genir_mech.errors import GenIRError
from genir_mech.models.components import Site
from genir_mech.models.execution import run
from genir_mech.pipelines.ablate import AblateConfig, run_ablate
from genir_mech.pipelines.circuit import CircuitConfig, run_circuit
from genir_mech.pipelines.contributions import ContributionsConfig, run_contributions
from genir_mech.pipelines.lens import LensConfig, run_lens
from genir_mech.pipelines.read import ReadConfig, run_read
from genir_mech.pipelines.rendering import redraw
from genir_mech.testing import planted_cross_attention, tiny_genir, toy_queries, toy_tokenizer
from genir_mech.provenance import write_table
from genir_mech.retrieval import rank_of
from genir_mech.stage_definition import StageDefinition

PLANTED = [2, 3]


@pytest.fixture(scope="module")
def gm():
    return tiny_genir(encoder_layers=2, decoder_layers=4)


@pytest.fixture(scope="module")
def texts(gm):
    return toy_queries(gm, 8)


@pytest.fixture(scope="module")
def planted():
    gm = planted_cross_attention(tiny_genir(decoder_layers=6), PLANTED)
    texts = toy_queries(gm, 16)
    # "Correct" = the model's own top-1 document, so every query starts at rank 1.
    top = gm.docids.scores(gm.logits(gm.batch(texts))).argmax(1)
    return gm, texts, [gm.docids.doc_ids[i] for i in top]


def _logits(gm, texts, ablations, **kwargs) -> torch.Tensor:
    """(n_ablations, n_queries, vocab) logits gathered from the batched engine."""
    out = torch.zeros(len(ablations), len(texts), gm.hf_model.config.vocab_size)
    for cfg, query, logits in ablation_logits_chunks(gm, texts, ablations, **kwargs):
        out[cfg, query] = logits
    return out


def _other_docs(gm, texts):
    """Relevant documents that are not the model's top-1, so ranks are informative."""
    order = gm.docids.scores(gm.logits(gm.batch(texts))).argsort(1, descending=True)
    return [gm.docids.doc_ids[int(order[i, 1 + i % 5])] for i in range(len(texts))]


# -- ablation invariants ----------------------------------------------------------------------------


def test_empty_ablation_changes_nothing_even_beside_other_rows(gm, texts):
    everything = Ablation.of(gm.components("decoder"), "zero")
    logits = _logits(gm, texts, [Ablation(()), everything, Ablation(())], batch_size=3)
    intact = gm.logits(gm.batch(texts))
    torch.testing.assert_close(logits[0], intact, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[2], intact, atol=1e-5, rtol=1e-5)
    assert (logits[1] - intact).abs().max() > 1e-2  # the ablated rows did change


def test_mean_of_a_single_query_on_that_query_changes_nothing(gm, texts):
    sites = gm.components("decoder")
    for text in texts[:3]:
        means = component_means(gm, [text], sites)
        logits = _logits(gm, [text], [Ablation.of(sites, "mean")], means=means)
        torch.testing.assert_close(logits[0], gm.logits(gm.batch([text])), atol=1e-5, rtol=1e-5)
    # ...whereas the mean of other queries does change it
    other = component_means(gm, texts[3:], sites)
    assert (_logits(gm, texts[:1], [Ablation.of(sites, "mean")], means=other)[0] - gm.logits(gm.batch(texts[:1]))).abs().max() > 1e-3


def test_mean_over_encoder_tokens_ignores_padding(gm, texts):
    site = Site("encoder", 0, "mlp")
    batch = gm.batch(texts)
    values = run(gm, batch, reads=[site]).values[site]
    mask = batch.attention_mask.bool()
    assert (~mask).any(), "the toy queries must need padding"
    torch.testing.assert_close(component_means(gm, texts, [site], batch_size=3)[site], values[mask].mean(0), atol=1e-5, rtol=1e-5)


def test_zeroing_every_decoder_component_leaves_the_projected_input_embedding(gm, texts):
    logits = _logits(gm, texts, [Ablation.of(gm.components("decoder"), "zero")])[0]
    with torch.no_grad():
        embedding = gm.hf_model.get_decoder().embed_tokens(torch.full((1, 1), gm.decoder_start_id))[:, -1]
        expected = gm.adapter.project(embedding).expand(len(texts), -1)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_batched_equals_per_query(gm, texts):
    docs = _other_docs(gm, texts)
    ablations = [Ablation(())] + [Ablation.of([Site("decoder", l, k)], "zero") for l in range(gm.n_layers()) for k in ("cross_attn", "mlp")]
    batched = ablation_ranks(gm, texts, docs, ablations, batch_size=len(texts), rows_per_forward=10_000)
    single = ablation_ranks(gm, texts, docs, ablations, batch_size=1, rows_per_forward=1)
    assert torch.equal(batched.doc_rank, single.doc_rank) and torch.equal(batched.vocab_rank, single.vocab_rank)
    assert len(set(batched.doc_rank.flatten().tolist())) > 1
    ids = [str(i) for i in range(len(texts))]
    a, b = contributions(gm, texts, ids, batch_size=len(texts)), contributions(gm, texts, ids, batch_size=1)
    keys = ["side", "layer", "component", "query_id", "metric"]
    both = a.merge(b, on=keys, suffixes=("_batched", "_single"))
    assert len(both) == len(a) == len(b)
    torch.testing.assert_close(torch.tensor(both.value_batched.values), torch.tensor(both.value_single.values), atol=1e-5, rtol=1e-4)
    la, lb = logit_lens(gm, texts, ids, docs, batch_size=len(texts)).ranks, logit_lens(gm, texts, ids, docs, batch_size=3).ranks
    keys = ["query_id", "layer", "component", "facet", "head", "metric"]
    both = la.merge(lb, on=keys, suffixes=("_batched", "_single"))
    assert len(both) == len(la)
    # Ranks are discontinuous: a float-level difference between batch shapes may flip one near-tie.
    diff = (both.value_batched - both.value_single).abs()
    assert (diff == 0).mean() > 0.99 and diff.max() <= 1.0


def test_cross_model_ablation(gm, texts):
    docs = _other_docs(gm, texts)
    sites = gm.components("decoder", ("mlp",))
    same = tiny_genir(encoder_layers=2, decoder_layers=4)  # identical seeded weights, same tokenizer
    ranks = ablation_ranks(gm, texts, docs, [Ablation(()), Ablation.of(sites, "cross-model")], other=same)
    assert torch.equal(ranks.doc_rank[0], ranks.doc_rank[1])
    with torch.no_grad():
        for p in same.hf_model.decoder.parameters():
            p.add_(0.5 * torch.randn_like(p))
    changed = _logits(gm, texts, [Ablation.of(sites, "cross-model")], other=same)[0]
    assert (changed - gm.logits(gm.batch(texts))).abs().max() > 1e-2
    with pytest.raises(GenIRError, match="tokenizers"):
        ablation_ranks(gm, texts, docs, [Ablation.of(sites, "cross-model")], other=tiny_genir(encoder_layers=2, decoder_layers=4, seed=1))
    with pytest.raises(GenIRError, match="d_model"):
        ablation_ranks(gm, texts, docs, [Ablation.of(sites, "cross-model")], other=tiny_genir(encoder_layers=2, decoder_layers=4, d_model=16))
    with pytest.raises(GenIRError, match="another checkpoint"):
        ablation_ranks(gm, texts, docs, [Ablation.of(sites, "cross-model")])


# -- logit lens -------------------------------------------------------------------------------------


def test_logit_lens_at_the_last_layer_is_the_model_ranking(gm, texts):
    docs = _other_docs(gm, texts)
    ranks = logit_lens(gm, texts, [str(i) for i in range(len(texts))], docs).ranks
    last = ranks[(ranks.layer == gm.n_layers() - 1) & (ranks.component == "mlp") & (ranks.facet == "resid_post")].set_index("metric").value
    logits = gm.logits(gm.batch(texts))
    vocab = rank_of(logits, torch.tensor([gm.docids.token_id(d) for d in docs]))
    docs_rank = rank_of(gm.docids.scores(logits), torch.tensor([gm.docids.index(d) for d in docs]))
    assert last["relevant_rank"].tolist() == vocab.tolist()
    assert last["relevant_doc_rank"].tolist() == docs_rank.tolist()
    assert set(docs_rank.tolist()) != {1}


def test_head_projections_sum_to_the_cross_attention_projection_input(gm, texts):
    lens = logit_lens(gm, texts[:2], ["a", "b"], _other_docs(gm, texts[:2]), top_k=3, n_examples=1)
    heads = lens.head_tokens
    assert set(heads.query_id) == {"a"} and heads.groupby(["layer", "head"]).size().eq(3).all()
    assert len(heads.groupby(["layer", "head"])) == gm.n_layers() * gm.adapter.n_heads


# -- planted mechanism ------------------------------------------------------------------------------


def test_planted_mechanism_is_singled_out_by_ablation_and_contributions(planted):
    gm, texts, docs = planted
    per_layer = layer_ablation(gm, texts, docs, kinds=("cross_attn",), method="zero")
    left = per_layer[(per_layer.metric == "rank>1") & (per_layer.layer >= 0)].set_index("layer").value
    assert {l for l, v in left.items() if v > 0} == set(PLANTED)
    stages = StageDefinition.parse("early=0-1,planted=2-3,late=4-5")
    by_stage = ablate(gm, texts, docs, stages, kinds=("cross_attn",), methods=("zero", "mean"))
    hit = by_stage[(by_stage.metric == "rank>1") & by_stage.method.isin(["zero", "intact"])].set_index("stage").value
    assert hit["planted"] > 50 and hit["early"] == 0 and hit["late"] == 0 and hit["intact"] == 0
    contrib = contributions(gm, texts, [str(i) for i in range(len(texts))], stages)
    ratio = contrib[(contrib.metric == "ratio") & (contrib.component == "cross_attn")].groupby("layer").value.mean()
    assert {l for l, v in ratio.items() if v > 1e-6} == set(PLANTED)
    assert ratio[PLANTED].min() > 0.5
    assert set(contrib.metric) == {"ratio", "cos_residual", "cos_priming"}


def test_reading_finds_the_planted_cross_attention_as_a_source(planted):
    gm, texts, _ = planted
    df = reading(gm, texts)
    late = df[(df.metric == "positive_score_share") & (df.reader_component == "mlp") & (df.reader_layer > max(PLANTED))]
    share = late.groupby("source_component").value.sum() / late.reader_layer.nunique()
    assert share["cross_attn"] > 25
    dead = df[(df.source_component == "cross_attn") & ~df.source_layer.isin(PLANTED) & (df.metric == "positive_score_share")]
    assert dead.value.abs().max() < 1e-6


# -- reading ----------------------------------------------------------------------------------------


def test_read_scores_sum_to_what_the_sublayer_reads(gm, texts):
    batch = gm.encode(gm.batch(texts))
    layer = gm.n_layers() - 1
    comps = gm.components("decoder")
    pre = {k: Site("decoder", layer, k, "resid_pre") for k in ("cross_attn", "mlp")}
    values = run(gm, batch, reads=[Site("decoder", 0, "", "resid_pre"), *comps, *pre.values()]).values
    parts = torch.stack([values[Site("decoder", 0, "", "resid_pre")][:, -1]] + [values[c][:, -1] for c in comps], 1)
    with torch.no_grad():
        n_mlp = 1 + comps.index(Site("decoder", layer, "mlp"))
        resid = values[pre["mlp"]][:, -1]
        scores, active = mlp_read_scores(gm, layer, resid, parts[:, :n_mlp])
        expected = gm.adapter.sublayer_norm(Site("decoder", layer, "mlp"))(resid) @ gm.adapter.mlp_in_weight("decoder", layer).T
        torch.testing.assert_close(scores.sum(1), expected, atol=1e-4, rtol=1e-4)
        assert torch.equal(active, expected > 0)
        n_ca = 1 + comps.index(Site("decoder", layer, "cross_attn"))
        ca_scores, top = cross_attention_read_scores(gm, layer, values[pre["cross_attn"]][:, -1], parts[:, :n_ca], batch)
    eager = tiny_genir(encoder_layers=2, decoder_layers=4)
    eager.hf_model.set_attn_implementation("eager")
    with torch.no_grad():
        out = eager.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=eager.start_ids(len(texts)), output_attentions=True)
    weights = out.cross_attentions[layer][:, :, -1]  # (B, H, T)
    assert torch.equal(top, weights.argmax(-1))
    # the parts' scores add up to the attention logit q.k at that key, computed here with the module itself
    attn = gm.hf_model.decoder.block[layer].layer[1].EncDecAttention
    with torch.no_grad():
        normed = gm.adapter.sublayer_norm(Site("decoder", layer, "cross_attn"))(values[pre["cross_attn"]][:, -1])
        q = attn.q(normed).unflatten(-1, (gm.adapter.n_heads, -1))  # (B, H, d)
        k = attn.k(batch.encoder_hidden).unflatten(-1, (gm.adapter.n_heads, -1))  # (B, T, H, d)
        expected = torch.einsum("bhd,bthd->bht", q, k).gather(-1, top.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ca_scores.sum(1), expected, atol=1e-4, rtol=1e-4)


# -- circuits ---------------------------------------------------------------------------------------


def test_paper_circuit_and_spec_agree_and_count_components(planted):
    gm, texts, docs = planted
    stages = StageDefinition.parse("early=0-1,planted=2-3,late=4-5")
    circuit = paper_circuit(gm, stages)
    spec = parse_circuit(gm, "zero=self_attn@all;zero=cross_attn@early;mean=mlp@early+planted", stages)
    assert set(circuit.replace) == set(spec.replace)
    assert components_kept(gm, circuit) == (18 - 6 - 2 - 4, 18)
    with pytest.raises(GenIRError, match="neither"):
        parse_circuit(gm, "zero=mlp@middle", stages)
    dead = parse_circuit(gm, "zero=cross_attn@0-1+4-5")  # planted model: these outputs are zero already
    df = evaluate_circuits(gm, texts, _other_docs(gm, texts), {"dead": dead, "paper": circuit}, mean_texts=texts)
    rel = df[(df.configuration == "relative") & (df.circuit == "dead")].set_index("metric").value
    assert (rel.dropna() == 100.0).all() and len(rel.dropna()) > 0
    kept = df[(df.circuit == "dead") & (df.metric == "components_kept")].value.item()
    assert kept == 14


# -- pipeline, figures, verbs -----------------------------------------------------------------------


def test_the_decoder_analyses_share_one_results_folder(planted, tmp_path):
    """The paper's decoder analyses (contributions, logit lens, ablations, circuit, reading) run one after the other into
    one folder, as the verbs do: each adds its tables and figures to the complete result."""
    gm, _, _ = planted
    _, dataset = toy_tokenizer(len(gm.docids), 0)
    stages = "early=0-1,planted=2-3,late=4-5"
    made = {}
    for run_experiment, config in ((run_contributions, ContributionsConfig(stages=stages)), (run_lens, LensConfig(stages=stages)),
                                   (run_ablate, AblateConfig(stages=stages, per_layer=True)), (run_circuit, CircuitConfig(stages=stages)),
                                   (run_read, ReadConfig(stages=stages))):
        made.update(run_experiment(gm, dataset, tmp_path, config, progress=False)["figures"])
    for key in ("fig3", "fig4", "fig5", "table3", "table4", "table5", "table6"):
        assert key in made, key
    for name in ("contributions", "lens", "lens_heads", "ablation", "layer_ablation", "circuit", "reading", "reading_by_stage"):
        assert (tmp_path / f"{name}.csv").exists() and (tmp_path / f"{name}.provenance.json").exists()
    table3 = (tmp_path / "tables" / "table3_ablation.md").read_text()
    assert "planted" in table3 and (tmp_path / "tables" / "table3_ablation.tex").exists()
    assert "planted" in json.loads((tmp_path / "ablation.provenance.json").read_text())["config"]["stages"]["stages"][1]["name"]
    assert (tmp_path / "figures" / "fig5_reading.png").stat().st_size > 1000
    # Table 2 comes from the encoder-swap results when they are present
    swap = pd.DataFrame({"variant": ["rd1", "rd1"], "condition": ["A alone", "A decoder + B encoder"], "metric": ["hits@1", "hits@1"], "value": [1.0, 0.7]})
    write_table(swap, tmp_path / "swap" / "swap_removed_docs", {})
    made = redraw(tmp_path)
    assert "0.7" in (tmp_path / "tables" / "table2_swap_removed_docs.md").read_text() and "table2_swap_removed_docs" in made


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    gm = planted_cross_attention(tiny_genir(decoder_layers=6), PLANTED)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-planted"
    gm.hf_model.save_pretrained(path)
    gm.tokenizer.save_pretrained(path)
    (path / "model_card.json").write_text(json.dumps({"data": "synthetic:n_docs=20,seed=0,n_pairs=16"}))
    return path


def test_verbs_run_end_to_end(checkpoint, tmp_path, capsys):
    common = ["--model", str(checkpoint), "--split", "train", "--max-queries", "8", "--batch-size", "4"]
    stages = tmp_path / "stages.json"
    StageDefinition.parse("early=0-1,planted=2-3,late=4-5").save(stages)
    out = tmp_path / "results"
    assert main(["contributions", *common, "--stages", str(stages), "--encoder", "--out", str(out), "--json"]) == 0
    assert main(["lens", *common, "--out", str(out), "--json"]) == 0
    assert main(["ablate", *common, "--stages", str(stages), "--methods", "zero,mean,cross-model", "--other", str(checkpoint), "--per-layer", "--out", str(out), "--json"]) == 0
    assert main(["circuit", *common, "--stages", str(stages), "--out", str(out), "--json"]) == 0
    assert main(["read", *common, "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["figures", str(out), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert {"fig3", "fig4", "fig5", "table3", "table4", "table5", "table6", "ablation", "layer_ablation", "circuit"} <= set(made)
    assert main(["ablate", *common, "--stages", "a=0-9", "--out", str(out)]) == 2
    assert "decoder has 6 layers" in capsys.readouterr().err

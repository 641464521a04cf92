"""Activation patching and attribution patching: invariants on tiny models (each fails when the engine breaks)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genir_mech.cli import main
from genir_mech.errors import GenIRError
from genir_mech.models.components import Site
from genir_mech.models.execution import run
from genir_mech.testing import linearised, planted_cross_attention, tiny_genir, toy_tokenizer
from genir_mech.patching.aggregation import aggregate, bootstrap_means
from genir_mech.patching.attribution import NODE_KEYS, attribute, attribution_nodes, verify_top_k
from genir_mech.interventions import Intervention, Replacements, site_writes
from genir_mech.patching.engine import head_sweep, sweep
from genir_mech.patching.metrics import METRICS, logit_diff
from genir_mech.patching.pairs import QueryPair, dataset_pairs, read_pairs, tokenize_pairs
from genir_mech.patching.specs import PatchSpec, load_specs, save_specs, target_specs

N_DOCS = 20



@pytest.fixture(scope="module")
def dataset():
    return toy_tokenizer(N_DOCS, 0)[1]


@pytest.fixture(scope="module")
def gm():
    return tiny_genir(encoder_layers=2, decoder_layers=4, d_model=32, num_heads=4, n_docs=N_DOCS)


@pytest.fixture(scope="module")
def batch(gm, dataset):
    return tokenize_pairs(gm, dataset_pairs(dataset)[:6])


def _exact_effects(gm, batch, nodes):
    table = sweep(gm, batch, nodes, metrics={"logit_diff": logit_diff})
    table["exact"] = table["value"] - table["corrupted"]
    return table


def test_clean_into_clean_is_a_no_op(gm, dataset):
    same = [QueryPair(p.pair_id, p.clean, p.clean, p.clean_doc, p.corrupted_doc) for p in dataset_pairs(dataset)[:4]]
    batch = tokenize_pairs(gm, same)
    specs = [s for t in ("resid", "component", "head", "encoder-position", "encoder-layer-position") for s in target_specs(gm, t, encoder_positions=batch.width)]
    table = sweep(gm, batch, specs, rows_per_forward=64)
    assert len(table) == len(METRICS) * sum(len(batch) if s.position is None or s.parsed.side == "decoder" else int((batch.lengths > s.position).sum()) for s in specs)
    np.testing.assert_allclose(table["value"], table["corrupted"], atol=2e-5)
    np.testing.assert_allclose(table["clean"], table["corrupted"], atol=2e-5)


def test_patching_the_last_residual_recovers_the_clean_logits(gm, batch):
    # A random projection of the whole logit vector: equal projections mean equal logits (and shows a plug-in metric).
    direction = torch.randn(gm.hf_model.config.vocab_size, generator=torch.Generator().manual_seed(0))
    metrics = {"logits_projection": lambda logits, targets: logits @ direction, "logit_diff": logit_diff}
    last = PatchSpec(f"decoder.layers.{gm.n_layers('decoder') - 1}.resid_post")
    table = sweep(gm, batch, [last], metrics=metrics, direction="denoise")
    np.testing.assert_allclose(table["value"], table["clean"], rtol=1e-5, atol=1e-4)
    assert (table["clean"] - table["corrupted"]).abs().max() > 1e-2  # the pairs do differ
    np.testing.assert_allclose(table[table.metric == "logit_diff"]["normalised"], 1.0, atol=1e-4)
    noised = sweep(gm, batch, [last], metrics=metrics, direction="noise")
    np.testing.assert_allclose(noised["value"], noised["corrupted"], rtol=1e-5, atol=1e-4)


def _one_patch_reference(gm, base_row, source_values, spec, targets):
    """One forward per patch with a hand-written write (no engine code): the semantics the engine must match."""
    site = spec.parsed
    src = source_values[site]
    d = gm.adapter.d_head

    def write(x):
        x = x.clone()
        t = slice(None) if spec.position is None else spec.position
        cols = slice(None) if spec.head is None else slice(spec.head * d, (spec.head + 1) * d)
        x[:, t, cols] = src[:, t, cols]
        return x

    return float(logit_diff(run(gm, base_row, writes={site: write}).logits, targets)[0])


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_batched_sweep_equals_one_patch_per_forward(gm, batch, direction):
    specs = [
        PatchSpec("decoder.layers.1.resid_post", position=0), PatchSpec("decoder.layers.2.cross_attn"), PatchSpec("decoder.layers.0.mlp"),
        PatchSpec("decoder.layers.1.cross_attn.heads", head=2), PatchSpec("decoder.layers.3.self_attn.heads", head=0),
        PatchSpec("encoder.output", position=1), PatchSpec("encoder.output", position=3), PatchSpec("encoder.output"),
        PatchSpec("encoder.layers.0.resid_post", position=2), PatchSpec("encoder.layers.1.self_attn", position=0),
    ]
    pairs = batch.select([0, 1, 2])
    keys = ["pair_id", "site", "head", "position"]
    table = sweep(gm, pairs, specs, direction=direction, metrics={"logit_diff": logit_diff}, rows_per_forward=7, pairs_per_batch=2)
    assert len(table) == len(specs) * len(pairs)
    single = sweep(gm, pairs, specs, direction=direction, metrics={"logit_diff": logit_diff}, rows_per_forward=1)
    merged = table.merge(single, on=keys, suffixes=("", "_single"), validate="one_to_one")
    np.testing.assert_allclose(merged["value"], merged["value_single"], atol=2e-5)
    # The reference: one hand-written patch per forward pass, for the first two pairs.
    source, base = (pairs.clean, pairs.corrupted) if direction == "denoise" else (pairs.corrupted, pairs.clean)
    sites = sorted({s.parsed for s in specs}, key=gm.adapter.order_key)
    for pair in range(2):
        source_values = run(gm, source.select([pair]), reads=sites).values
        targets = pairs.targets.select(torch.tensor([pair]))
        for spec in specs:
            row = table[(table.pair_id == pairs.pairs[pair].pair_id) & (table.site == spec.site)
                        & (table["head"].fillna(-1) == (-1 if spec.head is None else spec.head)) & (table["position"].fillna(-1) == (-1 if spec.position is None else spec.position))]
            assert len(row) == 1
            reference = _one_patch_reference(gm, base.select([pair]), source_values, spec, targets)
            assert float(row["value"].iloc[0]) == pytest.approx(reference, abs=2e-5), f"{spec} on pair {pair}"


@pytest.mark.parametrize("kind", ["cross_attn", "self_attn"])
def test_head_patches_sum_to_the_whole_sublayer_patch(gm, batch, kind):
    layer = 2
    heads_site, out_site = Site("decoder", layer, kind, "heads"), Site("decoder", layer, kind)
    specs = [PatchSpec(heads_site.name, head=h) for h in range(gm.adapter.n_heads)] + [PatchSpec(out_site.name)]
    source, base = gm.encode(batch.clean), gm.encode(batch.corrupted)
    cache = run(gm, source, reads=[heads_site, out_site]).values
    base_out = run(gm, base, reads=[out_site]).values[out_site]
    for pair in range(len(batch)):
        spec_of_row = torch.arange(len(specs))
        pair_of_row = torch.full((len(specs),), pair)
        rows = base.select(pair_of_row)
        writes = site_writes(gm, [Intervention((s,)) for s in specs], spec_of_row, pair_of_row, Replacements(source=cache), rows)
        patched = run(gm, rows, reads=[out_site], writes=writes).values[out_site]
        head_deltas = patched[:-1] - base_out[pair]
        assert head_deltas.abs().amax(dim=(1, 2)).min() > 0  # every head moves the output
        torch.testing.assert_close(head_deltas.sum(0), patched[-1] - base_out[pair], atol=1e-5, rtol=1e-4)


def test_attribution_patching_is_exact_on_a_linear_model(dataset):
    gm = linearised(tiny_genir(encoder_layers=2, decoder_layers=3, n_docs=N_DOCS), uniform_attention=True)
    batch = tokenize_pairs(gm, dataset_pairs(dataset)[:5])
    nodes = attribution_nodes(gm, batch.width)
    table = attribute(gm, batch, nodes=nodes)
    exact = _exact_effects(gm, batch, nodes)
    merged = table.merge(exact[["pair_id", *NODE_KEYS, "exact"]], on=["pair_id", *NODE_KEYS], validate="many_to_one")
    assert len(merged) == len(table) and set(merged.method) == {"atp", "atp_qk"}
    assert set(merged.component) >= {"self_attn", "cross_attn", "mlp", "resid_post", "output"} and merged["head"].notna().any()
    scale = merged["exact"].abs().max()
    assert scale > 1.0
    np.testing.assert_allclose(merged["estimate"], merged["exact"], atol=1e-4 * scale)
    checked, rho = verify_top_k(gm, batch, table, k=6, method="atp")
    np.testing.assert_allclose(checked["atp"], checked["exact"], atol=1e-4 * scale)
    assert len(checked) == 6 and rho > 0.8  # near-ties among the top nodes may swap ranks


def test_qk_fix_is_exact_where_a_cross_attention_softmax_is_the_only_nonlinearity(dataset):
    # One decoder layer: an encoder position reaches the logits only through the cross-attention's keys and values.
    gm = linearised(tiny_genir(encoder_layers=1, decoder_layers=1, n_docs=N_DOCS), uniform_attention=False)
    batch = tokenize_pairs(gm, dataset_pairs(dataset)[:5])
    nodes = target_specs(gm, "encoder-position", encoder_positions=batch.width)
    merged = attribute(gm, batch, nodes=nodes).merge(_exact_effects(gm, batch, nodes)[["pair_id", *NODE_KEYS, "exact"]], on=["pair_id", *NODE_KEYS])
    fixed, plain = merged[merged.method == "atp_qk"], merged[merged.method == "atp"]
    scale = fixed["exact"].abs().max()
    np.testing.assert_allclose(fixed["estimate"], fixed["exact"], atol=1e-4 * scale)
    assert (plain["estimate"] - plain["exact"]).abs().max() > 0.05 * scale  # the linearised softmax is visibly wrong

    # Query side: with decoder self-attention silenced, layer 0's MLP reaches layer 1's cross-attention only as a query change.
    gm = linearised(tiny_genir(encoder_layers=1, decoder_layers=2, n_docs=N_DOCS), uniform_attention=False)
    with torch.no_grad():
        for layer in range(2):
            gm.adapter.output_projection(Site("decoder", layer, "self_attn")).weight.zero_()
    nodes = [PatchSpec("decoder.layers.0.mlp"), PatchSpec("decoder.layers.0.resid_post", position=0)]
    merged = attribute(gm, batch, nodes=nodes).merge(_exact_effects(gm, batch, nodes)[["pair_id", *NODE_KEYS, "exact"]], on=["pair_id", *NODE_KEYS])
    fixed, plain = merged[merged.method == "atp_qk"], merged[merged.method == "atp"]
    scale = fixed["exact"].abs().max()
    np.testing.assert_allclose(fixed["estimate"], fixed["exact"], atol=1e-4 * scale)
    assert (plain["estimate"] - plain["exact"]).abs().max() > 0.05 * scale


def test_planted_heads_top_the_head_sweep(dataset):
    gm = planted_cross_attention(tiny_genir(encoder_layers=2, decoder_layers=4, n_docs=N_DOCS), layers=[2], heads=[1, 3])
    batch = tokenize_pairs(gm, dataset_pairs(dataset)[:8])
    table = head_sweep(gm, batch, kinds=("cross_attn",), metrics={"logit_diff": logit_diff})
    effect = (table["value"] - table["corrupted"]).abs().groupby([table["layer"], table["head"]]).mean().sort_values(ascending=False)
    assert set(effect.index[:2]) == {(2, 1), (2, 3)}
    assert effect.iloc[:2].min() > 0.05 and effect.iloc[2:].max() < 1e-5
    atp = attribute(gm, batch, nodes=target_specs(gm, "head", kinds=("cross_attn",)), qk_fix=False)
    ranked = atp["estimate"].abs().groupby([atp["layer"], atp["head"]]).mean().sort_values(ascending=False)
    assert set(ranked.index[:2]) == {(2, 1), (2, 3)}


def test_length_mismatch_is_refused_naming_the_pair_unless_aligned(gm):
    pairs = [QueryPair("same", "who founded fikan", "who founded fikan", "1", "2"), QueryPair("uneven", "who founded fikan", "where is fikan today please", "1", "2")]
    with pytest.raises(GenIRError, match=r"pair uneven: clean 'who founded fikan' has \d+ tokens, corrupted .* has \d+"):
        tokenize_pairs(gm, pairs)
    left, right = tokenize_pairs(gm, pairs, align="left-pad"), tokenize_pairs(gm, pairs, align="right-pad")
    eos = gm.tokenizer.eos_token_id
    short = left.clean.attention_mask[1].sum()
    assert left.clean.attention_mask[1, 0] == 0 and left.clean.input_ids[1, left.lengths[1] - 1] == eos == left.corrupted.input_ids[1, left.lengths[1] - 1]
    assert right.clean.attention_mask[1, 0] == 1 and right.clean.attention_mask[1, short:].sum() == 0 and right.clean.input_ids[1, short - 1] == eos
    assert len(sweep(gm, left, [PatchSpec("encoder.output", position=0)])) > 0


def test_pair_files_report_file_and_line(tmp_path, dataset):
    good = tmp_path / "pairs.jsonl"
    q = dataset.split("validation")[:2]
    good.write_text(json.dumps({"clean": "who founded fikan", "corrupted": "who founded theklaiklom", "clean_doc": "11", "corrupted_doc": "8"}) + "\n\n"
                    + json.dumps({"pair_id": "ids", "clean_query_id": q[0].query_id, "corrupted_query_id": q[1].query_id}) + "\n")
    pairs = read_pairs(good, dataset)
    assert [p.pair_id for p in pairs] == ["p0", "ids"] and pairs[1].clean_doc == dataset.relevant(q[0].query_id)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "{not json\n")
    with pytest.raises(GenIRError, match=r"bad.jsonl, line 4: not valid JSON"):
        read_pairs(bad, dataset)
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("clean,corrupted,clean_doc,corrupted_doc\nwho founded fikan,who founded theklaiklom,11,8\nwho founded fikan,,11,8\n")
    with pytest.raises(GenIRError, match=r"pairs.csv, line 3: a pair needs 'clean' and 'corrupted'"):
        read_pairs(csv_file, dataset)


def test_specs_are_data(tmp_path, gm):
    specs = target_specs(gm, "head") + target_specs(gm, "encoder-position", encoder_positions=3)
    assert len(target_specs(gm, "head")) == gm.n_layers("decoder") * 2 * gm.adapter.n_heads
    assert load_specs(save_specs(specs, tmp_path / "sweep.json")) == specs
    with pytest.raises(GenIRError, match=r"patch spec 0 .*head 9 out of range"):
        sweep(gm, [QueryPair("a", "who founded fikan", "who founded fikan", "1", "2")], [PatchSpec("decoder.layers.0.cross_attn.heads", head=9)])
    (tmp_path / "broken.json").write_text('[{"site": "decoder.layers.0.mlp", "layer": 3}]')
    with pytest.raises(GenIRError, match=r"broken.json, spec 0"):
        load_specs(tmp_path / "broken.json")


def test_bootstrap_is_seeded_and_skips_missing_values():
    matrix = np.array([[1.0, 2.0, 3.0, np.nan], [0.0, 0.0, 0.0, 4.0]])
    mean, low, high = bootstrap_means(matrix, n_boot=200, seed=1)
    np.testing.assert_allclose(mean, [2.0, 1.0])
    assert np.all(low <= mean) and np.all(mean <= high) and high[1] > low[1]
    again = bootstrap_means(matrix, n_boot=200, seed=1)
    np.testing.assert_array_equal(again[1], low)


def test_aggregate_names_its_axes(gm, batch):
    table = sweep(gm, batch, target_specs(gm, "component"))
    summary = aggregate(table, n_boot=50)
    assert len(summary) == len(target_specs(gm, "component"))
    assert {"layer", "component", "head", "position", "mean", "ci_low", "ci_high", "n_pairs"} <= set(summary.columns)
    assert (summary["n_pairs"] == len(batch)).all()


def test_patch_and_attribute_verbs_write_tables_and_heatmaps(tmp_path, gm, dataset):
    model_dir = tmp_path / "tiny"
    gm.hf_model.save_pretrained(model_dir)
    gm.tokenizer.save_pretrained(model_dir)
    (model_dir / "model_card.json").write_text(json.dumps({"data": {"n_docs": N_DOCS, "seed": 0, "n_pairs": 16}}))
    out = tmp_path / "patch"
    common = ["--model", str(model_dir), "--all-pairs", "--n-pairs", "4", "--n-boot", "20", "--out", str(out), "--json"]
    assert main(["patch", *common, "--target", "head", "--rows-per-forward", "16"]) == 0
    assert {"pairs.csv", "head_per_pair.csv", "head_summary.csv", "head_specs.json", "head_summary.provenance.json"} <= {p.name for p in out.iterdir()}
    assert (out / "figures" / "head.png").exists()
    assert main(["patch", *common, "--target", "encoder-position", "--direction", "noise"]) == 0
    assert (out / "figures" / "encoder-position.png").exists()
    assert main(["attribute", *common, "--verify-top-k", "3"]) == 0
    assert {"attribution_per_pair.csv", "verify_top3_atp_qk.csv"} <= {p.name for p in out.iterdir()}
    assert {"attribution_heads.png", "attribution_encoder_positions.png"} <= {p.name for p in (out / "figures").iterdir()}
    assert main(["patch", *common[:-3], "--out", str(out), "--target", "resid", "--pairs", str(tmp_path / "missing.jsonl")]) == 2

"""Prefix resume: rows that start at their first intervened layer from the unpatched run's cached prefix give the
full-forward engine's logits, for every patch target, ablations and both architecture families."""
from __future__ import annotations

import pytest
import torch

from genir_mech.analyses.ablation import component_means, stage_ablations
from genir_mech.interventions import executor as executor_module
from genir_mech.interventions import Intervention, InterventionExecutor, InterventionSpec, Replacements, source_run
from genir_mech.interventions.memory import row_bytes, rows_within
from genir_mech.models.components import KINDS, Site
from genir_mech.models.execution import Resume, block_outputs, run
from genir_mech.patching.specs import TARGETS, target_specs
from genir_mech.stage_definition import StageDefinition
from genir_mech.testing import tiny_genir, tiny_llama_genir, toy_queries

# Relative to the logit scale: float32 matrix products round differently at different batch sizes, and the full
# engine itself moves by ~1e-6 of the logit scale between 5 and 100 rows per pass; resuming must stay within that.
TOLERANCE = 1e-6


@pytest.fixture(autouse=True)
def per_layer_passes(monkeypatch, request):
    """Equivalence tests price passes by rows alone, so that even these few rows resume layer by layer."""
    if "merge_small_layer_groups" not in request.node.name:
        monkeypatch.setattr(executor_module, "LAYER_OVERHEAD", 0)
        monkeypatch.setattr(executor_module, "PASS_OVERHEAD", 0)


@pytest.fixture(scope="module")
def gm():
    return tiny_genir(encoder_layers=3, decoder_layers=4)


@pytest.fixture(scope="module")
def llama():
    return tiny_llama_genir(layers=4)


def _logits(gm, groups, base, values, resume, lengths=None, rows=7):
    executor = InterventionExecutor(gm, groups, rows_per_forward=rows, resume=resume)
    out = {}
    for chunk in executor.row_logits(base, values, lengths=lengths):
        for i, q, logits in zip(chunk.intervention.tolist(), chunk.item.tolist(), chunk.logits):
            out[(i, q)] = logits
    return executor, out


def _assert_same(gm, groups, base, values, lengths=None):
    executor, resumed = _logits(gm, groups, base, values, True, lengths)
    _, full = _logits(gm, groups, base, values, False, lengths)
    assert resumed.keys() == full.keys() and len(full) > 0
    assert any(c.resume_layer > 0 for c in executor.plan(base, lengths))  # the test exercises resumed rows
    worst = max(float((resumed[k] - full[k]).abs().max()) for k in full)
    scale = max(1.0, max(float(v.abs().max()) for v in full.values()))
    assert worst <= TOLERANCE * scale, f"resumed rows differ from full forwards by {worst:.2e} (logit scale {scale:.1f})"
    return resumed, full


@pytest.mark.parametrize("target", TARGETS)
def test_every_patch_target_resumes_to_the_full_forward_logits(gm, target):
    clean, corrupted = gm.batch(toy_queries(gm, 5, seed=1)), gm.batch(toy_queries(gm, 5, seed=2))
    width = min(clean.input_ids.shape[1], corrupted.input_ids.shape[1])
    specs = target_specs(gm, target, encoder_positions=width)
    if target.startswith("encoder"):
        specs = specs + target_specs(gm, "component")  # encoder-side and decoder-side rows in one sweep
    groups = [Intervention((spec,)) for spec in specs]
    source = source_run(gm, clean, {s.parsed for s in specs})
    resumed, full = _assert_same(gm, groups, corrupted, Replacements(source=source.values))
    # Patches change the logits, so agreement is not the trivial "nothing was written".
    base = gm.logits(corrupted)
    assert max(float((full[(i, q)] - base[q]).abs().max()) for i, q in full) > 1e-3


def test_ablations_and_the_intact_run_resume(gm):
    texts = toy_queries(gm, 6)
    ablations = stage_ablations(gm, StageDefinition.parse("a=0-1,b=2,c=3"), KINDS, ("zero", "mean"))
    ablations += [Intervention(()), Intervention.of([Site.parse("decoder.output")], "zero"),
                  Intervention((InterventionSpec("decoder.layers.2.cross_attn.heads", head=1, value="zero"), InterventionSpec("decoder.layers.3.mlp", value="mean")))]
    means = component_means(gm, texts, [s for a in ablations for s in a.sites])
    resumed, _ = _assert_same(gm, ablations, gm.batch(texts), Replacements(means=means))
    intact = gm.logits(gm.batch(texts))
    for q in range(len(texts)):
        assert float((resumed[(len(ablations) - 3, q)] - intact[q]).abs().max()) <= TOLERANCE * max(1.0, float(intact.abs().max()))


def test_a_decoder_only_model_resumes(llama):
    texts = toy_queries(llama, 5)
    specs = target_specs(llama, "component") + target_specs(llama, "head") + target_specs(llama, "resid")
    source = source_run(llama, llama.batch(toy_queries(llama, 5, seed=3)), {s.parsed for s in specs})
    _assert_same(llama, [Intervention((s,)) for s in specs], llama.batch(texts), Replacements(source=source.values))


def test_chunks_resume_from_their_lowest_row_and_merge_small_layer_groups(gm):
    groups = [Intervention.of([site], "zero") for site in gm.components("decoder")][::-1]  # out of forward order
    first = lambda i: groups[i].sites[0].layer  # noqa: E731
    # Many rows: one segment per layer, each resuming at its layer.
    chunks = InterventionExecutor(gm, groups, rows_per_forward=4096, resume=True).plan(gm.batch(toy_queries(gm, 3) * 100))
    assert [c.resume_layer for c in chunks] == list(range(gm.n_layers("decoder")))
    for chunk in chunks:
        assert {first(i) for i in chunk.intervention.tolist()} == {chunk.resume_layer}
    # Few rows: per-layer passes would cost more than they save, so layers are merged; a chunk never resumes above its lowest row.
    chunks = InterventionExecutor(gm, groups, rows_per_forward=4096, resume=True).plan(gm.batch(toy_queries(gm, 3)))
    assert len(chunks) < gm.n_layers("decoder")
    for chunk in chunks:
        assert chunk.resume_layer <= min(first(i) for i in chunk.intervention.tolist())
    # Off, or by default on a workload too small to pay for the prefix pass: every row runs every layer.
    assert all(c.resume_layer == 0 for c in InterventionExecutor(gm, groups[:1], resume=None).plan(gm.batch(toy_queries(gm, 3))))
    assert all(c.resume_layer == 0 for c in InterventionExecutor(gm, groups, resume=False).plan(gm.batch(toy_queries(gm, 3))))


def test_run_refuses_sites_before_the_resume_layer(gm):
    batch = gm.encode(gm.batch(toy_queries(gm, 2)))
    prefix = block_outputs(gm, batch, [("decoder", 1)])
    resume = Resume("decoder", 2, prefix[("decoder", 1)])
    with pytest.raises(Exception, match="come before decoder layer 2"):
        run(gm, batch, reads=[Site.parse("decoder.layers.1.mlp")], resume=resume)
    resumed = run(gm, batch, reads=[Site.parse("decoder.layers.2.resid_pre")], resume=resume)
    full = run(gm, batch, reads=[Site.parse("decoder.layers.2.resid_pre")])
    assert torch.equal(resumed.values[Site.parse("decoder.layers.2.resid_pre")], full.values[Site.parse("decoder.layers.2.resid_pre")])


def test_the_memory_knob_bounds_rows(gm):
    batch = gm.batch(toy_queries(gm, 4))
    per_row = row_bytes(gm, batch, encoded=True)
    assert rows_within(gm, batch, True, max_memory=10 * per_row) == 10
    assert rows_within(gm, batch, False, max_memory=10 * per_row) < 10  # encoder rows carry the encoder's activations too
    assert rows_within(gm, batch, True, max_memory=1) == 1
    executor = InterventionExecutor(gm, [Intervention.of([s], "zero") for s in gm.components("decoder")], max_memory=10 * per_row, resume=False)
    assert max(len(c) for c in executor.plan(batch)) == 10


@pytest.mark.parametrize("verb", ["ablate", "circuit", "patch", "attribute"])
def test_the_verbs_share_one_memory_knob(verb, capsys):
    from genir_mech.cli import build_parser, main

    args = build_parser().parse_args([verb, "--model", "checkpoints/dsi-synth", "--max-memory", "1.5GiB"])
    assert args.max_memory == int(1.5 * 2**30) and args.rows_per_forward is None
    assert build_parser().parse_args([verb, "--model", "checkpoints/dsi-synth", "--max-memory", "800MB"]).max_memory == 800 * 10**6
    assert main([verb, "--model", "checkpoints/dsi-synth", "--max-memory", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-memory: expected a memory size such as 2GiB" in err and len(err.splitlines()) == 1


def test_the_memory_budget_is_process_wide_until_reset(gm):
    from genir_mech.interventions.memory import default_budget, set_budget

    batch = gm.batch(toy_queries(gm, 2))
    try:
        set_budget(3 * row_bytes(gm, batch, encoded=True))
        assert rows_within(gm, batch, True) == 3
    finally:
        set_budget(None)
    assert default_budget() > 3 * row_bytes(gm, batch, encoded=True)


def _cross_key_calls(gm, layer: int):
    """Counts calls of decoder layer `layer`'s cross-attention key projection (a list that grows per call)."""
    calls = []
    module = gm.adapter._module(Site("decoder", layer, "cross_attn")).k
    return calls, module.register_forward_hook(lambda *_: calls.append(1))


@pytest.mark.parametrize("target", ["component", "head", "encoder-position"])
def test_shared_cross_keys_values_equal_projected_ones_and_run_once(gm, target, monkeypatch):
    clean, corrupted = gm.batch(toy_queries(gm, 5, seed=1)), gm.batch(toy_queries(gm, 5, seed=2))
    width = min(clean.input_ids.shape[1], corrupted.input_ids.shape[1])
    specs = target_specs(gm, target, encoder_positions=width)
    groups = [Intervention((spec,)) for spec in specs]
    values = Replacements(source=source_run(gm, clean, {s.parsed for s in specs}).values)
    calls, handle = _cross_key_calls(gm, gm.n_layers("decoder") - 1)
    try:
        executor, shared = _logits(gm, groups, corrupted, values, True, rows=3)
        shared_calls = len(calls)
        calls.clear()
        monkeypatch.setattr(type(gm.adapter), "cross_keys_values", lambda self, hidden: None)
        _, projected = _logits(gm, groups, corrupted, values, True, rows=3)
    finally:
        handle.remove()
    encoded_chunks = [c for c in executor.plan(corrupted) if c.encoded]
    encoder_output_rows = target == "encoder-position"  # rows that rewrite encoder.output project their own keys/values
    assert shared.keys() == projected.keys()
    worst = max(float((shared[k] - projected[k]).abs().max()) for k in shared)
    assert worst <= TOLERANCE * max(1.0, max(float(v.abs().max()) for v in projected.values()))
    # Without sharing, every encoded chunk projects the keys; with it, once per base batch (plus the prefix pass).
    assert len(calls) >= len(encoded_chunks) > 2
    assert shared_calls == (len(calls) if encoder_output_rows else 2)


def test_a_write_to_a_block_output_resumes_after_its_layer(gm):
    clean, corrupted = gm.batch(toy_queries(gm, 5, seed=1)), gm.batch(toy_queries(gm, 5, seed=2))
    n = gm.n_layers("decoder")
    specs = [InterventionSpec(f"decoder.layers.{layer}.resid_post") for layer in range(n)]
    groups = [Intervention((spec,)) for spec in specs]
    values = Replacements(source=source_run(gm, clean, {s.parsed for s in specs}).values)
    executor, out = _logits(gm, groups, corrupted, values, True, rows=5)
    # Each layer's rows start one layer later: none of the layers a write overwrites is run.
    assert [executor.first_layer[i] for i in range(n)] == list(range(1, n + 1))
    assert {c.resume_layer for c in executor.plan(corrupted)} == set(range(1, n + 1))
    _, full = _logits(gm, groups, corrupted, values, False, rows=5)
    scale = max(1.0, max(float(v.abs().max()) for v in full.values()))
    assert max(float((out[k] - full[k]).abs().max()) for k in full) <= TOLERANCE * scale
    # Patching the last layer's whole output is the clean run: its logits, with no decoder layer run.
    clean_logits = gm.logits(clean)
    for q in range(5):
        assert float((out[(n - 1, q)] - clean_logits[q]).abs().max()) <= TOLERANCE * scale
    # The prefix pass ran the unpatched model: its logits are the base run's, the sweep's baseline.
    assert torch.allclose(executor.unpatched_logits, gm.logits(corrupted), atol=TOLERANCE * scale)

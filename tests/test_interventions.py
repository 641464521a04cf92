"""Intervention specs, their file format and the one row-batched executor (each test fails when the executor or the format breaks)."""
from __future__ import annotations

import pytest
import torch

from genir_mech.analyses.ablation import ablation_logits_chunks, component_means, stage_ablations
from genir_mech.analyses.circuit import parse_circuit
from genir_mech.errors import GenIRError
from genir_mech.interventions import (
    ENCODER_OUTPUT, Intervention, InterventionExecutor, InterventionSpec, LocalBackend, Replacements, RowChunk, load_interventions,
    other_model_values, save_interventions, site_means, source_run, validate_interventions,
)
from genir_mech.models.components import Site
from genir_mech.models.execution import run
from genir_mech.patching.specs import load_specs, save_specs, target_specs
from genir_mech.stage_definition import StageDefinition
from genir_mech.testing import tiny_genir, toy_queries



@pytest.fixture(scope="module")
def gm():
    return tiny_genir(encoder_layers=2, decoder_layers=4)


@pytest.fixture(scope="module")
def other():
    """Same tokenizer and shape as `gm`, different weights: other-model values that visibly differ."""
    model = tiny_genir(encoder_layers=2, decoder_layers=4)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for p in model.hf_model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def texts(gm):
    return toy_queries(gm, 6)


def _spec(site, value="source", head=None, position=None):
    return InterventionSpec(site, head, position, value)


def _groups(gm, width):
    """Every value, whole sites, heads, positions, several values at one site, encoder output and encoder layers."""
    last = gm.n_layers("decoder") - 1
    return [
        Intervention((), {"name": "intact"}),
        Intervention((_spec("decoder.layers.1.mlp", "zero"),), {"name": "zero"}),
        Intervention((_spec("decoder.layers.1.mlp", "other-model"),), {"name": "other"}),
        Intervention((_spec("decoder.layers.0.self_attn", "zero"), _spec("decoder.layers.2.cross_attn", "mean")), {"name": "two sites"}),
        Intervention((_spec("decoder.layers.1.cross_attn.heads", head=2),), {"name": "head"}),
        Intervention((_spec("decoder.layers.2.self_attn.heads", "zero", head=0), _spec("decoder.layers.2.self_attn.heads", head=1),
                      _spec("decoder.layers.2.self_attn.heads", "mean", head=3)), {"name": "three values, one site"}),
        Intervention((_spec(f"decoder.layers.{last}.resid_post", "other-model", position=0),), {"name": "decoder position"}),
        Intervention((_spec("encoder.output", position=1),), {"name": "encoder output position"}),
        Intervention((_spec("encoder.output", "mean"),), {"name": "encoder output mean"}),
        Intervention((_spec("encoder.output", position=width - 1),), {"name": "last position (padding for short queries)"}),
        Intervention((_spec("encoder.layers.0.mlp", "zero"), _spec("decoder.layers.0.mlp")), {"name": "encoder layer"}),
        Intervention((_spec("encoder.layers.1.resid_post", "other-model", position=2),), {"name": "encoder layer position"}),
    ]


def _values(gm, other, base, groups):
    executor = InterventionExecutor(gm, groups)
    source = base.select(torch.arange(len(base)).roll(1))  # other queries of the same width: a source run per row
    return Replacements(
        source=source_run(gm, source, executor.sites_with("source")).values,
        means=site_means(gm, toy_queries(gm, 12, seed=3), executor.sites_with("mean")),
        other=other_model_values(other, base, executor.sites_with("other-model")),
    )


def _reference(gm, base, group, item, values) -> torch.Tensor:
    """One query, one intervention, hand-written writes through `run` on the full model (no executor code)."""
    writes = {}
    for spec in group.specs:
        site, d = spec.parsed, gm.adapter.d_head
        t = slice(None) if spec.position is None else spec.position
        cols = slice(None) if spec.head is None else slice(spec.head * d, (spec.head + 1) * d)

        def write(x, spec=spec, site=site, t=t, cols=cols, before=writes.get(site)):
            x = (before(x) if before else x).clone()
            if spec.value == "zero":
                x[:, t, cols] = 0
            elif spec.value == "mean":
                x[:, t, cols] = values.means[site].expand(x.shape[1:])[t, cols]
            else:
                x[:, t, cols] = values.lookup(spec.value)[site][item : item + 1][:, t, cols]
            return x

        writes[site] = write
    return run(gm, base.select([item]), writes=writes).logits[0]


def _collect(executor, base, values, lengths=None) -> dict:
    return {(int(i), int(q)): row for out in executor.row_logits(base, values, lengths) for i, q, row in zip(out.intervention, out.item, out.logits)}


# -- the spec and its file format -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_intervention_files_round_trip(tmp_path, gm, suffix):
    groups = _groups(gm, 7) + stage_ablations(gm, StageDefinition.parse("a=0-1,b=2-3"), ("mlp", "cross_attn"), ("zero", "cross-model"))
    groups.append(Intervention.of(gm.components("decoder", ("mlp",)), "mean", layer=3, weight=0.5, kept=True))
    path = save_interventions(groups, tmp_path / f"sweep{suffix}")
    assert load_interventions(path) == groups
    assert load_interventions(save_interventions(load_interventions(path), tmp_path / f"again{suffix}")) == groups
    specs = target_specs(gm, "head") + target_specs(gm, "encoder-position", encoder_positions=3)
    assert load_specs(save_specs(specs, tmp_path / f"specs{suffix}")) == specs


def test_cross_model_is_other_model_and_groups_read_as_ablations(gm):
    group = Intervention.of([Site("decoder", 0, "mlp")], "cross-model", method="cross-model")
    assert group.specs[0].value == "other-model" and group.labels == {"method": "cross-model"}
    assert group.replace == ((Site("decoder", 0, "mlp"), "other-model"),) and group.sites == [Site("decoder", 0, "mlp")]
    assert Intervention(((Site("decoder", 0, "mlp"), "other-model"),), {"method": "cross-model"}) == group


@pytest.mark.parametrize("entry, message", [
    ({"specs": [{"site": "decoder.layers.0.mlp", "value": "avg"}]},
     r"sweep.yaml, intervention 1, spec 0, key 'value': 'avg' is not one of source, zero, mean, other-model"),
    ({"specs": [{"site": "decoder.layers.0.mlp"}, {"site": "decoder.layer.0.mlp"}]}, r"sweep.yaml, intervention 1, spec 1, key 'site': unknown site"),
    ({"specs": [{"site": "decoder.layers.0.mlp.heads", "head": "two"}]}, r"sweep.yaml, intervention 1, spec 0, key 'head': 'two' is not a non-negative integer"),
    ({"specs": [{"site": "decoder.layers.0.mlp", "layer": 3}]}, r"sweep.yaml, intervention 1, spec 0, key 'layer': unknown"),
    ({"specs": [{"head": 1}]}, r"sweep.yaml, intervention 1, spec 0, key 'site': missing"),
    ({"label": {"a": 1}, "specs": []}, r"sweep.yaml, intervention 1, key 'label': unknown"),
    ({"labels": {"a": [1]}, "specs": []}, r"sweep.yaml, intervention 1, key 'labels'"),
    ({"labels": {"a": 1}}, r"sweep.yaml, intervention 1, key 'specs': missing"),
])
def test_file_errors_name_the_file_entry_and_key(tmp_path, entry, message):
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"interventions": [{"labels": {"a": 1}, "specs": [{"site": "decoder.layers.1.mlp", "value": "zero"}]}, entry]}))
    with pytest.raises(GenIRError, match=message):
        load_interventions(path)


def test_malformed_files_name_the_file_and_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("interventions:\n  - specs: [{site: decoder.layers.0.mlp\n")
    with pytest.raises(GenIRError, match=r"bad.yaml, line \d+: not valid YAML"):
        load_interventions(tmp_path / "bad.yaml")
    (tmp_path / "bad.json").write_text('{"interventions": [}')
    with pytest.raises(GenIRError, match=r"bad.json, line 1: not valid JSON"):
        load_interventions(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(GenIRError, match=r"list.json: an intervention file is a mapping with the one key 'interventions'"):
        load_interventions(tmp_path / "list.json")
    with pytest.raises(GenIRError, match=r"sweep.txt: an intervention file ends in .json, .yaml, .yml"):
        load_interventions(tmp_path / "sweep.txt")


def test_validation_against_the_model_names_the_spec(tmp_path, gm):
    n_layers, n_heads = gm.n_layers("decoder"), gm.adapter.n_heads
    cases = [
        (_spec(f"decoder.layers.{n_layers}.mlp", "zero"), rf"decoder.layers.{n_layers}.mlp: the decoder has {n_layers} layers"),
        (_spec("decoder.layers.0.cross_attn.heads", head=n_heads), rf"head {n_heads} out of range; the model has {n_heads} heads"),
        (_spec("decoder.layers.0.cross_attn", head=0), r"a head can only be given for a .heads site"),
        (_spec("decoder.layers.0.mlp.heads", "zero"), r"only attention sublayers have heads"),
        (_spec("decoder.final_norm", "zero"), r"the final norm is not an intervention target"),
    ]
    for spec, message in cases:
        path = save_interventions([Intervention.of([Site("decoder", 0, "mlp")], "zero"), Intervention((_spec("decoder.layers.1.mlp"), spec))], tmp_path / "sweep.json")
        with pytest.raises(GenIRError, match=rf"sweep.json, intervention 1, spec 1 \({spec.site}.*\): .*{message}"):
            validate_interventions(gm, load_interventions(path), "sweep.json")


def test_circuit_mini_language_and_files_give_one_intervention(tmp_path, gm):
    stages = StageDefinition.parse("early=0-1,late=2-3")
    circuit = parse_circuit(gm, "zero=self_attn@all;mean=mlp@early", stages)
    yaml_file = save_interventions([circuit], tmp_path / "circuit.yaml")
    assert parse_circuit(gm, str(yaml_file), stages) == circuit
    legacy = tmp_path / "legacy.json"
    legacy.write_text('{"zero": [%s], "mean": ["decoder.layers.0.mlp", "decoder.layers.1.mlp"]}' % ", ".join(f'"decoder.layers.{l}.self_attn"' for l in range(4)))
    assert parse_circuit(gm, str(legacy), stages) == circuit
    save_interventions([Intervention((_spec("decoder.layers.0.mlp", "other-model"),))], tmp_path / "odd.yaml")
    with pytest.raises(GenIRError, match=r"odd.yaml, intervention 0, spec 0, key 'value': a circuit removes components with zero or mean"):
        parse_circuit(gm, str(tmp_path / "odd.yaml"))


# -- the executor -------------------------------------------------------------------------------------


def test_batched_rows_equal_one_by_one_and_hand_written_writes(gm, other, texts):
    base = gm.batch(texts)
    lengths = base.attention_mask.sum(1)
    assert len(set(lengths.tolist())) > 1, "the toy queries must need padding"
    groups = _groups(gm, base.input_ids.shape[1])
    values = _values(gm, other, base, groups)
    batched = _collect(InterventionExecutor(gm, groups, rows_per_forward=7), base, values, lengths)
    # Rows whose encoder position is padding for their query are left out, and only those.
    expected = {(i, q) for i, g in enumerate(groups) for q in range(len(texts))
                if all(s.position is None or s.parsed.side == "decoder" or s.position < lengths[q] for s in g.specs)}
    assert set(batched) == expected and len(expected) < len(groups) * len(texts)
    intact = gm.logits(base)
    for i, group in enumerate(groups):
        alone = _collect(InterventionExecutor(gm, [group], rows_per_forward=1), base, values, lengths)
        for q in range(len(texts)):
            if (i, q) not in expected:
                continue
            torch.testing.assert_close(batched[i, q], alone[0, q], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batched[i, q], _reference(gm, base, group, q, values), atol=1e-5, rtol=1e-5, msg=f"{group} on query {q}")
            if i > 0:
                assert (batched[i, q] - intact[q]).abs().max() > 1e-4, f"{group} changed nothing on query {q}"
    torch.testing.assert_close(torch.stack([batched[0, q] for q in range(len(texts))]), intact, atol=1e-5, rtol=1e-5)


def test_clean_into_clean_changes_nothing(gm, texts):
    base = gm.batch(texts)
    width = base.input_ids.shape[1]
    specs = [s for t in ("resid", "component", "head", "encoder-position", "encoder-layer-position") for s in target_specs(gm, t, encoder_positions=width)]
    groups = [Intervention((s,)) for s in specs] + [Intervention(tuple(target_specs(gm, "component")))]
    executor = InterventionExecutor(gm, groups, rows_per_forward=64)
    values = Replacements(source=source_run(gm, base, executor.sites).values)
    intact = gm.logits(base)
    rows = 0
    for out in executor.row_logits(base, values):
        torch.testing.assert_close(out.logits, intact[out.item], atol=2e-5, rtol=1e-5)
        rows += len(out.item)
    assert rows == len(groups) * len(texts)


def test_ablations_go_through_the_executor_and_match_hand_written_writes(gm, other, texts):
    stages = StageDefinition.parse("a=0-1,b=2-3")
    ablations = stage_ablations(gm, stages, ("self_attn", "cross_attn", "mlp"), ("zero", "mean", "cross-model"))
    means = component_means(gm, texts[:3], [s for a in ablations for s in a.sites])
    got = torch.zeros(len(ablations), len(texts), gm.hf_model.config.vocab_size)
    for cfg, query, logits in ablation_logits_chunks(gm, texts, ablations, means=means, other=other, batch_size=4, rows_per_forward=10):
        got[cfg, query] = logits
    batch = gm.batch(texts)
    values = Replacements(means=means, other=other_model_values(other, batch, [s for a in ablations for s in a.sites]))
    for a, ablation in enumerate(ablations):
        for q in range(len(texts)):
            torch.testing.assert_close(got[a, q], _reference(gm, batch, ablation, q, values), atol=1e-5, rtol=1e-5, msg=str(ablation))


def test_the_encoder_runs_once_per_query_batch_for_decoder_side_interventions(gm, texts):
    calls = []
    handle = gm.hf_model.get_encoder().register_forward_hook(lambda *args: calls.append(1))
    try:
        groups = [Intervention.of([site], "zero") for site in gm.components("decoder")] + [Intervention((_spec("encoder.output", "zero", position=0),))]
        executor = InterventionExecutor(gm, groups, rows_per_forward=5)
        assert len(executor.plan(gm.batch(texts))) > 3  # many forward passes...
        outputs = list(executor.row_logits(gm.batch(texts)))
        assert len(outputs) > 3 and len(calls) == 1  # ...one encoder run
        calls.clear()
        stages = StageDefinition.parse("a=0-1,b=2-3")
        list(ablation_logits_chunks(gm, texts, stage_ablations(gm, stages, ("mlp",), ("zero",)), batch_size=4, rows_per_forward=3))
        assert len(calls) == 2  # two query batches
        calls.clear()
        # Encoder-layer interventions rerun the encoder on their own rows, and only theirs.
        mixed = InterventionExecutor(gm, groups + [Intervention.of([Site("encoder", 0, "mlp")], "zero")], rows_per_forward=len(texts))
        list(mixed.row_logits(gm.batch(texts)))
        assert len(calls) == 2
    finally:
        handle.remove()


def test_a_backend_receives_the_chunks(gm, texts):
    class Recording:
        def __init__(self):
            self.chunks = []

        def map(self, fn, chunks):
            for chunk in chunks:
                self.chunks.append(chunk)
                yield fn(chunk)

    groups = [Intervention(())] + [Intervention.of([site], "zero") for site in gm.components("decoder")]
    backend = Recording()
    executor = InterventionExecutor(gm, groups, rows_per_forward=5, backend=backend)
    recorded = _collect(executor, gm.batch(texts), Replacements())
    local = _collect(InterventionExecutor(gm, groups, rows_per_forward=5, backend=LocalBackend()), gm.batch(texts), Replacements())
    n_rows = len(groups) * len(texts)
    # Chunks never mix resume layers, so there is at least one per layer on top of the cut every 5 rows.
    assert len(backend.chunks) == len(executor.plan(gm.batch(texts))) >= -(-n_rows // 5)
    assert all(isinstance(c, RowChunk) and len(c) <= 5 for c in backend.chunks)
    assert sum(len(c) for c in backend.chunks) == n_rows
    assert recorded.keys() == local.keys() and all(torch.equal(recorded[k], local[k]) for k in local)


def test_missing_values_are_named(gm, texts):
    executor = InterventionExecutor(gm, [Intervention((_spec("decoder.layers.0.mlp", "mean"),))])
    with pytest.raises(GenIRError, match=r"intervention 0 \(decoder.layers.0.mlp=mean\): value 'mean' needs values.means\[decoder.layers.0.mlp\]"):
        executor.row_logits(gm.batch(texts))
    executor = InterventionExecutor(gm, [Intervention((_spec("decoder.layers.0.mlp"),))])
    short = source_run(gm, gm.batch(texts[:2]), [Site("decoder", 0, "mlp")]).values
    with pytest.raises(GenIRError, match=r"source values hold 2 queries but the base batch has"):
        executor.row_logits(gm.batch(texts), Replacements(source=short))
    with pytest.raises(GenIRError, match=r"rows_per_forward must be at least 1"):
        InterventionExecutor(gm, [], rows_per_forward=0)
    assert ENCODER_OUTPUT == Site.parse("encoder.output")


def test_position_writes_on_a_decoder_only_model_match_hand_written_writes():
    """A decoder-only model's decoder side spans the whole prompt: a position write there hits that prompt token only."""
    from genir_mech.testing import tiny_llama_genir

    lm = tiny_llama_genir(layers=2)
    base = lm.batch(toy_queries(lm, 4))
    width = base.input_ids.shape[1]
    groups = [Intervention((_spec("decoder.layers.0.self_attn", "zero", position=p),)) for p in (0, width // 2, width - 1)]
    groups.append(Intervention((_spec("decoder.layers.1.mlp", "mean", position=width - 2),)))
    values = Replacements(means=site_means(lm, toy_queries(lm, 8, seed=3), InterventionExecutor(lm, groups).sites_with("mean")))
    got = _collect(InterventionExecutor(lm, groups, rows_per_forward=5), base, values)
    assert set(got) == {(i, q) for i in range(len(groups)) for q in range(len(base))}
    intact = lm.logits(base)
    for (i, q), row in got.items():
        torch.testing.assert_close(row, _reference(lm, base, groups[i], q, values), atol=1e-5, rtol=1e-5)
    assert (got[len(groups) - 2, 0] - intact[0]).abs().max() > 1e-4  # the last prompt position reaches the ranking logits

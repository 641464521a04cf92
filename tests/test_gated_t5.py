"""Gated-GELU T5 (v1.1 / Flan-T5 MLPs: act(wi_0 x) * wi_1 x) is read by component reading, exactly."""
from __future__ import annotations

import torch

from genir_mech.analyses.reading import mlp_read_scores, reading
from genir_mech.models.components import Site
from genir_mech.models.execution import run
from genir_mech.pipelines.read import ReadConfig, run_read
from genir_mech.testing import tiny_genir, toy_queries
from test_small_depths import ranked_first_dataset


def test_gated_mlp_read_scores_sum_to_the_neuron_activation():
    gm = tiny_genir(decoder_layers=3, relu=False)
    assert gm.adapter.mlp_gate("decoder", 0) is not None and tiny_genir(decoder_layers=1).adapter.mlp_gate("decoder", 0) is None
    texts = toy_queries(gm, 6)
    batch = gm.encode(gm.batch(texts))
    layer = gm.n_layers("decoder") - 1
    comps = gm.components("decoder")
    pre = Site("decoder", layer, "mlp", "resid_pre")
    values = run(gm, batch, reads=[Site("decoder", 0, "", "resid_pre"), *comps, pre]).values
    parts = torch.stack([values[Site("decoder", 0, "", "resid_pre")][:, -1]] + [values[c][:, -1] for c in comps], 1)
    n_mlp = 1 + comps.index(Site("decoder", layer, "mlp"))
    # the neuron activations the model computes: the input of wo, captured by a plain hook on an ordinary forward pass
    seen = {}
    ff = gm.hf_model.decoder.block[layer].layer[2].DenseReluDense
    handle = ff.wo.register_forward_pre_hook(lambda module, args: seen.setdefault("hidden", args[0][:, -1].detach()))
    try:
        gm.logits(batch)
    finally:
        handle.remove()
    with torch.no_grad():
        scores, active = mlp_read_scores(gm, layer, values[pre][:, -1], parts[:, :n_mlp])
    hidden = seen["hidden"]
    assert active.any() and torch.equal(active, hidden != 0)
    torch.testing.assert_close(scores.sum(1)[active], hidden.abs()[active], atol=1e-4, rtol=1e-4)


def test_read_pipeline_runs_on_a_gated_t5(tmp_path):
    gm = tiny_genir(decoder_layers=3, relu=False)
    df = reading(gm, toy_queries(gm, 4))
    assert set(df.reader_component) == {"cross_attn", "mlp"} and df.value.notna().all()
    summary = run_read(gm, ranked_first_dataset(gm), tmp_path, ReadConfig(stages="a=0-0,b=1-1,c=2-2"), progress=False)
    assert (tmp_path / "reading.csv").exists() and summary["main_source"]

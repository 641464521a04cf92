"""Decoders of 1, 2, 3 and 24 layers: the stage localiser, the even-thirds fallback and the paper circuit give sensible results or a clear error."""
from __future__ import annotations

import json

import pytest

from genir_mech.analyses.circuit import components_kept, paper_circuit
from genir_mech.analyses.stage_localisation import localise_stages
from genir_mech.data.corpus import Query, RetrievalDataset
from genir_mech.errors import GenIRError
from genir_mech.pipelines.ablate import AblateConfig, run_ablate
from genir_mech.pipelines.stages import StagesConfig, run_stages
from genir_mech.retrieval import scorer_for
from genir_mech.stage_definition import StageDefinition, StageWarning
from genir_mech.testing import tiny_genir, toy_queries

from test_stages import layer_ablation_table, synthetic_contributions

DEPTHS = (1, 2, 3, 24)


def ranked_first_dataset(gm, n_queries: int = 8) -> RetrievalDataset:
    """Toy queries judged relevant to the document the model ranks first: every query is correct, whatever the random weights."""
    texts = toy_queries(gm, n_queries)
    top = scorer_for(gm).score(gm, gm.batch(texts)).argmax(dim=1).tolist()
    docs = {d: f"document {d}" for d in gm.docids.doc_ids}
    queries = [Query(f"q{i}", t, "validation") for i, t in enumerate(texts)]
    return RetrievalDataset(docs, queries, {f"q{i}": {gm.docids.doc_ids[j]} for i, j in enumerate(top)})


def covers_every_layer_once(definition: StageDefinition, n_layers: int) -> bool:
    layers = [l for s in definition.stages for l in s.layers]
    return sorted(layers) == list(range(n_layers)) and all(s.layers for s in definition.stages)


@pytest.mark.parametrize("n_layers", DEPTHS)
def test_fallback_stages_are_never_empty(n_layers):
    with pytest.warns(StageWarning) as caught:
        stages = StageDefinition.resolve(None, n_layers)
    assert covers_every_layer_once(stages, n_layers)
    assert len(stages.stages) == min(3, n_layers)
    assert ("even thirds" in str(caught[0].message)) == (n_layers >= 3)


@pytest.mark.parametrize("n_layers", DEPTHS)
def test_localiser_runs_at_every_depth(n_layers):
    pattern = {"bridging": (0, n_layers - 1)} if n_layers < 3 else {"priming": (0, n_layers // 3 - 1), "bridging": (n_layers // 3, 2 * n_layers // 3 - 1),
                                                                    "interaction": (2 * n_layers // 3, n_layers - 1)}
    found = localise_stages(synthetic_contributions(pattern, n_layers), layer_ablation_table(n_layers, set()), bootstrap=10)
    assert covers_every_layer_once(found.definition, n_layers) and 1 <= len(found.definition.stages) <= n_layers
    assert list(found.stability.columns) == ["boundary", "selected", "frequency", "frequency_within_1"] and len(found.stability) == n_layers - 1
    assert found.summary().startswith(f"{len(found.definition.stages)} stage(s) over {n_layers} decoder layers")
    if n_layers < 3:
        assert f"The decoder has {n_layers} layer" in found.summary()
    if n_layers == 24:
        assert found.matches_paper


@pytest.mark.parametrize("n_layers", DEPTHS)
def test_stage_pipeline_at_every_depth(n_layers, tmp_path):
    gm = tiny_genir(decoder_layers=n_layers, d_model=16, num_heads=2)
    summary = run_stages(gm, ranked_first_dataset(gm, 4 if n_layers > 3 else 8), tmp_path, StagesConfig(bootstrap=3), progress=False)
    definition = StageDefinition.load(summary["stage_definition"])
    assert covers_every_layer_once(definition, n_layers)
    assert summary["boundary_stability"] == {} or n_layers > 1
    assert (tmp_path / "figures" / "stages.png").stat().st_size > 0
    assert json.loads((tmp_path / "boundary_stability.provenance.json").read_text())["split"] == "validation"


@pytest.mark.parametrize("n_layers", DEPTHS)
def test_paper_circuit_needs_three_stages(n_layers):
    gm = tiny_genir(decoder_layers=n_layers, d_model=16, num_heads=2)
    stages = StageDefinition.even_thirds(n_layers)
    if n_layers < 3:
        with pytest.raises(GenIRError, match=f"needs at least 3 stages.*has {n_layers}"):
            paper_circuit(gm, stages)
        return
    kept, total = components_kept(gm, paper_circuit(gm, stages))
    # kept: the cross-attention after the first stage and the MLPs of the last stage
    assert kept == (n_layers - len(stages.stages[0].layers)) + len(stages.stages[2].layers) and total == 3 * n_layers


def test_ablation_without_stages_on_one_layer_reports_no_empty_stage(tmp_path):
    gm = tiny_genir(decoder_layers=1, d_model=16, num_heads=2)
    with pytest.warns(StageWarning, match="one stage per layer of the 1-layer decoder"):
        run_ablate(gm, ranked_first_dataset(gm), tmp_path, AblateConfig(methods=("zero",)), progress=False)
    import pandas as pd
    df = pd.read_csv(tmp_path / "ablation.csv")
    assert set(df.loc[df["stage"].notna(), "stage"]) <= {"all", "intact"} and "all" in set(df["stage"])

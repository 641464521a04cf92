"""Planted decoders through the real stages pipeline: known priming, bridging and interaction layers are found and named
exactly; two or four planted segments are not forced into three; dispensable MLPs are not priming.

`genir_mech.testing.planted_stages` edits a tiny T5 so that each layer has one known job (its docstring says how).
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from genir_mech.data.corpus import Query, RetrievalDataset
from genir_mech.pipelines.stages import StagesConfig, run_stages
from genir_mech.retrieval import scorer_for
from genir_mech.stage_definition import StageDefinition
from genir_mech.testing import planted_stages, toy_queries


def ranked_first(gm, n_queries: int = 32) -> RetrievalDataset:
    """Toy queries judged relevant to the document the planted model ranks first: every query is correct."""
    texts = toy_queries(gm, n_queries)
    top = scorer_for(gm).score(gm, gm.batch(texts)).argmax(dim=1).tolist()
    queries = [Query(f"q{i}", t, "validation") for i, t in enumerate(texts)]
    return RetrievalDataset({d: f"document {d}" for d in gm.docids.doc_ids}, queries, {f"q{i}": {gm.docids.doc_ids[j]} for i, j in enumerate(top)})


def located(tmp_path, **layers):
    gm = planted_stages(**layers)
    summary = run_stages(gm, ranked_first(gm), tmp_path, StagesConfig(bootstrap=10), progress=False)
    definition = StageDefinition.load(summary["stage_definition"])
    return summary, [(s.name, min(s.layers), max(s.layers)) for s in definition.stages]


def test_the_paper_stages_are_found_and_named(tmp_path):
    summary, stages = located(tmp_path, priming=(0, 1), bridging=(2, 3), interaction=(4, 5))
    assert stages == [("priming", 0, 1), ("bridging", 2, 3), ("interaction", 4, 5)]
    assert summary["matches_paper"] and summary["naming"] == "functional"
    assert summary["count"]["bootstrap_same_stages"] == 1.0
    # every name is a measured test, in stages.json and in the evidence table
    data = json.loads((tmp_path / "stages.json").read_text())
    tests = {s["name"]: s["tests"] for s in data["stages"]}
    assert tests["priming"]["mlp_zero_cost"] >= 0.5 and tests["priming"]["mlp_mean_cost"] == 0.0
    assert tests["bridging"]["reader_mean_cost"] >= 0.9
    assert tests["interaction"]["mlp_out_rank_share"] <= 0.1 and tests["interaction"]["mlp_cos_resid_post"] < 0
    table = pd.read_csv(tmp_path / "stage_tests.csv")
    assert set(table.stages) == {"located", "paper-proportional"} and table.priming.sum() == 2  # located and paper-proportional priming
    # Table 3 for the located stages and the paper's split scaled to six layers, side by side
    t3 = pd.read_csv(tmp_path / "table3_fixed_vs_located.csv")
    left = t3[(t3.metric == "rank>1") & (t3.method != "intact")]
    assert set(left.stages) == {"located", "paper-proportional"} and set(left.method) == {"zero", "mean"}
    assert set(left[left.stages == "paper-proportional"].layers) == {"0-1", "2-3", "4-5"}
    zero_mlp = left[(left.stages == "located") & (left.component == "mlp") & (left.method == "zero")].set_index("stage").value
    assert zero_mlp["priming"] == pytest.approx(100 * tests["priming"]["mlp_zero_cost"], abs=0.01)  # the same protocol as the tests (JSON: 4 decimals)
    # the knob path and its figure
    path = pd.read_csv(tmp_path / "stage_path.csv")
    assert path.chosen.any() and {"value", "spans", "functions", "admissible"} <= set(path.columns)
    assert (tmp_path / "figures" / "stage_path.png").stat().st_size > 0
    assert "thresholds" in summary["report"] and "Table 3" in summary["report"]


def test_two_planted_segments_stay_two(tmp_path):
    _, stages = located(tmp_path, priming=(), bridging=(0, 1, 2), interaction=(3, 4, 5))
    assert stages == [("bridging", 0, 2), ("interaction", 3, 5)]


def test_four_planted_segments_stay_four(tmp_path):
    summary, stages = located(tmp_path, priming=(0, 1), bridging=(2, 3), idle=(4, 5), interaction=(6, 7))
    assert stages == [("priming", 0, 1), ("bridging", 2, 3), ("unassigned", 4, 5), ("interaction", 6, 7)]
    reason = json.loads((tmp_path / "stages.json").read_text())["stages"][2]["reason"]
    assert reason.startswith("meets no definition")
    assert not summary["matches_paper"]


def test_dispensable_early_mlps_are_not_priming(tmp_path):
    # MLP-dominated first layers that cost nothing when zeroed: the profile rule of old called such layers priming
    _, stages = located(tmp_path, priming=(), inert=(0, 1), bridging=(2, 3), interaction=(4, 5))
    assert stages == [("unassigned", 0, 1), ("bridging", 2, 3), ("interaction", 4, 5)]


def test_uneven_depths_are_found(tmp_path):
    _, stages = located(tmp_path, priming=(0,), bridging=(1, 2, 3), interaction=(4, 5, 6, 7))
    assert stages == [("priming", 0, 0), ("bridging", 1, 3), ("interaction", 4, 7)]

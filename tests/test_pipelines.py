"""Pipelines: each writes its tables with provenance and draws its figures; redraw finds them again; the demo (the paper
example as a sweep) runs without the CLI."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from genir_mech.data.corpus import RetrievalDataset
from genir_mech.pipelines.ablate import AblateConfig, run_ablate
from genir_mech.pipelines.attribute import AttributeConfig, run_attribute
from genir_mech.pipelines.circuit import CircuitConfig, run_circuit
from genir_mech.pipelines.contributions import ContributionsConfig, run_contributions
from genir_mech.pipelines.evaluate import EvalConfig, run_eval
from genir_mech.pipelines.lens import LensConfig, run_lens
from genir_mech.pipelines.patch import PatchConfig, run_patch
from genir_mech.pipelines.read import ReadConfig, run_read
from genir_mech.pipelines.rendering import redraw
from genir_mech.pipelines.stages import StagesConfig, run_stages
from genir_mech.pipelines.swap import SwapConfig, run_swap
from genir_mech.provenance import table_file
from genir_mech.stage_definition import StageWarning
from genir_mech.testing import planted_cross_attention, tiny_genir, toy_tokenizer

STAGES = "early=0-1,planted=2-3,late=4-5"
SMALL = dict(max_queries=8, batch_size=8)



def _model():
    return planted_cross_attention(tiny_genir(decoder_layers=6), [2, 3])


@pytest.fixture(scope="module")
def gm():
    return _model()


@pytest.fixture(scope="module")
def dataset(gm):
    """The toy corpus with each query's relevant document set to the model's own first choice, so every query is correct."""
    ds = toy_tokenizer(len(gm.docids), 0)[1]
    top = gm.docids.scores(gm.logits(gm.batch([q.text for q in ds.queries]))).argmax(1).tolist()
    qrels = {q.query_id: {gm.docids.doc_ids[j]} for q, j in zip(ds.queries, top)}
    return RetrievalDataset(ds.documents, ds.queries, qrels, ds.pairs, ds.meta)


@pytest.fixture(scope="module")
def pair_data(gm):
    return toy_tokenizer(len(gm.docids), 0)[1]


PAIRS = dict(all_pairs=True, n_pairs=4, n_boot=20)
CASES = {
    # experiment: (run(gm, dataset, pair_data, out) -> summary, tables it writes, figures it draws)
    "eval": (lambda gm, ds, pairs, out: run_eval(gm, ds, out, EvalConfig(split="test")), ["per_query", "per_query_beam", "correct_queries"], ["retrieval_ranks"]),
    "contributions": (lambda gm, ds, pairs, out: run_contributions(gm, ds, out, ContributionsConfig(**SMALL, stages=STAGES), progress=False), ["contributions"], ["fig3"]),
    "lens": (lambda gm, ds, pairs, out: run_lens(gm, ds, out, LensConfig(**SMALL, examples=2), progress=False), ["lens", "lens_heads"], ["fig4", "table5", "table6"]),
    "ablate": (lambda gm, ds, pairs, out: run_ablate(gm, ds, out, AblateConfig(**SMALL, stages=STAGES, kinds=("cross_attn", "mlp"), methods=("zero", "mean"), per_layer=True), progress=False),
               ["ablation", "layer_ablation"], ["ablation", "layer_ablation", "table3"]),
    "circuit": (lambda gm, ds, pairs, out: run_circuit(gm, ds, out, CircuitConfig(**SMALL, stages=STAGES), progress=False), ["circuit"], ["circuit", "table4"]),
    "read": (lambda gm, ds, pairs, out: run_read(gm, ds, out, ReadConfig(**SMALL, stages=STAGES), progress=False), ["reading", "reading_by_stage"], ["fig5"]),
    "stages": (lambda gm, ds, pairs, out: run_stages(gm, ds, out, StagesConfig(**SMALL, bootstrap=3, ablation=False), progress=False),
               ["contributions", "stage_layer_means", "boundary_stability", "stage_evidence"], ["stages", "fig3"]),
    "swap": (lambda gm, ds, pairs, out: run_swap(gm, ds, out, SwapConfig(batch_size=8), encoders=[_model()]), ["swap_vanilla", "swap_vanilla_per_query"], ["swap", "table2_swap_vanilla"]),
    "patch": (lambda gm, ds, pairs, out: run_patch(gm, pairs, out, PatchConfig(target="component", **PAIRS), progress=False), ["pairs", "component_per_pair", "component_summary"], ["component"]),
    "attribute": (lambda gm, ds, pairs, out: run_attribute(gm, pairs, out, AttributeConfig(**PAIRS, verify_top_k=2), progress=False),
                  ["pairs", "attribution_per_pair", "attribution_summary", "verify_top2_atp_qk"], ["attribution_heads", "attribution_components"]),
}


INDEX_COLUMNS = ("layer", "head", "position", "source_layer", "reader_layer", "first_layer", "last_layer", "boundary")


def assert_one_meaning_per_column(folder: Path) -> None:
    """Across every table: `value` is a number, and a layer, head or position that does not apply is empty, never -1."""
    import pandas as pd

    for path in folder.rglob("*.csv"):
        df = pd.read_csv(path)
        if "value" in df.columns:
            assert pd.api.types.is_numeric_dtype(df["value"]), f"{path.name}: value holds labels {sorted(set(df['value']))[:3]}"
        for col in INDEX_COLUMNS:
            if col in df.columns:
                assert (df[col].dropna() >= 0).all(), f"{path.name}: {col} holds a negative sentinel"


@pytest.mark.parametrize("experiment", sorted(CASES))
def test_pipeline_writes_tables_with_provenance_and_draws_its_figures(experiment, gm, dataset, pair_data, tmp_path):
    run, tables, figures = CASES[experiment]
    summary = run(gm, dataset, pair_data, tmp_path)
    json.dumps(summary)  # JSON-able, for --json and notebooks alike
    for name in tables:
        record = json.loads((tmp_path / f"{name}.provenance.json").read_text())
        assert record["model"] == gm.path and record["rows"] > 0 and record["config"], name
        assert (tmp_path / f"{name}.csv").stat().st_size > 0
    assert set(figures) <= set(summary["figures"]), summary["figures"]
    assert_one_meaning_per_column(tmp_path)
    for key in figures:
        path = summary["figures"][key]
        assert path.startswith(str(tmp_path)) and Path(path).stat().st_size > (1000 if path.endswith(".png") else 0), key
    # `genir-mech figures` redraws the same products from the saved tables alone
    assert set(summary["figures"]) <= set(redraw(tmp_path, tmp_path / "redrawn"))


def test_missing_stages_fall_back_to_even_thirds_with_one_warning(gm, dataset, tmp_path):
    with pytest.warns(StageWarning) as caught:
        summary = run_read(gm, dataset, tmp_path, ReadConfig(**SMALL), progress=False)
    assert len(caught) == 1
    assert [s["name"] for s in json.loads((tmp_path / "reading.provenance.json").read_text())["config"]["stages"]["stages"]] == ["priming", "bridging", "interaction"]
    assert summary["main_source"]


def test_the_demo_runs_as_a_sweep_without_a_command_line(tmp_path, monkeypatch):
    """The demo is the sweep of the paper example (what `genir-mech demo` runs) and its report, through the Python API."""
    from genir_mech.reporting.report import paper_report
    from test_paper import tiny_paper_sweep  # noqa: E402  (tests/ is on sys.path: one tiny paper sweep)

    def no_parser(*args, **kwargs):
        raise AssertionError("the demo built a command-line parser")

    monkeypatch.setattr(argparse.ArgumentParser, "__init__", no_parser)
    config, manifest = tiny_paper_sweep(tmp_path, tmp_path / "demo", patch_targets=("component",))
    assert manifest["failed"] == [] and manifest["skipped"] == []
    report = paper_report(config, manifest)
    text = report.read_text()
    assert report == tmp_path / "demo" / "REPORT.md" and "## Encoder swap" in text and "Spearman" in text
    model = tmp_path / "demo" / "dsi"  # the sweep's layout: <out>/<model>/<experiment>[/<target>]/
    for path in ("stages/stages.json", "contributions/figures/fig3_contributions.png", "ablate/tables/table3_ablation.tex",
                 "swap/figures/swap.png", "patch/component/figures/component.png", "attribute/figures/attribution_heads.png",
                 "contributions/figures/fig3_contributions.pdf"):
        assert (model / path).stat().st_size > 0, path
    assert table_file(model / "eval" / "per_query") is not None and (model / "eval" / "COMPLETE.json").is_file()

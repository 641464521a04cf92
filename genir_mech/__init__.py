"""genir_mech: mechanistic analysis of generative IR (DSI-style) models through nnsight.

    from genir_mech import load_genir, Site, run, evaluate, run_ablate, AblateConfig

    gm = load_genir("checkpoints/dsi-synth")                # adapter picked from the config; self-checked on load
    batch = gm.encode(gm.batch(["who founded zorblax"]))    # encoder once; decoder interventions reuse it
    res = run(gm, batch, reads=[Site.parse("decoder.layers.3.cross_attn")],
              writes={Site.parse("decoder.layers.5.mlp"): lambda x: x * 0})
    metrics, per_query = evaluate(gm, resolve_dataset(gm, None), "test")
    summary = run_ablate(gm, resolve_dataset(gm, None), "runs/ablate", AblateConfig(max_queries=64))

Layers, each importing only the ones before it (tests/test_layering.py):
data, docids, stage_definition -> models (adapters per family, the standard
component tree, `run`) -> retrieval (one scorer, rank metrics), training ->
interventions (one spec, one row-batched executor) -> analyses, patching ->
figures (from tables only) -> pipelines (one `run_<experiment>` each) ->
sweeps (experiments from a config file), reporting (REPORT.md and the paper's
numbers from a finished sweep), verbs and the `genir-mech` CLI.

The names below are the curated public API; they load on first use, so
`import genir_mech` stays cheap and the package has no import cycles.
"""
from __future__ import annotations

import importlib

from .version import __version__ as __version__  # re-exported: genir_mech.__version__

# public name -> module that defines it (one place to look each up)
_API = {
    # models
    "load_genir": "models.loading", "load_lm": "models.loading", "resolve_dataset": "models.loading", "GenIRModel": "models.genir_model",
    "ModelCard": "models.model_card", "Site": "models.components", "QueryBatch": "models.execution",
    "RunResult": "models.execution", "run": "models.execution", "adapter_for": "models.adapters",
    # data
    "RetrievalDataset": "data.corpus", "Query": "data.corpus", "load_dataset": "data.loaders",
    "SyntheticConfig": "data.synthetic", "generate_corpus": "data.synthetic",
    "StageDefinition": "stage_definition", "GenIRError": "errors",
    # retrieval
    "read_trec_qrels": "data.trec", "load_ir_dataset": "data.ir_datasets_source",
    "evaluate": "retrieval", "correct_queries": "retrieval", "correct_query_targets": "retrieval", "rank_texts": "retrieval",
    "scorer_for": "retrieval", "parse_measures": "retrieval",
    "rank_of": "retrieval", "rank_summary": "retrieval", "RetrievalScorer": "retrieval",
    "step_view": "retrieval", "resolve_steps": "retrieval", "StepView": "retrieval",
    # interventions
    "InterventionSpec": "interventions", "Intervention": "interventions", "InterventionExecutor": "interventions",
    "load_interventions": "interventions", "save_interventions": "interventions",
    # analyses and patching
    "contributions": "analyses.contributions", "logit_lens": "analyses.logit_lens", "ablate": "analyses.ablation",
    "layer_ablation": "analyses.ablation", "evaluate_circuits": "analyses.circuit", "paper_circuit": "analyses.circuit",
    "reading": "analyses.reading", "localise_stages": "analyses.stage_localisation",
    "sweep": "patching", "attribute": "patching", "aggregate": "patching", "target_specs": "patching",
    "dataset_pairs": "patching", "keep_correct": "patching", "tokenize_pairs": "patching",
    # retrieval heads (decoder-only models)
    "retrieval_scores": "heads", "masked_niah": "heads", "qr_token_scores": "heads", "detect_qr_heads": "heads", "qr_rankings": "heads",
    "run_heads_detect": "pipelines.heads", "run_qr_retrieve": "pipelines.heads", "HeadsConfig": "pipelines.heads",
    # pipelines
    **{f"run_{name}": f"pipelines.{module}" for name, module in [
        ("eval", "evaluate"), ("contributions", "contributions"), ("lens", "lens"), ("ablate", "ablate"), ("circuit", "circuit"),
        ("read", "read"), ("stages", "stages"), ("swap", "swap"), ("patch", "patch"), ("attribute", "attribute")]},
    **{f"{name}Config": f"pipelines.{module}" for name, module in [
        ("Eval", "evaluate"), ("Contributions", "contributions"), ("Lens", "lens"), ("Ablate", "ablate"), ("Circuit", "circuit"),
        ("Read", "read"), ("Stages", "stages"), ("Swap", "swap"), ("Patch", "patch"), ("Attribute", "attribute")]},
    # sweeps: experiments from a config file (the demo is the sweep of examples/paper.yaml)
    "load_config": "sweep", "run_sweep": "sweep",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'genir_mech' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

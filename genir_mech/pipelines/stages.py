"""Stage localisation: find the decoder's stages of a checkpoint, name them by the paper's tests and save them as a stage definition.

    from genir_mech.pipelines.stages import StagesConfig, run_stages
    summary = run_stages(gm, dataset, "runs/stages/dsi-synth", StagesConfig(max_queries=256, bootstrap=200))
    StageDefinition.load(summary["stage_definition"])       # what ablate / circuit / read take as `stages`
    summary = run_stages(gm, dataset, out, other=base_gm)    # Table 3 with cross-model ablation against the base model too

Over the model's correct queries it measures contributions (both residual
cosines); on at most `test_queries` of them (a seeded sample) it runs the
single-layer mean ablations, the logit lens and the functional tests of every
candidate segment (its MLPs zeroed and mean-ablated, its query-reading
attention mean-ablated and kept alone: one batch of ablations);
analyses.stage_localisation then segments, names and counts the stages and
bootstraps all of it. Written:

- `stages.json`: the stage definition with each stage's tests, the thresholds
  and how the count was chosen; `stage_tests.csv`: one row per segment of the
  located stages and of the paper's split scaled to this depth (numbers,
  thresholds, verdicts, reasons); `stage_evidence.csv` the same, long;
- `stage_path.csv` and `figures/stage_path.png`: what the profile criterion
  picks at every resolution (the knob that used to decide the count), read
  with the tests, and where the chosen answer lies on it;
- `table3_fixed_vs_located.csv`: Table 3 (zero / mean ablation, cross-model
  with `other`) for the paper's split scaled to this depth (layers 0-6 / 7-17
  / 18-23 of 24) and for the located stages, side by side, computed as
  pipelines.ablate computes it (analyses.ablation.ablate);
- `boundary_stability.csv`, `n_stages_bootstrap.csv`, `stage_features.csv`,
  `stage_layer_means.csv`, `stage_lens.csv`, `contributions`, `layer_ablation.csv`,
  and figures/stages.png (profile, stages, boundary stability) with Fig. 3 and
  the per-layer ablation figure of the measurements it segmented.

`ablation=False` skips every ablation (faster): the count and the names then
come from the contribution profile and are provisional.

`steps` (a decoding step, a list of them or "all") localises the stages of
each step of a multi-token docid separately (retrieval.steps: the decoder
teacher-forced to the step's prefix, ranks among the trie-valid
continuations): every table gets a `step` column, `step_stages` lists the
stages found per step, `stages_step<t>.json` holds each step's definition
(and `stages.json` the first measured step's), figures/stages_per_step.png
draws the contribution profile and the located stages of every step side by
side, and figures/stage_path_step<t>.png each step's knob path.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pandas as pd

from ..analyses.ablation import ablation_ranks, component_means, evaluate_ablations, layer_ablation, stage_ablations
from ..analyses.change_point import DEFAULT_PENALTY, DEFAULT_RESOLUTION
from ..analyses.contributions import contributions
from ..analyses.logit_lens import logit_lens
from ..analyses.stage_localisation import (
    CORRECT, MLP_MEAN, MLP_ZERO, READER_ALONE, READER_MEAN, NamingRules, localise_stages, paper_proportional_stages, stage_lens_table,
)
from ..figures.saving import save_figure
from ..figures.stages import plot_stage_path
from ..interventions import Intervention
from ..models.components import Site
from ..retrieval.steps import require_steps, resolve_steps
from ..stage_definition import StageDefinition
from ..results_directory import atomic
from .inputs import Inputs, QueryConfig, config_record
from .rendering import FIGURES, draw
from .steps import per_step

# At most this many queries go through the functional tests (every candidate segment ablated four ways) and the
# logit lens: the cost grows with queries x segments, and at 512 a share's 95% interval is at most ±4.4 points.
DEFAULT_TEST_QUERIES = 512
PAPER_PROPORTIONAL = "paper-proportional"


@dataclass
class StagesConfig(QueryConfig):
    """Parameters of `run_stages`, each with its default; recorded in every table's provenance."""
    bootstrap: int = 200  # resamples of the queries: segmentation, tests and the number of stages redone in each
    min_stage_size: int | None = None  # default max(1, n_layers // 8)
    max_stages: int | None = None  # default n_layers // min_stage_size
    penalty: float = DEFAULT_PENALTY  # the profile criterion's penalty multiplier (the knob path; the count only with ablation=False)
    resolution: float = DEFAULT_RESOLUTION  # the profile criterion's resolution (marked on the knob path; the count only with ablation=False)
    rules: NamingRules = field(default_factory=NamingRules)
    ablation: bool = True  # False: no ablation at all; the count and the names then come from the contribution profile (provisional)
    test_queries: int | None = DEFAULT_TEST_QUERIES  # functional tests, lens and Table 3 on at most this many of the queries (seeded sample)
    steps: int | list[int] | str | None = None  # decoding step(s) of a multi-token docid, or "all"; None: the ranking step, no step column


def span_tests(gm, texts, docs, batch_size: int = 64, progress: bool = False, view=None):
    """The functional-test callback of analyses.stage_localisation over these queries: for every (first, last) span, per query,
    whether its relevant document was at rank 1 intact and whether it leaves rank 1 when the span's MLPs are zeroed or
    mean-ablated, its query-reading attention mean-ablated, or every other layer's query-reading attention mean-ablated."""
    reader, n_layers = gm.adapter.query_reading_kind, gm.n_layers("decoder")

    def run(spans):
        ablations = [Intervention((), {"test": "intact"})]
        for a, b in spans:
            inside, outside = range(a, b + 1), [l for l in range(n_layers) if not a <= l <= b]
            ablations += [Intervention.of([Site("decoder", l, "mlp") for l in inside], "zero", test=MLP_ZERO),
                          Intervention.of([Site("decoder", l, "mlp") for l in inside], "mean", test=MLP_MEAN),
                          Intervention.of([Site("decoder", l, reader) for l in inside], "mean", test=READER_MEAN)]
            if outside:
                ablations.append(Intervention.of([Site("decoder", l, reader) for l in outside], "mean", test=READER_ALONE))
        sites = list(dict.fromkeys(s for x in ablations for s, value in x.replace if value == "mean"))
        means = component_means(gm, texts, sites, batch_size, None if view is None else view.decoder_inputs)
        ranks = ablation_ranks(gm, texts, docs, ablations, view, means=means, batch_size=batch_size, progress=progress).doc_rank.numpy()
        correct = ranks[0] == 1
        out, i = {}, 1
        for a, b in spans:
            tests = {CORRECT: correct}
            keys = [MLP_ZERO, MLP_MEAN, READER_MEAN] + ([READER_ALONE] if (b - a + 1) < n_layers else [])
            for key in keys:
                tests[key] = correct & (ranks[i] > 1)
                i += 1
            out[(a, b)] = tests
        return out

    return run


def _n_candidates(gm, query_ids, view):
    """Docids the relevant one is ranked among, per query: every docid, or at a step the valid continuations of its prefix."""
    if view is None:
        return len(gm.docids.vocab_ids)
    sizes = [len(c) for c in view.candidates]
    return {q: sizes[int(g)] for q, g in zip(query_ids, view.group.tolist())}


def _test_sample(n: int, limit: int | None, seed: int) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def _table3(gm, texts, docs, definitions: dict, config: StagesConfig, other, progress, view) -> pd.DataFrame:
    """Table 3 as pipelines.ablate computes it (analyses.ablation: stage_ablations, evaluate_ablations) for every named stage
    definition at once (one pass over the queries), one table with a `stages` column and each stage's `layers`."""
    methods = ("zero", "mean") + (("cross-model",) if other is not None else ())
    kinds = gm.adapter.kinds("decoder")
    ablations = [Intervention(a.specs, {"stages": label, **a.labels}) for label, definition in definitions.items()
                 for a in stage_ablations(gm, definition, kinds, methods)]
    df = evaluate_ablations(gm, texts, docs, ablations, other, batch_size=config.batch_size, progress=progress, view=view)
    spans = {(label, s.name): f"{min(s.layers)}-{max(s.layers)}" for label, definition in definitions.items() for s in definition.stages}
    df.insert(2, "layers", [spans.get((a, b), "") for a, b in zip(df["stages"], df["stage"])])
    return df


def table3_text(table: pd.DataFrame) -> str:
    """The side-by-side Table 3 as readable text: % of queries leaving rank 1 per stage, component and method."""
    left = table[(table["metric"] == "rank>1") & (table["method"] != "intact")]
    wide = left.set_index(["stages", "stage", "layers", "method", "component"])["value"].unstack(["method", "component"])
    wide.columns = [f"{m} {c}" for m, c in wide.columns]
    order = list(dict.fromkeys(zip(left["stages"], left["stage"], left["layers"])))
    return wide.reindex(order).round(1).to_string()


def _localise(gm, texts, query_ids, docs, config: StagesConfig, progress: bool, view=None, other=None):
    """Every measurement and the localisation of one set of queries (at one decoding step with `view`): (tables, found)."""
    contrib = contributions(gm, texts, query_ids, batch_size=config.batch_size, progress=progress, view=view, paper_cosine=True)
    tables = {"contributions": contrib}
    n_layers = gm.n_layers("decoder")
    reader = gm.adapter.query_reading_kind
    common = dict(min_stage_size=config.min_stage_size, max_stages=config.max_stages, bootstrap=config.bootstrap, seed=config.seed,
                  penalty=config.penalty, resolution=config.resolution, rules=config.rules, reader=reader)
    if not config.ablation:
        return tables, localise_stages(contrib, None, None, **common)
    rows = _test_sample(len(texts), config.test_queries, config.seed)
    pick = lambda values: [values[i] for i in rows]  # noqa: E731
    t_texts, t_qids, t_docs = pick(texts), pick(query_ids), pick(docs)
    t_view = None if view is None else view.select(rows)
    tables["layer_ablation"] = layer_ablation(gm, t_texts, t_docs, gm.adapter.kinds("decoder"), ("mean",), batch_size=config.batch_size, progress=progress, view=t_view)
    ranks = logit_lens(gm, t_texts, t_qids, t_docs, batch_size=config.batch_size, n_examples=0, progress=progress, view=t_view).ranks
    lens = stage_lens_table(ranks, gm.adapter.kinds("decoder"), _n_candidates(gm, t_qids, t_view), reader)
    tables["stage_lens"] = lens
    fixed = paper_proportional_stages(n_layers)
    found = localise_stages(contrib, tables["layer_ablation"], span_tests(gm, t_texts, t_docs, config.batch_size, progress, t_view), lens=lens,
                            test_query_ids=t_qids, extra={PAPER_PROPORTIONAL: fixed} if fixed else None, **common)
    definitions = {"located": found.definition, **({PAPER_PROPORTIONAL: fixed} if fixed else {})}
    tables["table3_fixed_vs_located"] = _table3(gm, t_texts, t_docs, definitions, config, other, progress, t_view)
    return tables, found


def _found_tables(found) -> dict[str, pd.DataFrame]:
    tables = {"stage_layer_means": found.layer_means, "boundary_stability": found.stability, "stage_features": found.profile,
              "stage_evidence": found.evidence, "n_stages_bootstrap": found.n_stages_distribution, "stage_path": found.path}
    if found.tests is not None:
        tables["stage_tests"] = found.tests
    return tables


def _report(found, tables) -> str:
    text = found.summary()
    if "table3_fixed_vs_located" in tables:
        text += ("\nTable 3, % of the tested queries leaving rank 1 (located stages and the paper's split scaled to this depth):\n"
                 + table3_text(tables["table3_fixed_vs_located"]))
    return text


def _record(config: StagesConfig, other) -> dict:
    return {**config_record(config), "rules": vars(config.rules), "other": getattr(other, "path", None)}


@atomic
def run_stages(model, data, out, config: StagesConfig | None = None, *, other=None, progress: bool = True) -> dict:
    """Stage localisation: find the decoder's stages of a checkpoint, name them by the paper's tests and save them as a stage
    definition; returns a JSON-able summary (module docstring: what it writes). `other`: a base model for Table 3's cross-model rows.

        summary = run_stages(gm, dataset, "runs/stages/dsi-synth", StagesConfig(max_queries=256, bootstrap=200))
    """
    config = config or StagesConfig()
    require_steps(model, config.steps, "stage localisation")
    steps = None if config.steps is None else resolve_steps(model, config.steps)  # a step beyond the docid length: one line, before any work
    inputs = Inputs.for_queries(model, data, out, config, at_least=2)
    if steps is not None:
        return _run_steps(inputs, config, steps, progress, other)
    gm = model
    tables, found = _localise(gm, inputs.texts, inputs.query_ids, inputs.relevant_docs, config, progress, other=other)
    tables.update(_found_tables(found))
    record, stages = _record(config, other), found.definition.to_json()
    for name, df in tables.items():
        inputs.write(df, name, record, stages=stages)
    definition = found.save(inputs.out / "stages.json")
    figures = draw(tables, inputs.out, found.definition, gm.name)  # with figures/stage_path.png (pipelines.rendering)
    summary = {
        "stages": stages["stages"],
        "boundary_stability": found.boundary_stability(),
        "n_stages_bootstrap": dict(zip(found.n_stages_distribution["n_stages"].astype(int).tolist(), found.n_stages_distribution["frequency"].tolist())),
        "matches_paper": found.matches_paper,
        "naming": found.naming,
        "count": found.to_json()["count"],
        "n_queries": found.n_queries,
        "stage_definition": str(definition),
        "report": _report(found, tables),
        "figures": figures,
    }
    if "table3_fixed_vs_located" in tables:
        summary["table3"] = str(inputs.out / "table3_fixed_vs_located.csv")
    return summary


def _run_steps(inputs: Inputs, config: StagesConfig, steps: list[int], progress: bool, other=None) -> dict:
    """The localisation at every decoding step in `steps`: tables with a step column, one definition per step, the per-step figures."""
    gm = inputs.model
    found_at, reports, paths = {}, [], {}

    def measure(texts, query_ids, docs, view):
        tables, found = _localise(gm, texts, query_ids, docs, config, progress, view, other)
        path = found.save(inputs.out / f"stages_step{view.step}.json")
        if not found_at:  # the first step measured
            found.save(inputs.out / "stages.json")
        found_at[view.step] = {"stages": found.definition.to_json()["stages"], "boundary_stability": found.boundary_stability(),
                               "n_queries": found.n_queries, "stage_definition": str(path), "matches_paper": found.matches_paper,
                               "naming": found.naming, "count": found.to_json()["count"]}
        reports.append(f"step {view.step}: " + _report(found, tables))
        paths[view.step] = (found.path, found.segmentation.n_layers, found.definition)
        return {**tables, **_found_tables(found), "step_stages": stage_rows(found.definition)}

    frames = per_step(inputs, steps, measure)
    record = {**_record(config, other), "steps": steps}
    for name, df in frames.items():
        inputs.write(df, name, record)
    figures = draw(frames, inputs.out, StageDefinition.load(inputs.out / "stages.json"), gm.name)
    for step, (path, n_layers, definition) in paths.items():
        fig = plot_stage_path(path, n_layers, definition, title=f"{gm.name}, docid step {step}: the stage count along the knob")
        figures[f"stage_path_step{step}"] = str(save_figure(fig, inputs.out / FIGURES / f"stage_path_step{step}.png"))
        if step == min(paths) and "stage_path" not in figures:  # one step: drawn by `draw` already
            figures["stage_path"] = str(save_figure(fig, inputs.out / FIGURES / "stage_path.png"))
    return {
        "steps": found_at,
        "report": "\n".join(reports),
        "stage_definition": str(inputs.out / "stages.json"),
        "figures": figures,
    }


def stage_rows(definition: StageDefinition) -> pd.DataFrame:
    """One row per stage: stage, first_layer, last_layer (the per-step figure reads the located stages from here)."""
    return pd.DataFrame([{"stage": s.name, "first_layer": min(s.layers), "last_layer": max(s.layers)} for s in definition.stages if s.layers],
                        columns=["stage", "first_layer", "last_layer"])

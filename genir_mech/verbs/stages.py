"""`genir-mech stages`: locate the decoder's stages of a checkpoint and save them as a stage definition.

    genir-mech stages --model checkpoints/dsi-synth --bootstrap 200
    genir-mech ablate --model checkpoints/dsi-synth --stages runs/stages/dsi-synth/stages.json
    found = run_stage_localisation(load_genir("checkpoints/dsi-synth"), dataset, "runs/stages/dsi-synth")   # from Python

Measures contributions and single-layer mean ablations over the model's
correct queries, segments the layers (analyses.stage_localisation), checks each MLP stage
by mean-ablating its MLPs together, and writes the tables, the figure and
`stages.json`.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..analyses.ablation import ablate, layer_ablation
from ..analyses.contributions import contributions
from ..analyses.change_point import DEFAULT_PENALTY, DEFAULT_RESOLUTION
from ..analyses.stage_localisation import ABLATION_METRIC, NamingRules, localise_stages
from ..errors import GenIRError
from ..figures.stages import plot_stages
from ..models.loading import load_genir, resolve_dataset
from ..provenance import provenance, write_table
from ..retrieval import correct_queries
from ..stage_definition import Stage, StageDefinition
from ..analyses.tidy import sample_queries
from . import Verb


def add_arguments(p):
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--data", help="data spec (default: the data named in the checkpoint's model_card.json)")
    p.add_argument("--split", default="validation", help="the model's correct queries of this split are analysed (default validation)")
    p.add_argument("--max-queries", type=int, help="analyse a seeded random sample of at most N correct queries (default all)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the queries for boundary stability (default 200)")
    p.add_argument("--min-stage-size", type=int, help="fewest layers in a stage (default max(1, n_layers // 8))")
    p.add_argument("--max-stages", type=int, help="most stages considered (default n_layers // min-stage-size)")
    p.add_argument("--penalty", type=float, default=DEFAULT_PENALTY, help=f"multiplier of the BIC penalty; larger gives fewer stages (default {DEFAULT_PENALTY})")
    p.add_argument("--resolution", type=float, default=DEFAULT_RESOLUTION, help=f"feature differences below this are noise (default {DEFAULT_RESOLUTION})")
    p.add_argument("--cheap-ablation", type=float, default=NamingRules.cheap_ablation, help="priming: at most this fraction of queries may leave rank 1 when the stage's MLPs are mean-ablated (default 0.10)")
    p.add_argument("--no-ablation", action="store_true", help="segment on contributions alone (faster; MLP stages then cannot be confirmed as priming)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docid-pattern", help="regex with one group matching docid tokens (default @DOC_ID_(.+?)@)")
    p.add_argument("--out", help="output directory (default runs/stages/<model name>)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the stages and boundary stability")


def _stage_cost(gm, texts, docs, batch_size):
    """Fraction of queries leaving rank 1 when each span's MLPs are mean-ablated together (paper Table 3 protocol)."""

    def cost(spans):
        spans_def = StageDefinition(tuple(Stage(f"s{i}", tuple(range(a, b + 1))) for i, (a, b) in enumerate(spans)))
        df = ablate(gm, texts, docs, spans_def, kinds=("mlp",), methods=("mean",), batch_size=batch_size, progress=True)
        df = df[(df["metric"] == ABLATION_METRIC) & (df["method"] == "mean")].set_index("stage")["value"]
        return [float(df[f"s{i}"]) / 100.0 for i in range(len(spans))]

    return cost


def run_stage_localisation(
    gm,
    dataset,
    out_dir: str | Path,
    split: str = "validation",
    max_queries: int | None = None,
    bootstrap: int = 200,
    min_stage_size: int | None = None,
    max_stages: int | None = None,
    penalty: float = DEFAULT_PENALTY,
    resolution: float = DEFAULT_RESOLUTION,
    rules: NamingRules = NamingRules(),
    ablation: bool = True,
    batch_size: int = 64,
    seed: int = 0,
):
    """Measure, localise and write: tables, `stages.json` and `stages.png` under `out_dir`. Returns the StageLocalisation."""
    started = time.time()
    queries = sample_queries(correct_queries(gm, dataset, split, batch_size), max_queries, seed)
    if len(queries) < 2:
        raise GenIRError(f"{gm.path}: only {len(queries)} correct {split} queries; stage localisation needs at least 2")
    texts, ids = [q.text for q in queries], [q.query_id for q in queries]
    docs = [dataset.relevant(i) for i in ids]
    contrib = contributions(gm, texts, ids, batch_size=batch_size, progress=True)
    layers = layer_ablation(gm, texts, docs, kinds=gm.adapter.kinds("decoder"), method="mean", batch_size=batch_size, progress=True) if ablation else None
    found = localise_stages(
        contrib,
        layers,
        _stage_cost(gm, texts, docs, batch_size) if ablation else None,
        min_stage_size=min_stage_size,
        max_stages=max_stages,
        bootstrap=bootstrap,
        seed=seed,
        penalty=penalty,
        resolution=resolution,
        rules=rules,
    )
    out = Path(out_dir)
    config = {
        "split": split, "max_queries": max_queries, "bootstrap": bootstrap, "min_stage_size": min_stage_size, "max_stages": max_stages,
        "penalty": penalty, "resolution": resolution, "rules": vars(rules), "ablation": ablation,
    }
    record = provenance(model=gm.path, data=dataset, config=config, seed=seed, started=started, n_queries=len(queries), stages=found.definition.to_json())
    write_table(contrib, out / "contributions", record)
    if layers is not None:
        write_table(layers, out / "layer_ablation", record)
    write_table(found.profile, out / "stage_features", record)
    write_table(found.evidence, out / "stage_evidence", record)
    write_table(found.stability, out / "boundary_stability", record)
    write_table(found.n_stages_distribution, out / "n_stages_bootstrap", record)
    found.definition.save(out / "stages.json")
    plot_stages(found, out / "stages.png", title=f"{gm.name}: decoder stages")
    return found


def run(args):
    gm = load_genir(args.model, docid_pattern=args.docid_pattern)
    dataset = resolve_dataset(gm, args.data)
    out = Path(args.out or Path("runs") / "stages" / Path(args.model).name)
    found = run_stage_localisation(
        gm, dataset, out, args.split, args.max_queries, args.bootstrap, args.min_stage_size, args.max_stages, args.penalty, args.resolution,
        NamingRules(cheap_ablation=args.cheap_ablation), not args.no_ablation, args.batch_size, args.seed,
    )
    summary = {
        "stages": found.definition.to_json()["stages"],
        "boundary_stability": found.boundary_stability(),
        "n_stages_bootstrap": dict(zip(found.n_stages_distribution["n_stages"].astype(int).tolist(), found.n_stages_distribution["frequency"].tolist())),
        "matches_paper": found.matches_paper,
        "n_queries": found.n_queries,
        "stage_definition": str(out / "stages.json"),
        "figure": str(out / "stages.png"),
    }
    if not args.json:
        print(found.summary())
        print(f"stage definition: {out / 'stages.json'}   figure: {out / 'stages.png'}   tables: {out}")
    return summary


VERB = Verb("Locate the decoder's stages (priming/bridging/interaction) by change-point segmentation, with bootstrap stability", add_arguments, run)

"""Shared command-line inputs of the decoder-analysis verbs (contributions, lens, ablate, circuit, read).

    def add_arguments(p): add_query_arguments(p, "ablate"); add_stage_argument(p)
    def run(args): inputs = load_inputs(args, "ablate"); ...; inputs.write(df, "ablation", config)

One place decides which queries an analysis sees (the model's correct queries
of a split, optionally a seeded sample), where results go, and how a stage
definition is read.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..analyses.tidy import sample_queries
from ..errors import GenIRError
from ..models.loading import load_genir, resolve_dataset
from ..provenance import provenance, write_table
from ..retrieval import correct_queries
from ..stage_definition import StageDefinition


def add_query_arguments(p, verb: str) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--data", help="data spec (default: the data named in the checkpoint's model_card.json)")
    p.add_argument("--split", default="validation", help="analyse the model's correct queries of this split (default validation)")
    p.add_argument("--max-queries", type=int, help="a seeded random sample of at most N correct queries (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="queries per forward pass (default 64)")
    p.add_argument("--docid-pattern", help="regex with one group matching docid tokens (default @DOC_ID_(.+?)@)")
    p.add_argument("--out", help=f"output directory (default runs/{verb}/<model name>)")
    p.add_argument("--json", action="store_true", help="print one JSON object summarising the result")


def add_stage_argument(p, required_for: str = "") -> None:
    p.add_argument(
        "--stages",
        help="stage definition: a spec like priming=0-2,bridging=3-5,interaction=6-7 or the stages.json written by "
        f"`genir-mech stages`{required_for} (default: three even thirds of the decoder, with a warning)",
    )


def resolve_stages(spec: str | None, n_layers: int, default_even: bool = True) -> StageDefinition | None:
    if spec:
        return StageDefinition.parse(spec).check(n_layers)
    if not default_even:
        return None
    print(
        "warning: no --stages given; using three even thirds of the decoder layers. Run `genir-mech stages` "
        "to localise the stages of this model and pass its stages.json.",
        file=sys.stderr,
    )
    return StageDefinition.even_thirds(n_layers)


@dataclass
class AnalysisInputs:
    gm: object
    dataset: object
    queries: list
    out: Path
    started: float
    args: object = None
    extra: dict = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [q.text for q in self.queries]

    @property
    def query_ids(self) -> list[str]:
        return [q.query_id for q in self.queries]

    @property
    def relevant_docs(self) -> list[str]:
        return [self.dataset.relevant(q.query_id) for q in self.queries]

    def write(self, df, name: str, config: dict, **extra) -> Path:
        record = provenance(model=self.gm.path, data=self.dataset, config=config, seed=getattr(self.args, "seed", None), started=self.started, n_queries=len(self.queries), **extra)
        return write_table(df, self.out / name, record)


def load_inputs(args, verb: str) -> AnalysisInputs:
    started = time.time()
    gm = load_genir(args.model, docid_pattern=args.docid_pattern)
    dataset = resolve_dataset(gm, args.data)
    queries = correct_queries(gm, dataset, args.split, args.batch_size)
    queries = sample_queries(queries, args.max_queries, args.seed)
    if not queries:
        raise GenIRError(f"{args.model}: no correct queries in split {args.split!r}; nothing to analyse")
    out = Path(args.out or Path("runs") / verb / Path(args.model).name)
    return AnalysisInputs(gm, dataset, queries, out, started, args)

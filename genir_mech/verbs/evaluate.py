"""`genir-mech eval`: retrieval metrics of a GenIR checkpoint, plus its list of correct queries."""
from __future__ import annotations

import time
from pathlib import Path

from ..models.loading import load_genir, resolve_dataset
from ..provenance import provenance, write_table
from ..retrieval import evaluate
from . import Verb


def add_arguments(p):
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--data", help="data spec (default: the data named in the checkpoint's model_card.json)")
    p.add_argument("--split", default="test", help="query split to evaluate (default test)")
    p.add_argument("--out", help="directory for per_query.csv and correct_queries.csv (default runs/eval/<model name>)")
    p.add_argument("--docid-pattern", help="regex with one group matching docid tokens (default @DOC_ID_(.+?)@)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object with the metrics")


def run(args):
    started = time.time()
    gm = load_genir(args.model, docid_pattern=args.docid_pattern)
    dataset = resolve_dataset(gm, args.data)
    metrics, per_query = evaluate(gm, dataset, args.split, args.batch_size)
    out = Path(args.out or Path("runs") / "eval" / Path(args.model).name)
    record = provenance(model=args.model, data=dataset, config={"split": args.split}, started=started, metrics=metrics)
    write_table(per_query, out / "per_query", record)
    write_table(per_query[per_query.correct], out / "correct_queries", record)
    metrics["correct_queries"] = str(out / "correct_queries.csv")
    if not args.json:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    return metrics


VERB = Verb("Hits@1/5/10 and MRR (ir_measures) of a checkpoint on a query split; writes the correct-query list", add_arguments, run)

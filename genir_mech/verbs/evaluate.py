"""`genir-mech eval`: retrieval metrics of a GenIR checkpoint (ir_measures), its list of correct queries and a rank curve.

    genir-mech eval --model dsi-synth --split test
    genir-mech eval --model M --data ir_datasets:msmarco-passage/dev/small --metrics RR@10,nDCG@10 --trec-run run.txt
    genir-mech eval --model M --data beir/scifact --qrels my-qrels.txt          # judgements from a TREC qrels file
"""
from __future__ import annotations

from . import Verb
from .options import existing_file, load_data, load_model, measure_list, model_arguments, non_negative_int, output_arguments, output_dir, positive_int, split_argument


def add_arguments(p):
    model_arguments(p)
    split_argument(p, "test", "query split to evaluate")
    p.add_argument("--batch-size", type=positive_int, default=256, help="queries per forward pass (default 256)")
    p.add_argument("--metrics", type=measure_list,
                   help="comma-separated ir_measures names, e.g. Success@1,RR@10,nDCG@10,R@100 (the old hits@1, hits@5, hits@10, mrr "
                        "are aliases; default Success@1,Success@5,Success@10,RR,R@10,nDCG@10)")
    p.add_argument("--qrels", type=existing_file, help="TREC qrels file (query-id iteration doc-id relevance) replacing the data's judgements; "
                                                       "the queries it judges are evaluated")
    p.add_argument("--trec-run", metavar="FILE", help="also write the ranking as a TREC run file (top --run-depth documents per query); "
                                                      "inside --out it is part of the result, elsewhere an existing file is kept unless --overwrite-trec-run")
    p.add_argument("--overwrite-trec-run", action="store_true", help="replace an existing --trec-run file")
    p.add_argument("--run-depth", type=positive_int, default=100, help="documents per query in the run the metrics read and --trec-run writes (default 100)")
    p.add_argument("--beams", type=non_negative_int, default=10, help="also rank by prefix-constrained beam search with this many beams and report "
                                                                    "its metrics (beam:...) and how often it misses the exact top-1; 0: exact only (default 10)")
    p.add_argument("--max-queries", type=positive_int, help="evaluate only the first N queries of the split (default all)")
    p.add_argument("--full-ranking", action="store_true", help="multi-token docids: score every document exactly (default: the exact top "
                                                                "--run-depth and every document up to the relevant ones, all the metrics need)")
    output_arguments(p, "eval", "one JSON object with the metrics")


def handler(args):
    from ..pipelines.evaluate import EvalConfig, run_eval  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "eval")
    gm = load_model(args)
    config = EvalConfig(split=args.split, batch_size=args.batch_size, qrels=args.qrels, trec_run=args.trec_run,
                        overwrite_trec_run=args.overwrite_trec_run, run_depth=args.run_depth,
                        beams=args.beams, full_ranking=args.full_ranking, max_queries=args.max_queries,
                        **({"measures": args.metrics} if args.metrics else {}))
    summary = run_eval(gm, load_data(args, gm), out, config)
    if not args.json:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items() if k != "figures"))
    return summary


VERB = Verb("Success@k, RR, nDCG@10 (ir_measures, every relevant document with its grade) of a checkpoint on a query split; "
            "writes the correct-query list, a rank curve and optionally a TREC run", add_arguments, handler)

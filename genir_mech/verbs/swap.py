"""`genir-mech swap`: give a model's decoder other models' encoder outputs (paper Table 2), and print both experiments.

    genir-mech swap --model checkpoints/dsi-synth \
        --encoder-from checkpoints/dsi-synth-rd1 checkpoints/dsi-synth-rd2 checkpoints/t5-synth-base
    run_swap_experiments("checkpoints/dsi-synth", ["checkpoints/dsi-synth-rd1"], "checkpoints/t5-synth-base", "runs/swap/dsi-synth")

An encoder model whose model card lists removed documents runs experiment 1
(queries of those documents); any other (e.g. the pretrained base) runs
experiment 2 (A's correct queries). Without --encoder-from: A's base model
(from its model card) and every checkpoint beside A trained on the same data
without some documents.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..analyses.encoder_swap import removed_docs_experiment, vanilla_encoder_experiment
from ..errors import GenIRError
from ..figures.encoder_swap import plot_swap
from ..figures.tables import write_display
from ..models.loading import load_genir, resolve_dataset
from ..models.model_card import ModelCard
from ..provenance import provenance, write_table
from . import Verb


def _value(summary: pd.DataFrame, metric: str) -> float:
    return float(summary.loc[summary["metric"] == metric, "value"].iloc[0])


def removed_docs_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Display table of experiment 1: one row per variant x condition."""
    rows = []
    for (variant, condition), s in summary[summary["condition"] != ""].groupby(["variant", "condition"], sort=False):
        n, hits, docs = int(_value(s, "n_queries")), int(_value(s, "hits@1_count")), int(_value(s, "n_documents"))
        rows.append({"encoder from (B)": variant, "condition": condition, "queries (docs)": f"{n} ({docs})", "Hits@1": f"{hits}/{n}", "Hits@1 %": round(100 * hits / n, 1), "MRR": round(_value(s, "mrr"), 3)})
    return pd.DataFrame(rows)


def vanilla_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Display table of experiment 2: one row per vanilla model x condition."""
    rows = []
    for (source, condition), s in summary.groupby(["encoder_from", "condition"], sort=False):
        n = int(_value(s, "n_queries"))
        rows.append({
            "encoder from (B)": source, "condition": condition, "queries": n, "mean rank": round(_value(s, "mean_rank"), 1),
            "median rank": _value(s, "median_rank"), "% rank 1": round(100 * _value(s, "hits@1"), 1), "% within rank 10": round(100 * _value(s, "hits@10"), 1),
            "MRR": round(_value(s, "mrr"), 3),
        })
    return pd.DataFrame(rows)


def run_swap_experiments(
    model_a_path: str,
    variant_paths: Sequence[str],
    vanilla_path: str | Sequence[str] | None,
    out_dir: str | Path,
    data: str | None = None,
    splits: Sequence[str] = ("test", "validation"),
    vanilla_split: str = "validation",
    batch_size: int = 64,
) -> dict:
    """Run experiment 1 over `variant_paths` and experiment 2 over `vanilla_path`; write tables, Markdown, LaTeX and a figure."""
    started = time.time()
    vanilla_paths = [vanilla_path] if isinstance(vanilla_path, str) else list(vanilla_path or [])
    if not variant_paths and not vanilla_paths:
        raise GenIRError("encoder swap: no encoder models given (--encoder-from)")
    a = load_genir(model_a_path)
    dataset = resolve_dataset(a, data)
    out = Path(out_dir)
    config = {"encoder_from": list(variant_paths) + vanilla_paths, "splits": list(splits), "vanilla_split": vanilla_split}
    record = provenance(model=model_a_path, data=dataset, config=config, started=started)
    result: dict = {"out": str(out)}
    removed_pq = vanilla_pq = None
    if variant_paths:
        summary, removed_pq = removed_docs_experiment(a, [load_genir(p) for p in variant_paths], dataset, splits, batch_size)
        write_table(summary, out / "swap_removed_docs", record)
        write_table(removed_pq, out / "swap_removed_docs_per_query", record)
        table = removed_docs_table(summary)
        write_display(table, out / "swap_removed_docs_table", f"Encoder swap, removed documents: {a.name}'s decoder on each variant's encoder output; queries of the removed documents ({'+'.join(splits)} splits) that {a.name} ranks first.", index=False)
        result["removed_docs"] = table
    if vanilla_paths:
        parts = [vanilla_encoder_experiment(a, load_genir(p), dataset, vanilla_split, batch_size) for p in vanilla_paths]
        summary, vanilla_pq = pd.concat([s for s, _ in parts], ignore_index=True), pd.concat([q for _, q in parts], ignore_index=True)
        write_table(summary, out / "swap_vanilla", record)
        write_table(vanilla_pq, out / "swap_vanilla_per_query", record)
        table = vanilla_table(summary)
        write_display(table, out / "swap_vanilla_table", f"Encoder swap, vanilla encoder: {a.name}'s decoder on the pretrained encoder; {a.name}'s correct {vanilla_split} queries.", index=False)
        result["vanilla"] = table
    result["figure"] = str(plot_swap(removed_pq, vanilla_pq, out / "swap.png", title=f"{a.name}: encoder swap"))
    return result


def default_encoders(model_a: str) -> list[str]:
    """A's base model, and the checkpoints beside A trained on A's data without some documents."""
    card = ModelCard.read(model_a)
    found = [card.base] if card.base and Path(card.base).exists() else []
    here = Path(model_a).resolve()
    for sibling in sorted(here.parent.iterdir()):
        other = ModelCard.read(sibling)
        if sibling != here and other.removed_documents and other.data_hash == card.data_hash:
            found.append(str(Path(model_a).parent / sibling.name))
    if not found:
        raise GenIRError(f"{model_a}: no --encoder-from given and no base model or removed-documents variant found beside it")
    return found


def add_arguments(p):
    p.add_argument("--model", required=True, help="model A, whose decoder is used")
    p.add_argument("--encoder-from", nargs="+", help="models B whose encoder output A's decoder gets (default: A's base and removed-documents variants beside A)")
    p.add_argument("--data", help="data spec (default: the data named in A's model_card.json)")
    p.add_argument("--splits", default="test,validation", help="experiment 1: splits whose queries of the removed documents are used (default test,validation: all held-out)")
    p.add_argument("--vanilla-split", default="validation", help="experiment 2: the split of A's correct queries (default validation)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", help="output directory (default runs/swap/<model name>)")
    p.add_argument("--json", action="store_true", help="print one JSON object with both tables")


def run(args):
    encoders = args.encoder_from or default_encoders(args.model)
    missing = [p for p in encoders if not Path(p).exists() and p.count("/") != 1]
    if missing:
        raise GenIRError(f"--encoder-from: no such checkpoint {missing[0]}")
    variants = [p for p in encoders if ModelCard.read(p).removed_documents]
    vanillas = [p for p in encoders if p not in variants]
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    out = args.out or Path("runs") / "swap" / Path(args.model).name
    result = run_swap_experiments(args.model, variants, vanillas, out, args.data, splits, args.vanilla_split, args.batch_size)
    tables = {k: result[k] for k in ("removed_docs", "vanilla") if k in result}
    if not args.json:
        titles = {"removed_docs": "Experiment 1: removed documents (paper Table 2)", "vanilla": "Experiment 2: vanilla encoder"}
        for key, table in tables.items():
            print(f"{titles[key]}\n{table.to_markdown(index=False)}\n")
        print(f"tables and figure: {result['out']}")
    return {k: json.loads(t.to_json(orient="records")) for k, t in tables.items()} | {"figure": result["figure"]}


VERB = Verb("Encoder swap: A's decoder on B's encoder output (removed-documents variants and a vanilla encoder)", add_arguments, run)

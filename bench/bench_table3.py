"""Benchmark: the Table-3 sweep (component types x stages x {zero, mean}) with genir_mech against two baselines run in the same process.

    python bench/bench_table3.py --model checkpoints/dsi-synth            # writes bench/results/table3.md

- genir_mech: `analyses.ablation.ablation_ranks` over the one intervention
  executor (`interventions.InterventionExecutor`), many ablations per forward
  pass as rows, the encoder once per query batch, one nnsight trace per pass;
- batch-1 loop: the public reference code's approach, one query and one
  ablation per forward pass (encoder included), plain PyTorch forward hooks;
- floor: the same batched forward passes as genir_mech (encoder once per
  batch, the same rows) without any instrumentation: what the sweep cannot beat.

Component means are computed once beforehand and shared by all three (not
timed). The batch-1 loop's ranks must equal genir_mech's, or the benchmark fails.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from genir_mech.analyses.ablation import ablation_ranks, component_means, stage_ablations
from genir_mech.analyses.query_batches import query_batches, sample_queries
from genir_mech.models.adapters import module_at
from genir_mech.models.components import KINDS
from genir_mech.models.loading import load_genir, resolve_dataset
from genir_mech.retrieval import correct_queries, rank_of
from genir_mech.stage_definition import StageDefinition

METHODS = ("zero", "mean")


def replacement_hook(index, value):
    """Forward hook that replaces a module output (or element `index` of a tuple output) by `value`."""

    def hook(module, args, output):
        if index is None:
            return value.expand_as(output).to(output.dtype)
        return (*output[:index], value.expand_as(output[index]).to(output[index].dtype), *output[index + 1 :])

    return hook


@torch.no_grad()
def batch1_loop(gm, texts, doc_cols, ablations, means) -> torch.Tensor:
    """One query, one ablation, one full forward pass at a time, with plain PyTorch hooks."""
    ranks = torch.zeros(len(ablations), len(texts), dtype=torch.long)
    model = gm.hf_model
    for c, ablation in enumerate(ablations):
        handles = []
        for site, method in ablation.replace:
            hook = gm.adapter.hook(site)
            assert hook.io == "output" and hook.index in (None, 0), hook
            value = torch.zeros(gm.adapter.d_model) if method == "zero" else means[site]
            handles.append(module_at(model, hook.path).register_forward_hook(replacement_hook(hook.index, value)))
        try:
            for q, text in enumerate(texts):
                enc = gm.tokenizer([text], return_tensors="pt")
                logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=gm.start_ids(1)).logits[:, -1]
                ranks[c, q] = rank_of(gm.docids.scores(logits), doc_cols[q : q + 1])[0]
        finally:
            for h in handles:
                h.remove()
    return ranks


@torch.no_grad()
def floor(gm, texts, doc_cols, n_ablations, batch_size, rows_per_forward) -> int:
    """The uninstrumented batched passes of the same sweep: encoder once per batch, the same fanned-out rows."""
    per_pass = max(1, rows_per_forward // min(batch_size, len(texts)))
    passes = 0
    for rows, batch in query_batches(gm, texts, batch_size, encode=True):
        n = len(batch)
        for first in range(0, n_ablations, per_pass):
            k = min(per_pass, n_ablations - first)
            fanned = batch.select(torch.arange(n).repeat(k))
            logits = gm.logits(fanned)
            rank_of(gm.docids.scores(logits), doc_cols[rows].repeat(k))
            passes += 1
    return passes


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/dsi-synth")
    p.add_argument("--stages", help="stage definition (default: three even thirds)")
    p.add_argument("--max-queries", type=int, help="sample of the correct validation queries (default all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rows-per-forward", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched methods (median reported)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for every method (default 1: small models on a shared CPU)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "table3.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    gm = load_genir(args.model)
    dataset = resolve_dataset(gm, None)
    queries = sample_queries(correct_queries(gm, dataset, "validation"), args.max_queries, 0)
    texts = [q.text for q in queries]
    docs = [dataset.relevant(q.query_id) for q in queries]
    doc_cols = torch.tensor([gm.docids.index(d) for d in docs])
    n_layers = gm.n_layers("decoder")
    stages = StageDefinition.parse(args.stages).check(n_layers) if args.stages else StageDefinition.even_thirds(n_layers)
    ablations = stage_ablations(gm, stages, KINDS, METHODS)
    means = component_means(gm, texts, [s for a in ablations for s in a.sites], args.batch_size)

    sweep = lambda: ablation_ranks(gm, texts, docs, ablations, means=means, batch_size=args.batch_size, rows_per_forward=args.rows_per_forward)  # noqa: E731
    timed(sweep, 1)  # warm-up: first-trace compilation, allocator
    t_genir, result = timed(sweep, args.repeats)
    t_floor, passes = timed(lambda: floor(gm, texts, doc_cols, len(ablations), args.batch_size, args.rows_per_forward), args.repeats)
    t_loop, loop_ranks = timed(lambda: batch1_loop(gm, texts, doc_cols, ablations, means), 1)
    if not torch.equal(loop_ranks, result.doc_rank):
        mismatch = int((loop_ranks != result.doc_rank).sum())
        raise SystemExit(f"genir_mech and the batch-1 hook loop disagree on {mismatch} of {loop_ranks.numel()} ranks")

    n_forwards = len(ablations) * len(texts)
    rows = [
        ("batch-1 loop, PyTorch hooks (reference approach)", t_loop, n_forwards, t_loop / t_genir, t_loop / t_floor),
        ("genir_mech (nnsight, rows, encoder once per batch)", t_genir, passes, 1.0, t_genir / t_floor),
        ("floor: uninstrumented batched passes", t_floor, passes, t_floor / t_genir, 1.0),
    ]
    speedup, overhead = t_loop / t_genir, t_genir / t_floor
    lines = [
        "# Table-3 sweep benchmark",
        "",
        f"{len(KINDS)} component types x {len(stages.stages)} stages x {{{', '.join(METHODS)}}} = {len(ablations)} stage ablations on "
        f"`{args.model}` ({n_layers} decoder layers, d_model {gm.adapter.d_model}), {len(texts)} correct validation queries; "
        f"batch size {args.batch_size}, at most {args.rows_per_forward} rows per pass; stages {', '.join(f'{s.name}={min(s.layers)}-{max(s.layers)}' for s in stages.stages)}.",
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, {platform.machine()}; "
        f"median of {args.repeats} runs for the batched methods, 1 run for the loop; means precomputed for all.",
        "",
        "| method | wall time (s) | forward passes | time / genir_mech | time / floor |",
        "|:--|--:|--:|--:|--:|",
        *[f"| {name} | {t:.3f} | {n} | {vs_genir:.2f} | {vs_floor:.2f} |" for name, t, n, vs_genir, vs_floor in rows],
        "",
        f"**Speed-up over the batch-1 loop: {speedup:.1f}x** (aim >= 20x). **Overhead over the floor: {overhead:.2f}x** (aim <= 1.5x). "
        f"The loop's ranks equal genir_mech's for all {loop_ranks.numel()} (ablation, query) pairs.",
        "",
        f"Command: `python bench/bench_table3.py --model {args.model} --threads {args.threads}" + (f" --max-queries {args.max_queries}" if args.max_queries else "") + "`",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

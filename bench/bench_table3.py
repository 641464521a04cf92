"""Benchmark: the Table-3 sweep (component types x stages x {zero, mean}) with genir_mech against baselines run in the same process.

    python bench/bench_table3.py --model checkpoints/dsi-synth                                  # bench/results/table3.md
    python bench/bench_table3.py --model t5-large-shape --max-queries 4 --out bench/results/table3-t5-large-shape.md

- genir_mech: `analyses.ablation.ablation_ranks` over the one intervention
  executor (`interventions.InterventionExecutor`), many ablations per forward
  pass as rows, the encoder once per query batch, one nnsight trace per pass,
  each stage's rows resumed from the unpatched prefix (prefix resume, default);
- genir_mech without prefix resume (`resume=False`): every row runs every layer;
- batch-1 loop: the public reference code's approach, one query and one
  ablation per forward pass (encoder included), plain PyTorch forward hooks;
- floor: the batched forward passes genir_mech runs without prefix resume
  (encoder once per batch, the same rows, the same chunks) with no
  instrumentation at all: what a sweep that runs every layer cannot beat.

Component means are computed once beforehand and shared by all (not timed).
The batch-1 loop's ranks must equal genir_mech's (up to near ties of float32 rounding), or the benchmark fails.
The batched variants are timed in alternation; peak memory is the resident-set
growth while a variant runs, against the row budget the executor derived
from the memory knob.
"""
from __future__ import annotations

import argparse
import os
import sys

if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # before torch allocates: freed activations leave the resident set
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    os.execv(sys.executable, [sys.executable, *sys.argv])

from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from common import PeakRSS, bench_model, clock_now, clock_sentence, set_clock, describe, machine_line, queries_for, timed_interleaved  # noqa: E402

from genir_mech.analyses.ablation import ablation_ranks, component_means, stage_ablations  # noqa: E402
from genir_mech.analyses.query_batches import query_batches  # noqa: E402
from genir_mech.interventions import InterventionExecutor  # noqa: E402
from genir_mech.verbs.options import memory_size  # noqa: E402
from genir_mech.interventions.memory import default_budget, row_bytes  # noqa: E402
from genir_mech.models.adapters import module_at  # noqa: E402
from genir_mech.models.components import KINDS  # noqa: E402
from genir_mech.retrieval import rank_of  # noqa: E402
from genir_mech.stage_definition import StageDefinition  # noqa: E402

METHODS = ("zero", "mean")


def replacement_hook(index, value):
    """Forward hook that replaces a module output (or element `index` of a tuple output) by `value`."""

    def hook(module, args, output):
        if index is None:
            return value.expand_as(output).to(output.dtype)
        return (*output[:index], value.expand_as(output[index]).to(output[index].dtype), *output[index + 1 :])

    return hook


# Two float32 runs that batch differently round differently: at random T5-large-shape weights, 10k docid logits lie so
# close that a document within this band of the relevant one may rank on either side of it in either run.
TIE_BAND = 1e-5


@torch.no_grad()
def batch1_loop(gm, texts, doc_cols, ablations, means) -> tuple[torch.Tensor, torch.Tensor]:
    """One query, one ablation, one full forward pass at a time, with plain PyTorch hooks. Returns the lowest and highest
    rank of each relevant document that its near ties (within TIE_BAND x (1 + |its logit|)) allow; equal without ties."""
    ranks = torch.zeros(len(ablations), len(texts), dtype=torch.long)
    highest = torch.zeros_like(ranks)
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
                logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=gm.start_ids(1), use_cache=False).logits[:, -1]
                scores = gm.docids.scores(logits)[0]
                chosen = scores[doc_cols[q]]
                band = TIE_BAND * (1 + chosen.abs())
                ranks[c, q], highest[c, q] = (scores > chosen + band).sum() + 1, (scores >= chosen - band).sum()
        finally:
            for h in handles:
                h.remove()
    return ranks, highest


@torch.no_grad()
def floor(gm, texts, doc_cols, ablations, batch_size, rows_per_forward, max_memory) -> int:
    """The uninstrumented forward passes of the sweep without prefix resume: encoder once per batch, the executor's own chunks."""
    executor = InterventionExecutor(gm, ablations, rows_per_forward, max_memory=max_memory, resume=False)
    passes = 0
    for rows, batch in query_batches(gm, texts, batch_size, encode=True):
        for chunk in executor.plan(batch):
            logits = gm.logits(batch.select(chunk.item))
            rank_of(gm.docids.scores(logits), doc_cols[rows][chunk.item])
            passes += 1
    return passes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="checkpoints/dsi-synth", help="a checkpoint, or t5-large-shape[:layers] (random weights, built here)")
    p.add_argument("--stages", help="stage definition (default: three even thirds)")
    p.add_argument("--max-queries", type=int, help="sample of the validation queries (default all correct ones)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rows-per-forward", type=int, help="fixed rows per pass (default: as many as --max-memory holds)")
    p.add_argument("--max-memory", type=memory_size, help="activation memory of one pass, e.g. 2GiB (default: a quarter of the available memory)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of the batched methods (median reported)")
    p.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=True,
                   help="an untimed run of each batched method first (--no-warm-up: one query and one ablation instead, for large models)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds, or this process's CPU seconds (robust to other load)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for every method (default 1: a shared CPU)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "table3.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    set_clock(args.clock)

    gm, dataset = bench_model(args.model)
    queries, note = queries_for(gm, dataset, args.max_queries)
    texts = [q.text for q in queries]
    docs = [dataset.relevant(q.query_id) for q in queries]
    doc_cols = torch.tensor([gm.docids.index(d) for d in docs])
    n_layers = gm.n_layers("decoder")
    stages = StageDefinition.parse(args.stages).check(n_layers) if args.stages else StageDefinition.even_thirds(n_layers)
    ablations = stage_ablations(gm, stages, KINDS, METHODS)
    means = component_means(gm, texts, [s for a in ablations for s in a.sites], args.batch_size)
    budget = args.max_memory or default_budget()
    common = dict(means=means, batch_size=args.batch_size, rows_per_forward=args.rows_per_forward, max_memory=budget)

    def sweep(resume):
        return lambda: ablation_ranks(gm, texts, docs, ablations, resume=resume, **common)

    if not args.warm_up:  # first traces, without a full untimed run
        ablation_ranks(gm, texts[:1], docs[:1], ablations[-1:], **common)
    (result, t_genir, m_genir), (plain, t_plain, m_plain), (passes, t_floor, m_floor) = timed_interleaved(
        [sweep(None), sweep(False), lambda: floor(gm, texts, doc_cols, ablations, args.batch_size, args.rows_per_forward, budget)], args.repeats,
        warm_up=args.warm_up)
    with PeakRSS() as mem:
        t0 = clock_now()
        loop_ranks, loop_highest = batch1_loop(gm, texts, doc_cols, ablations, means)
        t_loop = clock_now() - t0
    for name, ranks in (("genir_mech", result), ("genir_mech without prefix resume", plain)):
        outside = (ranks.doc_rank < loop_ranks) | (ranks.doc_rank > loop_highest)
        if outside.any():
            raise SystemExit(f"{name} and the batch-1 hook loop disagree on {int(outside.sum())} of {loop_ranks.numel()} ranks (beyond near ties)")
    tied = int((loop_highest > loop_ranks).sum())

    first = gm.batch(texts[: args.batch_size])
    rows = args.rows_per_forward or max(1, min(4096, budget // row_bytes(gm, first, True)))
    n_forwards = len(ablations) * len(texts)
    table = [
        ("batch-1 loop, PyTorch hooks (reference approach)", t_loop, n_forwards, mem.mib),
        ("genir_mech (nnsight, rows, encoder once per batch, prefix resume)", t_genir, None, m_genir),
        ("genir_mech without prefix resume", t_plain, passes, m_plain),
        ("floor: uninstrumented batched passes, every layer", t_floor, passes, m_floor),
    ]
    lines = [
        f"# Table-3 sweep benchmark: {args.model}",
        "",
        f"{len(KINDS)} component types x {len(stages.stages)} stages x {{{', '.join(METHODS)}}} = {len(ablations)} stage ablations on "
        f"`{args.model}` ({describe(gm)}); {note}; batch size {args.batch_size}; stages "
        f"{', '.join(f'{s.name}={min(s.layers)}-{max(s.layers)}' for s in stages.stages)}. Rows per pass: "
        + (f"{args.rows_per_forward} (fixed)" if args.rows_per_forward else f"{rows} from the memory budget {budget / 2**20:,.0f} MiB "
           f"({row_bytes(gm, first, True) / 2**10:,.0f} KiB per decoder-side row, estimated)") + ".",
        machine_line(torch.get_num_threads()) + clock_sentence(),
        f"Median of {args.repeats} run(s) for the batched methods, timed in alternation after " + ("a warm-up each" if args.warm_up else "a one-query warm-up") + "; 1 run for the loop; means precomputed for all. "
        "Peak RSS growth: above the level before the variant, sampled every 2 ms, glibc returning large blocks at once (MALLOC_MMAP_THRESHOLD_).",
        "",
        "| method | time (s) | forward passes | time / genir_mech | time / floor | peak RSS growth (MiB) |",
        "|:--|--:|--:|--:|--:|--:|",
        *[f"| {name} | {t:.3f} | {'-' if n is None else n} | {t / t_genir:.2f} | {t / t_floor:.2f} | {m:,.0f} |" for name, t, n, m in table],
        "",
        f"**Speed-up over the batch-1 loop: {t_loop / t_genir:.1f}x** (aim >= 20x). **genir_mech / floor: {t_genir / t_floor:.2f}x** "
        f"(prefix resume; without it {t_plain / t_floor:.2f}x). The loop's ranks equal genir_mech's (with and without prefix resume) "
        f"for all {loop_ranks.numel()} (ablation, query) pairs" + (f", up to near ties (logits within {TIE_BAND:g} x (1 + |logit|) of the relevant "
        f"document's: {tied} of the ranks have one)." if tied else "."),
        "",
        f"Command: `python bench/bench_table3.py --model {args.model} --threads {args.threads} --clock {args.clock}"
        + (f" --max-queries {args.max_queries}" if args.max_queries else "") + (f" --repeats {args.repeats}" if args.repeats != 3 else "") + ("" if args.warm_up else " --no-warm-up")
        + f" --out {args.out}`",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

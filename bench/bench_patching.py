"""Benchmark: exact activation patching sweeps with genir_mech against loop baselines and the uninstrumented floor, plus AtP.

    python bench/bench_patching.py --model checkpoints/dsi-synth          # writes bench/results/patching.md
    python bench/bench_patching.py --model t5-large-shape --n-pairs 1 --loop-specs 24 --repeats 1 --out bench/results/patching-t5-large-shape.md

Sweeps over the same clean/corrupted pairs (denoising, logit difference):
every decoder layer x {self_attn, cross_attn, mlp}, every decoder
cross-attention head, and every encoder output position. Each is run, in
this one process, as
- (a) genir_mech: `patching.engine.sweep` over the one intervention executor
  (`interventions.InterventionExecutor`), many patches per forward pass as
  rows, the encoder once per query, one nnsight trace per pass, each layer's
  rows resumed from the unpatched prefix (prefix resume, the default);
- (a0) the same without prefix resume: every row runs every layer;
- (b) one nnsight trace per patch and pair (batch 1, full model), through the
  same `run` as (a): what a straightforward nnsight loop costs;
- (b2) one nnsight trace per patch over all pairs at once (the
  TransformerLens `generic_activation_patch` pattern);
- (c) a batch-1 loop with plain PyTorch forward hooks (full model per patch),
  the public reference code's approach;
- (d) the floor: the uninstrumented batched forward passes of (a0) (encoder
  once per query, source and base runs, the same chunks of patched rows).
All variants must agree with (a) to float tolerance, or the benchmark fails.
With `--loop-specs N` the loops (b), (b2), (c) run an evenly spaced subset of
N patches and their time is scaled to the whole sweep (marked in the table).
Then attribution patching (AtP, and AtP* with the QK fix) is timed against the
exact head sweep, with Spearman's rho between AtP's and the exact effects
(meaningful on a trained model only).

(a), (a0) and (d) are timed in alternation (median of --repeats after a
warm-up each); the loops run once. Peak memory is the resident-set growth
above the level before the variant started, sampled every 2 ms, with glibc
told to return large blocks at once (MALLOC_MMAP_THRESHOLD_) so that it
follows the live tensors.
"""
from __future__ import annotations

import argparse
import os
import sys

if "MALLOC_MMAP_THRESHOLD_" not in os.environ:  # before torch allocates: freed activations leave the resident set
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    os.execv(sys.executable, [sys.executable, *sys.argv])

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from common import bench_model, clock_sentence, describe, machine_line, set_clock, timed, timed_interleaved  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from genir_mech.verbs.options import memory_size  # noqa: E402
from genir_mech.interventions.memory import default_budget  # noqa: E402
from genir_mech.interventions import source_run  # noqa: E402
from genir_mech.models.adapters import module_at  # noqa: E402
from genir_mech.models.execution import run  # noqa: E402
from genir_mech.patching.attribution import NODE_KEYS, attribute, attribution_nodes, node_means  # noqa: E402
from genir_mech.patching.engine import patch_executor, sweep  # noqa: E402
from genir_mech.patching.metrics import logit_diff  # noqa: E402
from genir_mech.patching.pairs import dataset_pairs, keep_correct, tokenize_pairs  # noqa: E402
from genir_mech.patching.specs import target_specs  # noqa: E402

METRICS = {"logit_diff": logit_diff}
SWEEP_KEYS = ("layers", "components", "heads", "encoder-positions")  # --sweeps names, in the order the sweeps run


def effects_of(table) -> dict:
    """(spec label, pair_id) -> metric change of the patch over the corrupted run."""
    return {(row.site, -1 if pd.isna(row.head) else int(row.head), -1 if pd.isna(row.position) else int(row.position), row.pair_id): row.value - row.corrupted
            for row in table.itertuples()}


def label(spec) -> tuple:
    return (spec.site, -1 if spec.head is None else spec.head, -1 if spec.position is None else spec.position)


def applies(spec, batch, p) -> bool:
    """Whether (a) runs this patch on pair p: an encoder position beyond the pair's length is padding and left out."""
    return spec.position is None or spec.parsed.side != "encoder" or spec.position < int(batch.lengths[p])


def slice_writer(spec, d_head, source):
    cols = slice(None) if spec.head is None else slice(spec.head * d_head, (spec.head + 1) * d_head)
    rows = slice(None) if spec.position is None else spec.position

    def write(x):
        x = x.clone()
        x[:, rows, cols] = source[:, rows, cols]
        return x

    return write


@torch.no_grad()
def one_trace_per_patch(gm, batch, specs):
    """(b): a fresh nnsight trace for every patch and every pair, batch 1, encoder included."""
    sites = sorted({s.parsed for s in specs}, key=gm.adapter.order_key)
    out = {}
    for p, pair in enumerate(batch.pairs):
        source = run(gm, batch.clean.select([p]), reads=sites)
        targets = batch.targets.select(torch.tensor([p]))
        corrupted = float(logit_diff(gm.logits(batch.corrupted.select([p])), targets)[0])
        for spec in specs:
            if applies(spec, batch, p):
                write = slice_writer(spec, gm.adapter.d_head, source.values[spec.parsed])
                logits = run(gm, batch.corrupted.select([p]), writes={spec.parsed: write}).logits
                out[(*label(spec), pair.pair_id)] = float(logit_diff(logits, targets)[0]) - corrupted
    return out


@torch.no_grad()
def one_trace_per_patch_all_pairs(gm, batch, specs):
    """(b2): one nnsight trace per patch, every pair in it (TransformerLens' generic_activation_patch pattern)."""
    source = source_run(gm, batch.clean, {s.parsed for s in specs}).values
    corrupted = gm.encode(batch.corrupted)
    base = logit_diff(gm.logits(corrupted), batch.targets)
    out = {}
    for spec in specs:
        # Encoder sites are written on a run through the encoder; decoder sites on the cached encoder output.
        rows = batch.corrupted if spec.parsed.side == "encoder" else corrupted
        logits = run(gm, rows, writes={spec.parsed: slice_writer(spec, gm.adapter.d_head, source[spec.parsed])}).logits
        for p, (pair, value) in enumerate(zip(batch.pairs, (logit_diff(logits, batch.targets) - base).tolist())):
            if applies(spec, batch, p):
                out[(*label(spec), pair.pair_id)] = value
    return out


def hook_for(gm, spec, source_row):
    """A plain PyTorch hook that writes the source slice at the site's module input or output."""
    hook = gm.adapter.hook(spec.parsed)
    write = slice_writer(spec, gm.adapter.d_head, source_row)
    module = module_at(gm.hf_model, hook.path)
    if hook.io == "input":
        return module.register_forward_pre_hook(lambda mod, args: (write(args[0]), *args[1:]))
    if hook.index is None:
        return module.register_forward_hook(lambda mod, args, output: write(output))
    return module.register_forward_hook(lambda mod, args, output: (*output[: hook.index], write(output[hook.index]), *output[hook.index + 1 :]))


def reader_for(gm, spec, store):
    hook = gm.adapter.hook(spec.parsed)
    module = module_at(gm.hf_model, hook.path)
    if hook.io == "input":
        return module.register_forward_pre_hook(lambda mod, args: store.__setitem__(spec.parsed, args[0].clone()))
    return module.register_forward_hook(lambda mod, args, output: store.__setitem__(spec.parsed, (output if hook.index is None else output[hook.index]).clone()))


@torch.no_grad()
def batch1_hooks(gm, batch, specs):
    """(c): one pair, one patch, one full forward pass at a time, with plain PyTorch hooks."""
    model = gm.hf_model
    out = {}
    for p, pair in enumerate(batch.pairs):
        store = {}
        handles = [reader_for(gm, s, store) for s in {s.parsed: s for s in specs}.values()]
        model(**gm.model_inputs(batch.clean.select([p])))
        for h in handles:
            h.remove()
        targets = batch.targets.select(torch.tensor([p]))
        corrupted_row = batch.corrupted.select([p])
        corrupted = float(logit_diff(model(**gm.model_inputs(corrupted_row)).logits[:, -1], targets)[0])
        for spec in specs:
            if not applies(spec, batch, p):
                continue
            handle = hook_for(gm, spec, store[spec.parsed])
            try:
                logits = model(**gm.model_inputs(corrupted_row)).logits[:, -1]
            finally:
                handle.remove()
            out[(*label(spec), pair.pair_id)] = float(logit_diff(logits, targets)[0]) - corrupted
    return out


@torch.no_grad()
def floor(gm, batch, specs, rows_per_forward, max_memory, pairs_per_batch):
    """(d): the forward passes of (a0), without instrumentation: encoder once per query, source + base runs, the same chunks."""
    model = gm.hf_model
    executor = patch_executor(gm, specs, rows_per_forward, max_memory=max_memory, resume=False)
    forwards = 0
    for start in range(0, len(batch), pairs_per_batch):
        part = batch.select(list(range(start, min(start + pairs_per_batch, len(batch)))))
        clean, corrupted = gm.encode(part.clean), gm.encode(part.corrupted)
        model(**gm.model_inputs(clean))
        model(**gm.model_inputs(corrupted))
        forwards += 2
        for chunk in executor.plan(corrupted, part.lengths):
            rows = (corrupted if chunk.encoded else part.corrupted).select(chunk.item)
            model(**gm.model_inputs(rows))
            forwards += 1
    return forwards


def compare(reference: dict, other: dict) -> float:
    """Largest difference over the (patch, pair) cells `other` ran (all of reference's, or a subset)."""
    assert other.keys() <= reference.keys() and other, "variants patched different (patch, pair) sets"
    return max(abs(reference[k] - other[k]) for k in other)


def subset(specs, n):
    """`n` evenly spaced specs (all of them when n is None or not smaller)."""
    if n is None or n >= len(specs):
        return specs
    step = len(specs) / n
    return [specs[int(i * step)] for i in range(n)]


def pairs_for(gm, dataset, n_pairs):
    """(PairBatch, note): pairs whose clean and corrupted queries both rank their own document first, topped up with others."""
    all_pairs = dataset_pairs(dataset)
    kept, _ = keep_correct(gm, all_pairs)
    pairs = kept[:n_pairs]
    note = f"{len(pairs)} pairs, from the {len(kept)} of {len(all_pairs)} synthetic pairs whose clean and corrupted queries both rank their own document first"
    if len(pairs) < n_pairs:  # too few correct pairs (random weights: none): top up with others rather than shrink the workload
        extra = [p for p in all_pairs if p not in kept and p.clean_doc != p.corrupted_doc][: n_pairs - len(pairs)]
        pairs += extra
        note += f", topped up with {len(extra)} other pairs"
    return tokenize_pairs(gm, pairs), note


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/dsi-synth", help="a checkpoint, or t5-large-shape[:layers] (random weights, built here)")
    ap.add_argument("--n-pairs", type=int, default=64)
    ap.add_argument("--rows-per-forward", type=int, help="fixed rows per pass (default: as many as --max-memory holds)")
    ap.add_argument("--max-memory", type=memory_size, help="activation memory of one pass, e.g. 2GiB (default: a quarter of the available memory)")
    ap.add_argument("--repeats", type=int, default=5, help="median of this many timed runs for the batched variants (loops run once)")
    ap.add_argument("--loop-specs", type=int, help="run the loops (b), (b2), (c) on this many evenly spaced patches and scale their time")
    ap.add_argument("--all-nodes", action=argparse.BooleanOptionalAction, default=True, help="also time the exact sweep over every node AtP scores")
    ap.add_argument("--warm-up", action=argparse.BooleanOptionalAction, default=True,
                    help="a full untimed run of each batched variant first (--no-warm-up: a one-patch sweep instead, for large models)")
    ap.add_argument("--sweeps", default=",".join(SWEEP_KEYS), help="exact sweeps to run, comma-separated (heads is always run: AtP is timed against it)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds, or this process's CPU seconds (robust to other load)")
    ap.add_argument("--exact-only", action="store_true", help="only (a), (a0) and the floor (d): no loops, no AtP")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the benchmark machine is shared)")
    ap.add_argument("--out", default="bench/results/patching.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    set_clock(args.clock)
    gm, dataset = bench_model(args.model)
    batch, note = pairs_for(gm, dataset, args.n_pairs)
    print(note, flush=True)
    chosen = set(args.sweeps.split(",")) | {"heads"}
    sweeps = {
        "layers (decoder resid_post)": target_specs(gm, "resid"),
        "components": target_specs(gm, "component"),
        "cross-attention heads": target_specs(gm, "head", kinds=("cross_attn",)),
        "encoder positions": target_specs(gm, "encoder-position", encoder_positions=batch.width),
    }
    sweeps = {name: specs for (name, specs), key in zip(sweeps.items(), SWEEP_KEYS) if key in chosen}
    R, M, P = args.rows_per_forward, args.max_memory or default_budget(), 64
    results = {}
    for name, specs in sweeps.items():
        n = sum(applies(s, batch, p) for s in specs for p in range(len(batch)))
        rows = []
        if not args.warm_up:
            sweep(gm, batch, specs[-1:], metrics=METRICS, rows_per_forward=R, max_memory=M)  # first traces, without a full untimed run
        (table, t_a, m_a), (table0, t_a0, m_a0), (forwards_d, t_d, m_d) = timed_interleaved([
            lambda: sweep(gm, batch, specs, metrics=METRICS, rows_per_forward=R, max_memory=M, pairs_per_batch=P),
            lambda: sweep(gm, batch, specs, metrics=METRICS, rows_per_forward=R, max_memory=M, pairs_per_batch=P, resume=False),
            lambda: floor(gm, batch, specs, R, M, P)], args.repeats, warm_up=args.warm_up)
        ref = effects_of(table)
        executor = patch_executor(gm, specs, R, max_memory=M)
        chunks = [c for s in range(0, len(batch), P) for c in executor.plan(gm.encode(batch.select(list(range(s, min(s + P, len(batch))))).corrupted), batch.lengths[s : s + P])]
        # Per pair batch: the source run and the base run (the prefix pass when rows resume: it gives the baseline too).
        forwards_a = 2 * -(-len(batch) // P) + len(chunks)
        rows.append(("(a) genir_mech batched sweep, prefix resume", forwards_a, t_a, m_a, 0.0, ""))
        rows.append(("(a0) genir_mech batched sweep, every layer", forwards_d, t_a0, m_a0, compare(ref, effects_of(table0)), ""))
        if args.exact_only:
            rows.append(("(d) floor: uninstrumented batched forwards, every layer", forwards_d, t_d, m_d, float("nan"), ""))
            results[name] = {"n": n, "rows": rows, "t_a": t_a, "t_a0": t_a0, "t_b": float("nan"), "t_d": t_d, "table": table,
                             "rows_per_pass": max(len(c) for c in chunks)}
            print(name, [(r[0][:4], round(r[2], 3)) for r in rows], flush=True)
            continue
        loop_specs = subset(specs, args.loop_specs)
        scale = len(specs) / len(loop_specs)
        mark = f" (x{scale:.1f}: {len(loop_specs)} of {len(specs)} patches)" if scale > 1 else ""
        n_loop = sum(applies(s, batch, p) for s in loop_specs for p in range(len(batch)))
        b, t_b, m_b = timed(lambda: one_trace_per_patch(gm, batch, loop_specs))
        rows.append(("(b) one nnsight trace per patch (batch 1)", n_loop + 2 * len(batch), t_b * scale, m_b, compare(ref, b), mark))
        b2, t_b2, m_b2 = timed(lambda: one_trace_per_patch_all_pairs(gm, batch, loop_specs), args.repeats if args.warm_up else 1)
        rows.append(("(b2) one nnsight trace per patch, all pairs batched", len(loop_specs) + 2, t_b2 * scale, m_b2, compare(ref, b2), mark))
        c, t_c, m_c = timed(lambda: batch1_hooks(gm, batch, loop_specs))
        rows.append(("(c) batch-1 loop, plain PyTorch hooks", n_loop + 2 * len(batch), t_c * scale, m_c, compare(ref, c), mark))
        rows.append(("(d) floor: uninstrumented batched forwards, every layer", forwards_d, t_d, m_d, float("nan"), ""))
        for r in rows[1:-1]:
            assert r[4] < 1e-3, f"{r[0]} disagrees with (a) by {r[4]}"
        results[name] = {"n": n, "rows": rows, "t_a": t_a, "t_a0": t_a0, "t_b": t_b * scale, "t_d": t_d, "table": table,
                         "rows_per_pass": max(len(c) for c in chunks)}
        print(name, [(r[0][:4], round(r[2], 3)) for r in rows], flush=True)

    lines = [
        f"# Activation patching benchmark: {args.model}",
        "",
        f"Model `{args.model}` ({describe(gm)}); {note}. Denoising (clean into corrupted), metric: logit difference of the two documents. "
        + (f"{R} rows per forward pass (fixed)" if R else f"rows per forward pass from the memory budget {M / 2**20:,.0f} MiB")
        + f", source activations cached per {P} pairs. Written by `bench/bench_patching.py`; all timings from one run: "
        f"median of {args.repeats} run(s) " + ("after a warm-up " if args.warm_up else "after a one-patch warm-up sweep (single runs of (b2) and AtP) ")
        + "for (a), (a0), (d), (b2) and AtP, (a), (a0) and (d) timed in alternation, a single run for the loops (b) and (c).",
        machine_line(torch.get_num_threads()) + clock_sentence(),
        "",
    ]
    for name, res in results.items():
        lines += [f"## Exact sweep: {name} ({len(sweeps[name])} patches, {res['n']} patched runs over {len(batch)} pairs; at most {res['rows_per_pass']} rows per pass)", "",
                  "| variant | forward passes | seconds | patches/s | time vs (a) | time vs floor (d) | peak RSS growth (MiB) | max abs diff vs (a) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for desc, forwards, t, m, diff, mark in res["rows"]:
            lines.append(f"| {desc}{mark} | {forwards} | {t:.3f} | {res['n'] / t:,.0f} | {t / res['t_a']:.2f}x | {t / res['t_d']:.2f}x | {m:,.1f} | "
                         f"{'-' if diff != diff else f'{diff:.1e}'} |")
        versus_loop = "" if res["t_b"] != res["t_b"] else f"is {res['t_b'] / res['t_a']:.1f}x faster than (b) (aim: >= 10x) and "
        lines += ["", f"(a) {versus_loop}takes **{res['t_a'] / res['t_d']:.2f}x the floor (d)** "
                  f"(aim: <= 0.7x on layer, component and head sweeps; without prefix resume {res['t_a0'] / res['t_d']:.2f}x).", ""]
    if not args.exact_only:
        lines += atp_section(gm, batch, sweeps, results, args, R, M, P)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def atp_section(gm, batch, sweeps, results, args, R, M, P) -> list[str]:
    """Attribution patching timed against the exact head sweep; rank agreement with the exact effects."""
    t_heads, head_nodes = results["cross-attention heads"]["t_a"], sweeps["cross-attention heads"]
    all_nodes = attribution_nodes(gm, batch.width)
    if args.all_nodes:
        exact_all, t_all, m_all = timed(lambda: sweep(gm, batch, all_nodes, metrics=METRICS, rows_per_forward=R, max_memory=M, pairs_per_batch=P), min(args.repeats, 3))
    else:
        exact_all = pd.concat([results[k]["table"] for k in results], ignore_index=True)
        t_all = m_all = float("nan")
    exact_all["exact"] = exact_all["value"] - exact_all["corrupted"]
    exact = node_means(exact_all, "exact")
    families = {
        "cross-attention heads": lambda t: (t.component == "cross_attn") & t["head"].notna(),
        "encoder positions": lambda t: t.site == "encoder.output",
        "every node": lambda t: t.site.notna(),
    }
    atp_rows, last_heads = [], None
    for desc, kwargs in [
        ("every node, QK fix", {"qk_fix": True}),
        ("every node, no QK fix", {"qk_fix": False}),
        ("cross-attention heads only", {"qk_fix": False, "nodes": head_nodes}),
    ]:
        table, t, m = timed(lambda: attribute(gm, batch, metric=logit_diff, pairs_per_batch=P, **kwargs), args.repeats if args.warm_up else 1)
        for method in sorted(set(table.method)):
            est = node_means(table[table.method == method], "estimate").merge(exact, on=NODE_KEYS)
            rhos = {}
            for family, rows in families.items():
                part = est[rows(est)]
                rhos[family] = float(spearmanr(part["estimate"], part["exact"]).statistic) if len(part) > 2 and part["estimate"].nunique() > 1 else float("nan")
            per_pair = table[(table.method == method) & families["cross-attention heads"](table)].merge(exact_all, on=["pair_id", *NODE_KEYS])
            rhos["cross-attention heads, per (pair, head)"] = float(spearmanr(per_pair["estimate"], per_pair["exact"]).statistic)
            heads = est[families["cross-attention heads"](est)]
            if method == "atp_qk" or "atp_qk" not in set(table.method):
                last_heads = heads
            top_exact = set(heads.assign(a=heads["exact"].abs()).nlargest(5, "a").index)
            top_atp = set(heads.assign(a=heads["estimate"].abs()).nlargest(5, "a").index)
            atp_rows.append((desc, method, t, m, t_heads / t, results["cross-attention heads"]["t_b"] / t, t_all / t, rhos, len(top_exact & top_atp)))
            print(desc, method, round(t, 3), rhos, flush=True)
    random_weights = gm.name.startswith("t5-large-shape")
    rho_cols = list(families)[:1] + ["cross-attention heads, per (pair, head)"] + list(families)[1:]
    lines = ["## Attribution patching vs exact patching", "",
             f"Exact sweeps with (a): cross-attention heads {t_heads:.3f} s ({len(head_nodes)} heads x {len(batch)} pairs); "
             + (f"every node AtP scores {t_all:.3f} s ({len(all_nodes)} nodes: decoder resid per layer, sublayers, self- and cross-attention heads, "
                f"encoder output and encoder layer outputs per position; peak RSS growth {m_all:.1f} MiB). " if args.all_nodes else
                f"the exact all-node sweep ({len(all_nodes)} nodes) is not run at this size (--no-all-nodes); rho is over the nodes swept above. ")
             + "Spearman's rho compares AtP's mean estimate per node with the exact mean effect (both: change of the logit difference); "
             "'top-5 overlap' counts cross-attention heads in both top-5 lists by |effect|."
             + (" **Random weights: the rank agreement here says nothing about AtP on a trained model; only the speed-up counts.**" if random_weights else ""), "",
             "| AtP run | estimate | seconds | peak RSS growth (MiB) | speed-up vs exact head sweep (a) | vs exact head sweep (b) | vs exact all-node sweep (a) | "
             + " | ".join(f"rho: {c}" for c in rho_cols) + " | top-5 heads overlap |",
             "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(rho_cols) + "---:|"]
    for desc, method, t, m, speedup_heads, speedup_loop, speedup_all, rhos, overlap in atp_rows:
        lines.append(f"| {desc} | {method} | {t:.3f} | {m:.1f} | {speedup_heads:.1f}x | {speedup_loop:.0f}x | "
                     + ("-" if speedup_all != speedup_all else f"{speedup_all:.1f}x") + " | "
                     + " | ".join("-" if rhos[c] != rhos[c] else f"{rhos[c]:.3f}" for c in rho_cols) + f" | {overlap}/5 |")
    if not random_weights:
        span = float((exact_all["clean"] - exact_all["corrupted"]).mean())
        ratio = (last_heads["estimate"] / last_heads["exact"]).groupby(last_heads["layer"]).mean()
        lines += ["", f"Exact mean effects of the {len(last_heads)} cross-attention heads lie between {last_heads['exact'].min():.3f} and "
                  f"{last_heads['exact'].max():.3f} logits (median {last_heads['exact'].median():.3f}), against a clean-minus-corrupted logit difference of "
                  f"{span:.2f}: each head carries {100 * last_heads['exact'].min() / span:.1f}-{100 * last_heads['exact'].max() / span:.1f}% of the effect. "
                  f"AtP's estimate / exact ratio per layer (mean over heads) runs from {ratio.iloc[0]:.2f} (layer {ratio.index[0]}) to {ratio.iloc[-1]:.2f} "
                  f"(layer {ratio.index[-1]}): the linearisation misses more of an early head's effect, which passes through more later "
                  "cross-attention queries, norms and ReLUs. When head effects are this uniform, a depth-dependent bias of this size reorders near-tied "
                  "heads, so the rank correlation of per-head means can stay low while AtP tracks the exact effect of each (pair, head) cell closely."]
    return lines + [""]


if __name__ == "__main__":
    main()

"""Benchmark: exact activation patching sweeps with genir_mech against loop baselines and the uninstrumented floor, plus AtP.

    python bench/bench_patching.py --model checkpoints/dsi-synth          # writes bench/results/patching.md

Two sweeps over the same clean/corrupted pairs (denoising, logit difference):
every decoder layer x {self_attn, cross_attn, mlp}, and every decoder
cross-attention head. Each is run, in this one process, as
- (a) genir_mech: `patching.engine.sweep` over the one intervention executor
  (`interventions.InterventionExecutor`), many patches per forward pass as
  rows, the encoder once per query, one nnsight trace per pass;
- (b) one nnsight trace per patch and pair (batch 1, full model), through the
  same `run` as (a): what a straightforward nnsight loop costs;
- (b2) one nnsight trace per patch over all pairs at once (the
  TransformerLens `generic_activation_patch` pattern);
- (c) a batch-1 loop with plain PyTorch forward hooks (full model per patch),
  the public reference code's approach;
- (d) the floor: the uninstrumented batched forward passes (a) needs (encoder
  once per query, source and base runs, the same patched rows per pass).
All variants must agree with (a) to float tolerance, or the benchmark fails.
Then attribution patching (AtP, and AtP* with the QK fix) for every node is
timed against the exact head sweep, with Spearman's rho between AtP's and the
exact effects of the cross-attention heads.

Batched variants are timed as the median of several runs after a warm-up
(nnsight compiles a trace's code on first use); the slow loops run once.
Peak memory is the peak resident-set growth above the level before the
variant started, sampled from /proc/self/statm every 2 ms.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import spearmanr

from genir_mech.models.adapters import module_at
from genir_mech.models.execution import run
from genir_mech.models.loading import load_genir, resolve_dataset
from genir_mech.patching.attribution import NODE_KEYS, attribute, attribution_nodes, node_means
from genir_mech.patching.engine import sweep
from genir_mech.patching.metrics import logit_diff
from genir_mech.patching.pairs import dataset_pairs, keep_correct, tokenize_pairs
from genir_mech.patching.specs import target_specs

METRICS = {"logit_diff": logit_diff}


class PeakRSS:
    """Peak growth of this process's resident set while the block runs (MiB)."""

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.PAGE

    def __enter__(self):
        self.start = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.start) / 2**20


def timed(fn, repeats: int = 1):
    """(result, median seconds, peak RSS growth in MiB); with repeats > 1, one untimed warm-up call first."""
    if repeats > 1:
        fn()
    times, peak = [], 0.0
    for _ in range(repeats):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.mib)
    return out, statistics.median(times), peak


def timed_interleaved(fa, fb, repeats: int):
    """Time two variants in alternation (a, b, a, b, ...) after one warm-up each, so that a change in machine load
    between them (other processes on a shared CPU) hits both alike; returns two (result, median seconds, peak RSS growth)."""
    fa(), fb()
    runs = {fa: ([], 0.0, None), fb: ([], 0.0, None)}
    for _ in range(repeats):
        for fn in (fa, fb):
            times, peak, _ = runs[fn]
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                out = fn()
                times.append(time.perf_counter() - t0)
            runs[fn] = (times, max(peak, mem.mib), out)
    return tuple((runs[fn][2], statistics.median(runs[fn][0]), runs[fn][1]) for fn in (fa, fb))


def effects_of(table) -> dict:
    """(spec label, pair_id) -> metric change of the patch over the corrupted run."""
    return {(row.site, -1 if pd.isna(row.head) else int(row.head), row.pair_id): row.value - row.corrupted for row in table.itertuples()}


def label(spec) -> tuple:
    return (spec.site, -1 if spec.head is None else spec.head)


def slice_writer(spec, d_head, source):
    cols = slice(None) if spec.head is None else slice(spec.head * d_head, (spec.head + 1) * d_head)

    def write(x):
        x = x.clone()
        x[..., cols] = source[..., cols]
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
            write = slice_writer(spec, gm.adapter.d_head, source.values[spec.parsed])
            logits = run(gm, batch.corrupted.select([p]), writes={spec.parsed: write}).logits
            out[(*label(spec), pair.pair_id)] = float(logit_diff(logits, targets)[0]) - corrupted
    return out


@torch.no_grad()
def one_trace_per_patch_all_pairs(gm, batch, specs):
    """(b2): one nnsight trace per patch, every pair in it (TransformerLens' generic_activation_patch pattern)."""
    sites = sorted({s.parsed for s in specs}, key=gm.adapter.order_key)
    clean, corrupted = gm.encode(batch.clean), gm.encode(batch.corrupted)
    source = run(gm, clean, reads=sites).values
    base = logit_diff(gm.logits(corrupted), batch.targets)
    out = {}
    for spec in specs:
        logits = run(gm, corrupted, writes={spec.parsed: slice_writer(spec, gm.adapter.d_head, source[spec.parsed])}).logits
        for pair, value in zip(batch.pairs, (logit_diff(logits, batch.targets) - base).tolist()):
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
            handle = hook_for(gm, spec, store[spec.parsed])
            try:
                logits = model(**gm.model_inputs(corrupted_row)).logits[:, -1]
            finally:
                handle.remove()
            out[(*label(spec), pair.pair_id)] = float(logit_diff(logits, targets)[0]) - corrupted
    return out


@torch.no_grad()
def floor(gm, batch, n_specs, rows_per_forward, pairs_per_batch):
    """(d): the forward passes (a) runs, without instrumentation: encoder once per query, source + base runs, patched rows."""
    model = gm.hf_model
    forwards = 0
    for start in range(0, len(batch), pairs_per_batch):
        part = batch.select(list(range(start, min(start + pairs_per_batch, len(batch)))))
        clean, corrupted = gm.encode(part.clean), gm.encode(part.corrupted)
        model(**gm.model_inputs(clean))
        model(**gm.model_inputs(corrupted))
        forwards += 2
        rows = torch.arange(len(part)).repeat(n_specs)
        for r in range(0, len(rows), rows_per_forward):
            model(**gm.model_inputs(corrupted.select(rows[r : r + rows_per_forward])))
            forwards += 1
    return forwards


def compare(reference: dict, other: dict) -> float:
    assert reference.keys() == other.keys(), "variants patched different (patch, pair) sets"
    return max(abs(reference[k] - other[k]) for k in reference)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/dsi-synth")
    ap.add_argument("--data", help="data spec (default: the checkpoint's model card)")
    ap.add_argument("--n-pairs", type=int, default=64)
    ap.add_argument("--rows-per-forward", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5, help="median of this many timed runs for the batched variants (loops run once)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the benchmark machine is shared)")
    ap.add_argument("--out", default="bench/results/patching.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gm = load_genir(args.model)
    dataset = resolve_dataset(gm, args.data)
    all_pairs = dataset_pairs(dataset)
    kept, _ = keep_correct(gm, all_pairs)
    pairs = kept[: args.n_pairs]
    note = f"{len(pairs)} pairs, from the {len(kept)} of {len(all_pairs)} synthetic pairs whose clean and corrupted queries both rank their own document first"
    if len(pairs) < args.n_pairs:  # too few correct pairs: top up with others rather than shrink the workload
        extra = [p for p in all_pairs if p not in kept and p.clean_doc != p.corrupted_doc][: args.n_pairs - len(pairs)]
        pairs += extra
        note += f", topped up with {len(extra)} other pairs"
    batch = tokenize_pairs(gm, pairs)
    print(note)
    sweeps = {
        "components": target_specs(gm, "component"),
        "cross-attention heads": target_specs(gm, "head", kinds=("cross_attn",)),
    }
    R, P = args.rows_per_forward, 64
    results, exact_heads = {}, None
    for name, specs in sweeps.items():
        n = len(specs) * len(batch)
        rows = []
        # (a) and the floor (d) alternate, so their ratio is not an artefact of load drifting between them
        (table, t_a, m_a), (forwards_d, t_d, m_d) = timed_interleaved(
            lambda: sweep(gm, batch, specs, metrics=METRICS, rows_per_forward=R, pairs_per_batch=P), lambda: floor(gm, batch, len(specs), R, P), args.repeats)
        ref = effects_of(table)
        if name == "cross-attention heads":
            exact_heads, t_heads = table, t_a
        forwards_a = sum(2 + -(-len(specs) * min(P, len(batch) - s) // R) for s in range(0, len(batch), P))
        rows.append(("(a) genir_mech batched sweep", forwards_a, t_a, m_a, 0.0))
        b, t_b, m_b = timed(lambda: one_trace_per_patch(gm, batch, specs))
        rows.append(("(b) one nnsight trace per patch (batch 1)", n + 2 * len(batch), t_b, m_b, compare(ref, b)))
        b2, t_b2, m_b2 = timed(lambda: one_trace_per_patch_all_pairs(gm, batch, specs), args.repeats)
        rows.append(("(b2) one nnsight trace per patch, all pairs batched", len(specs) + 2, t_b2, m_b2, compare(ref, b2)))
        c, t_c, m_c = timed(lambda: batch1_hooks(gm, batch, specs))
        rows.append(("(c) batch-1 loop, plain PyTorch hooks", n + 2 * len(batch), t_c, m_c, compare(ref, c)))
        rows.append(("(d) floor: uninstrumented batched forwards", forwards_d, t_d, m_d, float("nan")))
        for r in rows[1:-1]:
            assert r[4] < 1e-3, f"{r[0]} disagrees with (a) by {r[4]}"
        results[name] = {"n": n, "rows": rows, "t_a": t_a, "t_b": t_b, "t_d": t_d}
        print(name, [(r[0][:4], round(r[2], 3)) for r in rows])

    # Attribution patching vs the exact head sweep, and vs an exact sweep over every node AtP scores.
    all_nodes = attribution_nodes(gm, batch.width)
    exact_all, t_all, m_all = timed(lambda: sweep(gm, batch, all_nodes, metrics=METRICS, rows_per_forward=R, pairs_per_batch=P), args.repeats)
    exact_all["exact"] = exact_all["value"] - exact_all["corrupted"]
    exact = node_means(exact_all, "exact")
    families = {
        "cross-attention heads": lambda t: (t.component == "cross_attn") & t["head"].notna(),
        "encoder positions": lambda t: t.site == "encoder.output",
        "every node": lambda t: t.site.notna(),
    }
    head_nodes = sweeps["cross-attention heads"]
    atp_rows = []
    for desc, kwargs in [
        ("every node, QK fix", {"qk_fix": True}),
        ("every node, no QK fix", {"qk_fix": False}),
        ("cross-attention heads only", {"qk_fix": False, "nodes": head_nodes}),
    ]:
        table, t, m = timed(lambda: attribute(gm, batch, metric=logit_diff, pairs_per_batch=P, **kwargs), args.repeats)
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
                last_heads = heads  # kept for the explanation below
            top_exact = set(heads.assign(a=heads["exact"].abs()).nlargest(5, "a").index)
            top_atp = set(heads.assign(a=heads["estimate"].abs()).nlargest(5, "a").index)
            atp_rows.append((desc, method, t, m, t_heads / t, results["cross-attention heads"]["t_b"] / t, t_all / t, rhos, len(top_exact & top_atp)))
            print(desc, method, round(t, 3), rhos)

    lines = [
        "# Activation patching benchmark",
        "",
        f"Model `{args.model}` ({gm.adapter.n_layers('encoder')} encoder + {gm.adapter.n_layers('decoder')} decoder layers, d_model {gm.adapter.d_model}, "
        f"{gm.adapter.n_heads} heads); {note}. Denoising (clean into corrupted), metric: logit difference of the two documents. "
        f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
        f"{R} rows per forward pass, source activations cached per {P} pairs. Written by `bench/bench_patching.py`; all timings from one run: "
        f"median of {args.repeats} runs after a warm-up for (a), (b2), (d) and AtP, (a) and (d) timed in alternation, a single run for the loops (b) and (c).",
        "",
    ]
    for name, res in results.items():
        lines += [f"## Exact sweep: {name} ({len(sweeps[name])} patches x {len(batch)} pairs = {res['n']} patched runs)", "",
                  "| variant | forward passes | seconds | patches/s | time vs (a) | peak RSS growth (MiB) | max abs diff vs (a) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for desc, forwards, t, m, diff in res["rows"]:
            lines.append(f"| {desc} | {forwards} | {t:.3f} | {res['n'] / t:,.0f} | {t / res['t_a']:.2f}x | {m:.1f} | {'-' if diff != diff else f'{diff:.1e}'} |")
        lines += ["", f"(a) is {res['t_b'] / res['t_a']:.1f}x faster than (b) (aim: >= 10x) and takes {res['t_a'] / res['t_d']:.2f}x the floor (d) (aim: <= 1.5x).", ""]
    rho_cols = list(families)[:1] + ["cross-attention heads, per (pair, head)"] + list(families)[1:]
    lines += ["## Attribution patching vs exact patching", "",
              f"Exact sweeps with (a): cross-attention heads {t_heads:.3f} s ({len(head_nodes)} heads); every node AtP scores {t_all:.3f} s "
              f"({len(all_nodes)} nodes: decoder resid per layer, sublayers, self- and cross-attention heads, encoder output and encoder layer outputs per position; "
              f"peak RSS growth {m_all:.1f} MiB). Spearman's rho compares AtP's mean estimate per node with the exact mean effect (both: change of the logit difference); "
              "'top-5 overlap' counts cross-attention heads in both top-5 lists by |effect|.", "",
              "| AtP run | estimate | seconds | peak RSS growth (MiB) | speed-up vs exact head sweep (a) | vs exact head sweep (b) | vs exact all-node sweep (a) | "
              + " | ".join(f"rho: {c}" for c in rho_cols) + " | top-5 heads overlap |",
              "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(rho_cols) + "---:|"]
    for desc, method, t, m, speedup_heads, speedup_loop, speedup_all, rhos, overlap in atp_rows:
        lines.append(f"| {desc} | {method} | {t:.3f} | {m:.1f} | {speedup_heads:.1f}x | {speedup_loop:.0f}x | {speedup_all:.1f}x | "
                     + " | ".join("-" if rhos[c] != rhos[c] else f"{rhos[c]:.3f}" for c in rho_cols) + f" | {overlap}/5 |")
    # Why per-head ranks can disagree: how spread out the exact head effects are, and how AtP's shortfall depends on depth.
    span = float((exact_all["clean"] - exact_all["corrupted"]).mean())
    ratio = (last_heads["estimate"] / last_heads["exact"]).groupby(last_heads["layer"]).mean()
    lines += ["", f"Exact mean effects of the {len(last_heads)} cross-attention heads lie between {last_heads['exact'].min():.3f} and "
              f"{last_heads['exact'].max():.3f} logits (median {last_heads['exact'].median():.3f}), against a clean-minus-corrupted logit difference of "
              f"{span:.2f}: each head carries {100 * last_heads['exact'].min() / span:.1f}-{100 * last_heads['exact'].max() / span:.1f}% of the effect. "
              f"AtP's estimate / exact ratio per layer (mean over heads) runs from {ratio.iloc[0]:.2f} (layer {ratio.index[0]}) to {ratio.iloc[-1]:.2f} "
              f"(layer {ratio.index[-1]}): the linearisation misses more of an early head's effect, which passes through more later "
              "cross-attention queries, norms and ReLUs. When head effects are this uniform, a depth-dependent bias of this size reorders near-tied "
              "heads, so the rank correlation of per-head means can stay low while AtP tracks the exact effect of each (pair, head) cell closely.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

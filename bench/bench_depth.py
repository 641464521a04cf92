"""Benchmark: how the exact patching sweeps' time grows with depth, with and without prefix resume, against the floor.

    python bench/bench_depth.py --layers 8,16,24 --n-pairs 1      # writes bench/results/depth-t5-large-shape.md

At T5-large width (d_model 1024, 16 heads, d_ff 4096, 10k docids, random
weights; bench/common.py) with 8, 16 and 24 encoder and decoder layers: the
component sweep (every decoder sublayer) and the cross-attention head sweep,
each as (a) genir_mech with prefix resume, (a0) genir_mech running every
layer and (d) the uninstrumented forwards of (a0) (bench_patching.floor),
timed in alternation. Prefix resume saves the layers below each patch: about
half of the decoder work for patches spread evenly over the layers, so the
ratio (a) / (d) should fall towards 0.5 as depth grows (the encoder, run once
per query, and the unembedding are not saved).
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
from bench_patching import METRICS, floor, pairs_for  # noqa: E402
from common import SYNTHETIC_NAME, bench_model, clock_sentence, set_clock, describe, machine_line, timed_interleaved  # noqa: E402

from genir_mech.verbs.options import memory_size  # noqa: E402
from genir_mech.interventions.memory import default_budget  # noqa: E402
from genir_mech.patching.engine import sweep  # noqa: E402
from genir_mech.patching.specs import target_specs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", default="8,16,24", help="encoder and decoder layers of each model, comma-separated")
    ap.add_argument("--n-pairs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="median of this many alternated runs (after a one-patch warm-up)")
    ap.add_argument("--max-memory", type=memory_size, help="activation memory of one pass (default: a quarter of the available memory)")
    ap.add_argument("--sweeps", default="components", help="components and/or heads (cross-attention), comma-separated")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds, or this process's CPU seconds (robust to other load)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/depth-t5-large-shape.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    set_clock(args.clock)
    budget = args.max_memory or default_budget()
    rows, shape = [], None
    for layers in [int(x) for x in args.layers.split(",")]:
        gm, dataset = bench_model(f"{SYNTHETIC_NAME}:{layers}")
        shape = describe(gm)
        batch, note = pairs_for(gm, dataset, args.n_pairs)
        chosen = {"components": ("components", target_specs(gm, "component")), "heads": ("cross-attention heads", target_specs(gm, "head", kinds=("cross_attn",)))}
        for name, specs in (chosen[k] for k in args.sweeps.split(",")):
            sweep(gm, batch, specs[-1:], metrics=METRICS, max_memory=budget)  # warm-up: first traces
            (_, t_a, m_a), (_, t_a0, m_a0), (_, t_d, m_d) = timed_interleaved([
                lambda: sweep(gm, batch, specs, metrics=METRICS, rows_per_forward=None, max_memory=budget),
                lambda: sweep(gm, batch, specs, metrics=METRICS, rows_per_forward=None, max_memory=budget, resume=False),
                lambda: floor(gm, batch, specs, None, budget, 64)], args.repeats, warm_up=False)
            rows.append((layers, name, len(specs) * len(batch), t_a, t_a0, t_d, max(m_a, m_a0, m_d)))
            print(rows[-1], flush=True)
        gm = None  # the next depth's model replaces this one: free it first
    lines = [
        "# Sweep time against depth (T5-large width)",
        "",
        f"Random-weight models at T5-large width ({shape.split(', ', 1)[1]} at the deepest); {note}; "
        f"rows per pass from the memory budget {budget / 2**20:,.0f} MiB. Written by `bench/bench_depth.py --layers {args.layers} --n-pairs {args.n_pairs} --sweeps {args.sweeps} --clock {args.clock}`; "
        f"median of {args.repeats} run(s), (a), (a0) and (d) timed in alternation.",
        machine_line(torch.get_num_threads()) + clock_sentence(),
        "",
        "| encoder + decoder layers | sweep | patched runs | (a) prefix resume (s) | (a0) every layer (s) | (d) floor (s) | (a) / (d) | (a0) / (d) | peak RSS growth (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {n} + {n} | {name} | {runs} | {t_a:.2f} | {t_a0:.2f} | {t_d:.2f} | {t_a / t_d:.2f}x | {t_a0 / t_d:.2f}x | {m:,.0f} |"
          for n, name, runs, t_a, t_a0, t_d, m in rows],
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

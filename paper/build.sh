#!/usr/bin/env bash
# Regenerates every figure and table of paper/ from the embedded checkpoints:
# the demo (genir_mech.pipelines.demo: retrieval, stages, decoder analyses, encoder swap, patching) plus the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p paper/results/bench
genir-mech demo --out paper/results --max-queries 1000 --n-pairs 64
python bench/bench_table3.py --model checkpoints/dsi-synth --out paper/results/bench/table3.md
python bench/bench_patching.py --model checkpoints/dsi-synth --out paper/results/bench/patching.md

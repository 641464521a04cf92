#!/bin/sh
# Every benchmark at both scales (what `make bench` runs): the 8-layer dsi-synth checkpoint and the T5-large-shape model
# (random weights, built in memory). The T5-large-shape runs use few pairs/queries so each stays within minutes on 2 cores.
set -e
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
scale=${1:-all}
if [ "$scale" = all ] || [ "$scale" = small ]; then
  $PY bench/bench_table3.py --model checkpoints/dsi-synth --max-queries 256 --out bench/results/table3.md
  $PY bench/bench_patching.py --model checkpoints/dsi-synth --n-pairs 64 --loop-specs 8 --repeats 3 --out bench/results/patching.md
  # The floor ratios again in CPU seconds of the process: on a loaded shared CPU, wall time mostly measures waiting.
  $PY bench/bench_patching.py --model checkpoints/dsi-synth --n-pairs 64 --repeats 3 --clock cpu --exact-only --out bench/results/patching-cpu-clock.md
fi
if [ "$scale" = all ] || [ "$scale" = large ]; then
  $PY bench/bench_patching.py --model t5-large-shape --n-pairs 1 --loop-specs 2 --repeats 1 --no-warm-up --no-all-nodes --sweeps heads,encoder-positions --threads 2 --out bench/results/patching-t5-large-shape.md
  $PY bench/bench_table3.py --model t5-large-shape --max-queries 4 --repeats 1 --no-warm-up --threads 2 --out bench/results/table3-t5-large-shape.md
  $PY bench/bench_depth.py --layers 8,16,24 --n-pairs 2 --sweeps components --threads 2 --out bench/results/depth-t5-large-shape.md
fi
$PY bench/update_readme.py

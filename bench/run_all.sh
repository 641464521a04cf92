#!/bin/sh
# Every benchmark at both scales (what `make bench` runs): the 8-layer dsi-synth checkpoint and the T5-large-shape model
# (random weights, built in memory). The T5-large-shape runs use few pairs/queries so each stays within minutes on 2 cores.
# Times are CPU seconds of each benchmark process (--clock cpu): the machine is shared, and wall time mostly measures waiting.
set -e
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
scale=${1:-all}
if [ "$scale" = all ] || [ "$scale" = small ]; then
  $PY bench/bench_table3.py --model checkpoints/dsi-synth --max-queries 256 --clock cpu --out bench/results/table3.md
  $PY bench/bench_patching.py --model checkpoints/dsi-synth --n-pairs 64 --loop-specs 8 --repeats 3 --clock cpu --out bench/results/patching.md
  # The floor ratios alone, median of 5 alternated runs.
  $PY bench/bench_patching.py --model checkpoints/dsi-synth --n-pairs 64 --repeats 5 --clock cpu --exact-only --out bench/results/patching-cpu-clock.md
  $PY bench/bench_docid_ranking.py --model checkpoints/dsi-synth-semantic --queries 8 --repeats 1 --out bench/results/docid_ranking.md
fi
if [ "$scale" = all ] || [ "$scale" = large ]; then
  $PY bench/bench_patching.py --model t5-large-shape --n-pairs 8 --loop-specs 2 --repeats 1 --no-warm-up --no-all-nodes --max-memory 1GiB --clock cpu --out bench/results/patching-t5-large-shape.md
  $PY bench/bench_table3.py --model t5-large-shape --max-queries 12 --repeats 1 --no-warm-up --clock cpu --out bench/results/table3-t5-large-shape.md
  $PY bench/bench_depth.py --layers 8,16,24 --n-pairs 8 --sweeps components,heads --clock cpu --out bench/results/depth-t5-large-shape.md
fi
$PY bench/update_readme.py

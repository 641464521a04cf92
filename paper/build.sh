#!/usr/bin/env bash
# `make paper`: regenerates every result of paper/main.tex from the embedded checkpoints and compiles paper/main.pdf.
#   1. `genir-mech demo --out paper/results/demo`: the demo users run (the sweep of examples/paper.yaml on the embedded
#      checkpoints: retrieval, stages, decoder analyses, encoder swap, patching, one folder per experiment under
#      paper/results/demo/dsi/), figures as PDF and tables as LaTeX, then REPORT.md and numbers.tex (the \gm{...} numbers).
#      A rerun resumes: finished experiments are kept.
#   2. the benchmark tables and \bench{...} numbers from bench/results/*.md (BENCH=1 reruns the benchmarks first: ~30 min).
#   3. pdflatex twice (references); a \gm or \bench number the reports did not write fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
"$BIN/genir-mech" demo --out paper/results/demo
if [ "${BENCH:-0}" = "1" ]; then
  "$BIN/python" bench/bench_table3.py --model checkpoints/dsi-synth --threads 1
  "$BIN/python" bench/bench_patching.py --model checkpoints/dsi-synth
fi
"$BIN/python" -m genir_mech.reporting.benchmarks bench/results paper/results/bench
cd paper
for pass in 1 2; do
  pdflatex -interaction=nonstopmode -halt-on-error main.tex > main.build.log || { tail -40 main.build.log; exit 1; }
done
if grep -q -E "genir_mech Warning: (no number|missing result)" main.log; then
  grep -E "genir_mech Warning: (no number|missing result)" main.log >&2
  echo "paper/build.sh: the demo or the benchmark tables did not write the numbers or results above" >&2
  exit 1
fi
echo "paper/main.pdf: $(grep -o 'Output written on main.pdf ([0-9]* pages' main.log | grep -o '[0-9]* pages')"

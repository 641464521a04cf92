#!/usr/bin/env bash
# Rebuilds the embedded default checkpoints from scratch on the CPU.
# Every step is resumable: rerun this script after an interruption.
# The three DSI models start from the same pretrained base and share its
# tokenizer (the encoder-swap experiment needs identical vocabularies); they
# train in parallel, one thread each, and stop early on validation Hits@1
# or at a wall-clock cap.
set -euo pipefail
DATA="synthetic:n_docs=1000,seed=0"
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
run() { echo "+ genir-mech $*"; /usr/bin/time -f "wall %e s: $*" genir-mech "$@"; }
run train --data "$DATA" --out checkpoints/t5-synth-base --objective span --epochs 6 --patience 6 --seed 0
DSI=(--data "$DATA" --base checkpoints/t5-synth-base --objective dsi --epochs 40 --patience 5)
run train "${DSI[@]}" --out checkpoints/dsi-synth --seed 0 --max-minutes 40 &
run train "${DSI[@]}" --out checkpoints/dsi-synth-rd1 --seed 1 --remove-docs random:10:1 --max-minutes 40 &
run train "${DSI[@]}" --out checkpoints/dsi-synth-rd2 --seed 2 --remove-docs random:10:2 --max-minutes 40 &
wait

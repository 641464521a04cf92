#!/usr/bin/env bash
# Rebuilds the embedded default checkpoints from scratch on the CPU.
# Every step is resumable: rerun this script after an interruption.
set -euo pipefail
DATA="synthetic:n_docs=1000,seed=0"
cd "$(dirname "$0")/.."
run() { echo "+ genir-mech $*"; /usr/bin/time -f "wall %e s" genir-mech "$@"; }
run train --data "$DATA" --out checkpoints/t5-synth-base --objective span --epochs 6 --patience 6 --seed 0
run train --data "$DATA" --out checkpoints/dsi-synth --base checkpoints/t5-synth-base --objective dsi --epochs 40 --patience 5 --seed 0
run train --data "$DATA" --out checkpoints/dsi-synth-rd1 --base checkpoints/t5-synth-base --objective dsi --epochs 40 --patience 5 --seed 1 --remove-docs random:10:1
run train --data "$DATA" --out checkpoints/dsi-synth-rd2 --base checkpoints/t5-synth-base --objective dsi --epochs 40 --patience 5 --seed 2 --remove-docs random:10:2

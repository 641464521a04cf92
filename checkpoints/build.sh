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
# The decoder-only retrieval LM: a 2-layer Llama (tied embeddings) trained from scratch on needle-in-a-haystack
# (prompts end with the needle's lead-in, so the answer is an induction copy) and a 10% share of in-context retrieval,
# loss on the answer tokens only; one thread (on a shared 2-core machine, two threads per process ran 15x slower).
# Stage 1 (contexts 32-128 tokens, 10 minutes) forms the induction circuit; stage 2 (64-512 tokens, 13 minutes) and
# stage 3 (128-512, 4.5 minutes, lr 1e-3) continue it with --base. lm-niah is stage 3 without resume/.
NIAH=(--data "$DATA" --objective niah --incontext-docs 2,3 --incontext-share 0.1 --examples-per-epoch 512 --batch-size 16
      --epochs 200 --patience 200 --seed 0)
run train "${NIAH[@]}" --out runs/lm-niah-stage1 --layers 2 --d-model 64 --d-ff 128 --num-heads 4 --num-kv-heads 4 \
    --niah-lengths 32,64,128 --lr 3e-3 --warmup-steps 50 --max-minutes 10
run train "${NIAH[@]}" --base runs/lm-niah-stage1 --out runs/lm-niah-stage2 --niah-lengths 64,128,256,512 \
    --lr 2e-3 --warmup-steps 20 --max-minutes 13
run train "${NIAH[@]}" --base runs/lm-niah-stage2 --out checkpoints/lm-niah --niah-lengths 128,256,512 \
    --lr 1e-3 --warmup-steps 10 --max-minutes 4.5
rm -rf checkpoints/lm-niah/resume
# Controlled pairs: the same tasks on the other architecture. lm-dsi-synth is dsi-synth's recipe (examples,
# AdamW lr 1e-3, 300 warmup steps, batch 128, early stopping on validation Hits@1 with patience 5) on a decoder-only Llama
# from scratch (no pretrained decoder-only base exists for this corpus); prompt "query : <q> docid :" -> one docid token.
run train --data "$DATA" --objective dsi --arch llama --out checkpoints/lm-dsi-synth --layers 8 --d-model 128 --d-ff 256 \
    --num-heads 4 --num-kv-heads 4 --epochs 40 --patience 5 --seed 0 --max-minutes 40
rm -rf checkpoints/lm-dsi-synth/resume
# t5-niah: lm-niah's data and mixture on a T5 (2+2 layers, d_model 64): haystack + question in the encoder, the needle's
# lead-in as the decoder's teacher-forced prefix, the code words from the decoder (the twin of lm-niah's copy task).
# Stage 1 (contexts 32-128, 21 minutes) then stage 2 (128-512, 6 minutes); 27 minutes in all.
T5NIAH=(--data "$DATA" --objective niah --arch t5 --incontext-docs 2,3 --incontext-share 0.1 --examples-per-epoch 512 --batch-size 16
        --epochs 200 --patience 200 --seed 0)
run train "${T5NIAH[@]}" --out runs/t5-niah2-stage1 --encoder-layers 2 --decoder-layers 2 --d-model 64 --d-ff 128 --num-heads 4 \
    --dropout 0 --niah-lengths 32,64,128 --lr 3e-3 --warmup-steps 50 --max-minutes 21
run train "${T5NIAH[@]}" --base runs/t5-niah2-stage1 --out checkpoints/t5-niah --niah-lengths 128,256,512 \
    --lr 1e-3 --warmup-steps 10 --max-minutes 6
rm -rf checkpoints/t5-niah/resume
# Multi-token docids: the dsi-synth recipe from the same base with naive (digit) and semantic (hierarchical
# k-means over MiniLM-L6 embeddings; optional extra minilm) docids, written to <out>/docids.json; the two in parallel, one
# thread each, 55-minute cap (the new docid tokens start from random rows: with HF's mean rows they stayed at chance).
run train "${DSI[@]}" --out checkpoints/dsi-synth-naive --seed 0 --max-minutes 55 --scheme naive &
run train "${DSI[@]}" --out checkpoints/dsi-synth-semantic --seed 0 --max-minutes 55 --scheme semantic &
wait
rm -rf checkpoints/dsi-synth-naive/resume checkpoints/dsi-synth-semantic/resume

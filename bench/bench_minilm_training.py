"""Benchmark: DSI training steps of the MiniLM BERT2BERT (`genir-mech train --init minilm`) against the dsi-synth T5, same run, same recipe.

    python bench/bench_minilm_training.py --steps 6 --threads 1      # writes bench/results/minilm_training.md

Both models are built as `genir-mech train` builds them (the T5 of the
default `T5Shape` on the corpus's word-level tokenizer; the BERT2BERT from
the packaged MiniLM with its vocabulary pruned to the corpus), on the
default synthetic corpus, with the same DSI examples (epoch 0, the default
indexing ratio) cut into batches of the default size. Each takes `--steps`
AdamW steps (forward, backward, clip, step) after one warm-up step; the
median step time gives seconds per epoch, and the ratio to the T5 in the
same run estimates the BERT2BERT's training time from the T5's measured one
(checkpoints/README.md). It also reports the pruned model's size as it would
be committed (`save_float16`). It needs the optional extra `minilm`.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from genir_mech.data.loaders import load_dataset
from genir_mech.docids import AtomicDocids
from genir_mech.provenance import package_versions
from genir_mech.training.architecture import T5Shape
from genir_mech.training.loop import LoopConfig, collate
from genir_mech.training.minilm import build_minilm_bert2bert, corpus_texts, save_float16
from genir_mech.training.objectives import dsi_examples
from genir_mech.training.tokenizer import build_tokenizer

DATA = "synthetic:n_docs=1000,seed=0"


def step_seconds(model, tokenizer, dataset, loop: LoopConfig, steps: int) -> tuple[float, int]:
    """Median seconds of one training step over `steps` steps (after a warm-up), and the steps of one epoch."""
    examples = dsi_examples(dataset, tokenizer, AtomicDocids.detect(tokenizer), 0, loop.seed, 0.2)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    times = []
    for i in range(steps + 1):
        batch = collate(examples[i * loop.batch_size : (i + 1) * loop.batch_size], tokenizer.pad_token_id)
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), loop.clip)
        opt.step()
        opt.zero_grad()
        if i:  # the first step allocates optimiser state
            times.append(time.perf_counter() - start)
    return statistics.median(times), -(-len(examples) // loop.batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results/minilm_training.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dataset, loop = load_dataset(DATA), LoopConfig()
    t5_tok = build_tokenizer(corpus_texts(dataset), dataset.documents)
    t5 = T5Shape().build(t5_tok)
    bert, bert_tok = build_minilm_bert2bert(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        stored = save_float16(bert, bert_tok, tmp)
    rows = []
    for name, model, tok in (("t5 (dsi-synth shape)", t5, t5_tok), ("bert2bert-minilm", bert, bert_tok)):
        seconds, per_epoch = step_seconds(model, tok, dataset, loop, args.steps)
        rows.append((name, sum(p.numel() for p in model.parameters()), len(tok), seconds, per_epoch))
    base = rows[0][3]
    lines = [
        f"# DSI training step: MiniLM BERT2BERT vs the dsi-synth T5 ({DATA}, batch {loop.batch_size}, {args.threads} thread(s), {args.steps} steps each)",
        "",
        "| model | parameters | vocabulary | s / step (median) | steps / epoch | min / epoch | ratio to T5 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {n} | {p:,} | {v:,} | {s:.2f} | {e} | {s * e / 60:.1f} | {s / base:.1f} |" for n, p, v, s, e in rows]
    lines += ["", f"bert2bert-minilm stored with float16 weights (`save_float16`): {stored / 2**20:.1f} MiB "
              f"({len(bert_tok) - len(dataset.documents):,} of MiniLM's 30,522 WordPiece tokens kept, {len(dataset.documents):,} docid tokens added).",
              "", f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), shared with other jobs.",
              f"Versions: {package_versions()}", f"Command: python bench/bench_minilm_training.py --steps {args.steps} --threads {args.threads}"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

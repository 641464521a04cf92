"""What the benchmarks share: the models they run on (an embedded checkpoint, or a random-weight model at the shape
of T5-large), timing in alternation, peak memory, and the lines every result file records.

    gm, dataset = bench_model("checkpoints/dsi-synth")        # trained, 4 + 8 layers, d_model 128
    gm, dataset = bench_model("t5-large-shape")               # 24 + 24 layers, d_model 1024, 16 heads, d_ff 4096, 10k docids
    gm, dataset = bench_model("t5-large-shape:8")             # the same width with 8 + 8 layers (depth scaling)

The T5-large-shape model is built here from a config (never saved): the
shape of T5-large (d_model 1024, 16 heads of 64, d_ff 4096, ReLU MLP,
relative position buckets as T5) on a word-level tokenizer of a synthetic
corpus with 10,000 atomic docid tokens. Its weights are random: speed and
memory do not depend on training, rank agreement does (it is measured on the
trained dsi-synth only).
"""
from __future__ import annotations

import functools
import os
import platform
import statistics
import threading
import time

import torch
from transformers import T5Config, T5ForConditionalGeneration

from genir_mech.docids import AtomicDocids
from genir_mech.models.adapters import adapter_for
from genir_mech.models.genir_model import GenIRModel
from genir_mech.models.loading import load_genir, resolve_dataset
from genir_mech.testing import toy_tokenizer

T5_LARGE = {"d_model": 1024, "d_kv": 64, "num_heads": 16, "d_ff": 4096, "layers": 24}
SYNTHETIC_NAME = "t5-large-shape"
N_DOCIDS = 10_000


@functools.lru_cache(maxsize=None)
def _tokenizer(n_docs: int, seed: int):
    return toy_tokenizer(n_docs, seed)  # minutes for 10k documents on a busy CPU: built once per process


def t5_large_shape(layers: int = T5_LARGE["layers"], n_docs: int = N_DOCIDS, seed: int = 0):
    """(GenIRModel, dataset): random weights at T5-large width with `layers` encoder and decoder layers, `n_docs` atomic docids."""
    tokenizer, dataset = _tokenizer(n_docs, seed)
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=T5_LARGE["d_model"], d_kv=T5_LARGE["d_kv"], d_ff=T5_LARGE["d_ff"], num_layers=layers,
        num_decoder_layers=layers, num_heads=T5_LARGE["num_heads"], dropout_rate=0.0, feed_forward_proj="relu",
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = T5ForConditionalGeneration(config).eval()
    name = f"{SYNTHETIC_NAME}:{layers}"
    return GenIRModel(model, tokenizer, AtomicDocids.detect(tokenizer), adapter_for(model), name, name), dataset


def bench_model(spec: str):
    """(GenIRModel, dataset) for a checkpoint path, or `t5-large-shape[:layers]` built in memory."""
    if spec.startswith(SYNTHETIC_NAME):
        layers = int(spec.split(":", 1)[1]) if ":" in spec else T5_LARGE["layers"]
        return t5_large_shape(layers)
    gm = load_genir(spec)
    return gm, resolve_dataset(gm, None)


def describe(gm) -> str:
    """One line of the model's shape for result files."""
    a = gm.adapter
    n_params = sum(p.numel() for p in gm.hf_model.parameters())
    return (f"{a.n_layers('encoder')} encoder + {a.n_layers('decoder')} decoder layers, d_model {a.d_model}, {a.n_heads} heads, "
            f"d_ff {getattr(a.config, 'd_ff', '?')}, vocabulary {a.config.vocab_size} ({len(gm.docids)} docids), {n_params / 1e6:.0f}M parameters")


def machine_line(threads: int) -> str:
    """CPU, torch threads and the load average when the run started and now: the CPU is shared, ratios are the figures of record."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"CPU: {os.cpu_count()} cores ({platform.machine()}), torch {torch.__version__} with {threads} thread(s); no GPU in this run; "
            f"load average (1, 5, 15 min) at the end of the run: {load}")


def queries_for(gm, dataset, n: int | None, split: str = "validation") -> tuple[list, str]:
    """(queries, note): the correct queries of `split` on a trained model; on a random-weight one (none correct) the first of `split`."""
    from genir_mech.analyses.query_batches import sample_queries
    from genir_mech.retrieval import correct_queries

    if gm.name.startswith(SYNTHETIC_NAME):
        queries = dataset.split(split)[:n]
        return queries, f"the first {len(queries)} {split} queries (random weights: no query is 'correct')"
    queries = sample_queries(correct_queries(gm, dataset, split), n, 0)
    return queries, f"{len(queries)} correct {split} queries"


class PeakRSS:
    """Peak growth of this process's resident set while the block runs (MiB), sampled from /proc/self/statm every 2 ms."""

    PAGE = os.sysconf("SC_PAGE_SIZE")
    INTERVAL = 0.002  # seconds between samples; set_clock("cpu") widens it so the sampler's own CPU time stays negligible

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
            time.sleep(self.INTERVAL)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.start) / 2**20


def timed(fn, repeats: int = 1):
    """(result, median seconds, peak RSS growth in MiB); with repeats > 1, one untimed warm-up call first."""
    if repeats > 1:
        fn()
    times, peak, out = [], 0.0, None
    for _ in range(repeats):
        with PeakRSS() as mem:
            t0 = CLOCK()
            out = fn()
            times.append(CLOCK() - t0)
        peak = max(peak, mem.mib)
    return out, statistics.median(times), peak


CLOCK = time.perf_counter  # bench --clock cpu sets time.process_time: CPU seconds of this process, robust to a loaded machine


def clock_now() -> float:
    """The current reading of the clock `set_clock` chose (for loops timed by hand)."""
    return CLOCK()


def clock_sentence() -> str:
    """The sentence a result file ends its machine line with: which clock its seconds are."""
    return ". Times are CPU seconds of this process (time.process_time), not wall time." if CLOCK is time.process_time else "."


def set_clock(name: str) -> None:
    """'wall' (default) or 'cpu' (process CPU time, all threads) for every timing below."""
    global CLOCK
    CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}[name]
    PeakRSS.INTERVAL = 0.05 if name == "cpu" else 0.002


def timed_interleaved(fns, repeats: int, warm_up: bool = True):
    """Time variants in alternation (a, b, c, a, b, c, ...) after one warm-up each, so that a change in machine load
    (other processes on a shared CPU) hits all alike; returns one (result, median seconds, peak RSS growth) per variant."""
    if warm_up:
        for fn in fns:
            fn()
    times, peaks, outs = [[] for _ in fns], [0.0] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            with PeakRSS() as mem:
                t0 = CLOCK()
                outs[k] = fn()
                times[k].append(CLOCK() - t0)
            peaks[k] = max(peaks[k], mem.mib)
    return [(outs[k], statistics.median(times[k]), peaks[k]) for k in range(len(fns))]

"""What a model can read, and whether one forward pass over a batch of queries fits in memory: checked before it runs.

    max_input_tokens(config)                 # 512 for a BERT encoder, None for T5 (relative positions: no limit)
    batch_bytes(gm, rows=64, length=4096)     # peak bytes of one ranking forward pass over that batch
    available_memory(gm.device)               # bytes free now: MemAvailable, or the GPU's free memory

The estimate counts what dominates a long query: the self-attention over it.
With an attention kernel that works in blocks (sdpa) the scores of one row
at a time and T5's position bias (heads x length^2, shared by the batch)
remain, about three such tensors at the peak; with eager attention the
scores and probabilities of every row (2 x heads x length^2 each). Measured
on dsi-synth (4 heads, sdpa): 4,000 tokens grow the process by about 0.85
GB (estimate 0.77 GB), 22,000 tokens by about 23 GB (estimate 23 GB).
"""
from __future__ import annotations

import os

import torch

# Above this the estimate is compared with the memory available (reading it costs a file read; smaller batches cannot matter).
CHECKED_FROM = 256 * 2**20
# Share of the available memory one forward pass may take: the allocator's slack and the rest of the process need the rest.
SHARE = 0.8


def max_input_tokens(config) -> int | None:
    """The longest input the model's position embeddings allow (`max_position_embeddings`, `n_positions`), also of an
    encoder-decoder's encoder config; None when the config sets no limit (T5's relative positions)."""
    for source in (config, getattr(config, "encoder", None)):
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(source, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def available_memory(device: torch.device | str | None = None) -> int:
    """Bytes available to new allocations now: the free memory of a CUDA device, else MemAvailable (physical memory without /proc)."""
    if device is not None and torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def batch_bytes(gm, rows: int, length: int) -> int:
    """Peak bytes of one forward pass of `gm` over `rows` queries padded to `length` tokens (module docstring: what is counted)."""
    config, adapter = gm.hf_model.config, gm.adapter
    d = adapter.d_model
    d_ff = getattr(config, "d_ff", None) or getattr(config, "intermediate_size", None) or 4 * d
    eager = getattr(config, "_attn_implementation", "eager") == "eager"
    attention = adapter.n_heads * length * length * (2 * rows + 1 if eager else 3)
    hidden = rows * length * (d_ff + 8 * d)
    return gm.hf_model.dtype.itemsize * (attention + hidden)


def max_fitting_length(gm, rows: int, budget: float) -> int:
    """The longest query length whose batch of `rows` fits in `budget` bytes (0 when not even one token does)."""
    low, high = 0, 1
    while batch_bytes(gm, rows, high) <= budget:
        low, high = high, 2 * high
    while high - low > 1:  # batch_bytes grows with the length: bisect
        middle = (low + high) // 2
        low, high = (middle, high) if batch_bytes(gm, rows, middle) <= budget else (low, middle)
    return low

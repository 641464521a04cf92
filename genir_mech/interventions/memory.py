"""How many rows one forward pass may carry: the activation bytes of one row, and the memory budget they are cut to.

    budget = default_budget()                          # --max-memory (set_budget), else a quarter of the memory available now
    rows = rows_within(gm, batch, encoded=True, max_memory=2 * 2**30)   # rows of a 2 GiB forward pass

The estimate counts what a forward pass keeps alive at its peak for one row:
its copy of the cached encoder output, one layer's working set (keys and
values over the query, attention scores, the MLP's hidden layer) and the
logits over the vocabulary, doubled for temporaries. Layers run one after
another; only the cross-attention keys and values a row receives for every
decoder layer (projected once per query, see the executor) grow with depth.
"""
from __future__ import annotations

from ..models.adapters.base import Adapter
from ..models.capacity import available_memory

# Past a few thousand rows a pass runs no faster per row; the cap keeps chunks (and progress updates) frequent.
MAX_ROWS = 4096
# Budget share of the available memory when none is given: the model, caches and other work need the rest.
DEFAULT_SHARE = 0.25
# Temporaries (where() results, attention probabilities, allocator slack) on top of the tensors counted.
SAFETY = 2.0


_budget: int | None = None


def set_budget(max_memory: int | None) -> None:
    """Set the process-wide budget (the CLI's --max-memory); None: back to a share of the available memory."""
    global _budget
    _budget = max_memory


def default_budget() -> int:
    """The memory knob's default: the budget set by `set_budget`, else a share of what is available now."""
    return _budget if _budget is not None else int(DEFAULT_SHARE * available_memory())


def _d_ff(config, d_model: int) -> int:
    return getattr(config, "d_ff", None) or getattr(config, "intermediate_size", None) or 4 * d_model


def row_bytes(gm, batch, encoded: bool) -> int:
    """Peak activation bytes of one row of `batch` in a forward pass; `encoded` rows reuse the cached encoder output."""
    adapter = gm.adapter
    element = gm.hf_model.dtype.itemsize
    d, heads = adapter.d_model, adapter.n_heads
    d_ff, vocab = _d_ff(adapter.config, d), gm.hf_model.get_output_embeddings().weight.shape[0]
    source = batch.input_ids.shape[1]
    decoded = 0 if batch.decoder_input_ids is None else batch.decoder_input_ids.shape[1]
    if "encoder" not in adapter.sides:  # decoder-only: the query and decoded tokens are one sequence
        length = source + decoded
        layer = length * (d_ff + 8 * d) + 2 * heads * length * length
        return int(SAFETY * element * (layer + 2 * vocab))
    target = max(decoded, 1)
    decoder_layer = 2 * source * d + 2 * heads * target * (source + target) + target * (d_ff + 8 * d)
    encoder_layer = source * (d_ff + 8 * d) + 2 * heads * source * source
    count = 2 * source * d + decoder_layer + 2 * vocab + (0 if encoded else encoder_layer)
    if encoded and shares_cross_keys_values(adapter):
        # Each row holds its query's copy of every decoder layer's cross-attention keys and values: the one part that grows with depth.
        count += 2 * source * d * adapter.n_layers("decoder")
    return int(SAFETY * element * count)


def shares_cross_keys_values(adapter) -> bool:
    """Whether the executor hands this family's rows cross-attention keys/values projected once per query."""
    return type(adapter).cross_keys_values is not Adapter.cross_keys_values


def rows_within(gm, batch, encoded: bool, max_memory: int | None = None) -> int:
    """Rows per forward pass whose activations fit in `max_memory` bytes (default: `default_budget()`), at most MAX_ROWS."""
    budget = default_budget() if max_memory is None else max_memory
    return max(1, min(MAX_ROWS, budget // row_bytes(gm, batch, encoded)))

"""An nnsight wrapper for HuggingFace GenIR models that accepts many invokes per trace.

    nn_model = GenIRNNsight(hf_model, padding_side="right")      # "left" for decoder-only models
    with nn_model.trace() as tracer:
        with tracer.invoke(**adapter.model_inputs(batch_a)): ...
        with tracer.invoke(**adapter.model_inputs(batch_b)): ...

Plain `NNsight` refuses a second invoke. Here each invoke contributes the rows
of its tensor keyword arguments; invokes of different query lengths are padded
to the longest on the adapter's padding side (left for decoder-only models, so
every row still ends at the ranking position), with masks extended by zeros
so padding stays masked.
"""
from __future__ import annotations

import torch
from nnsight import NNsight
from transformers.modeling_outputs import BaseModelOutput

_ROW_KEYS = ("input_ids", "attention_mask", "position_ids", "decoder_input_ids", "encoder_outputs", "labels")


def _rows(value) -> int:
    if isinstance(value, BaseModelOutput):
        return value.last_hidden_state.shape[0]
    return value.shape[0] if isinstance(value, torch.Tensor) and value.ndim else 0


def _pad_cat(tensors: list[torch.Tensor], fill, side: str = "right") -> torch.Tensor:
    width = max(t.shape[1] for t in tensors) if tensors[0].ndim > 1 else None
    if width is None:
        return torch.cat(tensors)
    padded = []
    for t in tensors:
        if t.shape[1] < width:
            pad = torch.full((t.shape[0], width - t.shape[1], *t.shape[2:]), fill, dtype=t.dtype, device=t.device)
            t = torch.cat([t, pad] if side == "right" else [pad, t], dim=1)
        padded.append(t)
    return torch.cat(padded)


class GenIRNNsight(NNsight):
    """`NNsight` with multi-invoke batching; `padding_side` is the adapter's (`gm.adapter.padding_side`)."""

    def __init__(self, module, padding_side: str = "right", **kwargs):
        super().__init__(module, **kwargs)
        self._genir_padding_side = padding_side

    def _batch_size(self, *inputs, **kwargs) -> int:
        for key in _ROW_KEYS:
            if kwargs.get(key) is not None:
                return _rows(kwargs[key])
        return 0

    def _batch(self, invokes, fn):
        if len(invokes) == 1:
            return invokes[0]
        pad_id = self._module.config.pad_token_id or 0
        fills = {"input_ids": pad_id, "decoder_input_ids": pad_id, "labels": -100}
        merged = {}
        for key in invokes[0][1]:
            values = [kwargs[key] for _, kwargs in invokes]
            if isinstance(values[0], BaseModelOutput):
                merged[key] = BaseModelOutput(last_hidden_state=_pad_cat([v.last_hidden_state for v in values], 0.0))
            elif isinstance(values[0], torch.Tensor) and values[0].ndim:
                # Decoder inputs always follow the query, so they pad on the right; query-aligned keys use the adapter's side.
                side = "right" if key in ("decoder_input_ids", "labels") else self._genir_padding_side
                merged[key] = _pad_cat(values, fills.get(key, 0), side)
            else:
                merged[key] = values[0]
        return tuple(), merged

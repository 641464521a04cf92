"""An nnsight wrapper for encoder-decoder models that accepts many invokes per trace.

    nn_model = Seq2SeqNNsight(hf_model)
    with nn_model.trace() as tracer:
        with tracer.invoke(input_ids=a_ids, attention_mask=a_mask, decoder_input_ids=a_dec): ...
        with tracer.invoke(input_ids=b_ids, attention_mask=b_mask, decoder_input_ids=b_dec): ...

Plain `NNsight` refuses a second invoke. Here each invoke contributes the rows
of its tensor keyword arguments; invokes of different query lengths are padded
to the longest, with masks extended by zeros so padding stays masked.
"""
from __future__ import annotations

import torch
from nnsight import NNsight
from transformers.modeling_outputs import BaseModelOutput

_ROW_KEYS = ("input_ids", "attention_mask", "decoder_input_ids", "encoder_outputs", "labels")


def _rows(value) -> int:
    if isinstance(value, BaseModelOutput):
        return value.last_hidden_state.shape[0]
    return value.shape[0] if isinstance(value, torch.Tensor) and value.ndim else 0


def _pad_cat(tensors: list[torch.Tensor], fill) -> torch.Tensor:
    width = max(t.shape[1] for t in tensors) if tensors[0].ndim > 1 else None
    if width is None:
        return torch.cat(tensors)
    padded = []
    for t in tensors:
        if t.shape[1] < width:
            pad = torch.full((t.shape[0], width - t.shape[1], *t.shape[2:]), fill, dtype=t.dtype, device=t.device)
            t = torch.cat([t, pad], dim=1)
        padded.append(t)
    return torch.cat(padded)


class Seq2SeqNNsight(NNsight):
    def _batch_size(self, *inputs, **kwargs) -> int:
        for key in _ROW_KEYS:
            if kwargs.get(key) is not None:
                return _rows(kwargs[key])
        return 0

    def _batch(self, invokes, fn):
        if len(invokes) == 1:
            return invokes[0]
        pad_id = self._module.config.pad_token_id or 0
        merged = {}
        for key in invokes[0][1]:
            values = [kwargs[key] for _, kwargs in invokes]
            if isinstance(values[0], BaseModelOutput):
                merged[key] = BaseModelOutput(last_hidden_state=_pad_cat([v.last_hidden_state for v in values], 0.0))
            elif isinstance(values[0], torch.Tensor) and values[0].ndim:
                merged[key] = _pad_cat(values, pad_id if key == "input_ids" else (-100 if key == "labels" else 0))
            else:
                merged[key] = values[0]
        return tuple(), merged

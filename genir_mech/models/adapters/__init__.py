"""Architecture adapters, one module per family, and the lookup that picks one for a loaded model.

    adapter = adapter_for(hf_model)            # T5Adapter for T5/mT5
    adapter.hook(Site.parse("decoder.layers.2.cross_attn"))

To add a family: write `models/adapters/<family>.py` with an `Adapter`
subclass (see base.py for the contract), add it to `ADAPTERS`, add a tiny
model factory to `genir_mech.testing`, and add it to the contract test
(tests/test_adapter_contract.py). Nothing else in genir_mech changes.
"""
from __future__ import annotations

from torch import nn

from ...errors import GenIRError
from .base import Adapter, Hook, module_at
from .t5 import T5Adapter

ADAPTERS: list[type[Adapter]] = [T5Adapter]


def adapter_for(model: nn.Module) -> Adapter:
    name = getattr(model.config, "name_or_path", "") or type(model).__name__
    if not getattr(model.config, "is_encoder_decoder", False):
        raise GenIRError(
            f"{name}: {type(model).__name__} is not an encoder-decoder model (config.is_encoder_decoder is false); "
            "genir_mech analyses seq2seq GenIR models with an encoder and a cross-attending decoder"
        )
    for cls in ADAPTERS:
        if cls.supports(model):
            return cls(model)
    raise GenIRError(
        f"{name}: no genir_mech adapter for model_type {model.config.model_type!r} ({type(model).__name__}); "
        f"supported families: {', '.join(c.family for c in ADAPTERS)}"
    )


__all__ = ["ADAPTERS", "Adapter", "Hook", "T5Adapter", "adapter_for", "module_at"]

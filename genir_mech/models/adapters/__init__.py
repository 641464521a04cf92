"""Architecture adapters, one module per family, and the lookup that picks one for a config or a loaded model.

    adapter = adapter_for(hf_model)            # T5Adapter for T5/mT5, LlamaAdapter for Llama/Qwen2, GPT2Adapter for GPT-2
    cls = adapter_class(config)                # before loading: cls.auto_class loads the checkpoint
    adapter.hook(Site.parse("decoder.layers.2.self_attn"))

To add a family: write `models/adapters/<family>.py` with an `Adapter`
subclass (see base.py for the contract), add it to `ADAPTERS`, add a tiny
model factory to `genir_mech.testing`, and add one line to the contract test
(tests/test_adapter_contract.py). Nothing else in genir_mech changes.
"""
from __future__ import annotations

from torch import nn

from ...errors import GenIRError
from .attention import Attention
from .base import Adapter, Hook, module_at
from .gpt2 import GPT2Adapter
from .llama import LlamaAdapter
from .t5 import T5Adapter

ADAPTERS: list[type[Adapter]] = [T5Adapter, LlamaAdapter, GPT2Adapter]

# Encoder-decoder families beyond T5 (post-LayerNorm BART and BERT2BERT, sandwich-norm T5Gemma).
from .bart import BartAdapter  # noqa: E402
from .bert2bert import Bert2BertAdapter  # noqa: E402
from .t5gemma import T5GemmaAdapter  # noqa: E402

ADAPTERS += [BartAdapter, Bert2BertAdapter, T5GemmaAdapter]


def adapter_class(config, name: str = "") -> type[Adapter]:
    """The adapter family of a HuggingFace config; GenIRError naming the model when none fits."""
    for cls in ADAPTERS:
        if cls.supports(config):
            return cls
    kind = "encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "decoder-only or encoder-only"
    raise GenIRError(
        f"{name or getattr(config, 'name_or_path', '') or config.model_type}: no genir_mech adapter for model_type {config.model_type!r} ({kind}); "
        "supported: " + "; ".join(f"{c.family} ({', '.join(c.MODEL_TYPES)}, {'encoder-decoder' if 'encoder' in c.sides else 'decoder-only'})" for c in ADAPTERS)
    )


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter of a loaded HF model's family; GenIRError naming the model type when no family supports it.

    adapter = adapter_for(hf_model)      # T5Adapter, LlamaAdapter, ...
    """
    return adapter_class(model.config, getattr(model.config, "name_or_path", "") or type(model).__name__)(model)


__all__ = ["ADAPTERS", "Adapter", "Attention", "GPT2Adapter", "Hook", "LlamaAdapter", "T5Adapter", "adapter_class", "adapter_for", "module_at"]
__all__ += ["BartAdapter", "Bert2BertAdapter", "T5GemmaAdapter"]

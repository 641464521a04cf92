"""Shapes of the small models genir_mech trains from scratch, T5 (encoder-decoder) and Llama (decoder-only), and which one a run trains."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from ..errors import GenIRError


def check_counts(shape, names: tuple[str, ...]) -> None:
    """Refuse a count below 1 and heads that do not divide d_model, naming the flag (the checks every shape shares)."""
    for name in names:
        if getattr(shape, name) < 1:
            raise GenIRError(f"{name} must be at least 1, got {getattr(shape, name)} (CLI: --{name.replace('_', '-')})")
    if shape.d_model % shape.num_heads:
        raise GenIRError(f"d_model {shape.d_model} is not divisible by num_heads {shape.num_heads} (CLI: --d-model, --num-heads)")


ARCHS = ("t5", "llama")
DEFAULT_ARCH = {"span": "t5", "dsi": "t5", "niah": "llama"}  # what `genir-mech train --objective X` trains without --arch
LLAMA_OBJECTIVES = ("dsi", "niah")  # span corruption is an encoder-decoder objective


def architecture(req) -> str:
    """The architecture a train.TrainRequest trains: its `arch` (--arch), else its objective's default."""
    return req.arch or DEFAULT_ARCH.get(req.objective, "t5")


def shape_class(arch: str) -> type:
    """The shape dataclass of an architecture (its fields are the CLI's shape options)."""
    return LlamaShape if arch == "llama" else T5Shape


@dataclass(frozen=True)
class T5Shape:
    """Shape of a from-scratch T5 (layers, width, heads); every count is a field, never a constant."""
    d_model: int = 128
    d_ff: int = 512
    num_heads: int = 4
    encoder_layers: int = 4
    decoder_layers: int = 8
    dropout: float = 0.1

    def check(self) -> "T5Shape":
        """Refuse shapes that cannot be built, naming the flag."""
        check_counts(self, ("d_model", "d_ff", "num_heads", "encoder_layers", "decoder_layers"))
        if not 0 <= self.dropout < 1:
            raise GenIRError(f"dropout must be in [0, 1), got {self.dropout} (CLI: --dropout)")
        return self

    def to_config(self, tokenizer) -> T5Config:
        """The HF T5Config of this shape for `tokenizer`'s vocabulary and special tokens."""
        return T5Config(
            vocab_size=len(tokenizer),
            d_model=self.d_model,
            d_kv=self.d_model // self.num_heads,
            d_ff=self.d_ff,
            num_layers=self.encoder_layers,
            num_decoder_layers=self.decoder_layers,
            num_heads=self.num_heads,
            dropout_rate=self.dropout,
            feed_forward_proj="relu",  # original ReLU T5, as in the paper's T5-large
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )

    def build(self, tokenizer) -> T5ForConditionalGeneration:
        """A freshly initialised T5ForConditionalGeneration of this shape."""
        return T5ForConditionalGeneration(self.to_config(tokenizer))

    def asdict(self) -> dict:
        """The shape as a dict (recorded in the model card)."""
        return asdict(self)


@dataclass(frozen=True)
class LlamaShape:
    """Shape of a from-scratch decoder-only Llama (RMSNorm, RoPE, grouped-query attention, gated SiLU MLP)."""
    d_model: int = 64
    d_ff: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    layers: int = 4
    max_positions: int = 1024
    tie_embeddings: bool = True  # copying a context token to the output is then the identity map through the OV circuit

    def check(self) -> "LlamaShape":
        """Refuse shapes that cannot be built, naming the flag."""
        check_counts(self, ("d_model", "d_ff", "num_heads", "num_kv_heads", "layers", "max_positions"))
        if self.num_heads % self.num_kv_heads:
            raise GenIRError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads} (CLI: --num-heads, --num-kv-heads)")
        return self

    def to_config(self, tokenizer) -> LlamaConfig:
        """The HF LlamaConfig of this shape for `tokenizer`'s vocabulary and special tokens."""
        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=self.d_model, intermediate_size=self.d_ff, num_hidden_layers=self.layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads, max_position_embeddings=self.max_positions,
            rms_norm_eps=1e-6, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
            tie_word_embeddings=self.tie_embeddings, attention_dropout=0.0,
        )

    def build(self, tokenizer) -> LlamaForCausalLM:
        """A freshly initialised LlamaForCausalLM of this shape."""
        return LlamaForCausalLM(self.to_config(tokenizer))

    def asdict(self) -> dict:
        """The shape as a dict (recorded in the model card)."""
        return asdict(self)

"""`GenIRModel`: a HuggingFace encoder-decoder GenIR model with its tokenizer, docids, adapter and nnsight wrapper.

    gm = load_genir("checkpoints/dsi-synth")
    batch = gm.encode(gm.batch(["who founded zorblax"]))
    gm.adapter.n_layers("decoder"), gm.docids.doc_ids[:3]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..docids import AtomicDocids
from ..retrieval import decoder_start_ids, tokenize_queries
from .adapters import Adapter
from .components import Site
from .execution import QueryBatch
from .wrapper import Seq2SeqNNsight


@dataclass
class GenIRModel:
    hf_model: torch.nn.Module
    tokenizer: object
    docids: AtomicDocids
    adapter: Adapter
    name: str
    path: str

    def __post_init__(self):
        self.hf_model.eval()
        self.nn = Seq2SeqNNsight(self.hf_model)

    @property
    def decoder_start_id(self) -> int:
        return self.hf_model.config.decoder_start_token_id

    @property
    def device(self) -> torch.device:
        return self.hf_model.device

    def batch(self, texts: list[str]) -> QueryBatch:
        enc = tokenize_queries(self.tokenizer, texts)
        return QueryBatch(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))

    @torch.no_grad()
    def encode(self, batch: QueryBatch) -> QueryBatch:
        """Run the encoder once; decoder-only interventions then reuse `encoder_hidden`."""
        hidden = self.hf_model.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return QueryBatch(batch.input_ids, batch.attention_mask, hidden, batch.decoder_input_ids)

    @torch.no_grad()
    def logits(self, batch: QueryBatch) -> torch.Tensor:
        """Uninstrumented first-step logits (the reference every intervention is checked against)."""
        kwargs = batch.model_kwargs(self.decoder_start_id)
        return self.hf_model(**kwargs).logits[:, -1]

    def components(self, side: str = "decoder", kinds: tuple[str, ...] | None = None) -> list[Site]:
        return self.adapter.components(side, kinds)

    def n_layers(self, side: str = "decoder") -> int:
        return self.adapter.n_layers(side)

    def start_ids(self, n: int) -> torch.Tensor:
        return decoder_start_ids(self.hf_model, n)

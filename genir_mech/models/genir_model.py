"""`GenIRModel`: a HuggingFace GenIR model with its tokenizer, docids, scorer, adapter and nnsight wrapper.

    gm = load_genir("checkpoints/dsi-synth")
    batch = gm.encode(gm.batch(["who founded zorblax"]))     # encoder runs once, reusable by decoder-side runs
    gm.logits(batch)                                         # (1, vocab) uninstrumented ranking-step logits
    scorer_for(gm).score(gm, batch)                          # (1, n_docs) document scores (genir_mech.retrieval)
    gm.n_layers("decoder"), gm.docids.doc_ids[:3]

The model object is what every analysis, pipeline and verb takes; none of
them unpacks the HuggingFace model, tokenizer and docids separately.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..docids import AtomicDocids
from ..errors import GenIRError
from .adapters import Adapter
from .components import Site
from .execution import QueryBatch
from .wrapper import Seq2SeqNNsight

# Query truncation length of the public DSI code (queries are short; 64 tokens covers them).
MAX_QUERY_TOKENS = 64


@dataclass
class GenIRModel:
    """A loaded GenIR model. Build it with `load_genir(path_or_hub_id)` (or `genir_mech.testing.tiny_genir()` in tests).

    Example:
        >>> gm = load_genir("checkpoints/dsi-synth")
        >>> gm.logits(gm.batch(["who founded zorblax"])).shape        # (1, vocab)
    """

    hf_model: torch.nn.Module
    tokenizer: object
    docids: AtomicDocids
    adapter: Adapter
    name: str
    path: str
    # A retrieval.RetrievalScorer chosen at load time; None means the atomic scorer of `docids`
    # (retrieval.scorer_for resolves it, so models never import the layer above them).
    scorer: object = field(default=None)

    def __post_init__(self):
        self.hf_model.eval()
        self.nn = Seq2SeqNNsight(self.hf_model)

    @property
    def decoder_start_id(self) -> int:
        start = self.hf_model.config.decoder_start_token_id
        if start is None:
            raise GenIRError(f"{self.path}: config has no decoder_start_token_id")
        return start

    def start_ids(self, n: int) -> torch.Tensor:
        """(n, 1) decoder inputs of the ranking step: the decoder start token."""
        return torch.full((n, 1), self.decoder_start_id, dtype=torch.long, device=self.device)

    @property
    def device(self) -> torch.device:
        return self.hf_model.device

    def batch(self, texts: list[str]) -> QueryBatch:
        """Tokenize, pad and mask `texts` into one batch on the model's device."""
        if not texts:
            raise GenIRError("empty query set: nothing to rank")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_QUERY_TOKENS, return_tensors="pt")
        return QueryBatch(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))

    def token_rows(self, texts: list[str]) -> list[list[int]]:
        """Unpadded token ids of each text, tokenized exactly as `batch` does."""
        b = self.batch(texts)
        return [ids[mask.bool()].tolist() for ids, mask in zip(b.input_ids.cpu(), b.attention_mask.cpu())]

    @torch.no_grad()
    def encode(self, batch: QueryBatch) -> QueryBatch:
        """Run the encoder once; decoder-only interventions then reuse `encoder_hidden`."""
        hidden = self.hf_model.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return QueryBatch(batch.input_ids, batch.attention_mask, hidden, batch.decoder_input_ids)

    @torch.no_grad()
    def logits(self, batch: QueryBatch) -> torch.Tensor:
        """Uninstrumented logits of the ranking step (the reference every intervention is checked against)."""
        kwargs = batch.model_kwargs(self.decoder_start_id)
        return self.hf_model(**kwargs).logits[:, -1]

    def components(self, side: str = "decoder", kinds: tuple[str, ...] | None = None) -> list[Site]:
        return self.adapter.components(side, kinds)

    def n_layers(self, side: str = "decoder") -> int:
        return self.adapter.n_layers(side)

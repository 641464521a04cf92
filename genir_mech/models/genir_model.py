"""`GenIRModel`: a HuggingFace GenIR model with its tokenizer, docids, scorer, adapter and nnsight wrapper.

    gm = load_genir("checkpoints/dsi-synth")
    batch = gm.encode(gm.batch(["who founded zorblax"]))     # encoder runs once, reusable by decoder-side runs (no-op without an encoder)
    gm.logits(batch)                                         # (1, vocab) uninstrumented ranking-step logits
    scorer_for(gm).score(gm, batch)                          # (1, n_docs) document scores (genir_mech.retrieval)
    gm.n_layers("decoder"), gm.docids.doc_ids[:3]

The model object is what every analysis, pipeline and verb takes; none of
them unpacks the HuggingFace model, tokenizer and docids separately.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..docids import DocidScheme
from ..errors import GenIRError
from ..vocabulary import MAX_QUERY_TOKENS
from .adapters import Adapter
from .capacity import CHECKED_FROM, SHARE, available_memory, batch_bytes, max_fitting_length, max_input_tokens
from .components import Site
from .execution import QueryBatch
from .wrapper import GenIRNNsight


@dataclass
class GenIRModel:
    """A loaded GenIR model: HuggingFace model, tokenizer, docids, adapter and nnsight wrapper in one object.

    Example:
        >>> gm = load_genir("checkpoints/dsi-synth")           # or genir_mech.testing.tiny_genir() / tiny_llama_genir()
        >>> batch = gm.batch(["who founded zorblax"])           # padded on the adapter's side, masked
        >>> gm.logits(batch).shape                              # (1, vocab): the ranking step, uninstrumented
        >>> gm.components("decoder", ("mlp",))[:2]              # standard Sites, read off the config
        >>> run(gm, gm.encode(batch), reads=gm.components())    # instrumented (genir_mech.models.execution)

    Encoder-decoder (T5) and decoder-only (Llama) models look the same from
    here: `gm.adapter` knows the architecture (`gm.adapter.sides`,
    `gm.adapter.require(...)`), and `encode` is the identity without an encoder.
    """

    hf_model: torch.nn.Module
    tokenizer: object
    docids: DocidScheme | None  # AtomicDocids or SequenceDocids (from the model card); None for a language model without docid tokens (load_lm)
    adapter: Adapter
    name: str
    path: str
    # A retrieval.RetrievalScorer chosen at load time; None means the scorer of `docids` (atomic or sequence)
    # (retrieval.scorer_for resolves it, so models never import the layer above them).
    scorer: object = field(default=None)
    # Queries are cut to this many tokens by `batch` (CLI: --max-query-tokens); `n_truncated` counts the ones that are.
    max_query_tokens: int = MAX_QUERY_TOKENS

    def __post_init__(self):
        self.hf_model.eval()
        self.nn = GenIRNNsight(self.hf_model, padding_side=self.adapter.padding_side)

    @property
    def decoder_start_id(self) -> int:
        """The decoder start token of an encoder-decoder model (GenIRError for a decoder-only one)."""
        return int(self.adapter.start_ids(1)[0, 0])

    def start_ids(self, n: int) -> torch.Tensor:
        """(n, 1) decoder inputs of the ranking step of an encoder-decoder model: the decoder start token."""
        return self.adapter.start_ids(n).to(self.device)

    @property
    def device(self) -> torch.device:
        """Device of the model's weights; batches are built there."""
        return self.hf_model.device

    @property
    def max_input_tokens(self) -> int | None:
        """The longest input the model reads (its config's max_position_embeddings or n_positions); None when unlimited (T5)."""
        return max_input_tokens(self.hf_model.config)

    def check_query_limit(self) -> None:
        """Refuse a `max_query_tokens` beyond the positions the model has (CLI: --max-query-tokens, checked when the model loads)."""
        limit = self.max_input_tokens
        if limit is not None and self.max_query_tokens > limit:
            raise GenIRError(f"{self.path}: max_query_tokens {self.max_query_tokens} is more than the {limit} tokens the model reads "
                             f"(its config's position limit); give at most {limit} (CLI: --max-query-tokens)")

    def check_batch_memory(self, rows: int, length: int) -> None:
        """Refuse a forward pass over `rows` queries of `length` tokens that would take more memory than there is (capacity.batch_bytes)."""
        need = batch_bytes(self, rows, length)
        if need < CHECKED_FROM:
            return
        have = available_memory(self.device)
        if need > SHARE * have:
            fits = max_fitting_length(self, rows, SHARE * have)
            raise GenIRError(f"{self.path}: {rows} queries of {length} tokens need about {need / 2**30:.1f} GiB for one forward pass, more than "
                             f"the {SHARE * have / 2**30:.1f} GiB it may take of the {have / 2**30:.1f} GiB available; lower max_query_tokens "
                             f"(CLI: --max-query-tokens, now {self.max_query_tokens}) to at most {fits}" + (" or the batch size" if fits < 1 else ""))

    def batch(self, texts: list[str]) -> QueryBatch:
        """Tokenize, pad (on the adapter's side) and mask `texts` into one batch on the model's device.

        Queries are cut to `max_query_tokens`, which may not exceed the model's position limit; a batch whose forward
        pass would need more memory than is available (long queries on a model without a limit, such as T5) is
        refused before it runs, naming the length and what to lower.
        """
        if not texts:
            raise GenIRError("empty query set: nothing to rank")
        self.check_query_limit()
        for i, text in enumerate(texts):
            # an empty query is still scored (on the padding/start token alone) and looks like a real result
            if not isinstance(text, str):
                raise GenIRError(f"texts[{i}] must be a string, got {type(text).__name__} {text!r}")
            if not text.strip():
                raise GenIRError(f"texts[{i}] is an empty query: nothing to rank")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_query_tokens, return_tensors="pt",
                             padding_side=self.adapter.padding_side)
        self.check_batch_memory(*enc["input_ids"].shape)
        return QueryBatch(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))

    def unreadable(self, texts: list[str]) -> list[int]:
        """Indices of `texts` that tokenize to nothing the model can read: once cut to `max_query_tokens`, only unknown,
        padding or boundary tokens, or pieces that decode to whitespace (emoji or control characters under a word-level
        vocabulary). Such a query would be ranked on <unk> alone; `retrieval.evaluate` leaves it out, `rank_texts` refuses it."""
        tok = self.tokenizer
        empty = {getattr(tok, f"{name}_token_id", None) for name in ("unk", "pad", "eos", "bos", "cls", "sep", "mask")} - {None}
        rows = tok(list(texts), truncation=True, max_length=self.max_query_tokens, add_special_tokens=False)["input_ids"]
        return [i for i, ids in enumerate(rows) if not tok.decode([t for t in ids if t not in empty]).strip()]

    def n_truncated(self, texts: list[str]) -> int:
        """How many of `texts` are longer than the `max_query_tokens` that `batch` keeps (their ends are cut)."""
        lengths = self.tokenizer(list(texts), truncation=False)["input_ids"]
        return sum(len(ids) > self.max_query_tokens for ids in lengths)

    def check_finite(self, values: torch.Tensor, what: str = "logits") -> torch.Tensor:
        """`values`, unless any is NaN or infinite: then a GenIRError naming the model (a NaN ranks like a score and yields plausible metrics)."""
        if not bool(torch.isfinite(values).all()):
            bad = int((~torch.isfinite(values)).any(dim=-1).sum()) if values.dim() > 1 else 1
            raise GenIRError(f"{self.path}: the model's {what} are not finite (NaN or inf) for {bad} of {len(values)} queries; "
                             "refusing to rank with a broken model (check its weights)")
        return values

    def token_rows(self, texts: list[str]) -> list[list[int]]:
        """Unpadded token ids of each text, tokenized exactly as `batch` does."""
        b = self.batch(texts)
        return [ids[mask.bool()].tolist() for ids, mask in zip(b.input_ids.cpu(), b.attention_mask.cpu())]

    def encode(self, batch: QueryBatch) -> QueryBatch:
        """Run the encoder once so runs that touch only the decoder reuse `encoder_hidden`; a decoder-only model returns `batch` unchanged."""
        return self.adapter.encode(batch)

    def model_inputs(self, batch: QueryBatch) -> dict:
        """Keyword arguments of the HuggingFace forward pass for `batch` (the adapter decides: seq2seq or decoder-only)."""
        return self.adapter.model_inputs(batch)

    @torch.no_grad()
    def logits(self, batch: QueryBatch) -> torch.Tensor:
        """Uninstrumented logits of the ranking step (the reference every intervention is checked against)."""
        return self.hf_model(**self.model_inputs(batch)).logits[:, -1]

    def components(self, side: str = "decoder", kinds: tuple[str, ...] | None = None) -> list[Site]:
        """Every component output site of a side in forward order (see Adapter.components)."""
        return self.adapter.components(side, kinds)

    def n_layers(self, side: str = "decoder") -> int:
        """Number of layers of a side, read from the model config."""
        return self.adapter.n_layers(side)

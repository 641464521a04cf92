"""Load a GenIR checkpoint (local directory or hub id) and check it before any analysis.

    gm = load_genir("checkpoints/dsi-synth")
    gm = load_genir("AnReu/DSI-large-NQ10k")       # hub id: needs network access to the hub

The adapter family comes from the config, so T5 (encoder-decoder) and
Llama/Qwen2 (decoder-only) checkpoints load through one function. On load,
the logit lens of the final decoder residual must reproduce the
model's own logits; a model whose adapter maps the wrong modules fails here,
loudly, instead of producing wrong analyses later.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from ..data.corpus import RetrievalDataset
from ..data.loaders import load_dataset
from ..docids import AtomicDocids
from ..errors import GenIRError
from .adapters import adapter_class
from .components import Site
from .execution import run
from .genir_model import GenIRModel
from .model_card import ModelCard

SELF_CHECK_QUERIES = ["what is the capital", "who founded it", "a"]


def load_genir(path_or_id: str, docid_pattern: str | None = None, device: str = "cpu", self_check: bool = True) -> GenIRModel:
    """Load a GenIR checkpoint of any supported family (T5 encoder-decoder, Llama/Qwen2 decoder-only) and check it.

    Example:
        >>> gm = load_genir("checkpoints/dsi-synth")                     # local directory with config.json
        >>> gm = load_genir("AnReu/DSI-large-NQ10k")                     # hub id (needs network access)
        >>> gm = load_genir(path, docid_pattern=r"<doc_(\\d+)>")         # docid tokens spelled another way
        >>> gm.adapter.family, gm.adapter.sides                          # ('llama', ('decoder',)) for a Llama checkpoint

    The config picks the adapter (`models.adapters.adapter_class`), and the
    adapter names the transformers Auto class that loads the weights. With
    `self_check`, the logit lens of the final residual must reproduce the
    model's logits (`check_logit_lens`), or loading fails.
    """
    local = Path(path_or_id)
    if local.exists() and not (local / "config.json").exists():
        raise GenIRError(f"{path_or_id}: directory has no config.json; not a HuggingFace checkpoint")
    if not local.exists() and (path_or_id.startswith((".", "/")) or path_or_id.count("/") != 1):
        raise GenIRError(f"{path_or_id}: no such checkpoint directory (and not a hub id of the form owner/name)")
    try:
        config = AutoConfig.from_pretrained(path_or_id)
    except OSError as exc:
        raise GenIRError(f"{path_or_id}: cannot load the config ({str(exc).splitlines()[0]})") from None
    family = adapter_class(config, str(path_or_id))
    try:
        model = family.auto_class.from_pretrained(path_or_id).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
    except (OSError, ValueError) as exc:
        raise GenIRError(f"{path_or_id}: cannot load the model or tokenizer ({str(exc).splitlines()[0]})") from None
    gm = GenIRModel(model, tokenizer, AtomicDocids.detect(tokenizer, docid_pattern), family(model), local.name or path_or_id, str(path_or_id))
    if self_check:
        check_logit_lens(gm)
    return gm


def check_logit_lens(gm: GenIRModel, atol: float = 1e-3) -> float:
    """Raise unless projecting the last decoder residual reproduces the logits; returns the max error.

    Example:
        >>> check_logit_lens(tiny_genir())      # ~1e-7; a GenIRError names the adapter when it does not match
    """
    last = Site("decoder", gm.n_layers("decoder") - 1, "", "resid_post")
    result = run(gm, gm.batch(SELF_CHECK_QUERIES), reads=[last])
    with torch.no_grad():
        lens = gm.adapter.project(result.values[last][:, -1])
    err = float((lens - result.logits).abs().max())
    scale = float(result.logits.abs().max()) or 1.0
    if err > atol * max(1.0, scale):
        raise GenIRError(
            f"{gm.path}: self-check failed: the logit lens of the final residual differs from the model's logits by {err:.3g}; "
            f"the {gm.adapter.family} adapter does not match this model's modules"
        )
    return err


def resolve_dataset(gm: GenIRModel, spec: str | None) -> RetrievalDataset:
    """The data named on the command line, or else the data the checkpoint was trained on."""
    if spec:
        return load_dataset(spec)
    card = ModelCard.read(gm.path)
    if not card.data:
        raise GenIRError(f"{gm.path}: no model_card.json naming its data; give the data explicitly (CLI: --data)")
    return load_dataset(card.data)

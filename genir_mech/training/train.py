"""`genir-mech train`: span-corruption pretraining and DSI fine-tuning of small T5 models.

    train_model(TrainRequest(data="synthetic:n_docs=1000", out="checkpoints/t5-synth-base", objective="span"))
    train_model(TrainRequest(data=..., out="checkpoints/dsi-synth", objective="dsi", base="checkpoints/t5-synth-base"))

The run is resumable (rerun the same command after an interruption) and ends
with `model_card.json` beside the weights: config, data spec and hash, removed
documents, training time and final metrics.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import AutoTokenizer, T5ForConditionalGeneration

from ..data.corpus import RetrievalDataset
from ..data.loaders import load_dataset
from ..docids import AtomicDocids, doc_order_key, docid_token
from ..errors import GenIRError
from ..provenance import package_versions
from ..models.adapters import adapter_for
from ..models.genir_model import GenIRModel
from ..models.model_card import ModelCard
from ..retrieval import evaluate
from .architecture import T5Shape
from .loop import LoopConfig, TrainLoop, collate, seed_everything
from .objectives import dsi_examples, span_examples
from .tokenizer import build_tokenizer



@dataclass
class TrainRequest:
    """Everything one `genir-mech train` run needs; the model card records it."""
    data: str
    out: str
    objective: str = "dsi"  # "span" or "dsi"
    base: str | None = None
    tokenizer: str | None = None  # from-scratch runs: use this tokenizer (docid tokens are added if missing)
    remove_docs: str | None = None  # "random:N:SEED" or comma-separated doc ids
    indexing_ratio: float = 0.2
    shape: T5Shape = field(default_factory=T5Shape)
    loop: LoopConfig = field(default_factory=LoopConfig)


def parse_removed(spec: str | None, dataset: RetrievalDataset) -> list[str]:
    """Document ids to leave out of training: `random:N:SEED` or a comma-separated list."""
    if not spec:
        return []
    if spec.startswith("random:"):
        try:
            _, n, seed = spec.split(":")
            return sorted(random.Random(int(seed)).sample(sorted(dataset.documents, key=doc_order_key), int(n)), key=doc_order_key)
        except ValueError:
            raise GenIRError(f"remove_docs {spec!r} (CLI: --remove-docs): expected random:N:SEED with N <= {len(dataset.documents)}") from None
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [d for d in ids if d not in dataset.documents]
    if unknown:
        raise GenIRError(f"remove_docs (CLI: --remove-docs): unknown document id(s) {', '.join(unknown[:5])}")
    return ids


def _span_validation(model, tokenizer, texts: list[str], seed: int) -> float:
    """Negative mean span-corruption loss on a fixed held-out draw (higher is better)."""
    batch = collate(span_examples(texts, tokenizer, epoch=-1, seed=seed), tokenizer.pad_token_id)
    with torch.no_grad():
        return -float(model(**batch).loss)


def _as_genir(model, tokenizer, scheme, out: Path) -> GenIRModel:
    """The model being trained, seen as a GenIR model so that validation uses the one evaluation path."""
    return GenIRModel(model, tokenizer, scheme, adapter_for(model), out.name, str(out))


def train_model(req: TrainRequest) -> dict:
    """Pretrain (span) or DSI-fine-tune a T5, resumably; writes the checkpoint and its ModelCard, returns the card."""
    if req.objective not in {"span", "dsi"}:
        raise GenIRError(f"objective (CLI: --objective) must be 'span' or 'dsi', got {req.objective!r}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seed_everything(req.loop.seed)
    dataset = load_dataset(req.data)
    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)
    if req.base:
        if not (Path(req.base) / "config.json").exists():
            raise GenIRError(f"base {req.base} (CLI: --base): no config.json there; train the base first")
        tokenizer = AutoTokenizer.from_pretrained(req.base)
        model = T5ForConditionalGeneration.from_pretrained(req.base)
    elif req.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(req.tokenizer)
        missing = [docid_token(d) for d in dataset.documents if docid_token(d) not in tokenizer.get_vocab()]
        tokenizer.add_tokens([AddedToken(t, normalized=False) for t in missing])
        model = req.shape.build(tokenizer)
    else:
        tokenizer = build_tokenizer(list(dataset.documents.values()) + [q.text for q in dataset.queries], dataset.documents)
        model = req.shape.build(tokenizer)
    scheme = AtomicDocids.detect(tokenizer)
    removed = parse_removed(req.remove_docs, dataset)
    train_data = dataset.without_documents(set(removed)) if removed else dataset

    def save_best():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    loop = TrainLoop(model, req.loop, out, pad_id=tokenizer.pad_token_id)
    if req.objective == "span":
        texts = list(train_data.documents.values()) + [q.text for q in train_data.split("train")]
        held_out = [q.text for q in train_data.split("validation")][:512]
        result = loop.fit(lambda e: span_examples(texts, tokenizer, e, req.loop.seed),
                          lambda: _span_validation(model, tokenizer, held_out, req.loop.seed), save_best)
    else:
        result = loop.fit(
            lambda e: dsi_examples(train_data, tokenizer, scheme, e, req.loop.seed, req.indexing_ratio),
            lambda: evaluate(_as_genir(model, tokenizer, scheme, out), train_data, "validation")[0]["hits@1"],
            save_best,
        )
    best = _as_genir(T5ForConditionalGeneration.from_pretrained(out).eval(), tokenizer, scheme, out)
    metrics = {}
    if req.objective == "dsi":
        for split in ("validation", "test"):
            metrics[split] = evaluate(best, train_data, split)[0]
        if removed:
            gone = RetrievalDataset(dataset.documents, [q for q in dataset.queries if dataset.relevant(q.query_id) in set(removed)], dataset.qrels)
            metrics["removed_documents_test"] = evaluate(best, gone, "test")[0]
    card = ModelCard(
        objective=req.objective,
        base=req.base,
        tokenizer=req.tokenizer,
        data=req.data,
        data_meta=dataset.meta,
        data_hash=dataset.data_hash(),
        removed_documents=removed,
        metrics=metrics,
    )
    card.extra = {
        "indexing_ratio": req.indexing_ratio if req.objective == "dsi" else None,
        "shape": req.shape.asdict() if not req.base else None,
        "loop": asdict(req.loop),
        "parameters": sum(p.numel() for p in best.hf_model.parameters()),
        "train_seconds": result["train_seconds"],
        "best_validation": result["best_validation"],
        "history": result["history"],
        "versions": package_versions(),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    card.write(out)
    return card.to_json()

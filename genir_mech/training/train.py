"""`genir-mech train`: span-corruption pretraining and DSI fine-tuning of small T5 models, and decoder-only retrieval LMs.

    train_model(TrainRequest(data="synthetic:n_docs=1000", out="checkpoints/t5-synth-base", objective="span"))
    train_model(TrainRequest(data=..., out="checkpoints/dsi-synth", objective="dsi", base="checkpoints/t5-synth-base"))
    train_model(TrainRequest(data=..., out="checkpoints/lm-niah", objective="niah", shape=LlamaShape(), task=LMTask()))

The `niah` objective (training/lm_train.py) trains a decoder-only Llama from
scratch on needle-in-a-haystack and in-context retrieval prompts built over
the corpus; it shares this module's resume, refusal and card machinery.

The run is resumable (rerun the same command after an interruption) and ends
with `model_card.json` beside the weights: config, data spec and hash, removed
documents, training time and final metrics.

A run never destroys or mixes checkpoints: it records its arguments and data
hash in `resume/request.json` before training, resumes into an existing `out`
only when they match (the epoch, patience and time budget may grow: that
continues the same run), refuses otherwise naming what differs, and replaces a
finished checkpoint, or a folder it has no record of, only with `overwrite`.
Rerunning a finished run's exact command does nothing.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, T5ForConditionalGeneration

from ..data.corpus import RetrievalDataset
from ..data.loaders import load_dataset
from ..data.docid_assignment import SemanticConfig, build_docid_mapping, check_mapping_covers
from ..docids import ATOMIC, DOCID_SCHEMES, MAPPING_FILE, AtomicDocids, DocidMapping, SequenceDocids, doc_order_key, docid_token
from ..errors import GenIRError
from ..provenance import written_atomically
from ..models.genir_model import GenIRModel
from ..models.loading import PICKLE_SUFFIXES, no_safetensors_message, quiet_weight_loading
from ..models.model_card import ModelCard
from ..retrieval import evaluate
from .architecture import ARCHS, DEFAULT_ARCH, LLAMA_OBJECTIVES, LlamaShape, T5Shape, architecture, shape_class
from .lm_objectives import LMTask
from .loop import LoopConfig, TrainLoop, collate, seed_everything
from .objectives import dsi_examples, span_examples
from .minilm import build_minilm_bert2bert, minilm_path
from .saving import as_genir, best_saver, training_record
from .tokenizer import TOKENIZER_KINDS, add_docid_tokens, build_tokenizer

INITS = ("minilm",)  # pretrained initialisations of `genir-mech train --init`
# Multi-token docids validate each epoch by constrained beam search (cheap; the exact ranking costs one decoder row per trie
# prefix) on this many validation queries; the card's final metrics use the same ranker, `genir-mech eval` reports both.
SEQUENCE_VALIDATION_BEAMS = 10
SEQUENCE_VALIDATION_QUERIES = 500



@dataclass
class TrainRequest:
    """Everything one `genir-mech train` run needs; the model card records it."""
    data: str
    out: str
    objective: str = "dsi"  # "span", "dsi" or "niah" (decoder-only: NIAH + in-context retrieval)
    base: str | None = None
    tokenizer: str | None = None  # from-scratch runs: use this tokenizer (docid tokens are added if missing)
    remove_docs: str | None = None  # "random:N:SEED" or comma-separated doc ids
    indexing_ratio: float = 0.2
    shape: T5Shape | LlamaShape = field(default_factory=T5Shape)  # LlamaShape for the niah objective
    loop: LoopConfig = field(default_factory=LoopConfig)
    overwrite: bool = False  # replace a finished checkpoint, or start over a run trained with other arguments
    init: str | None = None  # "minilm": BERT2BERT from the packaged all-MiniLM-L6-v2 (training/minilm.py) instead of a T5
    task: LMTask | None = None  # the niah objective's mixture (default LMTask())
    arch: str | None = None  # "t5" (encoder-decoder) or "llama" (decoder-only); None: the objective's default (DEFAULT_ARCH)
    docids: str | None = None  # dsi: a docids.json mapping (genir-mech data docids) to train multi-token docids
    scheme: str | None = None  # dsi: atomic (default) or naive/semantic/title, built here when no --docids file is given
    tokenizer_kind: str = "word"  # from-scratch runs without `tokenizer`: "word", or a subword "bpe" / "unigram" model
    vocab_size: int = 1000  # subword kinds: pieces learnt from the corpus (docids and sentinels come on top)


OBJECTIVES = ("span", "dsi", "niah")
TASK_OBJECTIVES = ("niah",)  # objectives that train on an LMTask mixture built over the synthetic corpus


BUDGET = ("epochs", "patience", "max_minutes")  # may grow between runs into one out: that continues the same training
REQUEST = Path("resume") / "request.json"


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


def check_request(req: TrainRequest) -> None:
    """Every argument that needs no data or model, checked at once (one line each)."""
    if req.objective not in OBJECTIVES:
        raise GenIRError(f"objective (CLI: --objective) must be one of {', '.join(OBJECTIVES)}, got {req.objective!r}")
    arch = architecture(req)
    if arch not in ARCHS:
        raise GenIRError(f"arch (CLI: --arch) must be one of {', '.join(ARCHS)}, got {req.arch!r}")
    if arch == "llama" and req.objective not in LLAMA_OBJECTIVES:
        raise GenIRError(f"objective {req.objective} trains encoder-decoder T5 models only; --arch llama trains {' or '.join(LLAMA_OBJECTIVES)}")
    req.loop.check()
    req.shape.check()
    want = shape_class(arch)
    if not isinstance(req.shape, want):
        raise GenIRError(f"--arch {arch} (objective {req.objective}) trains a {want.__name__[:-5]} model; got a {type(req.shape).__name__}")
    if arch == "llama" and req.tokenizer:
        raise GenIRError("--arch llama builds its own word-level prompt tokenizer; --tokenizer cannot be used with it")
    if req.objective in TASK_OBJECTIVES:
        (req.task or LMTask()).check()
        if req.tokenizer or req.remove_docs:
            given = ", ".join(f"--{n.replace('_', '-')}" for n in ("tokenizer", "remove_docs") if getattr(req, n))
            raise GenIRError(f"objective {req.objective} trains a decoder-only model on its own word-level tokenizer; {given} cannot be used with it")
        if not req.data.startswith("synthetic"):
            raise GenIRError(f"objective {req.objective} builds its haystacks and needles from the synthetic corpus; --data must be a 'synthetic:...' spec, got {req.data!r}")
    if req.tokenizer_kind not in TOKENIZER_KINDS:
        raise GenIRError(f"tokenizer_kind (CLI: --tokenizer-kind) must be one of {', '.join(TOKENIZER_KINDS)}, got {req.tokenizer_kind!r}")
    if req.tokenizer_kind != "word":
        clash = [flag for flag, value in (("--base", req.base), ("--tokenizer", req.tokenizer), ("--init", req.init),
                                          ("--arch llama", architecture(req) == "llama")) if value]
        if clash or req.objective in TASK_OBJECTIVES:
            raise GenIRError(f"--tokenizer-kind {req.tokenizer_kind} trains a new tokenizer for a from-scratch T5; it cannot be used with "
                             f"{', '.join(clash) or '--objective ' + req.objective}")
        if req.vocab_size < 10:
            raise GenIRError(f"vocab_size must be at least 10, got {req.vocab_size} (CLI: --vocab-size)")
    if req.indexing_ratio < 0:
        raise GenIRError(f"indexing_ratio must be at least 0, got {req.indexing_ratio} (CLI: --indexing-ratio)")
    out = Path(req.out)
    if out.exists() and not out.is_dir():
        raise GenIRError(f"out {out} (CLI: --out): exists and is not a directory")
    if req.init:
        check_init(req)
    check_docids_request(req)
    if req.base:
        config = Path(req.base) / "config.json"
        if not config.exists():
            raise GenIRError(f"base {req.base} (CLI: --base): no config.json there; train the base first")
        try:
            base = json.loads(config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GenIRError(f"{config}: not valid JSON ({exc})") from None
        base = base if isinstance(base, dict) else {}
        if not any(Path(req.base).glob("*.safetensors")):  # pickle weights are never loaded (they can run code)
            pickles = sorted(p.name for p in Path(req.base).iterdir() if p.suffix in PICKLE_SUFFIXES)
            raise GenIRError(no_safetensors_message(f"base {req.base} (CLI: --base)", pickles))
        kind = base.get("model_type")
        if arch == "llama":
            if kind != "llama":
                raise GenIRError(f"base {req.base} (CLI: --base) is a {kind or 'unknown'} model; objective {req.objective} continues "
                                 "decoder-only Llama checkpoints it trained (e.g. a short-context first stage)")
        elif kind != "t5" or not base.get("is_encoder_decoder", True):
            shape = "an encoder-decoder" if base.get("is_encoder_decoder") else "a decoder-only" if kind else "an unrecognised"
            raise GenIRError(f"base {req.base} (CLI: --base) is {shape} {kind or 'unknown'} model; train continues encoder-decoder T5 checkpoints only")


def check_init(req: TrainRequest) -> None:
    """A pretrained initialisation (--init) replaces --base, --tokenizer and the T5 shape, and its package must be installed."""
    if req.init not in INITS:
        raise GenIRError(f"init (CLI: --init) must be one of {', '.join(INITS)}, got {req.init!r}")
    clash = [flag for flag, value in (("--base", req.base), ("--tokenizer", req.tokenizer), ("--arch llama", req.arch == "llama")) if value]
    if clash or req.objective != "dsi":
        raise GenIRError(f"--init {req.init} builds its own model and tokenizer for DSI fine-tuning; drop {', '.join(clash) or '--objective span'}")
    minilm_path()  # the optional extra: one line with the install command when it is missing


def check_docids_request(req: TrainRequest) -> None:
    """--docids and --scheme: DSI only, and consistent with each other (the file's scheme is checked once it is read)."""
    if not (req.docids or req.scheme not in (None, ATOMIC)):
        return
    if req.objective != "dsi" or req.init or architecture(req) != "t5":
        what = f"--init {req.init}" if req.init else f"--objective {req.objective}" if req.objective != "dsi" else f"--arch {architecture(req)}"
        raise GenIRError(f"multi-token docids (--docids/--scheme) are trained by --objective dsi from a T5, not by {what}")
    if req.scheme and req.scheme not in DOCID_SCHEMES:
        raise GenIRError(f"scheme (CLI: --scheme) must be one of {', '.join(DOCID_SCHEMES)}, got {req.scheme!r}")
    if req.docids and req.scheme == ATOMIC:
        raise GenIRError(f"--docids {req.docids} gives multi-token docids, but --scheme says atomic")


def docid_mapping(req: TrainRequest, dataset: RetrievalDataset) -> DocidMapping | None:
    """The multi-token docids this run trains (read from --docids or built for --scheme), checked against the data; None for atomic."""
    if req.docids:
        mapping = DocidMapping.read(req.docids)
        if req.scheme and req.scheme != mapping.scheme:
            raise GenIRError(f"{mapping.source}: a {mapping.scheme} docid mapping, but --scheme says {req.scheme}")
    elif req.scheme and req.scheme != ATOMIC:
        mapping = build_docid_mapping(req.scheme, dataset, SemanticConfig(seed=req.loop.seed))
    else:
        return None
    check_mapping_covers(mapping, dataset, f"the training data {req.data}")
    return mapping


def mapping_digest(mapping: DocidMapping) -> str:
    """A short hash of a mapping's sequences: what makes two runs train the same docids."""
    return hashlib.sha256(json.dumps(sorted(mapping.sequences.items())).encode()).hexdigest()[:16]


def run_arguments(req: TrainRequest, dataset: RetrievalDataset, removed: list[str], mapping: DocidMapping | None = None) -> dict:
    """What makes two runs into one out the same training: everything but the budget, plus the data's hash."""
    loop = asdict(req.loop)
    return {
        "objective": req.objective, "base": req.base, "tokenizer": req.tokenizer, "data": req.data, "data_hash": dataset.data_hash(),
        "removed_documents": list(removed), "indexing_ratio": req.indexing_ratio if req.objective == "dsi" else None,
        "shape": req.shape.asdict() if not req.base else None, **{k: v for k, v in loop.items() if k not in BUDGET},
        "budget": {k: loop[k] for k in BUDGET},
        **({"init": req.init} if req.init else {}),  # absent for T5 runs, so their older records still match
        **({"tokenizer_kind": req.tokenizer_kind, "vocab_size": req.vocab_size} if req.tokenizer_kind != "word" else {}),  # likewise
        **({"task": (req.task or LMTask()).asdict()} if req.objective in TASK_OBJECTIVES else {}),
        **({"arch": architecture(req)} if architecture(req) != DEFAULT_ARCH[req.objective] else {}),  # absent for older runs
        **({"docids": {"scheme": mapping.scheme, "sequences": mapping_digest(mapping)}} if mapping else {}),  # absent for atomic runs
    }


def _saved_arguments(out: Path) -> dict | None:
    """The arguments the run in `out` was started with: resume/request.json, else (older or finished runs) its model card."""
    if (out / REQUEST).exists():
        try:
            return json.loads((out / REQUEST).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    card = ModelCard.read(out)
    if card.objective is None:
        return None
    loop = card.extra.get("loop") or {}
    return {
        "objective": card.objective, "base": card.base, "tokenizer": card.tokenizer, "data": card.data, "data_hash": card.data_hash,
        "removed_documents": card.removed_documents, "indexing_ratio": card.extra.get("indexing_ratio"), "shape": card.extra.get("shape"),
        **{k: v for k, v in loop.items() if k not in BUDGET}, "budget": {k: loop.get(k) for k in BUDGET},
        **({"init": card.extra["init"]} if card.extra.get("init") else {}),
        **({k: card.extra[k] for k in ("tokenizer_kind", "vocab_size")} if card.extra.get("tokenizer_kind") else {}),
        **({"task": card.extra["task"]} if "task" in card.extra else {}),
        **({"arch": card.extra["arch"]} if card.extra.get("arch", DEFAULT_ARCH.get(card.objective)) != DEFAULT_ARCH.get(card.objective) else {}),
        **({"docids": card.extra["docids"]} if "docids" in card.extra else {}),
    }


def _differences(saved: dict, wanted: dict) -> list[str]:
    normal = json.loads(json.dumps(saved)), json.loads(json.dumps(wanted))
    return [f"{k} {normal[0].get(k)} -> {normal[1][k]}" for k in wanted if k != "budget" and normal[0].get(k) != normal[1][k]]


def _prepare_out(req: TrainRequest, out: Path, wanted: dict) -> str:
    """Decide what this run does with `out`: "fresh", "resume" or "done" (finished, same arguments and budget); refuse the rest."""
    for leftover in out.glob(".best.tmp-*"):  # a kill while saving the best weights
        shutil.rmtree(leftover, ignore_errors=True)
    if not out.is_dir() or not any(out.iterdir()):
        return "fresh"
    if req.overwrite:
        # Forget the old run's state and card first, so a kill from here on cannot leave its card beside new weights.
        shutil.rmtree(out / "resume", ignore_errors=True)
        (out / "model_card.json").unlink(missing_ok=True)
        return "fresh"
    saved = _saved_arguments(out)
    if saved is None:
        found = ", ".join(p.name for p in sorted(out.iterdir())[:4])
        raise GenIRError(f"out {out} (CLI: --out) holds {found} but no record of a training run (resume/request.json or model_card.json); "
                         "pass --overwrite to replace it, or choose another --out")
    differs = _differences(saved, wanted)
    if differs:
        raise GenIRError(f"out {out} (CLI: --out) holds a run with other arguments ({'; '.join(differs)}); rerun with the saved "
                         "arguments to resume, pass --overwrite to start over, or choose another --out")
    finished, resumable = (out / "model_card.json").exists(), (out / "resume" / "state.pt").exists()
    same_budget = saved.get("budget") == wanted["budget"]
    if finished and same_budget:
        return "done"
    if finished and not resumable:
        raise GenIRError(f"out {out} (CLI: --out) is a finished checkpoint without resume state (resume/state.pt), so it cannot be "
                         f"continued to {req.loop.epochs} epochs; pass --overwrite to retrain it, or choose another --out")
    return "resume" if resumable else "fresh"


def _span_validation(model, tokenizer, texts: list[str], seed: int) -> float:
    """Negative mean span-corruption loss on a fixed held-out draw (higher is better)."""
    batch = collate(span_examples(texts, tokenizer, epoch=-1, seed=seed), tokenizer.pad_token_id)
    with torch.no_grad():
        return -float(model(**batch).loss)


def _dsi_validation(model, tokenizer, scheme, out: Path, data: RetrievalDataset, ranking: dict) -> float:
    """Validation Hits@1; multi-token runs add a tie-break below one query's hit: the gold docid's mean teacher-forced
    token probability. Beam Hits@1 moves in steps of 1/n, so without it early epochs tie and the first one is kept
    while patience runs out, although the docid likelihood is rising."""
    hits = evaluate(as_genir(model, tokenizer, scheme, out), data, "validation", **ranking)[0]["hits@1"]
    if not ranking:
        return hits
    queries = data.split("validation")
    return hits + _gold_token_probability(model, tokenizer, scheme, data, queries) / (len(queries) + 1)


def _gold_token_probability(model, tokenizer, scheme, data: RetrievalDataset, queries, batch_size: int = 64) -> float:
    """Mean over `queries` of the geometric-mean probability of their first relevant docid's tokens, teacher-forced."""
    examples = [(tokenizer(q.text, truncation=True, max_length=64)["input_ids"], scheme.target_ids(min(data.qrels[q.query_id], key=doc_order_key)))
                for q in queries if data.qrels.get(q.query_id)]
    if not examples:
        return 0.0
    was_training, total = model.training, 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], tokenizer.pad_token_id)
            logp = model(**batch).logits.log_softmax(-1)
            mask = batch["labels"] != -100
            token_logp = logp.gather(-1, batch["labels"].clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
            total += float((token_logp.sum(-1) / mask.sum(-1)).exp().sum())
    model.train(was_training)
    return total / len(examples)


def _validation_data(data: RetrievalDataset, mapping: DocidMapping | None) -> RetrievalDataset:
    """Atomic runs validate on every validation query; multi-token runs on the first SEQUENCE_VALIDATION_QUERIES (beam search each epoch)."""
    if mapping is None:
        return data
    keep = data.split("validation")[:SEQUENCE_VALIDATION_QUERIES]
    return RetrievalDataset(data.documents, keep, data.grades)


def initial_model(req: TrainRequest, dataset: RetrievalDataset):
    """The (model, tokenizer) an encoder-decoder run starts from: its base, the pruned pretrained model, or a fresh T5.

    Called right after `seed_everything(req.loop.seed)`, it rebuilds the run's exact initialisation (fresh weights and
    new cross-attention are drawn from the seeded generator): what the pretraining study compares a model against.
    """
    if req.init:
        with quiet_weight_loading():
            return build_minilm_bert2bert(dataset)
    if req.base:
        with quiet_weight_loading():
            return T5ForConditionalGeneration.from_pretrained(req.base, use_safetensors=True), AutoTokenizer.from_pretrained(req.base)
    if req.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(req.tokenizer)
        missing = [docid_token(d) for d in dataset.documents if docid_token(d) not in tokenizer.get_vocab()]
        tokenizer.add_tokens([AddedToken(t, normalized=False) for t in missing])
    else:
        tokenizer = build_tokenizer(list(dataset.documents.values()) + [q.text for q in dataset.queries], dataset.documents,
                                    kind=req.tokenizer_kind, vocab_size=req.vocab_size)
    return req.shape.build(tokenizer), tokenizer


def train_model(req: TrainRequest) -> dict:
    """Pretrain (span) or DSI-fine-tune a T5 (or, --arch llama, a decoder-only Llama), or train a niah model, resumably; writes the checkpoint and its ModelCard, returns the card."""
    check_request(req)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seed_everything(req.loop.seed)
    dataset = load_dataset(req.data)
    removed = parse_removed(req.remove_docs, dataset)
    out = Path(req.out)
    mapping = docid_mapping(req, dataset)
    wanted = run_arguments(req, dataset, removed, mapping)
    action = _prepare_out(req, out, wanted)
    if action == "done":
        print(f"{out}: already trained with these arguments ({req.loop.epochs} epochs); nothing to do "
              "(raise --epochs to continue it, --overwrite to retrain it)")
        return ModelCard.read(out).to_json()
    out.mkdir(parents=True, exist_ok=True)
    if action == "fresh":
        shutil.rmtree(out / "resume", ignore_errors=True)  # a request without state: killed in its first epoch
    with written_atomically(out / REQUEST) as tmp:
        tmp.write_text(json.dumps(wanted, indent=1))
    if req.objective in TASK_OBJECTIVES:
        from .lm_train import train_lm  # it builds on this module's helpers
        return train_lm(req, dataset, out)
    train_data = dataset.without_documents(set(removed)) if removed else dataset
    if architecture(req) == "llama":
        from .lm_dsi import train_lm_dsi
        best, result, extra = train_lm_dsi(req, dataset, train_data, out)
        return write_card(req, dataset, removed, train_data, best, result, out, extra)
    model, tokenizer = initial_model(req, dataset)
    if mapping:
        add_docid_tokens(model, tokenizer, mapping)
        scheme = SequenceDocids.from_mapping(mapping, tokenizer)
        mapping.write(out / MAPPING_FILE)  # beside the weights: the checkpoint is loadable from its first saved epoch
    else:
        scheme = AtomicDocids.detect(tokenizer)
    ranking = {"ranker": "beam", "beams": SEQUENCE_VALIDATION_BEAMS} if mapping else {}

    save_best = best_saver(model, tokenizer, out)
    loop = TrainLoop(model, req.loop, out, pad_id=tokenizer.pad_token_id)
    if req.objective == "span":
        texts = list(train_data.documents.values()) + [q.text for q in train_data.split("train")]
        held_out = [q.text for q in train_data.split("validation")][:512]
        result = loop.fit(lambda e: span_examples(texts, tokenizer, e, req.loop.seed),
                          lambda: _span_validation(model, tokenizer, held_out, req.loop.seed), save_best)
    else:
        result = loop.fit(
            lambda e: dsi_examples(train_data, tokenizer, scheme, e, req.loop.seed, req.indexing_ratio),
            lambda: _dsi_validation(model, tokenizer, scheme, out, _validation_data(train_data, mapping), ranking),
            save_best,
        )
    with quiet_weight_loading():
        best = as_genir(AutoModelForSeq2SeqLM.from_pretrained(out, use_safetensors=True).eval(), tokenizer, scheme, out)
    docids = {"docids": wanted["docids"], "validation_ranker": ranking} if mapping else None
    return write_card(req, dataset, removed, train_data, best, result, out, docids, mapping)


def write_card(req: TrainRequest, dataset: RetrievalDataset, removed: list[str], train_data: RetrievalDataset, best: GenIRModel,
               result: dict, out: Path, extra: dict | None = None, mapping: DocidMapping | None = None) -> dict:
    """Evaluate the best weights of a span or DSI run (DSI: validation and test Hits, removed documents) and write its model card;
    multi-token docids (`mapping`) are ranked by the validation ranker (beam search)."""
    ranking = {"ranker": "beam", "beams": SEQUENCE_VALIDATION_BEAMS} if mapping else {}
    metrics = {}
    if req.objective == "dsi":
        for split in ("validation", "test"):
            metrics[split] = {**evaluate(best, train_data, split, **ranking)[0], **ranking}
        if removed:
            gone = RetrievalDataset(dataset.documents, [q for q in dataset.queries if dataset.qrels.get(q.query_id, set()) & set(removed)], dataset.grades)
            metrics["removed_documents_test"] = {**evaluate(best, gone, "test", **ranking)[0], **ranking}
    card = ModelCard(
        objective=req.objective,
        base=req.base,
        tokenizer=req.tokenizer,
        data=req.data,
        data_meta=dataset.meta,
        data_hash=dataset.data_hash(),
        removed_documents=removed,
        docid_scheme=mapping.scheme if mapping else None,
        metrics=metrics,
    )
    card.extra = {
        "indexing_ratio": req.indexing_ratio if req.objective == "dsi" else None,
        "arch": architecture(req),
        **({"tokenizer_kind": req.tokenizer_kind, "vocab_size": req.vocab_size} if req.tokenizer_kind != "word" else {}),
        **training_record(req, result, sum(p.numel() for p in best.hf_model.parameters())),
        **(extra or {}),
    }
    card.write(out)
    return card.to_json()

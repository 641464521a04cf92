"""Retrieval heads of a decoder-only model: Wu et al.'s retrieval score with top-k vs random-k masking, and QRHead detection and retrieval.

    from genir_mech.pipelines.heads import HeadsConfig, run_heads_detect, run_qr_retrieve
    lm = load_lm("checkpoints/lm-niah")
    summary = run_heads_detect(lm, None, "runs/heads/lm-niah", HeadsConfig(seed=0))      # data generated from the seed
    summary = run_qr_retrieve(lm, "data/incontext", "runs/heads-qr/lm-niah")            # or niah.jsonl / incontext.jsonl from a folder

`run_heads_detect` writes retrieval_scores.csv (per head: Wu et al.'s score,
hits / answer tokens), niah_trials.csv (per trial: generated answer, ROUGE-1
recall), masking.csv (per trial, mask and condition: no heads, the top-k
retrieval heads, k random heads per draw, drawn from the heads that are
neither top-k nor retrieval heads), qr_heads.csv (QRHead scores on the
detection split) and figures: retrieval_scores.png, qr_scores.png,
masking_heatmaps.png (`genir-mech figures <out>` redraws them from the
tables). Masking runs with each of `HeadsConfig.masks` (heads.masking:
"uniform", Wu et al.'s, and "remove"); the summary's `mask` names the masking
of its headline numbers (the first of `masks`), `masking` holds every mask's.
Random-k is the mean over `random_draws` independent seeded draws with a 95%
interval; `random_draws_distinct` says how many different sets they held
(few candidate heads repeat sets, and the summary then carries a note).
`run_qr_retrieve` selects QR heads on the detection split and ranks the
held-out split's in-context documents with them, next to BM25 and the
model's own answer: qr_heads.csv, qr_metrics.csv (method, metric, value),
qr_rankings.csv. Every table carries provenance (model and its hash, data
hash, config, package versions); results are written atomically.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..data.incontext import InContextConfig, incontext_examples, incontext_qrels, load_incontext
from ..data.niah import NiahConfig, load_niah, niah_trials
from ..errors import GenIRError
from ..heads.comparison import mean_ci
from ..heads.masking import MASKS, check_mask, default_top_k, masked_niah, random_control
from ..heads.qr import answer_rankings, bm25_rankings, detect_qr_heads, evaluate_rankings, qr_rankings, qr_token_scores
from ..heads.retrieval_score import RETRIEVAL_THRESHOLD, retrieval_scores
from ..provenance import provenance, write_table
from ..results_directory import atomic
from .inputs import config_record
from .rendering import draw


@dataclass
class HeadsConfig:
    """Parameters of the heads pipelines, each with its default; recorded in every table's provenance."""

    seed: int = 0  # seed of the generated data and of the random head draws
    lengths: tuple[int, ...] = (128, 256, 512)  # NIAH context lengths (generated data)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # NIAH needle depths (generated data)
    trials_per_cell: int = 2
    top_k: int | None = None  # heads masked; default: the retrieval heads, at least 1, at most half the non-retrieval heads
    random_draws: int = 10  # independent random sets of k heads that are neither top-k nor retrieval heads
    masks: tuple[str, ...] = MASKS  # how heads are masked (heads.masking): "uniform" (Wu et al.'s) and/or "remove"; the first heads the summary
    qr_top_k: int | None = None  # QR heads selected; default min(16, max(2, heads // 4)): QRHead's 16 of 1024 would be none of a small model
    n_detection: int = 32  # labelled in-context examples for QR head detection (generated data)
    n_test: int = 64  # held-out in-context examples for the QR-retriever (generated data)
    n_docs: int = 16  # documents per in-context example (generated data)
    batch_size: int = 8
    attention: str = "auto"  # how attention rows are obtained: auto, recompute, eager


def _data_hash(records) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(dataclasses.asdict(r), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _folder(data) -> Path | None:
    if data is None:
        return None
    folder = Path(data)
    if not folder.is_dir():
        raise GenIRError(f"{data}: not a data folder (expected niah.jsonl and/or incontext.jsonl in it)")
    return folder


def load_trials(data, config: HeadsConfig) -> list:
    """NIAH test trials: <data>/niah.jsonl, else generated from the seed."""
    folder = _folder(data)
    if folder is not None:
        path = folder / "niah.jsonl"
        if not path.exists():
            raise GenIRError(f"{path}: missing (write it with `genir-mech data niah --out {folder}`)")
        return load_niah(path)
    return niah_trials(NiahConfig(lengths=tuple(config.lengths), depths=tuple(config.depths), trials_per_cell=config.trials_per_cell, seed=config.seed, split="test"))


def load_examples(data, config: HeadsConfig) -> tuple[list, list]:
    """(detection, test) in-context examples: <data>/incontext.jsonl, else generated from the seed."""
    folder = _folder(data)
    if folder is not None:
        path = folder / "incontext.jsonl"
        if not path.exists():
            raise GenIRError(f"{path}: missing (write it with `genir-mech data incontext --out {folder}`)")
        examples = load_incontext(path)
    else:
        examples = incontext_examples(InContextConfig(n_detection=config.n_detection, n_test=config.n_test, n_docs=config.n_docs, seed=config.seed))
    return [e for e in examples if e.split == "detection"], [e for e in examples if e.split == "test"]


class _Writer:
    def __init__(self, gm, out, config, data_hash):
        self.gm, self.out, self.config, self.data_hash, self.started = gm, Path(out), config_record(config), data_hash, time.time()

    def __call__(self, df: pd.DataFrame, name: str, **extra) -> Path:
        record = provenance(model=self.gm.path, config=self.config, seed=self.config["seed"], started=self.started, data_hash_records=self.data_hash, **extra)
        return write_table(df, self.out / name, record)


def qr_top_k(config: HeadsConfig, n_heads: int) -> int:
    """QR heads to select: the configured number, else min(16, max(2, n_heads // 4)), at most n_heads."""
    return min(n_heads, config.qr_top_k or min(16, max(2, n_heads // 4)))


def masking_summary(masked: pd.DataFrame) -> dict:
    """NIAH accuracy of one mask's masking table: unmasked, top-k, random-k (mean over draws, 95% interval, per draw)."""
    by = masked.groupby("condition")["success"].mean()
    per_draw = masked[masked.condition == "random-k"].groupby("draw")["success"].mean()
    mean, ci = mean_ci(per_draw.to_numpy(), bounds=(0.0, 1.0)) if len(per_draw) else (None, None)
    return {"mask": str(masked["mask"].iloc[0]), "unmasked_accuracy": float(by["none"]), "masked_top_k_accuracy": float(by["top-k"]),
            "masked_random_k_accuracy": mean, "masked_random_k_accuracy_ci95": ci,
            "masked_random_k_accuracy_per_draw": [float(v) for v in per_draw]}


@atomic
def run_heads_detect(model, data, out, config: HeadsConfig | None = None, *, progress: bool = True) -> dict:
    """Retrieval scores, top-k vs random-k masking and QRHead scores of a decoder-only model; returns a JSON-able summary."""
    config = config or HeadsConfig()
    gm = model
    trials = load_trials(data, config)
    detection, _ = load_examples(data, config)
    write = _Writer(gm, out, config, _data_hash(trials) + "-" + _data_hash(detection))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = retrieval_scores(gm, trials, batch_size=config.batch_size, attention=config.attention, progress=progress)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    write(scores.scores, "retrieval_scores")
    write(scores.trials, "niah_trials")
    ranked = scores.ranked_heads()
    flags = scores.scores.set_index(["layer", "head"])["is_retrieval_head"]
    retrieval = [h for h in ranked if flags[h]]
    n_heads = len(scores.scores)
    summary = {"model": gm.path, "niah_accuracy": scores.accuracy, "niah_exact_match": scores.exact_match,
               "niah_accuracy_by_length": {int(k): float(v) for k, v in scores.trials.groupby("context_length")["success"].mean().items()},
               "n_trials": len(trials), "n_heads": n_heads, "retrieval_score_definition": "hits / answer tokens (Wu et al. 2024)",
               "retrieval_threshold": RETRIEVAL_THRESHOLD, "n_retrieval_heads": len(retrieval), "retrieval_head_fraction": len(retrieval) / n_heads,
               "top_retrieval_heads": [{"layer": int(l), "head": int(h), "score": float(s)} for l, h, s in
                                       scores.scores.dropna(subset=["retrieval_score"]).sort_values("retrieval_score", ascending=False)
                                       .head(5)[["layer", "head", "retrieval_score"]].itertuples(index=False)]}
    frames = {"retrieval_scores": scores.scores}
    masks = [check_mask(m) for m in config.masks]
    if scores.accuracy > 0:
        control = random_control(ranked, retrieval, config.top_k or default_top_k(n_heads, len(retrieval)), config.random_draws, config.seed)
        conditions = {"none": [[]], "top-k": [control.top], **({"random-k": control.draws} if control.draws else {})}
        tables, by_mask = [], {}
        for mask in masks:
            masked = masked_niah(gm, trials, conditions, batch_size=config.batch_size, progress=progress, mask=mask)
            tables.append(masked)
            by_mask[mask] = masking_summary(masked)
        masked = pd.concat(tables, ignore_index=True)
        write(masked, "masking")
        frames["masking"] = masked
        summary.update({**control.record(), "mask": masks[0], **{k: v for k, v in by_mask[masks[0]].items() if k != "mask"}, "masking": by_mask})
    else:
        summary.update({"top_k": 0, "mask": masks[0], "masked_top_k_accuracy": None, "masked_random_k_accuracy": None,
                        "masked_random_k_accuracy_ci95": None, "masking": {}})
    if detection:
        qr = detect_qr_heads(qr_token_scores(gm, detection, batch_size=config.batch_size, progress=progress), detection, top_k=qr_top_k(config, gm.n_layers() * gm.adapter.n_heads))
        write(qr, "qr_heads")
        frames["qr_heads"] = qr
        summary["n_qr_heads"] = int(qr.selected.sum())
        summary["qr_retrieval_overlap"] = len({(int(a), int(b)) for a, b in qr[qr.selected][["layer", "head"]].itertuples(index=False)} & set(retrieval))
    summary["figures"] = draw(frames, out, None, gm.name)
    return summary


@atomic
def run_qr_retrieve(model, data, out, config: HeadsConfig | None = None, *, progress: bool = True) -> dict:
    """QR heads detected on the labelled split, the QR-retriever evaluated on the held-out split next to BM25 and the model's answer."""
    config = config or HeadsConfig()
    gm = model
    detection, test = load_examples(data, config)
    if not detection:
        raise GenIRError("the labelled (detection) split is empty: QR heads cannot be detected; generate examples with n_detection > 0")
    if not test:
        raise GenIRError("the held-out (test) split is empty: nothing to evaluate the QR-retriever on")
    write = _Writer(gm, out, config, _data_hash(detection) + "-" + _data_hash(test))
    qr = detect_qr_heads(qr_token_scores(gm, detection, batch_size=config.batch_size, progress=progress), detection, top_k=qr_top_k(config, gm.n_layers() * gm.adapter.n_heads))
    write(qr, "qr_heads")
    heads = [(int(l), int(h)) for l, h in qr[qr.selected][["layer", "head"]].itertuples(index=False)]
    scored = qr_token_scores(gm, test, batch_size=config.batch_size, progress=progress)
    answer, generated = answer_rankings(gm, test, batch_size=config.batch_size)
    runs = {"qr": qr_rankings(scored, test, heads), "bm25": bm25_rankings(test), "answer": answer}
    metrics = evaluate_rankings(runs, incontext_qrels(test))
    write(metrics, "qr_metrics", n_detection=len(detection), n_test=len(test))
    rows = [{"method": m, "example_id": q, "doc_id": d, "score": s} for m, r in runs.items() for q, docs in r.items() for d, s in docs.items()]
    write(pd.DataFrame(rows), "qr_rankings")
    by = {m: dict(zip(g.metric, g.value)) for m, g in metrics.groupby("method")}
    answered = sum(generated[e.example_id] == e.answer for e in test) / len(test)
    return {"model": gm.path, "n_detection": len(detection), "n_test": len(test), "qr_heads": [f"L{l}H{h}" for l, h in heads],
            **{m: by[m] for m in ("qr", "bm25", "answer")}, "answer_accuracy": answered,
            "figures": draw({"qr_heads": qr}, out, None, gm.name)}

"""Every per-head score of one retrieval model, its masking curve and the masking effect of head sets: what `heads compare` sets side by side.

    result = score_heads(gm, CompareInputs(...))        # result.scores: one row per query-reading head
    result.scores.columns   # layer, head, rel_depth, stage, attention_score, qr_score, retrieval_score, patch_effect,
                            # ablation_effect, docid_share_top10, target_rank, mask
    result.masking          # mask, method (none/top/random), k, draw, heads, metric (hits@1 | niah_accuracy), value
    result.set_effects      # mask, set (top-k / top-k by single effect / random-k / all heads), k, draw, heads, effect

GenIR models (atomic docids) are scored on the synthetic corpus's matched
clean/corrupted query pairs the model gets right and on its correct queries;
NIAH models on needle-in-a-haystack trials paired with a twin whose needle
holds another code (heads.niah_pairs). The stage of each head's layer comes
from the stage localiser run on the same queries (contributions, and for a
GenIR model single-layer mean ablations). Every masking (single heads, sets,
the curves) uses `CompareInputs.mask` (heads.masking: "uniform", Wu et al.'s,
or "remove"), named in every table. Random head sets are independent seeded
draws from the heads outside the top-k; the curves stop at a third of the
heads, so k random heads come from at least 2k others.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..analyses.ablation import layer_ablation
from ..analyses.contributions import contributions
from ..analyses.query_batches import sample_queries
from ..analyses.stage_localisation import localise_stages
from ..data.niah import NiahConfig, niah_trials
from ..errors import GenIRError
from ..models.loading import resolve_dataset
from ..patching.pairs import dataset_pairs, keep_correct, tokenize_pairs
from ..retrieval import correct_query_targets, rank_of, scorer_for
from ..stage_definition import StageDefinition
from .comparison import default_k, relative_depth, top_heads
from .head_scores import causal_head_scores, deciding_mask, deciding_positions, head_lens, masking_effects, qr_head_scores
from .masking import DEFAULT_MASK, check_mask, head_label, masked_niah, masked_set_values, random_control
from .niah_pairs import differing_mask, niah_pair_batch
from .prompts import max_positions
from .query_reading import model_task, query_heads, query_kind
from .retrieval_score import retrieval_scores


@dataclass
class CompareInputs:
    """How much data each model is scored on (defaults sized for the four default models in minutes on a 2-core CPU)."""

    seed: int = 0
    n_pairs: int = 32  # clean/corrupted pairs (GenIR: kept pairs of the synthetic corpus; NIAH: trials with a twin)
    n_queries: int = 64  # correct queries for the lens, the stages and the Hits@1 masking curve (GenIR)
    lengths: tuple[int, ...] = (128, 256)  # NIAH context lengths
    depths: tuple[float, ...] = (0.0, 0.5, 1.0)  # NIAH needle depths
    trials_per_cell: int = 3
    ks: tuple[int, ...] | None = None  # heads masked in the masking curves; default 1, 2, 4, ... up to a third of the heads (at most 16)
    random_draws: int = 10  # independent random head sets per k in the masking curves
    share_draws: int = 100  # independent random head sets of size k whose joint masking effect is compared with the top-k's
    mask: str = DEFAULT_MASK  # how heads are masked (heads.masking): "uniform" (Wu et al.'s) or "remove"
    stage_bootstrap: int = 20
    batch_size: int = 32
    rows_per_forward: int | None = 512


@dataclass
class HeadScores:
    """One model's per-head table, its masking curve, its located stages and what it was scored on."""

    name: str
    task: str
    kind: str
    scores: pd.DataFrame
    masking: pd.DataFrame
    stages: StageDefinition
    deciding: pd.DataFrame
    counts: dict = field(default_factory=dict)
    set_effects: pd.DataFrame | None = None  # joint masking effect of head sets (see the module docstring)


def masking_ks(n_heads: int, ks: tuple[int, ...] | None) -> list[int]:
    """k values of the masking curve: the given ones (at most a third of the heads), else powers of two up to min(16, n_heads // 3);
    at most a third, so that k random heads are drawn from at least 2k others."""
    cap = max(1, n_heads // 3)
    if ks:
        return sorted({k for k in ks if 1 <= k <= cap}) or [1]
    out, k = [], 1
    while k <= min(16, cap):
        out.append(k)
        k *= 2
    return out


def ranked_heads(scores: pd.DataFrame, by: str = "attention_score") -> list[tuple[int, int]]:
    """Every head by decreasing `by` (ties: lower layer, then head, first)."""
    return top_heads(scores, len(scores), by)


def masking_conditions(scores: pd.DataFrame, ks: list[int], draws: int, seed: int) -> list[tuple[str, int, int, list]]:
    """(method, k, draw, heads): no heads, then per k the top-k by attention score and `draws` independent random sets of k other heads."""
    ranked = ranked_heads(scores)
    out = [("none", 0, 0, [])]
    for k in ks:
        control = random_control(ranked, [], k, draws, seed=seed + k)
        out.append(("top", k, 0, control.top))
        out += [("random", k, d, heads) for d, heads in enumerate(control.draws)]
    return out


def effect_sets(scores: pd.DataFrame, k: int, draws: int, seed: int) -> list[tuple[str, int, list]]:
    """(set, draw, heads) whose joint masking effect is measured: the top-k by attention score, the top-k by single-head masking effect,
    `draws` independent random sets of k heads outside the top-k, and every head."""
    ranked = ranked_heads(scores)
    control = random_control(ranked, [], k, draws, seed)
    by_single = ranked_heads(scores.assign(single=scores["ablation_effect"].fillna(-float("inf"))), "single")[:k]
    return ([("top-k", 0, control.top), ("top-k by single effect", 0, by_single)] + [("random-k", d, heads) for d, heads in enumerate(control.draws)]
            + [("all heads", 0, ranked)])


def _stage_column(stages: StageDefinition, n_layers: int) -> dict[int, str]:
    return {layer: stage.name for stage in stages.stages for layer in stage.layers if layer < n_layers}


def _locate(gm, texts, query_ids, docs, inputs: CompareInputs, progress: bool) -> StageDefinition:
    """The stage localiser on these queries (single-layer mean ablations only when documents are given)."""
    contrib = contributions(gm, texts, query_ids, batch_size=inputs.batch_size, progress=progress)
    layers = layer_ablation(gm, texts, docs, gm.adapter.kinds("decoder"), ("mean",), batch_size=inputs.batch_size) if docs else None
    return localise_stages(contrib, layers, None, bootstrap=inputs.stage_bootstrap, seed=inputs.seed).definition


def _genir(gm, inputs: CompareInputs, progress: bool, dataset=None):
    dataset = dataset if dataset is not None else resolve_dataset(gm, None)
    kept, _ = keep_correct(gm, dataset_pairs(dataset))
    if len(kept) < 2:
        raise GenIRError(f"{gm.path}: {len(kept)} clean/corrupted pairs ranked right by the model; heads compare needs at least 2")
    pairs = tokenize_pairs(gm, sample_queries(kept, inputs.n_pairs, inputs.seed), align="left-pad" if gm.adapter.padding_side == "left" else "right-pad")
    deciding = deciding_positions(gm, pairs, inputs.rows_per_forward, progress)
    split = dataset.resolve_split(None)
    targets = correct_query_targets(gm, dataset, split, inputs.batch_size)
    queries = sample_queries([q for q in dataset.split(split) if q.query_id in targets], inputs.n_queries, inputs.seed)
    if len(queries) < 2:
        raise GenIRError(f"{gm.path}: {len(queries)} correct queries in split {split!r}; heads compare needs at least 2")
    texts, ids, docs = [q.text for q in queries], [q.query_id for q in queries], [targets[q.query_id] for q in queries]
    batch = gm.batch(texts)
    lens = head_lens(gm, batch, torch.tensor([gm.docids.token_id(d) for d in docs]), inputs.batch_size)
    stages = _locate(gm, texts, ids, docs, inputs, progress)
    return pairs, deciding_mask(pairs, deciding), deciding, lens, stages, None, {"texts": texts, "docs": docs}, \
        {"n_pairs": len(pairs), "n_queries": len(queries), "split": split, "data": dataset.name if hasattr(dataset, "name") else None}


def _niah(gm, inputs: CompareInputs, progress: bool, dataset=None):
    trials = niah_trials(NiahConfig(lengths=inputs.lengths, depths=inputs.depths, trials_per_cell=inputs.trials_per_cell, seed=inputs.seed, split="test"))
    pairs = niah_pair_batch(gm, trials)
    mask = differing_mask(pairs)
    deciding = pd.DataFrame([{"pair_id": p.pair_id, "position": int(t), "clean_token": pairs.clean_tokens[i][t], "corrupted_token": pairs.corrupted_tokens[i][t],
                              "effect": float("nan"), "deciding": True} for i, p in enumerate(pairs.pairs) for t in mask[i].nonzero()[:, 0].tolist()])
    lens = head_lens(gm, pairs.clean, pairs.targets.clean_token, inputs.batch_size, docids=False)
    retrieval = retrieval_scores(gm, trials, batch_size=inputs.batch_size, progress=progress)
    limit = gm.max_query_tokens
    gm.max_query_tokens = max_positions(gm) or 4096  # haystacks are long; contributions tokenise through gm.batch
    try:
        stages = _locate(gm, [t.prompt for t in trials], [t.trial_id for t in trials], None, inputs, progress)
    finally:
        gm.max_query_tokens = limit
    return pairs, mask, deciding, lens, stages, retrieval, {"trials": trials}, \
        {"n_pairs": len(pairs), "n_trials": len(trials), "niah_accuracy": retrieval.accuracy}


def score_heads(gm, name: str, inputs: CompareInputs | None = None, progress: bool = False, dataset=None) -> HeadScores:
    """Scores (a)-(d) of every query-reading head of `gm`, its masking curve and the joint masking effect of head sets (module docstring).

    `dataset`: the GenIR data (a RetrievalDataset with matched pairs); None: the data the model's card names.
    """
    inputs = inputs or CompareInputs()
    mask = check_mask(inputs.mask)
    task, kind = model_task(gm), query_kind(gm)
    pairs, deciding_rows, deciding, lens, stages, retrieval, data, counts = (_genir if task == "genir" else _niah)(gm, inputs, progress, dataset)
    qr = qr_head_scores(gm, pairs, deciding_rows, inputs.batch_size)
    causal = causal_head_scores(gm, pairs, inputs.rows_per_forward, progress, mask=mask)
    n_layers = gm.n_layers("decoder")
    stage_of = _stage_column(stages, n_layers)
    scores = causal.merge(lens, on=["layer", "head"])
    scores.insert(2, "rel_depth", relative_depth(scores["layer"], n_layers))
    scores.insert(3, "stage", scores["layer"].map(stage_of))
    scores["qr_score"] = [float(qr[l, h]) for l, h in zip(scores["layer"], scores["head"])]
    if retrieval is not None:
        scores = scores.merge(retrieval.scores[["layer", "head", "retrieval_score"]], on=["layer", "head"])
        scores["detector"], scores["attention_score"] = "retrieval", scores["retrieval_score"]
    else:
        scores["retrieval_score"], scores["detector"], scores["attention_score"] = float("nan"), "qr", scores["qr_score"]
    scores.insert(0, "model", name)
    scores["mask"] = mask
    sets = effect_sets(scores, default_k(scores), inputs.share_draws, inputs.seed)
    effects = masking_effects(gm, pairs, [heads for *_, heads in sets], mask, inputs.rows_per_forward)
    set_effects = pd.DataFrame([{"mask": mask, "set": kind_, "k": len(heads), "draw": draw, "heads": head_label(heads), "effect": float(e)}
                                for (kind_, draw, heads), e in zip(sets, effects)])
    masking = _masking(gm, task, kind, scores, data, inputs, progress)
    counts = {**counts, "n_heads": len(query_heads(gm)), "data_hash": _pairs_hash(pairs, data)}
    return HeadScores(name, task, kind, scores, masking, stages, deciding, counts, set_effects)


def _pairs_hash(pairs, data: dict) -> str:
    """Hash of everything a model was scored on: the pairs' texts and the queries (or trials) of the lens and masking."""
    h = hashlib.sha256()
    for p in pairs.pairs:
        h.update(f"{p.clean}\t{p.corrupted}\n".encode())
    for text in data.get("texts", []) + [t.prompt for t in data.get("trials", [])]:
        h.update(text.encode())
    return h.hexdigest()[:16]


def _hits_at_1(gm, texts: list[str], docs: list[str], sets: list[list], mask: str, kind: str, inputs: CompareInputs) -> torch.Tensor:
    """(len(sets),) Hits@1 (the relevant document ranked first among the docids) of the queries with each head set masked."""
    scorer = scorer_for(gm)
    columns = scorer.columns(docs)
    hits = torch.zeros(len(sets), len(texts))
    for start in range(0, len(texts), inputs.batch_size):
        stop = min(len(texts), start + inputs.batch_size)
        cols = columns[start:stop]
        reduce = lambda logits, items, cols=cols: (rank_of(scorer.score_logits(logits.cpu()), cols[items.cpu()]) == 1).float()  # noqa: E731
        hits[:, start:stop] = masked_set_values(gm, gm.batch(texts[start:stop]), sets, reduce, mask, kind, inputs.rows_per_forward)
    return hits.mean(1)


def _masking(gm, task, kind, scores, data, inputs: CompareInputs, progress: bool) -> pd.DataFrame:
    conditions = masking_conditions(scores, masking_ks(len(scores), inputs.ks), inputs.random_draws, inputs.seed)
    if task == "genir":
        unique = list(dict.fromkeys(tuple(heads) for *_, heads in conditions))
        hits = dict(zip(unique, _hits_at_1(gm, data["texts"], data["docs"], [list(u) for u in unique], inputs.mask, kind, inputs).tolist()))
        values, metric = [hits[tuple(heads)] for *_, heads in conditions], "hits@1"
    else:
        named = {f"{method}-{k}-{draw}": [heads] for method, k, draw, heads in conditions}
        table = masked_niah(gm, data["trials"], named, batch_size=inputs.batch_size, progress=progress, kind=kind, mask=inputs.mask)
        accuracy = table.groupby("condition")["success"].mean()
        values, metric = [float(accuracy[f"{method}-{k}-{draw}"]) for method, k, draw, _ in conditions], "niah_accuracy"
    return pd.DataFrame([{"mask": inputs.mask, "method": method, "k": k, "draw": draw, "heads": head_label(heads), "metric": metric, "value": float(v)}
                         for (method, k, draw, heads), v in zip(conditions, values)])


__all__ = ["CompareInputs", "HeadScores", "default_k", "effect_sets", "masking_conditions", "masking_ks", "ranked_heads", "score_heads"]

"""What a pipeline runs on and how it writes: the one `Inputs` of every experiment.

    inputs = Inputs.for_queries(gm, dataset, "runs/ablate/dsi-synth", QueryConfig(max_queries=256))
    inputs.texts, inputs.relevant_docs                      # the model's correct validation queries, a seeded sample
    inputs = Inputs.for_pairs(gm, dataset, out, PairConfig(n_pairs=32))   # clean/corrupted pairs, tokenised
    inputs.write(df, "ablation", config)                     # out/ablation.csv + ablation.provenance.json

One place decides which queries an analysis sees (the model's correct queries
of a split, optionally a seeded sample), which pairs a patching experiment
sees (pairs the model gets right, unless told otherwise), and how a table is
written with this run's provenance. `out` is the staging folder the run's
results_directory transaction hands the pipeline; the provenance records name
the final folder.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..analyses.query_batches import sample_queries
from ..data.corpus import RetrievalDataset
from ..errors import GenIRError
from ..patching.pairs import ALIGNMENTS, PairBatch, QueryPair, dataset_pairs, diverges_at, keep_correct, step_pairs, tokenize_pairs, with_model_docs
from ..provenance import provenance, write_table
from ..retrieval import correct_query_targets


# A sweep computes the inputs several experiments share once (sweep.caches.InputCache); None: compute them here.
_INPUT_CACHE: ContextVar[object | None] = ContextVar("genir_input_cache", default=None)


@contextmanager
def shared_inputs(cache) -> Iterator[None]:
    """Within the block, correct-query lists and kept pair sets come from `cache` (an object with `correct_query_targets(model,
    dataset, split, batch_size, compute)` and `kept_pairs(model, pairs, compute)`), which calls `compute` on a miss."""
    token = _INPUT_CACHE.set(cache)
    try:
        yield
    finally:
        _INPUT_CACHE.reset(token)


def _correct_query_targets(model, dataset, split: str | None, batch_size: int) -> dict[str, str]:
    cache = _INPUT_CACHE.get()
    if cache is None:
        return correct_query_targets(model, dataset, split, batch_size)
    return cache.correct_query_targets(model, dataset, split, batch_size, correct_query_targets)


def _kept_pairs(model, pairs: list) -> tuple[list, pd.DataFrame]:
    cache = _INPUT_CACHE.get()
    return keep_correct(model, pairs) if cache is None else cache.kept_pairs(model, pairs, keep_correct)


@dataclass
class QueryConfig:
    """Which queries an analysis aggregates over: the model's correct queries of `split`, at most `max_queries` (seeded sample).

    `split=None`: validation when the data has it, else the split it has (test, then train), with a warning naming it.
    A correct query is one whose first-ranked document is relevant (retrieval.evaluation: the definition).
    """

    split: str | None = None
    max_queries: int | None = None
    seed: int = 0
    batch_size: int = 64


@dataclass
class PairConfig:
    """Which clean/corrupted pairs a patching experiment uses.

    By default only pairs whose clean query ranks its document first and whose
    corrupted query ranks its own document first are kept; `all_pairs` keeps
    every pair with two different documents. `align` pads the shorter query of
    a pair (one of patching.pairs.ALIGNMENTS) instead of refusing it.
    """

    n_pairs: int | None = None
    all_pairs: bool = False
    align: str | None = None
    seed: int = 0


def config_record(config) -> dict:
    """A config dataclass as a JSON-able dict for provenance (stage definitions as their JSON)."""
    record = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        record[f.name] = value.to_json() if hasattr(value, "to_json") else (str(value) if isinstance(value, Path) else value)
    return record


def position_token_table(batch: PairBatch) -> pd.DataFrame:
    """Per aligned query position: the clean token most pairs have there and the share of pairs that have it (to label position axes)."""
    rows = []
    for position in range(batch.width):
        tokens = pd.Series([t[position] for t in batch.clean_tokens if position < len(t)])
        counts = tokens.value_counts()
        rows.append({"position": position, "token": counts.index[0], "share": round(float(counts.iloc[0] / len(tokens)), 4)})
    return pd.DataFrame(rows, columns=["position", "token", "share"])


@dataclass
class Inputs:
    """A loaded model, its data, the queries or pairs chosen, and where this run writes."""

    model: object
    dataset: RetrievalDataset | None
    out: Path
    seed: int = 0
    queries: list = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)  # query id -> the document the analysis follows (retrieval.correct_query_targets)
    split: str | None = None  # the split the queries came from (resolved: the one that exists when none was named)
    pairs: PairBatch | None = None
    pairs_table: pd.DataFrame | None = None
    started: float = field(default_factory=time.time)

    @property
    def texts(self) -> list[str]:
        return [q.text for q in self.queries]

    @property
    def query_ids(self) -> list[str]:
        return [q.query_id for q in self.queries]

    @property
    def relevant_docs(self) -> list[str]:
        """The document each query's analysis follows: its relevant document the model ranks first."""
        return [self.targets[q.query_id] if q.query_id in self.targets else self.dataset.relevant(q.query_id) for q in self.queries]

    def write(self, df: pd.DataFrame, name: str, config: dict, **extra) -> Path:
        """`out/<name>.csv` with its provenance: model, data, config, seed, wall time, and how many queries or pairs."""
        counts = {"n_pairs": len(self.pairs)} if self.pairs is not None else {"n_queries": len(self.queries), "split": self.split}
        record = provenance(model=self.model.path, data=self.dataset, config=config, seed=self.seed, started=self.started, **counts, **extra)
        return write_table(df, self.out / name, record)

    @classmethod
    def for_queries(cls, model, dataset: RetrievalDataset, out: str | Path, config: QueryConfig, at_least: int = 1) -> "Inputs":
        """The model's correct queries of `config.split` (a seeded sample of at most `config.max_queries`)."""
        if dataset is None:
            raise GenIRError("no data given: pass a RetrievalDataset (CLI: --data, or a checkpoint whose model card names its data)")
        started = time.time()
        split = dataset.resolve_split(config.split)
        targets = _correct_query_targets(model, dataset, config.split, config.batch_size)
        queries = sample_queries([q for q in dataset.split(split) if q.query_id in targets], config.max_queries, config.seed)
        if len(queries) < at_least:
            raise GenIRError(f"{model.path}: {len(queries)} correct queries in split {split!r}; this analysis needs at least {at_least}")
        return cls(model, dataset, Path(out), config.seed, queries=queries, targets=targets, split=split, started=started)

    @classmethod
    def for_pairs(cls, model, data: RetrievalDataset | list[QueryPair], out: str | Path, config: PairConfig, step: int | None = None,
                  write: bool = True) -> "Inputs":
        """Clean/corrupted pairs (a dataset's matched pairs, or the given list) chosen by `config`, tokenised; writes out/pairs.csv.

        `step`: pairs that decoding step decides (their docids share a prefix and diverge there; patching.pairs.step_pairs),
        teacher-forced to that prefix: the given or matched pairs that diverge there, and, after step 0, pairs built from
        the dataset's correct validation queries. `write=False`: the caller writes the pair tables (several steps in one)."""
        started = time.time()
        dataset = data if isinstance(data, RetrievalDataset) else None
        builds = step is not None and step > 0 and dataset is not None  # pairs of this step are built from the queries below
        pairs = (dataset_pairs(dataset) if dataset.pairs or not builds else []) if dataset is not None else list(data or [])
        if not pairs and not builds:
            raise GenIRError("no query pairs: give a dataset with matched pairs or a list of QueryPair (CLI: --pairs FILE)")
        if config.n_pairs is not None and config.n_pairs < 1:
            raise GenIRError(f"n_pairs must be positive, got {config.n_pairs} (CLI: --n-pairs)")
        if config.align is not None and config.align not in ALIGNMENTS:
            raise GenIRError(f"align must be one of {', '.join(ALIGNMENTS)}, got {config.align!r}")
        n_candidates = len(pairs)
        if builds:
            # matched pairs rarely share a docid prefix: add pairs of correct validation queries that this step decides
            targets = _correct_query_targets(model, dataset, None, 256)
            queries = [q for q in dataset.split(dataset.resolve_split(None)) if q.query_id in targets]
            # Both queries of a built pair are correct, so each is kept: n_pairs of them are enough.
            pairs += step_pairs(model, queries, [targets[q.query_id] for q in queries], step, n=config.n_pairs, seed=config.seed)
            n_candidates = len(pairs)
            if not pairs:
                raise GenIRError(f"{model.path}: no two correct validation queries of the same template and length have docids that share "
                                 f"a prefix and diverge at step {step}; give pairs (CLI: --pairs FILE) or another step")
        if config.all_pairs:
            # Even then a pair whose two queries share their document is left out: it has no logit difference to restore.
            pairs = with_model_docs(model, pairs)
            kept = [p for p in pairs if p.clean_doc != p.corrupted_doc]
            table = pd.DataFrame([{**vars(p), "kept": p.clean_doc != p.corrupted_doc, "dropped_because": "" if p.clean_doc != p.corrupted_doc else "same document"} for p in pairs])
            if not kept:
                raise GenIRError("every pair's two queries have the same document; there is no logit difference to patch")
        else:
            kept, table = _kept_pairs(model, pairs)
            if not kept:
                raise GenIRError(f"{model.path}: none of the {len(pairs)} pairs has both documents ranked first by the model; "
                                 "set all_pairs=True to patch them anyway (CLI: --all-pairs)")
        if step is not None:
            undecided = {p.pair_id for p in kept if not diverges_at(model, p, step)}
            table.loc[table["pair_id"].isin(undecided), ["kept", "dropped_because"]] = [False, f"docids do not diverge at step {step}"]
            kept = [p for p in kept if p.pair_id not in undecided]
            if not kept:
                raise GenIRError(f"{model.path}: none of the {len(pairs)} pairs has docids that share a prefix and diverge at step {step}; "
                                 "give pairs whose docids do (CLI: --pairs FILE) or another step")
        kept = kept[: config.n_pairs] if config.n_pairs else kept
        table["used"] = table["pair_id"].isin({p.pair_id for p in kept})
        if step is not None:
            table.insert(0, "step", step)
        inputs = cls(model, dataset, Path(out), config.seed, pairs=tokenize_pairs(model, kept, config.align, step), pairs_table=table, started=started)
        if write:
            inputs.write(table, "pairs", config_record(config), n_candidates=n_candidates)
            inputs.write(position_token_table(inputs.pairs), "position_tokens", config_record(config))
        return inputs

    def pair_counts(self) -> dict:
        """How many pairs were offered, kept by the selection rule, and used."""
        t = self.pairs_table
        return {"n_candidates": len(t), "n_kept": int(t["kept"].sum()), "n_used": int(t["used"].sum())}

"""What a sweep computes once and shares: loaded models (per process), data, and on disk the inputs experiments share.

    pool = ModelPool(config)                  # pool.model("dsi") loads once per process; pool.data("dsi") likewise
    cache = InputCache(out / ".sweep" / "cache")
    with shared_inputs(cache): run_lens(...); run_ablate(...)   # one ranking of the split for both

`InputCache` keeps, by content hash, the correct-query list of a (model
weights, dtype, device, data, split, batch size) and the kept clean/corrupted
pairs of a (model, pair set): every experiment on the same model and split
reuses them instead of re-ranking the split. Entries are written atomically
(temporary file, rename), so a kill never leaves a half entry, and the key
holds everything the value depends on, so a stale entry is never read.
Entries are data only (JSON, and Parquet for the pair table), read with a
check of their shape: a cache folder someone else wrote can at worst cost a
recomputation, never run code.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

from ..provenance import model_hash, written_atomically
from .config import SweepConfig


class ModelPool:
    """Models of a sweep loaded on first use and kept for the process (one load per model per worker)."""

    def __init__(self, config: SweepConfig):
        self.config = config
        self._models: dict[str, object] = {}
        self._data: dict[str, object] = {}

    def model(self, name: str):
        if name not in self._models:
            from ..models.loading import load_genir
            entry = self.config.models[name]
            self._models[name] = load_genir(entry.path, docid_pattern=entry.docid_pattern, self_check=entry.self_check,
                                            device=self.config.model_device(name), dtype=self.config.model_dtype(name), revision=entry.revision)
        return self._models[name]

    def data(self, name: str):
        """The sweep's data spec, else the data in model `name`'s card (loaded once per spec)."""
        from ..data.loaders import load_dataset
        from ..models.model_card import FILE_NAME as CARD_FILE, ModelCard
        from ..errors import GenIRError
        spec, card_file = self.config.data, None
        if spec is None:
            card = ModelCard.read(self.config.models[name].path)
            if not card.data:
                raise GenIRError(f"models.{name}: {self.config.models[name].path} has no model_card.json naming its data; set data: in the config")
            spec, card_file = card.data, Path(self.config.models[name].path) / CARD_FILE
        key = json.dumps(spec, sort_keys=True)
        if key not in self._data:
            try:
                self._data[key] = load_dataset(spec)
            except GenIRError as exc:
                if card_file is None:
                    raise
                raise GenIRError(f"models.{name}: {card_file}, field 'data': {exc}") from None  # the card's spec: name the card
        return self._data[key]

    @property
    def loaded(self) -> list[str]:
        return list(self._models)


class InputCache:
    """Correct-query lists and kept pair sets on disk under `root`, keyed by the hash of what they depend on."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._hashes: dict[str, str] = {}
        self.hits = 0
        self.misses = 0

    def _model_key(self, model) -> dict:
        if model.path not in self._hashes:
            self._hashes[model.path] = model_hash(model.path)
        param = next(model.hf_model.parameters())
        return {"model": self._hashes[model.path], "dtype": str(param.dtype), "device": str(param.device)}

    def _path(self, kind: str, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
        return self.root / f"{kind}-{digest}.json"

    def _read(self, path: Path, check) -> object | None:
        """`check(parsed JSON)` of the entry at `path`, or None (with a warning) when it is missing parts or malformed."""
        if not path.exists():
            return None
        try:
            value = check(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            warnings.warn(f"{path}: not a valid cache entry ({type(exc).__name__}); computing it again", stacklevel=3)
            return None
        self.hits += 1
        return value

    def correct_query_targets(self, model, dataset, split: str | None, batch_size: int, compute) -> dict[str, str]:
        """Query id -> target document of each correct query (retrieval.evaluation's definition), computed once."""
        key = {**self._model_key(model), "data": dataset.data_hash(), "split": dataset.resolve_split(split), "batch_size": batch_size}
        path = self._path("correct", key)
        found = self._read(path, _query_targets)
        if found is not None:
            return found
        value = dict(compute(model, dataset, split, batch_size))
        with written_atomically(path) as tmp:
            tmp.write_text(json.dumps(value))
        self.misses += 1
        return value

    def kept_pairs(self, model, pairs: list, compute):
        """The pairs `model` gets right and the table of every pair's ranks (patching.pairs.keep_correct), computed once."""
        import pandas as pd

        from ..patching.pairs import QueryPair
        key = {**self._model_key(model), "pairs": hashlib.sha256(json.dumps([dataclasses.asdict(p) for p in pairs], sort_keys=True).encode()).hexdigest()}
        path = self._path("pairs", key)
        table_path = path.with_suffix(".parquet")
        kept = self._read(path, lambda raw: [QueryPair(**_pair_fields(p)) for p in raw]) if table_path.exists() else None
        if kept is not None:
            return kept, pd.read_parquet(table_path)
        kept, table = compute(model, pairs)
        with written_atomically(table_path) as tmp:
            table.to_parquet(tmp, index=False)
        with written_atomically(path) as tmp:  # written last: the entry counts only once both files are whole
            tmp.write_text(json.dumps([dataclasses.asdict(p) for p in kept]))
        self.misses += 1
        return list(kept), table.copy()


def _query_targets(raw) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("expected an object of query id -> document id strings")
    return raw


def _pair_fields(raw) -> dict:
    from ..patching.pairs import QueryPair
    names = {f.name for f in dataclasses.fields(QueryPair)}
    if not isinstance(raw, dict) or set(raw) - names or not all(v is None or isinstance(v, str) for v in raw.values()):
        raise ValueError("expected a pair's string fields")
    return raw

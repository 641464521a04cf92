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
"""
from __future__ import annotations

import hashlib
import json
import pickle
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
        from ..models.model_card import ModelCard
        from ..errors import GenIRError
        spec = self.config.data
        if spec is None:
            card = ModelCard.read(self.config.models[name].path)
            if not card.data:
                raise GenIRError(f"models.{name}: {self.config.models[name].path} has no model_card.json naming its data; set data: in the config")
            spec = card.data
        key = json.dumps(spec, sort_keys=True)
        if key not in self._data:
            self._data[key] = load_dataset(spec)
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

    def _cached(self, kind: str, key: dict, compute):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
        path = self.root / f"{kind}-{digest}.pkl"
        if path.exists():
            try:
                with path.open("rb") as fh:
                    value = pickle.load(fh)
                self.hits += 1
                return value
            except (OSError, EOFError, pickle.UnpicklingError):
                pass  # unreadable: computed again and rewritten
        value = compute()
        with written_atomically(path) as tmp:
            with tmp.open("wb") as fh:
                pickle.dump(value, fh)
        self.misses += 1
        return value

    def correct_query_targets(self, model, dataset, split: str | None, batch_size: int, compute) -> dict[str, str]:
        """Query id -> target document of each correct query (retrieval.evaluation's definition), computed once."""
        key = {**self._model_key(model), "data": dataset.data_hash(), "split": dataset.resolve_split(split), "batch_size": batch_size}
        return dict(self._cached("correct", key, lambda: list(compute(model, dataset, split, batch_size).items())))

    def kept_pairs(self, model, pairs: list, compute):
        key = {**self._model_key(model), "pairs": hashlib.sha256(pickle.dumps([vars(p) for p in pairs])).hexdigest()}
        kept, table = self._cached("pairs", key, lambda: compute(model, pairs))
        return list(kept), table.copy()

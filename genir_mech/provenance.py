"""Provenance: what produced a result, and writing result tables with it.

    write_table(df, out_dir / "contributions", provenance(model=..., data=ds, config=cfg, seed=0, started=t0))

Every table genir_mech writes is a tidy CSV with a `<name>.provenance.json`
beside it: model path and hash, data hash, config, seed, package versions and
wall time. This is the one result writer; analyses do not write files themselves.
Each file is written under a temporary name and renamed into place (`written_atomically`),
so a killed process never leaves a truncated table; a whole run is published at
once by results_directory. `read_table` refuses a table that is not part of a
complete result (results_directory.check_complete).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from .results_directory import check_complete, hash_file, published

PACKAGES = ("genir_mech", "torch", "transformers", "nnsight", "numpy", "pandas", "ir_measures", "ir_datasets")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name.replace("_", "-")) if name != "genir_mech" else version("genir_mech")
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def model_hash(path: str | Path) -> str:
    """Hash of a checkpoint's weight files (or of the id, for hub models not on disk)."""
    path = Path(path)
    files = sorted(p for p in path.glob("*") if p.suffix in {".safetensors", ".bin"}) if path.is_dir() else []
    h = hashlib.sha256()
    if not files:
        h.update(str(path).encode())
    for p in files:
        hash_file(p, h)
    return h.hexdigest()[:16]


def provenance(*, model: str | None = None, data=None, config: dict | None = None, seed: int | None = None, started: float | None = None, **extra) -> dict:
    record = {
        "model": str(model) if model else None,
        "model_hash": model_hash(model) if model else None,
        "data_hash": data.data_hash() if data is not None else None,
        "data": getattr(data, "meta", None),
        "config": config or {},
        "seed": seed,
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if started is not None:
        record["wall_seconds"] = round(time.time() - started, 3)
    record.update(extra)
    return record


@contextmanager
def written_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed to `path` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(df: pd.DataFrame, path: str | Path, record: dict) -> Path:
    """Write `df` as `<path>.csv` and its provenance as `<path>.provenance.json`; returns the CSV path."""
    path = Path(path)
    csv_path = path.with_suffix(".csv")
    with written_atomically(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    # the record names the final locations, not the staging folder the run writes into
    record = published({**record, "table": csv_path.name, "rows": len(df), "columns": list(df.columns)})
    with written_atomically(path.with_suffix(".provenance.json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str))
    return csv_path


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A result table and its provenance; refuses one that is not part of a complete result."""
    path = Path(path)
    csv_path = path.with_suffix(".csv")
    check_complete(csv_path)
    prov_path = path.with_suffix(".provenance.json")
    record = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    return pd.read_csv(csv_path), record

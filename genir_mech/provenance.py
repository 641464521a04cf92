"""Provenance: what produced a result, and writing result tables with it.

    write_table(df, out_dir / "contributions", provenance(model=..., data=ds, config=cfg, seed=0, started=t0))

Every table genir_mech writes is a tidy CSV with a `<name>.provenance.json`
beside it: model path and hash, data hash, config, seed, package versions and
wall time. This is the one result writer; analyses do not write files themselves.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

PACKAGES = ("genir_mech", "torch", "transformers", "nnsight", "numpy", "pandas", "ir_measures")


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
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
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


def write_table(df: pd.DataFrame, path: str | Path, record: dict) -> Path:
    """Write `df` as `<path>.csv` and its provenance as `<path>.provenance.json`; returns the CSV path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = path.with_suffix(".csv")
    df.to_csv(csv_path, index=False)
    path.with_suffix(".provenance.json").write_text(json.dumps({**record, "table": csv_path.name, "rows": len(df), "columns": list(df.columns)}, indent=2, default=str))
    return csv_path


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict]:
    path = Path(path)
    csv_path = path.with_suffix(".csv")
    prov_path = path.with_suffix(".provenance.json")
    record = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    return pd.read_csv(csv_path), record

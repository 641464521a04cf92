"""Provenance: what produced a result, and writing result tables with it.

    write_table(df, out_dir / "contributions", provenance(model=..., data=ds, config=cfg, seed=0, started=t0))

Every table genir_mech writes is tidy, with a `<name>.provenance.json` beside
it: model path, hash and hub revision (the commit loaded, and the branch, tag
or commit asked for), data hash, config, seed, package versions, the git
commit of the code, the command line and sweep config that ran it
(`run_context`), and wall time. Tables of at most PARQUET_ROWS rows are
CSV, to be read by eye (summaries); longer ones are Parquet (a 256-query logit
lens is 22 MB of CSV). `read_table` and `table_file` find whichever exists, so
readers never care. This is the one result writer; analyses do not write files themselves.
Each file is written under a temporary name and renamed into place (`written_atomically`),
so a killed process never leaves a truncated table; a whole run is published at
once by results_directory. `read_table` refuses a table that is not part of a
complete result (results_directory.check_complete).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from .results_directory import check_complete, hash_file, published, write_error
from .vocabulary import RESULT_PACKAGES

PACKAGES = RESULT_PACKAGES
PARQUET_ROWS = 10_000  # longer tables are written as Parquet, shorter ones as CSV (readable by eye)
TABLE_SUFFIXES = (".parquet", ".csv")

# Fields every record of the current run gets (the command line, a sweep's config and unit): set by the CLI and the sweep.
_CONTEXT: ContextVar[dict] = ContextVar("genir_provenance_context", default={})


@contextmanager
def run_context(**fields) -> Iterator[None]:
    """Within the block, every provenance record also holds `fields` (e.g. command=[...], sweep={...})."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


@functools.lru_cache(maxsize=1)
def code_commit() -> str | None:
    """The git commit of the genir_mech source tree, with "+dirty" when it has uncommitted changes; None outside a git checkout."""
    root = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "."], capture_output=True, text=True, timeout=10)
        return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# hub id -> (revision asked for, commit loaded) of the hub models loaded by this process (models.loading records them)
_HUB_LOADS: dict[str, tuple[str | None, str | None]] = {}


def record_hub_revision(model: str, revision: str | None, commit: str | None) -> None:
    """Remember that hub model `model` was loaded at `revision` (None: its default branch), from `commit` when known."""
    _HUB_LOADS[str(model)] = (revision, commit)


def requested_revision(model: str) -> str | None:
    """The revision (branch, tag or commit) a hub model was asked for when this process loaded it; None for the default branch."""
    return _HUB_LOADS.get(str(model), (None, None))[0]


def hub_revision(model: str) -> str | None:
    """The commit of a hub model's files: the one this process loaded, else the one in the local hub cache (None for a local checkpoint or an uncached id)."""
    revision, commit = _HUB_LOADS.get(str(model), (None, None))
    return commit or _cached_revision(str(model), revision)


@functools.lru_cache(maxsize=32)
def _cached_revision(model: str, revision: str | None) -> str | None:
    if Path(model).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(model, "config.json", revision=revision)
    except Exception:  # an id the hub library refuses: no revision to record
        return None
    parts = Path(found).parts if isinstance(found, str) else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


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
        "model_revision": hub_revision(str(model)) if model else None,
        "model_revision_requested": requested_revision(str(model)) if model else None,
        "data_hash": data.data_hash() if data is not None else None,
        "data": getattr(data, "meta", None),
        "config": config or {},
        "seed": seed,
        "versions": package_versions(),
        "code_commit": code_commit(),
        **_CONTEXT.get(),
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # created exclusively under an unpredictable name: a link planted beside `path` is never followed
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        error = write_error(exc, published(str(path)), (path, path.parent))
        if error is None:
            raise
        raise error from None
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        # a full disk (or an unwritable place) while writing: one line naming the file (its final place when a run
        # stages it); the temporary file is removed, so nothing half-written is left
        error = write_error(exc, published(str(path)), (path, tmp, path.parent))
        if error is None:
            raise
        raise error from None
    finally:
        tmp.unlink(missing_ok=True)


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in TABLE_SUFFIXES else path


def write_table(df: pd.DataFrame, path: str | Path, record: dict) -> Path:
    """Write `df` as `<path>.csv` (at most PARQUET_ROWS rows) or `<path>.parquet`, and its provenance as
    `<path>.provenance.json`; returns the table's path."""
    path = _stem(path)
    table = path.with_name(path.name + (".parquet" if len(df) > PARQUET_ROWS else ".csv"))
    with written_atomically(table) as tmp:
        if table.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    # the record names the final locations, not the staging folder the run writes into
    record = published({**record, "table": table.name, "rows": len(df), "columns": list(df.columns)})
    with written_atomically(path.with_name(path.name + ".provenance.json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str))
    return table


def table_file(path: str | Path) -> Path | None:
    """The file of a table named `path` (with or without suffix): `<path>.parquet` or `<path>.csv`, whichever exists."""
    path = _stem(path)
    for suffix in TABLE_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A result table (CSV or Parquet, whichever exists) and its provenance; refuses one that is not part of a complete result."""
    stem = _stem(path)
    table = table_file(stem) or stem.with_name(stem.name + ".csv")  # a missing table is reported by check_complete / pandas
    check_complete(table)
    prov_path = stem.with_name(stem.name + ".provenance.json")
    record = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    return (pd.read_parquet(table) if table.suffix == ".parquet" else pd.read_csv(table)), record

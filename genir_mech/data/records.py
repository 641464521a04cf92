"""JSONL files of flat dataclass records (NIAH trials, in-context examples): written atomically, read with one-line errors.

    save_records(trials, "runs/data/niah.jsonl")
    trials = load_records("runs/data/niah.jsonl", NiahTrial)

A line with bad JSON, a missing field or a field of the wrong type names the
file and line; unknown extra fields are ignored so newer files stay readable.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..errors import GenIRError
from ..provenance import written_atomically
from .loaders import iter_jsonl

# JSON types each annotated field must have (the dataclass annotations are strings under `from __future__ import annotations`)
_JSON_TYPES = {"str": str, "int": int, "float": (int, float), "list": list, "dict": dict}


def save_records(records, path: str | Path) -> Path:
    """Write dataclass records one JSON object a line; a kill never leaves a half-written file under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as tmp:
        with tmp.open("w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(dataclasses.asdict(record)) + "\n")
    return path


def _expected_type(annotation: str):
    return _JSON_TYPES.get(annotation.split("[", 1)[0].strip())


def load_records(path: str | Path, cls) -> list:
    """Read a JSONL file of `cls` records (a dataclass), checking every field's presence and JSON type."""
    path = Path(path)
    hints = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "") for f in dataclasses.fields(cls)}
    records = []
    for lineno, row in iter_jsonl(path):
        missing = [k for k in hints if k not in row]
        if missing:
            raise GenIRError(f"{path}, line {lineno}: missing field(s) {', '.join(missing)} of a {cls.__name__}")
        for name, annotation in hints.items():
            want = _expected_type(annotation)
            if want is not None and (not isinstance(row[name], want) or isinstance(row[name], bool)):
                raise GenIRError(f"{path}, line {lineno}: field {name!r} must be {annotation}, got {type(row[name]).__name__} {row[name]!r}")
        try:
            records.append(cls.from_json(row) if hasattr(cls, "from_json") else cls(**{k: row[k] for k in hints}))
        except (TypeError, ValueError, KeyError) as exc:
            raise GenIRError(f"{path}, line {lineno}: not a valid {cls.__name__} ({exc})") from None
    if not records:
        raise GenIRError(f"{path}: no records (an empty file)")
    return records

"""The one intervention file format, in JSON or YAML (chosen by the suffix), saved and loaded as equal objects.

    save_interventions(groups, "runs/sweep.yaml"); groups = load_interventions("runs/sweep.yaml")

    interventions:                                   # sweep.yaml
      - labels: {stage: priming, component: mlp, method: zero}
        specs:
          - {site: decoder.layers.0.mlp, value: zero}
          - {site: decoder.layers.1.mlp, value: zero}
      - labels: {patch: L3H2}
        specs: [{site: decoder.layers.3.cross_attn.heads, head: 2}]   # value defaults to source

The same structure in JSON: {"interventions": [{"labels": {...}, "specs": [...]}]}.
Every error names the file, the entry index and the key, e.g.
"sweep.yaml, intervention 3, spec 0, key 'value': 'avg' is not one of source, zero, mean, other-model".
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ..data.loaders import read_utf8
from ..errors import GenIRError
from .spec import Intervention, InterventionSpec

SUFFIXES = (".json", ".yaml", ".yml")
GROUP_KEYS = ("labels", "specs")


def _format(path: Path) -> str:
    if path.suffix.lower() not in SUFFIXES:
        raise GenIRError(f"{path}: an intervention file ends in {', '.join(SUFFIXES)} (JSON or YAML)")
    return "json" if path.suffix.lower() == ".json" else "yaml"


def interventions_to_data(interventions: list[Intervention]) -> dict:
    """The JSON/YAML-ready dict of a list of interventions (what save_interventions writes)."""
    return {"interventions": [g.to_dict() for g in interventions]}


def save_interventions(interventions: list[Intervention], path: str | Path) -> Path:
    """Write `interventions` to `path` (.json, .yaml or .yml); `load_interventions` reads back equal objects."""
    path = Path(path)
    fmt = _format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = interventions_to_data(list(interventions))
    path.write_text(json.dumps(data, indent=1) + "\n" if fmt == "json" else yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return path


def read_data(path: str | Path):
    """The parsed JSON or YAML content of an intervention file; syntax errors name the file and line."""
    path = Path(path)
    fmt = _format(path)
    try:
        text = read_utf8(path)  # not UTF-8: one line naming the file and line
    except OSError as exc:
        raise GenIRError(f"{path}: cannot read the intervention file ({exc.strerror})") from None
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenIRError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise GenIRError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None


def _group(entry, where: str) -> Intervention:
    if not isinstance(entry, dict):
        raise GenIRError(f"{where}: an intervention is a mapping with keys {', '.join(GROUP_KEYS)}; got {entry!r}")
    unknown = sorted(set(entry) - set(GROUP_KEYS))
    if unknown:
        raise GenIRError(f"{where}, key {unknown[0]!r}: unknown; an intervention has keys {', '.join(GROUP_KEYS)}")
    labels = entry.get("labels") or {}
    if not isinstance(labels, dict):
        raise GenIRError(f"{where}, key 'labels': a mapping of column name to value, got {labels!r}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
            raise GenIRError(f"{where}, key 'labels': label {key!r}: {value!r} must map a name to a string or number")
    specs = entry.get("specs")
    if not isinstance(specs, list):
        raise GenIRError(f"{where}, key 'specs': missing or not a list of specs")
    return Intervention(tuple(InterventionSpec.from_dict(s, f"{where}, spec {j}") for j, s in enumerate(specs)), labels)


def interventions_from_data(data, source: str) -> list[Intervention]:
    """Interventions from parsed file content; `source` (the file name) prefixes every error."""
    if not isinstance(data, dict) or set(data) != {"interventions"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise GenIRError(f"{source}: an intervention file is a mapping with the one key 'interventions' (a list); got {keys}")
    entries = data["interventions"]
    if not isinstance(entries, list):
        raise GenIRError(f"{source}, key 'interventions': a list of interventions, got {type(entries).__name__}")
    return [_group(entry, f"{source}, intervention {i}") for i, entry in enumerate(entries)]


def load_interventions(path: str | Path) -> list[Intervention]:
    """Read and check an intervention file (without a model: `validate_interventions` checks layers and heads)."""
    return interventions_from_data(read_data(path), str(path))

"""A training run's resume state, written and read as data only: nothing in a results folder is ever run as code.

    state = ResumeState(model=..., optimizer=..., torch_rng=..., epoch=3, best=0.41, bad_epochs=0,
                        elapsed=812.5, history=[...], scheduler={...}, config={...})
    save_resume_state("runs/x/resume/state.pt", state)
    state = load_resume_state("runs/x/resume/state.pt", "delete runs/x/resume to restart this run from scratch")

One torch file, replaced atomically and read with `torch.load(weights_only=True)`: the tensors (the model's and the
optimizer's state, torch's RNG state as a uint8 tensor), the optimizer's plain settings (numbers, booleans, None),
a format marker, and everything else (epoch, best score, history, scheduler counters, loop config) as one JSON
string. A file that is not such a state (cut short, written whole as a pickle by an older genir_mech, or tampered
with) is refused with one line naming it and what to do; the restricted unpickler never calls anything it holds.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import GenIRError
from ..provenance import written_atomically

FORMAT = "genir_mech resume state 2"  # the marker of this layout; a state without it is refused, never guessed at
TENSOR_KEYS = ("model", "optimizer", "torch_rng")
META_TYPES = {"epoch": int, "best": (int, float), "bad_epochs": int, "elapsed": (int, float), "history": list,
              "scheduler": dict, "config": dict}


@dataclass
class ResumeState:
    """What a `TrainLoop` needs to continue a run exactly where its last finished epoch left it."""
    model: dict[str, torch.Tensor]
    optimizer: dict
    torch_rng: torch.Tensor
    epoch: int  # the last finished epoch, from 0
    best: float
    bad_epochs: int
    elapsed: float  # seconds
    history: list[dict] = field(default_factory=list)
    scheduler: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def meta(self) -> dict:
        return {k: getattr(self, k) for k in META_TYPES}


def _plain(value):
    """JSON fallback for numbers that are not Python's own (a numpy float score, a 0-d tensor)."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not plain data")


def save_resume_state(path: str | Path, state: ResumeState) -> None:
    """Write `state` to `path` atomically (a kill while saving leaves the previous state whole)."""
    meta = json.dumps(state.meta(), default=_plain)
    payload = {"format": FORMAT, "model": state.model, "optimizer": state.optimizer, "torch_rng": state.torch_rng, "meta": meta}
    with written_atomically(path) as tmp:
        torch.save(payload, tmp)


def _load_reason(exc: Exception) -> str:
    """Why torch could not read the file safely, in a few words (torch's own message suggests loading it unsafely)."""
    text = str(exc)
    found = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", text)
    if found:
        return f"it holds the Python object {found.group(1)} where only tensors and plain data may be"
    if "Weights only load failed" in text:
        return "it is a pickle of Python objects, not only tensors and plain data"
    if "zip archive" in text or "PytorchStreamReader" in text:
        return "not a complete torch file (cut short or corrupted)"
    if isinstance(exc, OSError):
        return f"cannot be read: {exc.strerror or type(exc).__name__}"
    return (text.splitlines() or [type(exc).__name__])[0][:160]


def _tensors(value, path: str) -> str | None:
    """None when `value` is a dict of str to tensors; else what is wrong with it."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in value.items()):
        return f"{path} is not a dict of named tensors"
    return None


def _check(raw) -> tuple[str | None, dict]:
    """(what is wrong with a safely loaded payload, or None; its parsed JSON part)."""
    if not isinstance(raw, dict):
        return f"it holds a {type(raw).__name__}, not a resume state", {}
    if raw.get("format") != FORMAT:
        return "it has no genir_mech resume-state format marker", {}
    wrong = sorted(set(raw) ^ {"format", "meta", *TENSOR_KEYS})
    if wrong:
        return f"unexpected or missing entries {', '.join(map(str, wrong))}", {}
    problem = _tensors(raw["model"], "model")
    if problem:
        return problem, {}
    optimizer = raw["optimizer"]
    if not isinstance(optimizer, dict) or set(optimizer) != {"state", "param_groups"}:
        return "optimizer is not an optimizer state", {}
    rng = raw["torch_rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.dim() != 1:
        return "torch_rng is not a uint8 RNG state", {}
    if not isinstance(raw["meta"], str):
        return "its run facts are not a JSON string", {}
    try:
        meta = json.loads(raw["meta"])
    except ValueError as exc:
        return f"its run facts are not valid JSON ({exc})", {}
    if not isinstance(meta, dict):
        return "its run facts are not a JSON object", {}
    missing = [k for k in META_TYPES if k not in meta]
    if missing:
        return f"its run facts lack {', '.join(missing)}", {}
    for key, kind in META_TYPES.items():
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            return f"its {key} is a {type(meta[key]).__name__}", {}
    if meta["epoch"] < 0 or meta["bad_epochs"] < 0 or not math.isfinite(meta["elapsed"]):
        return "its epoch counters are out of range", {}
    return None, meta


def refused(path: str | Path, reason: str, remedy: str) -> GenIRError:
    """The one-line refusal of a resume state at `path`."""
    return GenIRError(f"{path}: resume state refused as invalid or unsafe: {reason}; it was written by an older genir_mech, "
                      f"cut short or tampered with, and nothing in it was run; {remedy}")


def load_resume_state(path: str | Path, remedy: str) -> ResumeState:
    """Read the state at `path` as tensors and plain data only; anything else is refused with a `GenIRError` ending in `remedy`."""
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols: the refusal says all there is to say
            warnings.simplefilter("ignore")
            raw = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a pickle of other objects, a truncated zip, an unreadable file: all refused alike
        raise refused(path, _load_reason(exc), remedy) from None
    problem, meta = _check(raw)
    if problem:
        raise refused(path, problem, remedy)
    return ResumeState(model=raw["model"], optimizer=raw["optimizer"], torch_rng=raw["torch_rng"], **meta)

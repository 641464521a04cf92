"""What every `genir-mech train` objective does with its results: save the best weights safely, record how the run went."""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

from ..models.adapters import adapter_for
from ..models.genir_model import GenIRModel
from ..provenance import package_versions


def as_genir(model, tokenizer, scheme, out: Path) -> GenIRModel:
    """The model being trained, seen as a GenIR model so that validation uses the one evaluation path."""
    return GenIRModel(model, tokenizer, scheme, adapter_for(model), out.name, str(out))


def best_saver(model, tokenizer, out: Path):
    """A function saving the current weights and tokenizer into `out`, each file renamed into place (never truncated)."""
    def save_best():
        tmp = out / f".best.tmp-{os.getpid()}"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
        tmp.rmdir()
    return save_best


def training_record(req, result: dict, parameters: int) -> dict:
    """The card's record of how a run (a train.TrainRequest) trained: shape, loop, size, time, history and versions."""
    return {
        "shape": req.shape.asdict() if not (req.base or getattr(req, "init", None)) else None,
        "init": getattr(req, "init", None),
        "loop": asdict(req.loop),
        "parameters": parameters,
        "train_seconds": result["train_seconds"],
        "best_validation": result["best_validation"],
        "history": result["history"],
        "versions": package_versions(),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

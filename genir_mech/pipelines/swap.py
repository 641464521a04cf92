"""Encoder swap: model A's decoder on other models' encoder output (paper Table 2).

    from genir_mech.pipelines.swap import SwapConfig, run_swap, default_encoder_paths
    encoders = [load_genir(p) for p in default_encoder_paths("checkpoints/dsi-synth")]
    summary = run_swap(gm, dataset, "runs/swap/dsi-synth", SwapConfig(), encoders=encoders)
    summary["removed_docs"], summary["figures"]["swap"]

An encoder model whose model card lists removed documents runs experiment 1
(A's correct queries of those documents, with B alone and a seen-documents
control); any other (e.g. the pretrained base) runs experiment 2 (A's correct
queries of `vanilla_split`). Writes the summaries and per-query ranks, Table 2
(Markdown and LaTeX) and figures/swap.png.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..analyses.encoder_swap import removed_docs_experiment, vanilla_encoder_experiment
from ..errors import GenIRError
from ..figures.tables import removed_docs_table, vanilla_table
from ..models.model_card import ModelCard
from ..models.names import local_folder
from ..provenance import provenance, write_table
from ..results_directory import atomic
from .inputs import config_record
from .rendering import draw


@dataclass
class SwapConfig:
    """Parameters of `run_swap`, each with its default; recorded in every table's provenance."""
    splits: Sequence[str] = ("test", "validation")  # experiment 1: splits whose queries of the removed documents are used
    vanilla_split: str = "validation"  # experiment 2: the split of A's correct queries
    batch_size: int = 64


def default_encoder_paths(model_path: str | Path) -> list[str]:
    """A's base model, and the checkpoints beside A trained on A's data without some documents."""
    card = ModelCard.read(model_path)
    base = local_folder(card.base)  # a folder, or an embedded checkpoint's short name (as the embedded cards write it)
    found = [base] if base else []
    here = Path(model_path).resolve()
    for sibling in sorted(here.parent.iterdir()):
        other = ModelCard.read(sibling)
        if sibling != here and other.removed_documents and other.data_hash == card.data_hash:
            found.append(str(Path(model_path).parent / sibling.name))
    if not found:
        raise GenIRError(f"{model_path}: no encoder models given (CLI: --encoder-from) and no base model or removed-documents variant found beside it")
    return found


@atomic
def run_swap(model, data, out, config: SwapConfig | None = None, *, encoders: Sequence) -> dict:
    """Encoder swap: model A's decoder on other models' encoder output (paper Table 2); returns a JSON-able summary (module docstring: what it writes).

        summary = run_swap(gm, dataset, "runs/swap/dsi-synth", SwapConfig(), encoders=encoders)
    """
    config = config or SwapConfig()
    started, out, a = time.time(), Path(out), model
    if not encoders:
        raise GenIRError("encoder swap: no encoder models given (encoders=[...]; CLI: --encoder-from)")
    variants = [e for e in encoders if ModelCard.read(e.path).removed_documents]
    vanillas = [e for e in encoders if e not in variants]
    record = provenance(model=a.path, data=data, config={**config_record(config), "encoder_from": [e.path for e in encoders]}, started=started)
    frames: dict[str, pd.DataFrame] = {}
    if variants:
        frames["swap_removed_docs"], frames["swap_removed_docs_per_query"] = removed_docs_experiment(a, variants, data, tuple(config.splits), config.batch_size)
    if vanillas:
        parts = [vanilla_encoder_experiment(a, v, data, config.vanilla_split, config.batch_size) for v in vanillas]
        frames["swap_vanilla"] = pd.concat([s for s, _ in parts], ignore_index=True)
        frames["swap_vanilla_per_query"] = pd.concat([q for _, q in parts], ignore_index=True)
    tables = {name: str(write_table(df, out / name, record)) for name, df in frames.items()}
    result: dict = {"out": str(out), "tables": tables}
    if variants:
        result["removed_docs"] = json.loads(removed_docs_table(frames["swap_removed_docs"]).to_json(orient="records"))
    if vanillas:
        result["vanilla"] = json.loads(vanilla_table(frames["swap_vanilla"]).to_json(orient="records"))
    result["figures"] = draw(frames, out, None, a.name)
    return result

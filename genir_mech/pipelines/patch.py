"""Activation patching over clean/corrupted query pairs: a sweep of patches, bootstrap summaries and heatmaps.

    from genir_mech.pipelines.patch import PatchConfig, run_patch
    summary = run_patch(gm, dataset, "runs/patch/dsi-synth", PatchConfig(target="head", n_pairs=32))
    summary = run_patch(gm, read_pairs("my_pairs.jsonl", dataset), out, PatchConfig(target="encoder-position", align="left-pad"))
    summary = run_patch(gm, dataset, out, PatchConfig(specs="my_sweep.yaml"))      # a saved sweep (intervention file)
    summary["top"], summary["figures"]

`data` is a dataset (its matched pairs) or a list of QueryPair. Pairs are
chosen by the PairConfig fields (by default only those the model gets right
on both sides; see pipelines.inputs). Writes pairs.csv, `<name>_specs.json`,
`<name>_per_pair.csv`, `<name>_summary.csv` (name: the target or the spec
file's stem) and heatmaps of the normalised logit-diff effect under figures/.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import GenIRError
from ..patching.aggregation import aggregate
from ..patching.engine import sweep
from ..patching.specs import TARGETS, load_specs, save_specs, target_specs
from ..results_directory import atomic
from .inputs import Inputs, PairConfig, config_record, position_token_table
from .rendering import draw_patch_summary, patching_context, position_tokens


@dataclass
class PatchConfig(PairConfig):
    """Parameters of `run_patch`, each with its default; recorded in every table's provenance."""
    target: str | None = None  # one of patching.specs.TARGETS; or give `specs`
    specs: str | Path | None = None  # a saved sweep: an intervention file (JSON/YAML) or the older JSON list of specs
    kinds: tuple[str, ...] | None = None  # component kinds for target component/head (default all)
    direction: str = "denoise"  # denoise: clean into corrupted; noise: corrupted into clean
    rows_per_forward: int | None = None  # fixed rows per forward pass; None: as many as the memory budget holds (--max-memory)
    pairs_per_batch: int = 64  # pairs whose source activations are cached together
    n_boot: int = 1000  # bootstrap resamples of the pairs for confidence intervals


def summarise(table: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Normalised effects and raw values of every metric, with bootstrap intervals."""
    return pd.concat([aggregate(table, value=v, metric=None, n_boot=n_boot, seed=seed) for v in ("normalised", "value")], ignore_index=True)


def node_label(row) -> str:
    """`site[head=h][position=p]`, the axes a row has."""
    return row.site + (f"[head={row.head}]" if pd.notna(row.head) else "") + (f"[position={row.position}]" if pd.notna(row.position) else "")


def top_effects(summary: pd.DataFrame, direction: str, n: int = 5) -> list[dict]:
    """The `n` patches that move the normalised logit-diff effect furthest from the run patched into
    (0, the corrupted run, when denoising; 1, the clean run, when noising)."""
    effect = summary[(summary.metric == "logit_diff") & (summary.quantity == "normalised")]
    moved = (effect["mean"] - (0.0 if direction == "denoise" else 1.0)).dropna().abs()
    top = effect.reindex(moved.sort_values(ascending=False).index).head(n)
    return [{"patch": node_label(r), "normalised_effect": round(float(r.mean), 4), "ci": [round(float(r.ci_low), 4), round(float(r.ci_high), 4)]} for r in top.itertuples()]


@atomic
def run_patch(model, data, out, config: PatchConfig | None = None, *, progress: bool = True) -> dict:
    """Activation patching over clean/corrupted query pairs: a sweep of patches, bootstrap summaries and heatmaps; returns a JSON-able summary (module docstring: what it writes).

        summary = run_patch(gm, dataset, "runs/patch/dsi-synth", PatchConfig(target="head", n_pairs=32))
    """
    config = config or PatchConfig()
    if bool(config.target) == bool(config.specs):
        raise GenIRError("give exactly one of target or specs (CLI: --target or --specs)")
    if config.target and config.target not in TARGETS:
        raise GenIRError(f"unknown target {config.target!r}; targets are {', '.join(TARGETS)}")
    inputs = Inputs.for_pairs(model, data, out, config)
    gm, batch = model, inputs.pairs
    name = config.target or Path(config.specs).stem
    specs = load_specs(config.specs) if config.specs else target_specs(gm, config.target, encoder_positions=batch.width, decoder_positions=batch.decoder_length, kinds=config.kinds)
    save_specs(specs, inputs.out / f"{name}_specs.json")
    table = sweep(gm, batch, specs, direction=config.direction, rows_per_forward=config.rows_per_forward, pairs_per_batch=config.pairs_per_batch, progress=progress)
    record = config_record(config)
    per_pair = inputs.write(table, f"{name}_per_pair", record)
    summary = summarise(table, config.n_boot, config.seed)
    summary_path = inputs.write(summary, f"{name}_summary", record)
    context, tokens = patching_context(gm.name, config.direction, len(batch)), position_tokens(position_token_table(batch))
    return {
        "per_pair": str(per_pair), "summary": str(summary_path), "n_pairs": len(batch), "n_patches": len(specs), "direction": config.direction,
        "pairs": inputs.pair_counts(), "top": top_effects(summary, config.direction),
        "figures": draw_patch_summary(name, summary, config.target, inputs.out, context, tokens),
    }

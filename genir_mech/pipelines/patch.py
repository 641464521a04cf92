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

`steps` (a decoding step, a list or "all") patches at decoding steps of a
multi-token docid: at step t the pairs are those whose docids share the prefix
s[:t] and diverge at s[t] (so step t decides between them), both runs are
teacher-forced to that prefix and the metrics read the docids' tokens s[t];
the tables get a `step` column and the figures are drawn per step.
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
from ..retrieval.steps import require_steps, resolve_steps
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
    steps: int | list[int] | str | None = None  # decoding step(s) of a multi-token docid, or "all"; None: the ranking step, no step column


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
    require_steps(model, config.steps, "activation patching")
    steps = None if config.steps is None else resolve_steps(model, config.steps)  # a step too far: one line, before any work
    if bool(config.target) == bool(config.specs):
        raise GenIRError("give exactly one of target or specs (CLI: --target or --specs)")
    if config.target and config.target not in TARGETS:
        raise GenIRError(f"unknown target {config.target!r}; targets are {', '.join(TARGETS)}")
    if config.specs:
        load_specs(config.specs)  # a bad specs file (syntax, encoding, keys): one line before the pairs are ranked
    if config.steps is not None:
        return _run_steps(model, data, out, config, steps, progress)
    inputs = Inputs.for_pairs(model, data, out, config)
    name = config.target or Path(config.specs).stem
    table, summary, specs = _sweep(inputs, config, name, progress)
    record = config_record(config)
    per_pair = inputs.write(table, f"{name}_per_pair", record)
    summary_path = inputs.write(summary, f"{name}_summary", record)
    return {
        "per_pair": str(per_pair), "summary": str(summary_path), "n_pairs": len(inputs.pairs), "n_patches": len(specs), "direction": config.direction,
        "pairs": inputs.pair_counts(), "top": top_effects(summary, config.direction), "figures": _figures(inputs, config, name, summary),
    }


def _sweep(inputs: Inputs, config: PatchConfig, name: str, progress: bool, suffix: str = ""):
    """The sweep of one set of pairs: per-pair table, bootstrap summary, and the specs (saved as `<name><suffix>_specs.json`)."""
    gm, batch = inputs.model, inputs.pairs
    specs = load_specs(config.specs) if config.specs else target_specs(gm, config.target, encoder_positions=batch.width, decoder_positions=batch.decoder_length, kinds=config.kinds)
    save_specs(specs, inputs.out / f"{name}{suffix}_specs.json")
    table = sweep(gm, batch, specs, direction=config.direction, rows_per_forward=config.rows_per_forward, pairs_per_batch=config.pairs_per_batch, progress=progress)
    return table, summarise(table, config.n_boot, config.seed), specs


def _figures(inputs: Inputs, config: PatchConfig, name: str, summary: pd.DataFrame, context_note: str = "") -> dict:
    context = patching_context(inputs.model.name + context_note, config.direction, len(inputs.pairs))
    return draw_patch_summary(name, summary, config.target, inputs.out, context, position_tokens(position_token_table(inputs.pairs)))


def _run_steps(model, data, out, config: PatchConfig, steps: list[int], progress: bool) -> dict:
    """The sweep at every decoding step in `steps`, each on the pairs that step decides; tables get a `step` column,
    figures are drawn per step (`<name>_step<t>`)."""
    name = config.target or Path(config.specs).stem
    parts: dict[str, list] = {"pairs": [], "per_pair": [], "summary": []}
    per_step, figures, inputs = {}, {}, None
    for step in steps:
        inputs = Inputs.for_pairs(model, data, out, config, step=step, write=False)
        table, summary, specs = _sweep(inputs, config, name, progress, suffix=f"_step{step}")
        parts["pairs"].append(inputs.pairs_table)
        parts["per_pair"].append(table.assign(step=step)[["step", *table.columns]])
        parts["summary"].append(summary.assign(step=step)[["step", *summary.columns]])
        figures.update({f"{k}_step{step}": v for k, v in _figures(inputs, config, f"{name}_step{step}", summary, f", docid step {step}").items()})
        per_step[step] = {"n_pairs": len(inputs.pairs), "n_patches": len(specs), "pairs": inputs.pair_counts(), "top": top_effects(summary, config.direction)}
    record = {**config_record(config), "steps": steps}
    paths = {key: inputs.write(pd.concat(frames, ignore_index=True), name_, record)
             for key, frames, name_ in (("pairs", parts["pairs"], "pairs"), ("per_pair", parts["per_pair"], f"{name}_per_pair"), ("summary", parts["summary"], f"{name}_summary"))}
    return {"per_pair": str(paths["per_pair"]), "summary": str(paths["summary"]), "direction": config.direction, "steps": per_step, "figures": figures,
            "pairs": {k: sum(s["pairs"][k] for s in per_step.values()) for k in ("n_candidates", "n_kept", "n_used")},
            "top": [dict(t, step=step) for step, s in per_step.items() for t in s["top"]]}

"""`genir-mech patch`: activation patching sweeps over clean/corrupted query pairs, with tables and heatmaps.

    genir-mech patch --model checkpoints/dsi-synth --target component
    genir-mech patch --model checkpoints/dsi-synth --target head --direction noise --n-pairs 64 --rows-per-forward 1024
    genir-mech patch --model checkpoints/dsi-synth --target encoder-position --pairs my_pairs.jsonl --align left-pad
    genir-mech patch --model checkpoints/dsi-synth --specs my_sweep.json      # a saved sweep (list of patch specs)

By default only pairs whose clean query ranks its document first and whose
corrupted query ranks its own document first are kept (`--all-pairs` keeps
every pair); the count is printed and written to pairs.csv.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import GenIRError
from ..figures.patching import plot_patching
from ..models.loading import load_genir, resolve_dataset
from ..patching.aggregation import aggregate
from ..patching.engine import DIRECTIONS, sweep
from ..patching.pairs import ALIGNMENTS, PairBatch, dataset_pairs, keep_correct, read_pairs, tokenize_pairs, with_model_docs
from ..patching.specs import TARGETS, load_specs, save_specs, target_specs
from ..provenance import provenance, write_table
from . import Verb


def add_pair_arguments(p, verb: str) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory or hub id")
    p.add_argument("--data", help="data spec (default: the data named in the checkpoint's model_card.json)")
    p.add_argument("--pairs", help="JSONL or CSV of pairs: clean,corrupted[,clean_doc,corrupted_doc] or clean_query_id,corrupted_query_id "
                                   "(default: the dataset's matched pairs)")
    p.add_argument("--n-pairs", type=int, help="use the first N (kept) pairs (default all)")
    p.add_argument("--all-pairs", action="store_true", help="keep pairs even when the model does not rank both documents first")
    p.add_argument("--align", choices=ALIGNMENTS, help="pad the shorter query of a pair at its start or end when tokenizations differ in length "
                                                       "(default: refuse such pairs)")
    p.add_argument("--direction", choices=DIRECTIONS, default="denoise", help="denoise: clean into corrupted (default); noise: corrupted into clean")
    p.add_argument("--pairs-per-batch", type=int, default=64, help="pairs whose source activations are cached together (default 64)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the pairs for confidence intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--docid-pattern", help="regex with one group matching docid tokens (default @DOC_ID_(.+?)@)")
    p.add_argument("--out", help=f"output directory (default runs/{verb}/<model name>)")
    p.add_argument("--json", action="store_true", help="print one JSON object summarising the result")


@dataclass
class PairInputs:
    gm: object
    dataset: object
    batch: PairBatch
    pairs_table: pd.DataFrame
    out: Path
    started: float
    args: object

    def write(self, df: pd.DataFrame, name: str, config: dict, **extra) -> Path:
        record = provenance(model=self.gm.path, data=self.dataset, config=config, seed=self.args.seed, started=self.started, n_pairs=len(self.batch), **extra)
        return write_table(df, self.out / name, record)


def load_pair_inputs(args, verb: str) -> PairInputs:
    started = time.time()
    gm = load_genir(args.model, docid_pattern=args.docid_pattern)
    try:
        dataset = resolve_dataset(gm, args.data)
    except GenIRError:
        if not args.pairs:
            raise
        dataset = None  # a pairs file of texts (and docids) needs no dataset
    pairs = read_pairs(args.pairs, dataset) if args.pairs else dataset_pairs(dataset)
    if args.n_pairs is not None and args.n_pairs < 1:
        raise GenIRError(f"--n-pairs must be positive, got {args.n_pairs}")
    if args.all_pairs:
        # Even then a pair whose two queries share their document is left out: it has no logit difference to restore.
        pairs = with_model_docs(gm, pairs)
        kept = [p for p in pairs if p.clean_doc != p.corrupted_doc]
        table = pd.DataFrame([{**vars(p), "kept": p.clean_doc != p.corrupted_doc, "dropped_because": "" if p.clean_doc != p.corrupted_doc else "same document"} for p in pairs])
        if not kept:
            raise GenIRError("every pair's two queries have the same document; there is no logit difference to patch")
    else:
        kept, table = keep_correct(gm, pairs)
        if not kept:
            raise GenIRError(f"{args.model}: none of the {len(pairs)} pairs has both documents ranked first by the model; "
                             "pass --all-pairs to patch them anyway")
    kept = kept[: args.n_pairs] if args.n_pairs else kept
    table["used"] = table["pair_id"].isin({p.pair_id for p in kept})
    batch = tokenize_pairs(gm, kept, args.align)
    if not args.json:
        rule = "kept: all pairs with two different documents (--all-pairs)" if args.all_pairs else "kept where the model ranks the clean doc first for the clean query and the corrupted doc first for the corrupted query"
        print(f"pairs: {len(batch)} used of {len(pairs)} ({int(table['kept'].sum())} {rule})")
    out = Path(args.out or Path("runs") / verb / Path(args.model).name)
    inputs = PairInputs(gm, dataset, batch, table, out, started, args)
    inputs.write(table, "pairs", {"pairs": args.pairs, "all_pairs": args.all_pairs, "n_pairs": args.n_pairs, "align": args.align})
    return inputs


def add_arguments(p):
    add_pair_arguments(p, "patch")
    p.add_argument("--target", choices=TARGETS, help="what to patch: decoder resid per layer, decoder components, attention heads, "
                                                     "encoder output positions, encoder layer outputs per position")
    p.add_argument("--specs", help="a saved sweep (JSON list of {site, head, position}) instead of --target")
    p.add_argument("--kinds", help="component kinds for --target component/head, comma-separated (default all; heads: self_attn,cross_attn)")
    p.add_argument("--rows-per-forward", type=int, default=512, help="patched rows (patch x pair) per forward pass: the memory budget (default 512)")


def summarise(table: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Normalised effects and raw values of every metric, with bootstrap intervals."""
    return pd.concat([aggregate(table, value=v, metric=None, n_boot=n_boot, seed=seed) for v in ("normalised", "value")], ignore_index=True)


def run(args):
    if bool(args.target) == bool(args.specs):
        raise GenIRError("give exactly one of --target or --specs")
    inputs = load_pair_inputs(args, "patch")
    gm, batch = inputs.gm, inputs.batch
    kinds = tuple(k.strip() for k in args.kinds.split(",")) if args.kinds else None
    name = args.target or Path(args.specs).stem
    specs = load_specs(args.specs) if args.specs else target_specs(gm, args.target, encoder_positions=batch.width, decoder_positions=batch.decoder_length, kinds=kinds)
    save_specs(specs, inputs.out / f"{name}_specs.json")
    table = sweep(gm, batch, specs, direction=args.direction, rows_per_forward=args.rows_per_forward, pairs_per_batch=args.pairs_per_batch, progress=not args.json)
    config = {"target": args.target, "specs": args.specs, "kinds": kinds, "direction": args.direction, "rows_per_forward": args.rows_per_forward,
              "pairs_per_batch": args.pairs_per_batch, "n_boot": args.n_boot, "align": args.align}
    per_pair = inputs.write(table, f"{name}_per_pair", config)
    summary = summarise(table, args.n_boot, args.seed)
    summary_path = inputs.write(summary, f"{name}_summary", config)
    result = {"per_pair": str(per_pair), "summary": str(summary_path), "n_pairs": len(batch), "n_patches": len(specs), "direction": args.direction}
    effect = summary[(summary.metric == "logit_diff") & (summary.value == "normalised")]
    if args.target:
        result["heatmap"] = str(plot_patching(effect, inputs.out / f"{name}.png", args.target, label="normalised logit-diff effect",
                                              title=f"{gm.name}: {args.target} patching ({args.direction}, {len(batch)} pairs)"))
    # Largest changes from the run patched into: 0 (corrupted) when denoising, 1 (clean) when noising.
    moved = (effect["mean"] - (0.0 if args.direction == "denoise" else 1.0)).dropna().abs()
    top = effect.reindex(moved.sort_values(ascending=False).index).head(5)
    result["top"] = [{"patch": r.site + (f"[head={r.head}]" if pd.notna(r.head) else "") + (f"[position={r.position}]" if pd.notna(r.position) else ""),
                      "normalised_effect": round(float(r.mean), 4), "ci": [round(float(r.ci_low), 4), round(float(r.ci_high), 4)]} for r in top.itertuples()]
    if not args.json:
        print(f"largest changes of the normalised logit-diff effect ({args.direction}; 0 = corrupted run, 1 = clean run):")
        for t in result["top"]:
            print(f"  {t['patch']}: {t['normalised_effect']:+.3f}  [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]")
        print(f"tables: {per_pair}, {summary_path}" + (f"; heatmap: {result['heatmap']}" if "heatmap" in result else ""))
    return result


VERB = Verb("Activation patching over clean/corrupted query pairs: decoder resid, components, heads, encoder positions; tables + heatmaps", add_arguments, run)

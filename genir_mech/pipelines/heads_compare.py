"""`heads compare`: the query-reading heads of several retrieval models side by side (cross-attention vs decoder-only self-attention).

    from genir_mech.pipelines.heads_compare import CompareConfig, run_heads_compare, load_models
    models = load_models(["dsi-synth", "lm-niah"])                              # name -> loaded model (embedded names or paths)
    summary = run_heads_compare(models, None, "runs/heads-compare", CompareConfig())

Per model (heads.model_scores): every head's QR score, retrieval score (NIAH
models), patching and single-head masking effect, head lens and located
stage, its masking curve, and the joint masking effect of head sets. Across
models (heads.comparison): sparsity, the share of the logit difference lost
when the top-k heads vs k random heads are masked together (mean and 95%
interval over independent draws; never a sum of single-head effects),
Spearman attention-vs-causal with bootstrap CIs, the effect-weighted relative
depth, and for a pair of GenIR models of the two architectures whether their
heads sit at the same relative depth and whether the decoder-only one shows
the bridging / interaction stages. One masking per run (`CompareConfig.mask`:
"uniform", Wu et al.'s, or "remove"), named in every table and in the
summary. Writes <out>/<model>/{head_scores, deciding_positions, masking,
set_effects}.csv and stages.json, <out>/comparison.csv,
figures (depth_profile, masking_curves, attention_vs_causal; PNG + PDF),
tables/heads_compare.{md,tex}, SUMMARY.md and summary.json, with provenance.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import GenIRError
from ..figures.heads_compare import plot_attention_vs_causal, plot_depth_profiles, plot_masking_curves
from ..figures.tables import write_display
from ..heads.comparison import depth_centre, effect_shares, mean_ci, sparsity, spearman_ci
from ..heads.model_scores import CompareInputs, HeadScores, score_heads
from ..progress import no_bars
from ..provenance import provenance, write_table, written_atomically
from ..results_directory import atomic
from .inputs import config_record

# The four default models: the same corpus (dsi-synth, lm-dsi-synth) and the same NIAH data (t5-niah, lm-niah) in both architectures.
DEFAULT_MODELS = ("dsi-synth", "lm-dsi-synth", "t5-niah", "lm-niah")  # embedded checkpoints, found from any working folder
BRIDGING, INTERACTION = "bridging", "interaction"
MASK_WORDS = {"uniform": "the head attends uniformly, Wu et al.'s masking", "remove": "the head's output is zero"}


@dataclass
class CompareConfig(CompareInputs):
    """Parameters of `run_heads_compare` (the per-model inputs, plus the statistics' resampling), recorded in every provenance."""

    bootstrap: int = 1000  # resamples of the heads for the Spearman intervals


def model_name(path: str) -> str:
    """The key of a model in every table: its folder name (a hub id keeps its owner/name)."""
    p = Path(path)
    return p.name if p.exists() else str(path)


def check_models(paths: list[str], defaults: bool) -> list[str]:
    """The model list, refused with one line when a name repeats or when a default checkpoint is missing."""
    names = [model_name(p) for p in paths]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GenIRError(f"--models names {', '.join(twice)} twice; every model is a column of the comparison")
    if defaults:
        from ..embedded import embedded_checkpoint
        found = []
        for name in paths:
            path = embedded_checkpoint(name) or Path(name)
            if not (path / "config.json").exists():
                raise GenIRError(f"{name}: default model of heads compare is missing (train it as checkpoints/README.md says, or pass --models)")
            found.append(str(path))
        return found
    return list(paths)


def load_models(paths: list[str], device: str = "cpu", dtype: str = "float32") -> dict[str, object]:
    """name -> loaded model: `load_lm` (no docids needed) for a decoder-only NIAH model, else `load_genir`.

    An encoder-decoder NIAH model goes through `load_genir` too (`load_lm` refuses encoder-decoders); its tokenizer
    holds the in-prompt @DOC_ID_<i>@ tokens of its in-context task.
    """
    from transformers import AutoConfig

    from ..models.loading import load_genir, load_lm
    from ..models.model_card import ModelCard

    out = {}
    for path in paths:
        niah = ModelCard.read(path).objective == "niah" if Path(path).is_dir() else False
        decoder_only = niah and not getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False)
        out[model_name(path)] = (load_lm if decoder_only else load_genir)(path, device=device, dtype=dtype)
    return out


def _head(label: str) -> tuple[int, int]:
    """(layer, head) of a table label such as "L12H3"."""
    layer, head = label[1:].split("H")
    return int(layer), int(head)


def masking_curve(masking: pd.DataFrame) -> dict:
    """Per k of a masking curve: the top-k value, and random-k's mean over draws with its 95% interval and distinct sets."""
    rows = masking[masking["method"] != "none"]
    out = {}
    for k, part in rows.groupby("k"):
        random = part[part["method"] == "random"]
        mean, ci = mean_ci(random["value"].to_numpy(), bounds=(0.0, 1.0)) if len(random) else (float("nan"), [float("nan"), float("nan")])
        top = part.loc[part["method"] == "top", "value"]
        out[int(k)] = {"top": float(top.iloc[0]) if len(top) else float("nan"), "random": mean, "random_ci": ci,
                       "draws": int(len(random)), "random_draws_distinct": int(random["heads"].nunique())}
    return out


def compare_model(result: HeadScores, config: CompareConfig) -> dict:
    """The per-model numbers of the comparison (JSON-able)."""
    scores = result.scores
    shares = effect_shares(result.set_effects)
    causal = scores["patch_effect"].abs()
    spearman = {"qr_score": spearman_ci(scores["qr_score"], causal, config.bootstrap, config.seed),
                "ablation_effect_vs_patch": spearman_ci(scores["ablation_effect"], causal, config.bootstrap, config.seed)}
    if scores["retrieval_score"].notna().any():
        spearman["retrieval_score"] = spearman_ci(scores["retrieval_score"], causal, config.bootstrap, config.seed)
    masking = result.masking
    curve = masking_curve(masking)
    largest = max(curve)
    single = scores.set_index(["layer", "head"])["ablation_effect"]
    return {
        "task": result.task, "heads": result.kind, "detector": str(scores["detector"].iloc[0]), "n_heads": int(len(scores)),
        "n_layers": int(scores["layer"].nunique()), **result.counts,
        "sparsity": sparsity(scores), **shares,
        "topk_single_effects": {label: float(single[_head(label)]) for label in shares["topk_heads"]},
        "spearman_attention_vs_causal": spearman,
        "depth_centre_causal": depth_centre(scores, "patch_effect"), "depth_centre_attention": depth_centre(scores.assign(a=scores["attention_score"].clip(lower=0)), "a"),
        "stages": [{"name": s.name, "layers": list(s.layers)} for s in result.stages.stages],
        "masking_metric": str(masking["metric"].iloc[0]), "unmasked": float(masking.loc[masking["method"] == "none", "value"].iloc[0]),
        "masked_top_k": {k: c["top"] for k, c in curve.items()},
        "masked_random_k": {k: c["random"] for k, c in curve.items()},
        "masked_random_k_ci": {k: c["random_ci"] for k, c in curve.items()},
        "masked_random_k_draws_distinct": {k: c["random_draws_distinct"] for k, c in curve.items()},
        "masked_random_k_draws": {k: c["draws"] for k, c in curve.items()},
        "largest_k": largest,
    }


def genir_question(summaries: dict[str, dict]) -> dict | None:
    """For one encoder-decoder and one decoder-only GenIR model: same relative depth? bridging/interaction in the decoder-only one?"""
    cross = [n for n, s in summaries.items() if s["task"] == "genir" and s["heads"] == "cross_attn"]
    self_ = [n for n, s in summaries.items() if s["task"] == "genir" and s["heads"] == "self_attn"]
    if not cross or not self_:
        return None
    a, b = summaries[cross[0]], summaries[self_[0]]
    gap = abs(a["depth_centre_causal"] - b["depth_centre_causal"])
    spacing = 1.0 / min(a["n_layers"], b["n_layers"])  # one layer of the shallower decoder: finer differences are not resolved
    names = [s["name"] for s in b["stages"]]
    return {"encoder_decoder": cross[0], "decoder_only": self_[0], "depth_centre_gap": gap, "layer_spacing": spacing,
            "same_relative_depth": bool(gap <= spacing),
            "decoder_only_stages": names, "bridging_and_interaction": any(BRIDGING in n for n in names) and any(INTERACTION in n for n in names)}


def comparison_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """The side-by-side display table: one row per model (columns of one kind, so numbers are rounded alike)."""
    rows = {}
    for name, s in summaries.items():
        rho = s["spearman_attention_vs_causal"]["retrieval_score" if "retrieval_score" in s["spearman_attention_vs_causal"] else "qr_score"]
        largest = s["largest_k"]
        rows[name] = {
            "heads": f"{s['n_heads']} {s['heads']}", "detector": s["detector"], "mask": s["mask"],
            "retrieval heads (>= 0.1)": s["sparsity"].get("retrieval", float("nan")), "QR heads (>= 0.1)": s["sparsity"]["qr"],
            "causal heads (>= 0.1)": s["sparsity"]["causal"], "k": s["k"],
            "top-k effect share": s["topk_effect_share"], "random-k effect share": s["random_k_effect_share"],
            "random-k 95% CI": "[{:.2f}, {:.2f}]".format(*s["random_k_effect_share_ci"]),
            "random-k sets": f"{s['random_draws_distinct']} of {s['draws']}",
            "Spearman attention vs causal": rho["rho"], "Spearman 95% CI": "[{:.2f}, {:.2f}]".format(*rho["ci"]),
            "causal depth centre": s["depth_centre_causal"], "stages": " / ".join(st["name"] for st in s["stages"]),
            "masking k": largest, "unmasked": s["unmasked"], "masked top-k": s["masked_top_k"][largest],
            "masked random-k": s["masked_random_k"][largest], "masked random-k 95% CI": "[{:.2f}, {:.2f}]".format(*s["masked_random_k_ci"][largest]),
            "masked random-k sets": f"{s['masked_random_k_draws_distinct'][largest]} of {s['masked_random_k_draws'][largest]}",
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def _above(value: float, high: float) -> str:
    """"more" when `value` is above the interval's upper end (beyond rounding), else "not more"."""
    return "more" if value > high + 1e-9 else "not more"


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else (f"{x:.2f}" if isinstance(x, float) else str(x))


def summary_markdown(summaries: dict[str, dict], question: dict | None, seconds: float) -> str:
    """The short Markdown summary; every number comes from `summaries` (this run)."""
    masks = sorted({s["mask"] for s in summaries.values()})
    lines = ["# heads compare: query-reading heads side by side", "",
             f"{len(summaries)} models, {seconds:.0f} s. Causal effect = |normalised patch effect| of a head's output (clean into corrupted). "
             f"Heads are masked with the {' / '.join(masks)} mask ({MASK_WORDS.get(masks[0], masks[0]) if len(masks) == 1 else 'see each model'}); "
             "a set's effect share is the share of the clean-vs-corrupted logit difference lost when the set is masked together.", ""]
    for name, s in summaries.items():
        key = "retrieval_score" if "retrieval_score" in s["spearman_attention_vs_causal"] else "qr_score"
        rho = s["spearman_attention_vs_causal"][key]
        largest = s["largest_k"]
        low, high = s["random_k_effect_share_ci"]
        lines.append(
            f"- **{name}** ({s['task']}, {s['n_heads']} {s['heads']} heads, {s['mask']} mask): {_fmt(s['sparsity']['causal'])} of heads carry >= 0.1 of the "
            f"logit difference alone, {_fmt(s['sparsity']['qr'])} are QR heads"
            + (f", {_fmt(s['sparsity']['retrieval'])} retrieval heads" if "retrieval" in s["sparsity"] else "")
            + f". Masking the top {s['k']} heads by {s['detector']} score ({', '.join(s['topk_heads'])}) together loses {_fmt(s['topk_effect_share'])} "
            f"of the logit difference, k random other heads {_fmt(s['random_k_effect_share'])} (95% CI {_fmt(low)} to {_fmt(high)}, "
            f"{s['draws']} draws, {s['random_draws_distinct']} distinct sets); {_above(s['topk_effect_share'], high)} than that interval; "
            f"every head together: {_fmt(s['all_heads_effect_share'])}. "
            f"Spearman {key} vs causal: {_fmt(rho['rho'])} (95% CI {_fmt(rho['ci'][0])} to {_fmt(rho['ci'][1])}). "
            f"Masking the top {largest}: {s['masking_metric']} {_fmt(s['unmasked'])} -> {_fmt(s['masked_top_k'][largest])}; "
            f"{largest} random: {_fmt(s['masked_random_k'][largest])} (95% CI {_fmt(s['masked_random_k_ci'][largest][0])} to "
            f"{_fmt(s['masked_random_k_ci'][largest][1])}, {s['masked_random_k_draws_distinct'][largest]} distinct sets in "
            f"{s['masked_random_k_draws'][largest]} draws). Causal effect centred at relative depth "
            f"{_fmt(s['depth_centre_causal'])}; stages: {', '.join(st['name'] for st in s['stages'])}.")
    lines.append("")
    if question is None:
        lines.append("The two-GenIR-models question needs one encoder-decoder and one decoder-only GenIR model in the run: not asked.")
    else:
        q = question
        lines += [f"**Same relative depth?** {'Yes' if q['same_relative_depth'] else 'No'}: the causal effect of {q['encoder_decoder']}'s cross-attention "
                  f"heads is centred {_fmt(q['depth_centre_gap'])} of the depth away from {q['decoder_only']}'s self-attention heads "
                  f"(one layer of the shallower decoder is {_fmt(q['layer_spacing'])}).",
                  f"**Bridging / interaction in the decoder-only model?** {'Yes' if q['bridging_and_interaction'] else 'No'}: the stage localiser "
                  f"finds {', '.join(q['decoder_only_stages'])} in {q['decoder_only']}."]
    return "\n".join(lines) + "\n"


@atomic
def run_heads_compare(models: dict[str, object], data, out, config: CompareConfig | None = None, *, progress: bool = True) -> dict:
    """Score and compare every model of `models` (name -> loaded model); `data`: None (each GenIR model's card names its data)
    or a RetrievalDataset with matched pairs for every GenIR model (NIAH models generate their trials). Module docstring: what it writes."""
    config = config or CompareConfig()
    if not models:
        raise GenIRError("no models to compare")
    out = Path(out)
    started = time.time()
    record = config_record(config)
    results, summaries, frames = {}, {}, {"scores": [], "masking": []}
    for name, gm in models.items():
        t0 = time.time()
        with nullcontext() if progress else no_bars():  # progress=False silences the helpers' bars too (the ranking of a split)
            result = score_heads(gm, name, config, progress=progress, dataset=data)
        results[name] = result
        prov = provenance(model=gm.path, config=record, seed=config.seed, started=t0, data_hash_records=result.counts["data_hash"], task=result.task)
        folder = out / name
        write_table(result.scores, folder / "head_scores", prov)
        write_table(result.deciding, folder / "deciding_positions", prov)
        write_table(result.masking.assign(model=name), folder / "masking", prov)
        write_table(result.set_effects.assign(model=name), folder / "set_effects", prov)
        result.stages.save(folder / "stages.json")
        summaries[name] = {**compare_model(result, config), "seconds": round(time.time() - t0, 1), "model_path": gm.path}
        frames["scores"].append(result.scores)
        frames["masking"].append(result.masking.assign(model=name))
    scores, masking = pd.concat(frames["scores"], ignore_index=True), pd.concat(frames["masking"], ignore_index=True)
    question = genir_question(summaries)
    seconds = time.time() - started
    prov = provenance(model=",".join(str(gm.path) for gm in models.values()), config=record, seed=config.seed, started=started,
                      data_hash_records={n: r.counts["data_hash"] for n, r in results.items()})
    tidy = pd.DataFrame([{"model": n, "mask": s["mask"], "metric": m, "value": float(v)} for n, s in summaries.items()
                         for m, v in (("n_heads", s["n_heads"]), ("topk_effect_share", s["topk_effect_share"]), ("random_k_effect_share", s["random_k_effect_share"]),
                                      ("all_heads_effect_share", s["all_heads_effect_share"]),
                                      *((f"sparsity_{k}", v) for k, v in s["sparsity"].items()),
                                      *((f"spearman_{k}", v["rho"]) for k, v in s["spearman_attention_vs_causal"].items()),
                                      ("depth_centre_causal", s["depth_centre_causal"]))])
    write_table(tidy, out / "comparison", prov)
    figures = {"depth_profile": str(plot_depth_profiles(scores, out / "figures" / "depth_profile")),
               "masking_curves": str(plot_masking_curves(masking, out / "figures" / "masking_curves")),
               "attention_vs_causal": str(plot_attention_vs_causal(scores, out / "figures" / "attention_vs_causal"))}
    tables = [str(p) for p in write_display(comparison_table(summaries), out / "tables" / "heads_compare",
                                            "Query-reading heads side by side: sparsity, logit difference lost when the top-k vs k random heads are masked together, "
                                            "attention vs causal rank correlation, masking curves (the mask column names the masking)")]
    summary = {**summaries, "_genir_question": question, "_figures": figures, "_tables": tables, "_seconds": round(seconds, 1)}
    with written_atomically(out / "SUMMARY.md") as tmp:
        tmp.write_text(summary_markdown(summaries, question, seconds))
    with written_atomically(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary

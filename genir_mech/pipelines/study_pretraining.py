"""The study "what makes the decoder stages appear: pretraining or tokenization?", end to end.

    from genir_mech.pipelines.study_pretraining import StudyConfig, run_study
    summary = run_study("runs/study-models", "paper/pretraining-study", StudyConfig())
    summary["models"]["t5-scratch"]["hits@1"], summary["models"]["t5-span"]["stage_names"]

Four GenIR models on the same corpus and DSI recipe (`study_models`): a T5 from scratch, a T5 from a
span-corruption base (the embedded `dsi-synth`), a BERT2BERT from the packaged MiniLM, and a T5 from a
span-corruption base with a subword (BPE) tokenizer. Each is made sure to exist by its `genir-mech train`
requests (a finished run is a no-op, so a fresh clone rebuilds them), then analysed by the existing
pipelines: retrieval eval, stages (with bootstrap), contributions, logit lens, the stage ablation table
(zero / mean / cross-model against the model's own un-fine-tuned initialisation) and the encoder swap with
that initialisation's encoder. Each model's analyses go to `<out>/<model>/` and are reused when its
checkpoint has not changed; then `<out>` gets summary.json, the figure (study_profiles.png/.pdf), the
table against the paper's T5-large (stages_vs_paper.md/.tex), SUMMARY.md and numbers.tex (`\\gm` macros).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd

from ..analyses import paper_reference as paper
from ..data.loaders import load_dataset
from ..embedded import checkpoints_folder
from ..errors import GenIRError
from ..figures.study import plot_study_profiles
from ..figures.tables import write_display, write_macros
from ..models.loading import load_genir, load_tokenizer, quiet_weight_loading
from ..models.model_card import ModelCard
from ..provenance import package_versions, written_atomically
from ..stage_definition import StageDefinition
from ..training.loop import LoopConfig, seed_everything
from ..training.train import TrainRequest, initial_model, train_model
from ..vocabulary import STUDY_MODELS
from .ablate import AblateConfig, run_ablate
from .contributions import ContributionsConfig, run_contributions
from .evaluate import EvalConfig, run_eval
from .lens import LensConfig, run_lens
from .stages import StagesConfig, run_stages
from .swap import SwapConfig, run_swap

STUDY_DATA = "synthetic:n_docs=1000,seed=0"  # the corpus every embedded checkpoint was trained on
MODELS = STUDY_MODELS
ABLATION_METHODS = ("zero", "mean", "cross-model")
SUMMARY_VERSION = 1  # bump when a model's summary gains or changes fields: older cached ones are recomputed


def embedded_span_pair() -> tuple[str, str]:
    """The study's `t5-span` model: the embedded span-corruption base and the dsi-synth trained from it, as (base, model).

    Both are folders of the checkpoints folder genir_mech.embedded finds (a clone's `checkpoints/`), which training
    writes into when they are missing; they are named relative to the working folder when they lie below it (run from
    the clone's root: `checkpoints/dsi-synth`), as the study's records name them.
    """
    folder = checkpoints_folder() or Path("checkpoints")
    cwd = Path.cwd().resolve()

    def named(path: Path) -> str:
        resolved = path.resolve()
        return str(resolved.relative_to(cwd)) if resolved.is_relative_to(cwd) else str(path)

    return named(folder / "t5-synth-base"), named(folder / "dsi-synth")


@dataclass(frozen=True)
class StudyModel:
    """One model of the study: the train requests that build it (the last is the GenIR model) and what it tests.

    A model given as a finished `checkpoint` with a saved `initial`isation needs no requests (tests: tiny models).
    """
    name: str
    requests: tuple[TrainRequest, ...]
    what: str
    initial: str | None = None  # a saved un-fine-tuned initialisation to use instead of rebuilding it
    checkpoint: str | None = None  # the GenIR model, when it is not built by `requests`
    from_pretrained: bool | None = None  # with `checkpoint`: whether it started from pretrained weights

    @property
    def path(self) -> str:
        return self.checkpoint or self.requests[-1].out

    @property
    def pretrained(self) -> bool:
        """Whether the model starts from pretrained weights (span corruption or MiniLM), not from a random init."""
        if self.from_pretrained is not None:
            return self.from_pretrained
        return bool(self.requests[-1].base or self.requests[-1].init)


def study_models(models_dir: str | Path, data: str = STUDY_DATA) -> dict[str, StudyModel]:
    """The four models and their train requests; `t5-span` is the embedded checkpoint pair (embedded_span_pair)."""
    d = Path(models_dir)

    def loop(epochs, patience, max_minutes=0.0):
        return LoopConfig(epochs=epochs, patience=patience, seed=0, max_minutes=max_minutes)

    def dsi(out, max_minutes, **kw):  # the dsi-synth recipe (checkpoints/README.md)
        return TrainRequest(data, str(out), "dsi", loop=loop(40, 5, max_minutes), **kw)

    span_base, span_model = embedded_span_pair()
    subword_base = TrainRequest(data, str(d / "t5-span-subword-base"), "span", loop=loop(6, 6, 12.0), tokenizer_kind="bpe", vocab_size=1000)
    models = [
        StudyModel("t5-scratch", (dsi(d / "t5-scratch", 45.0),), "T5 trained from a random initialisation"),
        StudyModel("t5-span", (TrainRequest(data, span_base, "span", loop=loop(6, 6)), dsi(span_model, 40.0, base=span_base)),
                   "T5 fine-tuned from a span-corruption base, word-level tokenizer (the embedded dsi-synth)"),
        StudyModel("bert2bert-minilm", (dsi(d / "bert2bert-minilm", 80.0, init="minilm"),),
                   "BERT2BERT from the pretrained all-MiniLM-L6-v2, WordPiece tokenizer"),
        StudyModel("t5-span-subword", (subword_base, dsi(d / "t5-span-subword", 40.0, base=subword_base.out)),
                   "T5 fine-tuned from a span-corruption base with a BPE tokenizer (1,000 pieces)"),
    ]
    return {m.name: m for m in models}


@dataclass
class StudyConfig:
    """Parameters of `run_study`, each with its default; recorded in summary.json."""
    models: tuple[str, ...] = MODELS
    max_queries: int = 256  # correct validation queries per analysis (seeded sample), as in the demo
    bootstrap: int = 100  # stage-boundary bootstrap resamples
    batch_size: int = 64
    train: bool = True  # False: refuse to train, analyse only models that exist
    data: str = STUDY_DATA
    snapshots: tuple[str, ...] = ()  # models still training: analyse their best checkpoint so far, never train them here
    stage_args: dict = field(default_factory=dict)  # extra StagesConfig fields (tests: ablation=False, for speed)

    def check(self) -> None:
        unknown = [m for m in (*self.models, *self.snapshots) if m not in MODELS]
        if unknown:
            raise GenIRError(f"study pretraining: unknown model {unknown[0]!r} (CLI: --models); choose from {', '.join(MODELS)}")
        if not self.models:
            raise GenIRError("study pretraining: no models given (CLI: --models)")


def snapshot_card(out: str | Path) -> dict:
    """A card for a training still in progress: its history, time and loop from the resume state; its best weights are in `out`."""
    from ..training.resume_state import load_resume_state  # only for snapshots: it loads torch

    state_file = Path(out) / "resume" / "state.pt"
    if not state_file.exists() or not (Path(out) / "config.json").exists():
        raise GenIRError(f"{out}: no resume state and best weights to take a snapshot of (CLI: --snapshot); train it first")
    state = load_resume_state(state_file, f"wait until the training of {out}, run with this genir_mech, "
                                          "saves its next epoch, or drop it from --snapshot")
    return {"objective": "dsi", "history": state.history, "train_seconds": round(state.elapsed, 1), "loop": state.config,
            "best_validation": state.best, "snapshot": True, "trained_at": f"snapshot after epoch {state.epoch + 1}"}


def ensure_trained(model: StudyModel, train: bool = True, snapshot: bool = False) -> list[dict]:
    """Run the model's train requests (each a no-op when that run is finished); returns their model cards.

    `snapshot`: the last run is still training elsewhere; it is never resumed here (that would train it twice at
    once): the earlier runs must be finished, and the last one is described by its resume state.
    """
    cards = []
    for i, req in enumerate(model.requests):
        if snapshot and i == len(model.requests) - 1 and not (Path(req.out) / "model_card.json").exists():
            cards.append(snapshot_card(req.out))
        elif train and not snapshot:
            cards.append(train_model(req))
        elif (Path(req.out) / "model_card.json").exists():
            cards.append(ModelCard.read(req.out).to_json())
        else:
            raise GenIRError(f"study pretraining: {model.name} needs {req.out}, which is not trained (drop --no-train to train it)")
    if model.checkpoint:
        if not (Path(model.checkpoint) / "config.json").exists():
            raise GenIRError(f"study pretraining: {model.name}: no checkpoint at {model.checkpoint}")
        cards.append(ModelCard.read(model.checkpoint).to_json())
    return cards


def initialisation(model: StudyModel, dataset) -> str:
    """Path of the model's un-fine-tuned initialisation: its base checkpoint, or the seeded initial weights rebuilt and saved.

    A from-scratch or MiniLM run draws its initial weights right after seeding (training.train.initial_model); the
    same seed and tokenizer give the same weights. A from-scratch T5 is rebuilt with the trained model's own saved
    tokenizer (the shape only needs its size), so its vocabulary lines up whatever order the corpus tokenizer had.
    """
    if model.initial:
        return model.initial
    final = model.requests[-1]
    if final.base:
        return final.base
    out = Path(final.out).with_name(f"{Path(final.out).name}-init")
    if not (out / "config.json").exists():
        req = final if final.init else replace(final, tokenizer=final.out)
        seed_everything(req.loop.seed)
        init, tokenizer = initial_model(req, dataset)
        trained = load_tokenizer(final.out)
        if tokenizer.get_vocab() != trained.get_vocab():
            raise GenIRError(f"{model.name}: the rebuilt initialisation's vocabulary differs from {final.out}'s; cannot compare them")
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        init.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return str(out)


def training_facts(model: StudyModel, cards: list[dict]) -> dict:
    """Epochs, minutes and why each training run stopped, from the model cards."""
    runs = []
    outs = [r.out for r in model.requests] + ([model.checkpoint] if model.checkpoint else [])
    for out, card in zip(outs, cards):
        history = card.get("history") or []
        loop = card.get("loop") or {}
        epochs, seconds = len(history), float(card.get("train_seconds") or 0.0)
        cap = float(loop.get("max_minutes") or 0.0)
        stopped = ("still training: best checkpoint so far" if card.get("snapshot") else "unknown" if not history else "epoch budget" if epochs >= int(loop.get("epochs") or 0)
                   else "time cap" if cap and history and history[-1]["seconds"] > cap * 60 else "early stopping")
        runs.append({"out": out, "objective": card.get("objective"), "epochs": epochs, "epochs_budget": loop.get("epochs"),
                     "train_minutes": round(seconds / 60, 1), "max_minutes": cap, "stopped_by": stopped,
                     "best_validation": card.get("best_validation")})
    final = runs[-1]
    return {"epochs": final["epochs"], "train_minutes": final["train_minutes"], "stopped_by": final["stopped_by"],
            "total_train_minutes": round(sum(r["train_minutes"] for r in runs), 1), "training_runs": runs}


def entity_names(dataset) -> list[str]:
    """The entity names the queries ask about, cut out of queries whose template is `<words> {name} <words>` alone."""
    names = set()
    for q in dataset.queries:
        template = getattr(q, "template", None) or ""
        if template.count("{") == 1 and "{name}" in template:
            prefix, suffix = template.split("{name}")
            if q.text.startswith(prefix) and q.text.endswith(suffix):
                names.add(q.text[len(prefix):len(q.text) - len(suffix)])
    return sorted(names)


def pieces_per_entity(tokenizer, names: list[str]) -> float | None:
    """Mean number of tokens an entity name is split into (1.0 for a word-level tokenizer); None without names."""
    return round(sum(len(tokenizer.tokenize(n)) for n in names) / len(names), 3) if names else None


def _spans(stages: StageDefinition) -> list[list[int]]:
    return [[min(s.layers), max(s.layers)] for s in stages.stages if s.layers]


def dominant_components(mean_ratio_by_layer: dict[str, list[float]], stages: StageDefinition) -> dict[str, str]:
    """Per stage, the component type with the largest mean contribution ratio over the stage's layers."""
    out = {}
    for s in stages.stages:
        if s.layers:
            means = {kind: sum(v[i] for i in s.layers) / len(s.layers) for kind, v in mean_ratio_by_layer.items()}
            out[s.name] = max(means, key=means.get)
    return out


def analyse(model: StudyModel, gm, init, data, out: Path, config: StudyConfig, progress: bool = True) -> dict:
    """The existing pipelines on one model, each into `out/<step>`; returns the model's summary (JSON-able)."""
    queries = dict(max_queries=config.max_queries, batch_size=config.batch_size)
    timings: dict[str, float] = {}

    def step(name, fn):
        t0 = time.time()
        if progress:
            print(f"== {model.name}: {name}", flush=True)
        value = fn()
        timings[name] = round(time.time() - t0, 1)
        return value

    retrieval = step("retrieval", lambda: run_eval(gm, data, out / "retrieval", EvalConfig(split="test", batch_size=config.batch_size)))
    summary = {"hits@1": retrieval["hits@1"], "hits@10": retrieval["hits@10"], "mrr": retrieval["mrr"], "test_queries": retrieval.get("n_queries"),
               "decoder_layers": gm.n_layers("decoder"), "family": gm.adapter.family, "init": init.path, "vocabulary": len(gm.tokenizer),
               "pieces_per_entity": pieces_per_entity(gm.tokenizer, entity_names(data)), "seconds": timings}
    try:
        found = step("stages", lambda: run_stages(gm, data, out / "stages", StagesConfig(**queries, bootstrap=config.bootstrap, **config.stage_args), progress=progress))
    except GenIRError as exc:  # e.g. fewer than two correct validation queries: nothing to localise
        return {**summary, "n_stages": None, "stage_spans": None, "stage_names": None, "analysis_error": str(exc)}
    stages = StageDefinition.load(found["stage_definition"])
    contrib = step("contributions", lambda: run_contributions(gm, data, out / "contributions", ContributionsConfig(**queries, stages=stages), progress=progress))
    lens = step("logit lens", lambda: run_lens(gm, data, out / "lens", LensConfig(**queries, stages=stages), progress=progress))
    ablation = step("stage ablation", lambda: run_ablate(gm, data, out / "ablate", AblateConfig(**queries, stages=stages, methods=ABLATION_METHODS), other=init, progress=progress))
    swap = step("encoder swap", lambda: run_swap(gm, data, out / "swap", SwapConfig(batch_size=config.batch_size), encoders=[init]))
    return {
        **summary,
        "n_stages": len(_spans(stages)),
        "stage_spans": _spans(stages),
        "stage_names": [s.name for s in stages.stages if s.layers],
        "stage_fractions": [[a / summary["decoder_layers"], (b + 1) / summary["decoder_layers"]] for a, b in _spans(stages)],
        "priming_stage": "priming" in stages.names(),
        "matches_paper": found["matches_paper"],
        "boundary_stability": found["boundary_stability"],
        "n_stages_bootstrap": found["n_stages_bootstrap"],
        "stages_report": found["report"],
        "n_queries": found["n_queries"],
        "mean_ratio_by_layer": contrib["mean_ratio_by_layer"],
        "dominant_by_stage": dominant_components(contrib["mean_ratio_by_layer"], stages),
        "lens_median_relevant_rank_by_layer": lens["median_relevant_rank_by_layer"],
        "ablation_pct_left_rank1": ablation["pct_left_rank1"],
        "swap_vanilla_encoder": swap.get("vanilla"),
        "seconds": timings,
    }


def _cached(path: Path, key: dict) -> dict | None:
    try:
        cached = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cached if cached.get("cache_key") == key else None


def run_study(models_dir: str | Path, out: str | Path, config: StudyConfig | None = None, progress: bool = True,
              specs: dict[str, StudyModel] | None = None) -> dict:
    """Train what is missing, analyse each model (reusing unchanged ones), then write the study's summary, figure and table.

    `specs` replaces `study_models(models_dir)` (tests: tiny models under the same four names).
    """
    config = config or StudyConfig()
    config.check()
    models_dir, out, started = Path(models_dir), Path(out), time.time()
    if models_dir.exists() and not models_dir.is_dir():
        raise GenIRError(f"models dir {models_dir} (CLI: --models-dir): exists and is not a directory")
    if not config.train and not models_dir.is_dir():
        raise GenIRError(f"models dir {models_dir} (CLI: --models-dir): no such directory, and --no-train forbids building the models there")
    specs = specs or study_models(models_dir, config.data)
    data = load_dataset(config.data)
    results: dict[str, dict] = {}
    for name in config.models:
        model = specs[name]
        t0 = time.time()
        cards = ensure_trained(model, config.train, snapshot=name in config.snapshots)
        train_wall = round(time.time() - t0, 1)
        key = {"version": SUMMARY_VERSION, "trained_at": [c.get("trained_at") for c in cards], "config": _config_record(config)}
        cached = _cached(out / name / "model_summary.json", key)
        if cached is None:
            with quiet_weight_loading():
                gm = load_genir(model.path)
                init = load_genir(initialisation(model, data), self_check=False)
            cached = {"cache_key": key, "model": name, "what": model.what, "path": model.path, "pretrained": model.pretrained,
                      **training_facts(model, cards), **analyse(model, gm, init, data, out / name, config, progress)}
            with written_atomically(out / name / "model_summary.json") as tmp:
                tmp.write_text(json.dumps(cached, indent=1))
        results[name] = {**{k: v for k, v in cached.items() if k != "cache_key"}, "train_wall_seconds_this_run": train_wall}
    return write_study(out, results, config, round(time.time() - started, 1))


def _config_record(config: StudyConfig) -> dict:
    # which models run, may train or are snapshots does not change any model's analyses (nor its cache key)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items() if k not in ("models", "train", "snapshots")}


# -- the study's outputs ---------------------------------------------------------------------------------

TITLES = {"t5-scratch": "T5, from scratch", "t5-span": "T5, span-pretrained", "bert2bert-minilm": "BERT2BERT, MiniLM",
          "t5-span-subword": "T5, span-pretrained, BPE"}
MACRO_NAMES = {"t5-scratch": "Scratch", "t5-span": "Span", "bert2bert-minilm": "MiniLM", "t5-span-subword": "Subword"}
TABLE_KINDS = ("mlp", "cross_attn", "self_attn")


def comparison_table(results: dict[str, dict]) -> pd.DataFrame:
    """Stage boundaries as fractions of depth, dominant components and ablation losses, per model and stage, with the paper's rows first."""
    rows = paper.stage_rows()
    for name, r in results.items():
        for (first, last), stage, (lo, hi) in zip(r.get("stage_spans") or [], r.get("stage_names") or [], r.get("stage_fractions") or []):
            losses = r["ablation_pct_left_rank1"]
            row = {"model": name, "stage": stage, "layers": f"{first}-{last}", "depth_from": lo, "depth_to": hi,
                   "dominant": r["dominant_by_stage"].get(stage)}
            for method in ABLATION_METHODS:
                for kind in TABLE_KINDS:
                    row[f"{method} {kind}"] = losses.get(f"{stage}/{kind}", {}).get(method)
            rows.append(row)
    table = pd.DataFrame(rows)
    ordered = ["model", "stage", "layers", "depth_from", "depth_to", "dominant"] + [f"{m} {k}" for m in ABLATION_METHODS for k in TABLE_KINDS]
    return table.reindex(columns=ordered).set_index(["model", "stage"])


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def findings(results: dict[str, dict]) -> list[str]:
    """The study's answers in plain sentences, each computed from the results (including the "no" answers)."""
    lines = []
    analysed = {n: r for n, r in results.items() if r.get("n_stages") is not None}
    for name, r in results.items():
        if r.get("n_stages") is None:
            lines.append(f"- **{name}**: test Hits@1 {r['hits@1']:.3f} after {r['epochs']} epochs ({r['train_minutes']} min, stopped by "
                         f"{r['stopped_by']}); no stages could be located: {r.get('analysis_error')}")
            continue
        spans = ", ".join(f"{n} {a}-{b}" for n, (a, b) in zip(r["stage_names"], r["stage_spans"]))
        lines.append(f"- **{name}** ({r['what']}): test Hits@1 {r['hits@1']:.3f} after {r['epochs']} epochs ({r['train_minutes']} min, stopped by "
                     f"{r['stopped_by']}); {r['n_stages']} stage(s) over {r['decoder_layers']} decoder layers: {spans}; priming stage: "
                     f"{_yes_no(r['priming_stage'])}; the paper's three stages: {_yes_no(r['matches_paper'])}.")
    pretrained = [n for n, r in analysed.items() if r["pretrained"]]
    primed = [n for n in pretrained if analysed[n]["priming_stage"]]
    scratch_primed = [n for n, r in analysed.items() if not r["pretrained"] and r["priming_stage"]]
    lines.append("")
    if pretrained:
        answer = "yes" if primed and not scratch_primed else "no"
        detail = (f"a priming stage appears in {', '.join(primed)}" if primed else "no pretrained model shows a priming stage") + (
            f"; the from-scratch model has one too ({', '.join(scratch_primed)})" if scratch_primed else "")
        lines.append(f"**Did pretraining produce a priming stage?** {answer}: {detail}.")
    if {"t5-span", "t5-span-subword"} <= set(analysed):
        a, b = analysed["t5-span"], analysed["t5-span-subword"]
        same = a["stage_names"] == b["stage_names"]
        lines.append(f"**Did the subword tokenizer change the stages?** {_yes_no(not same)}: word-level {', '.join(a['stage_names'])}; "
                     f"BPE {', '.join(b['stage_names'])}.")
    weak = [n for n, r in results.items() if r["hits@1"] < 0.5]
    if weak:
        lines.append(f"Caveat: {', '.join(weak)} retrieve(s) poorly (test Hits@1 below 0.5 after the capped training), so their profiles "
                     "describe partly trained models; the stages are located on their correct validation queries only.")
    for name, r in analysed.items():
        for stage in r["stage_names"]:
            means = {k: v.get("mean") for k, v in ((key.split("/")[1], v) for key, v in r["ablation_pct_left_rank1"].items()
                                                   if key.split("/")[0] == stage) if v.get("mean") is not None}
            crucial = max(means, key=means.get) if means else None
            if crucial and crucial != r["dominant_by_stage"].get(stage) and means[crucial] >= 50:
                lines.append(f"In {name}'s {stage} stage the largest contribution ratio is the {r['dominant_by_stage'].get(stage)}'s, but "
                             f"mean-ablating {crucial} there sends {means[crucial]:.1f}% of the correct queries off rank 1 "
                             f"({r['dominant_by_stage'].get(stage)}: {means.get(r['dominant_by_stage'].get(stage), float('nan')):.1f}%).")
    snapshots = [n for n, r in results.items() if r["stopped_by"].startswith("still training")]
    if snapshots:
        lines.append(f"{', '.join(snapshots)} was analysed at its best checkpoint so far (epoch "
                     + ", ".join(str(results[n]["epochs"]) for n in snapshots) + ") while its training went on.")
    post_norm = [n for n, r in results.items() if r.get("family") in ("bert2bert", "bart")]
    if post_norm:
        lines.append(f"{', '.join(post_norm)} is post-LayerNorm: a component's contribution is measured before the LayerNorm "
                     "(README, 'Post-LayerNorm families'), so its ratios are not on the same scale as the T5s'.")
    capped = [n for n, r in results.items() if r["stopped_by"] == "time cap"]
    if capped:
        lines.append(f"Training of {', '.join(capped)} was cut by its wall-time cap (not by early stopping).")
    lines.append(f"The paper's T5-large: test Hits@1 {paper.TEST_HITS_AT_1} (NQ10k), stages "
                 + ", ".join(f"{n} {a}-{b}" for n, (a, b, _) in paper.STAGES.items()) + f" of {paper.DECODER_LAYERS} layers.")
    return lines


def study_facts(results: dict[str, dict], wall_seconds: float) -> dict[str, str]:
    """`\\gm` macros for the paper: per model Hits@1, epochs, minutes, number and names of stages, priming yes/no."""
    facts = {"StudyTrainMinutes": f"{sum(r['total_train_minutes'] for r in results.values()):.0f}",
             "StudyAnalysisMinutes": f"{sum(sum(r['seconds'].values()) for r in results.values()) / 60:.0f}"}
    for name, r in results.items():
        m = "Study" + MACRO_NAMES[name]
        facts[f"{m}HitsOne"] = f"{r['hits@1']:.3f}"
        facts[f"{m}Epochs"] = str(r["epochs"])
        facts[f"{m}Minutes"] = f"{r['train_minutes']:.0f}"
        facts[f"{m}StoppedBy"] = r["stopped_by"]
        facts[f"{m}Stages"] = "none" if r.get("n_stages") is None else str(r["n_stages"])
        facts[f"{m}StageList"] = "none located" if r.get("n_stages") is None else ", ".join(
            f"{n} ({a}-{b})" for n, (a, b) in zip(r["stage_names"], r["stage_spans"]))
        facts[f"{m}Priming"] = _yes_no(bool(r.get("priming_stage")))
        facts[f"{m}Layers"] = str(r["decoder_layers"])
        if r.get("pieces_per_entity") is not None:
            facts[f"{m}PiecesPerEntity"] = f"{r['pieces_per_entity']:.2f}"
    return facts


def write_study(out: Path, results: dict[str, dict], config: StudyConfig, wall_seconds: float) -> dict:
    """summary.json, the figure, the comparison table, SUMMARY.md and numbers.tex in `out`; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {"study": "pretraining", "data": config.data, "config": _config_record(config), "models": results,
               "paper": {"model": paper.MODEL, "hits@1": paper.TEST_HITS_AT_1, "decoder_layers": paper.DECODER_LAYERS,
                         "stages": {n: [a, b] for n, (a, b, _) in paper.STAGES.items()}},
               "wall_seconds": wall_seconds, "versions": package_versions()}
    profiles = pd.DataFrame([{"model": n, "component": k, "layer": i, "value": v}
                             for n, r in results.items() for k, values in (r.get("mean_ratio_by_layer") or {}).items() for i, v in enumerate(values)])
    files = {}
    if not profiles.empty:
        stages = {n: StageDefinition.load(out / n / "stages" / "stages.json") for n, r in results.items() if r.get("n_stages") is not None}
        titles = {n: f"{TITLES[n]} (Hits@1 {r['hits@1']:.2f})" for n, r in results.items()}
        files["figure"] = str(out / "study_profiles.png")
        plot_study_profiles(profiles, stages, out / "study_profiles", titles)
    caption = ("Decoder stages against the paper's T5-large: stage layers and depth fractions, the dominant component by mean "
               "contribution ratio, and % of correct queries leaving rank 1 when a component type is ablated over the stage")
    files["table"] = [str(p) for p in write_display(comparison_table(results), out / "stages_vs_paper", caption)]
    lines = ["# Pretraining study: what makes the decoder stages appear?", "", *findings(results), "",
             "![contribution profiles](study_profiles.png)", "", Path(files["table"][0]).read_text().strip(), "",
             f"Time: training {sum(r['total_train_minutes'] for r in results.values()):.0f} min in all (model cards), analyses "
             f"{sum(sum(r['seconds'].values()) for r in results.values()) / 60:.0f} min (per model, when first run); this run "
             f"{wall_seconds / 60:.1f} min (finished trainings and unchanged analyses reused)."]
    with written_atomically(out / "SUMMARY.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    files["numbers"] = str(write_macros(study_facts(results, wall_seconds), out / "numbers.tex"))
    summary["files"] = files
    with written_atomically(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary

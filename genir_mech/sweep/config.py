"""The sweep config file: one YAML naming models, data, experiments and the output folder, validated before anything runs.

    config = load_config("examples/paper.yaml")             # SweepConfig, or one GenIRError naming the key and the fix
    config.experiments[0].run, config.experiments[0].params  # "eval", {"split": "test"}

    out: runs/paper                  # where units, caches and the final tables go
    data: null                       # data spec; default: the data each model's model_card.json names
    device: cpu                      # cpu | cuda | cuda:N  (models may override)
    dtype: float32                   # float32 | bfloat16 | float16
    models:
      dsi: dsi-synth                                              # name: folder, embedded checkpoint or hub id
      base: {path: t5-synth-base, self_check: false}
      hub: {path: owner/name, revision: main}                     # hub ids: a branch, tag or commit
    experiments:
      - {run: eval, model: dsi, split: test}
      - {run: stages, max_queries: 256, bootstrap: 100}
      - {run: ablate, stages: "@stages", methods: [zero, mean, cross-model], other: base}
      - {run: patch, target: [component, head], n_pairs: 32}

An experiment's keys are `run` (the pipeline), `name` (default: `run`; its
output folder under <out>/<model>/), `model` (a model name or a list of them;
default: the first model) and the fields of that pipeline's config dataclass
(pipelines.<run>.<Run>Config), plus `other` (ablate: the cross-model) and
`encoders` (swap). `stages: "@NAME"` takes the stage definition found by the
stages experiment NAME of the same model. The schema is generated from the
dataclasses with pydantic, so a new config field is a new key here with no
edit. Checks, in order: structure and values (unknown keys, types, ranges,
choices; types are strict: `true` is no count, `8.0` no integer, `"8"` no
number, while an integer is a valid float; `threads` is positive, `n_boot`
and `bootstrap` at most the bounds their modules define), files (checkpoints, data, pairs, specs, stage files), then the
models' shapes (layer and head indices beyond a model), read from each
checkpoint's config without loading weights. Every failure is one
GenIRError line: `CONFIG: experiments[2] (ablate).methods: ...; fix: ...`.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, ValidationError, create_model, field_validator

from ..errors import GenIRError
from ..verbs import options  # the argument types: one definition of a valid checkpoint, data spec, file
from ..vocabulary import DTYPE_NAMES

DTYPES = DTYPE_NAMES
RESERVED = ("run", "name", "model")  # experiment keys that are not pipeline parameters
EXTRA_KEYS = {"ablate": {"other": (str | None, None)}, "swap": {"encoders": (list[str] | None, None)},
              "patch": {"pairs": (str | None, None)}, "attribute": {"pairs": (str | None, None)}}
EXPANDED = {"patch": "target"}  # a list here becomes one unit per value


def pipeline_configs() -> dict[str, type]:
    """Experiment name -> the config dataclass of its pipeline (imports the pipelines: torch)."""
    from ..pipelines.ablate import AblateConfig
    from ..pipelines.attribute import AttributeConfig
    from ..pipelines.circuit import CircuitConfig
    from ..pipelines.contributions import ContributionsConfig
    from ..pipelines.evaluate import EvalConfig
    from ..pipelines.lens import LensConfig
    from ..pipelines.patch import PatchConfig
    from ..pipelines.read import ReadConfig
    from ..pipelines.stages import StagesConfig
    from ..pipelines.swap import SwapConfig
    return {"eval": EvalConfig, "contributions": ContributionsConfig, "lens": LensConfig, "stages": StagesConfig, "ablate": AblateConfig,
            "circuit": CircuitConfig, "read": ReadConfig, "swap": SwapConfig, "patch": PatchConfig, "attribute": AttributeConfig}


# -- value rules shared by every pipeline's fields (names as in the dataclasses) -----------------------------

POSITIVE = {"batch_size", "max_queries", "n_pairs", "bootstrap", "n_boot", "rows_per_forward", "pairs_per_batch", "top_k", "min_stage_size", "max_stages"}
NON_NEGATIVE = {"seed", "examples", "verify_top_k"}


def choices() -> dict[str, tuple[str, ...]]:
    """Field name -> allowed values (each read from the module that defines it)."""
    from ..analyses.ablation import METHODS
    from ..models.components import KINDS
    from ..patching.attribution import METHODS as ATTRIBUTION_METHODS
    from ..patching.engine import DIRECTIONS
    from ..patching.pairs import ALIGNMENTS
    from ..patching.specs import TARGETS
    return {"methods": METHODS, "kinds": KINDS, "target": TARGETS, "direction": DIRECTIONS, "align": ALIGNMENTS, "verify_method": ATTRIBUTION_METHODS}


def maxima() -> dict[str, int]:
    """Field name -> the largest value allowed (each bound read from the module that owns the value, as the CLI reads it)."""
    from ..analyses.stage_localisation import MAX_BOOTSTRAP
    from ..patching.aggregation import MAX_N_BOOT
    return {"n_boot": MAX_N_BOOT, "bootstrap": MAX_BOOTSTRAP}


def _check_value(name: str, value):
    if value is None:
        return value
    if name in POSITIVE and isinstance(value, (int, float)) and value <= 0:
        raise ValueError(f"must be a positive number, got {value}")
    largest = maxima().get(name)
    if largest is not None and isinstance(value, (int, float)) and value > largest:
        raise ValueError(f"must be at most {largest}")
    if name in NON_NEGATIVE and isinstance(value, (int, float)) and value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    allowed = choices().get(name)
    if allowed:
        for v in ([value] if isinstance(value, str) else value):
            if v not in allowed:
                raise ValueError(f"{v!r} is not one of {', '.join(allowed)}")
    return value


_SCHEMAS: dict[str, type[BaseModel]] = {}
STRICT = {int: StrictInt, float: StrictFloat, bool: StrictBool}


def strict(hint):
    """`hint` with int, float and bool made strict wherever they occur (in unions and lists too): YAML's `true` is no
    count, `8.0` no integer and `"8"` no number; an integer is still a valid float."""
    if isinstance(hint, type) and hint in STRICT:
        return STRICT[hint]
    args = typing.get_args(hint)
    if not args:
        return hint
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(strict(a) for a in args)]
    try:
        return origin[tuple(a if a is Ellipsis else strict(a) for a in args)]
    except TypeError:  # a generic that cannot be subscripted again: left as it is
        return hint


def experiment_schema(run: str) -> type[BaseModel]:
    """The pydantic model of one experiment kind, generated from its pipeline's config dataclass."""
    if run not in _SCHEMAS:
        cls = pipeline_configs()[run]
        hints = typing.get_type_hints(cls)
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if f.name == EXPANDED.get(run):
                hint = hint | list[str]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            fields[f.name] = (strict(hint), default)
        fields.update(EXTRA_KEYS.get(run, {}))
        fields.update(run=(str, ...), name=(str | None, None), model=(str | list[str] | None, None))
        validators = {"values": field_validator(*[n for n in fields if n not in RESERVED], mode="after")(lambda v, info: _check_value(info.field_name, v))}
        _SCHEMAS[run] = create_model(f"{run.capitalize()}Experiment", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                                     __validators__=validators, **fields)
    return _SCHEMAS[run]


class ModelEntry(BaseModel):
    """One model of the sweep: a checkpoint directory, embedded checkpoint or hub id (models.names), and how to load it."""
    model_config = ConfigDict(extra="forbid")
    path: str
    revision: str | None = None  # hub ids only: a branch, tag or commit
    docid_pattern: str | None = None
    self_check: StrictBool = True
    device: str | None = None
    dtype: str | None = None

    def model_dump(self, **kwargs) -> dict[str, Any]:
        # no revision key when none is given, so the unit keys of sweeps written before it existed stay the same
        dumped = super().model_dump(**kwargs)
        if dumped.get("revision", 0) is None:
            del dumped["revision"]
        return dumped


class SweepFile(BaseModel):
    """The top level of a sweep config."""
    model_config = ConfigDict(extra="forbid")
    out: str
    data: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    threads: StrictInt | None = None  # torch threads per process (default: torch's own)
    models: dict[str, str | ModelEntry]
    experiments: list[dict[str, Any]]

    @field_validator("threads")
    @classmethod
    def _threads(cls, value):
        if value is not None and value < 1:
            raise ValueError("must be a positive integer (torch threads per process)")
        return value


# -- the validated config ----------------------------------------------------------------------------------


@dataclass
class Experiment:
    """One experiment of the sweep: a pipeline run on one or more models with its parameters."""
    name: str
    run: str
    models: list[str]
    params: dict[str, Any]  # the pipeline config fields given (defaults left to the dataclass) plus other / encoders
    index: int  # position in the file, for error messages

    @property
    def where(self) -> str:
        return f"experiments[{self.index}] ({self.run} {self.name!r})"


@dataclass
class SweepConfig:
    """A validated sweep: models by name, the data spec, experiments in file order, and where results go."""
    source: str
    out: Path
    data: str | None
    device: str
    dtype: str
    threads: int | None
    models: dict[str, ModelEntry]
    experiments: list[Experiment]
    raw: dict = field(default_factory=dict)  # the file as read, recorded in provenance

    def model_device(self, name: str) -> str:
        return self.models[name].device or self.device

    def model_dtype(self, name: str) -> str:
        return self.models[name].dtype or self.dtype


def _loc(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _pydantic_error(source: str, prefix: str, exc: ValidationError, known: list[str]) -> GenIRError:
    # the deepest error: of a union (a model given as a name or as a mapping), the alternative that got furthest
    err = max(exc.errors(), key=lambda e: len(e["loc"]))
    # a union's alternatives each add a loc part naming the type (e.g. 'str', 'list[str]'); drop them
    loc = tuple(p for p in err["loc"] if isinstance(p, int) or not any(c in str(p) for c in "[]()") and p not in ("str", "int", "float", "bool", "list", "dict", ModelEntry.__name__))
    where = ".".join(filter(None, [prefix, _loc(loc)]))
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        return GenIRError(f"{source}: {where}: unknown key {key!r}; fix: remove it or use one of {', '.join(known)}")
    if kind == "missing":
        return GenIRError(f"{source}: {where}: missing required key; fix: add it")
    message = err["msg"].removeprefix("Value error, ")
    return GenIRError(f"{source}: {where}: {message} (got {err.get('input')!r}); fix: give a valid value")


def _argument(source: str, where: str, check, value: str, fix: str = "correct the path") -> None:
    try:
        check(value)
    except argparse.ArgumentTypeError as exc:
        raise GenIRError(f"{source}: {where}: {exc}; fix: {fix}") from None


def _model_path(source: str, name: str, entry: ModelEntry) -> None:
    """The model's folder or hub id must be valid now (models.names); an embedded checkpoint's short name becomes its folder."""
    from ..models.names import locate_model
    try:
        located = locate_model(entry.path, entry.revision)
    except GenIRError as exc:
        key, fix = ("revision", "remove it (hub ids only)") if entry.revision and "revision" in str(exc) else ("path", "correct the path")
        raise GenIRError(f"{source}: models.{name}.{key}: {exc}; fix: {fix}") from None
    if located.embedded:
        entry.path = located.source  # found from any working folder by every later step (loading, model card, shape)


def load_config(path: str | Path, out: str | Path | None = None, edit=None) -> SweepConfig:
    """Read and validate a sweep config (structure, values, files, model shapes); `out` overrides the file's `out`,
    and `edit(raw) -> raw` may change the file's content before validation (e.g. the demo's command-line options)."""
    source = str(path)
    path = Path(path)
    if not path.is_file():
        raise GenIRError(f"{source}: no such config file")
    from ..data.loaders import read_utf8
    text = read_utf8(path)  # not UTF-8: one line naming the file and line
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GenIRError(f"{source}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(raw, dict):
        raise GenIRError(f"{source}: expected a mapping with out, models and experiments at the top level")
    if edit is not None:
        raw = edit(raw)
    if out is not None:
        raw = {**raw, "out": str(out)}
    try:
        top = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(source, "", exc, list(SweepFile.model_fields)) from None
    if not top.models:
        raise GenIRError(f"{source}: models: empty; fix: name at least one model (name: path)")
    if not top.experiments:
        raise GenIRError(f"{source}: experiments: empty; fix: list at least one experiment")
    for key, value in (("dtype", top.dtype), *((f"models.{n}.dtype", m.dtype) for n, m in top.models.items() if isinstance(m, ModelEntry))):
        if value is not None and value not in DTYPES:
            raise GenIRError(f"{source}: {key}: {value!r} is not one of {', '.join(DTYPES)}; fix: use one of them")
    models = {n: (m if isinstance(m, ModelEntry) else ModelEntry(path=m)) for n, m in top.models.items()}
    for name, entry in models.items():
        _model_path(source, name, entry)
        if entry.docid_pattern:
            _argument(source, f"models.{name}.docid_pattern", options.docid_regex, entry.docid_pattern)
    if top.data:
        _argument(source, "data", options.data_spec, top.data, "correct the data spec or path")
    _argument(source, "out", options.output_directory, top.out)
    for name in models:
        check_name(source, f"models.{name}", name)
    experiments = _experiments(source, top.experiments, list(models))
    config = SweepConfig(source, Path(top.out), top.data, top.device, top.dtype, top.threads, models, experiments, raw)
    check_shapes(config)
    return config


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # model keys and experiment names become folder names under out


def check_name(source: str, where: str, name: str) -> None:
    """A model key or experiment name is one plain folder name: no separators, no `..`, nothing absolute."""
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise GenIRError(f"{source}: {where}: {name!r} is not a plain name (it names a folder under out); "
                         "fix: use letters, digits, '_', '-' and '.', starting with a letter or digit")


def _experiments(source: str, entries: list[dict], model_names: list[str]) -> list[Experiment]:
    configs = pipeline_configs()
    found: list[Experiment] = []
    names: dict[tuple[str, str], Experiment] = {}
    for i, entry in enumerate(entries):
        prefix = f"experiments[{i}]"
        if not isinstance(entry, dict):
            raise GenIRError(f"{source}: {prefix}: expected a mapping with a 'run' key; fix: write {{run: eval, ...}}")
        run = entry.get("run")
        if run not in configs:
            raise GenIRError(f"{source}: {prefix}.run: {run!r} is not an experiment; fix: use one of {', '.join(configs)}")
        schema = experiment_schema(run)
        try:
            checked = schema.model_validate(entry)
        except ValidationError as exc:
            raise _pydantic_error(source, f"{prefix} ({run})", exc, [k for k in schema.model_fields]) from None
        params = {k: getattr(checked, k) for k in entry if k not in RESERVED}
        given = checked.model if checked.model is not None else model_names[0]
        models = [given] if isinstance(given, str) else list(given)
        exp = Experiment(checked.name or run, run, models, params, i)
        check_name(source, f"{exp.where}.name", exp.name)
        for m in models + ([params["other"]] if params.get("other") else []) + list(params.get("encoders") or []):
            if m not in model_names:
                raise GenIRError(f"{source}: {exp.where}: model {m!r} is not in models; fix: use one of {', '.join(model_names)} or add it to models")
        for m in models:
            if (m, exp.name) in names:
                raise GenIRError(f"{source}: {exp.where}.name: {exp.name!r} is already the name of {names[(m, exp.name)].where} on model {m!r}; "
                                 "fix: give each experiment its own name")
            names[(m, exp.name)] = exp
        _check_files(source, exp)
        stages = params.get("stages")
        if isinstance(stages, str) and stages.startswith("@"):
            ref = stages[1:]
            for m in models:
                target = names.get((m, ref))
                if target is None or target.run != "stages" or target.index >= i:
                    raise GenIRError(f"{source}: {exp.where}.stages: {stages!r} names no stages experiment listed before it on model {m!r}; "
                                     "fix: add {run: stages, name: " + ref + "} above it, or give a stage spec")
        found.append(exp)
    return found


def _check_files(source: str, exp: Experiment) -> None:
    """Files an experiment reads must exist now: stage files, circuit files, pairs and spec files."""
    p = exp.params
    if isinstance(p.get("stages"), str) and not p["stages"].startswith("@"):
        from ..stage_definition import StageDefinition
        try:
            StageDefinition.parse(p["stages"])
        except GenIRError as exc:
            raise GenIRError(f"{source}: {exp.where}.stages: {exc}; fix: a spec like a=0-2,b=3-7 or an existing stages.json") from None
    trec_run = p.get("trec_run")
    if trec_run and (Path(trec_run).is_absolute() or ".." in Path(trec_run).parts or str(trec_run).startswith("~")):
        raise GenIRError(f"{source}: {exp.where}.trec_run: {trec_run!r} would be written outside the sweep's out; "
                         "fix: a file name such as run.txt (written into the unit's folder)")
    for key in ("pairs", "specs"):
        if p.get(key):
            _argument(source, f"{exp.where}.{key}", options.existing_file, str(p[key]))
    circuit = p.get("circuit")
    if isinstance(circuit, str) and Path(circuit).suffix.lower() in (".json", ".yaml", ".yml"):
        _argument(source, f"{exp.where}.circuit", options.existing_file, circuit)
    if exp.run == "patch" and bool(p.get("target")) == bool(p.get("specs")):
        raise GenIRError(f"{source}: {exp.where}: give exactly one of target or specs; fix: add target: [component, head] or specs: FILE")


# -- model shapes: layer and head indices against each model's config --------------------------------------


def model_shape(config: SweepConfig, name: str):
    """`shape_of` the sweep's model `name` (its path or hub id at its revision)."""
    entry = config.models[name]
    return shape_of(entry.path, name, entry.revision)


def shape_of(path: str, name: str, revision: str | None = None):
    """A stand-in model with the adapter's shape (layers, heads, kinds) read from the checkpoint config, no weights loaded."""
    from transformers import AutoConfig

    from ..models.adapters import adapter_class
    from ..models.loading import model_files
    from ..models.names import locate_model
    try:
        located = locate_model(path, revision)
        hf_config = AutoConfig.from_pretrained(located.source, **model_files(located).kwargs)
    except GenIRError as exc:
        raise GenIRError(f"models.{name}: {exc}") from None
    except OSError as exc:
        raise GenIRError(f"models.{name}: {path}: cannot read the config ({str(exc).splitlines()[0]})") from None
    adapter = adapter_class(hf_config, path)(SimpleNamespace(config=hf_config))
    return SimpleNamespace(adapter=adapter, n_layers=adapter.n_layers, path=path, name=located.short_name)


def check_shapes(config: SweepConfig) -> None:
    """Stage specs, circuits, spec files and kinds of every experiment against the shapes of its models."""
    from ..analyses.circuit import parse_circuit
    from ..patching.specs import load_specs, validate_specs
    from ..stage_definition import StageDefinition
    shapes = {}
    for exp in config.experiments:
        for m in exp.models:
            if m not in shapes:
                shapes[m] = model_shape(config, m)
            gm, p = shapes[m], exp.params
            fix = f"fix: use indices within the model ({config.models[m].path}: {gm.n_layers('decoder')} decoder layers, {gm.adapter.n_heads} heads)"
            stages = p.get("stages")
            try:
                if isinstance(stages, str) and not stages.startswith("@"):
                    StageDefinition.resolve(stages, gm.n_layers("decoder"))
                if p.get("kinds"):
                    missing = [k for k in p["kinds"] if k not in gm.adapter.kinds("decoder")]
                    if missing:
                        raise GenIRError(f"kinds {missing} not in this model's decoder ({', '.join(gm.adapter.kinds('decoder'))})")
                if p.get("specs"):
                    validate_specs(gm, load_specs(p["specs"]))
                if p.get("circuit") and not (isinstance(stages, str) and stages.startswith("@")):
                    parse_circuit(gm, p["circuit"], StageDefinition.resolve(stages, gm.n_layers("decoder"), fallback=False) if stages else None)
                _check_capabilities(config, exp, gm, shapes)
            except GenIRError as exc:
                key = next((k for k in ("stages", "kinds", "specs", "circuit", "encoders", "target") if p.get(k) and k in str(exc).lower()), None)
                key = key or next((k for k in ("circuit", "specs", "kinds", "stages", "encoders", "target") if p.get(k)), "run")
                if key in ("encoders", "target"):
                    fix = "fix: run this experiment on encoder-decoder models of one width only"
                raise GenIRError(f"{config.source}: {exp.where}.{key} on model {m!r}: {exc}; {fix}") from None


def _check_capabilities(config: SweepConfig, exp: Experiment, gm, shapes: dict) -> None:
    """What an experiment needs of its models, known from their configs before any weight loads: the encoder swap
    needs encoder-decoder models of one width; encoder-position patching needs an encoder."""
    p = exp.params
    if exp.run == "swap":
        for name in p.get("encoders") or []:
            if name not in shapes:
                shapes[name] = model_shape(config, name)
            other = shapes[name]
            for model in (gm, other):
                model.adapter.require("encoder", "cross_attn", analysis="the encoder swap")
            if other.adapter.d_model != gm.adapter.d_model:
                raise GenIRError(f"encoders: {name} has d_model {other.adapter.d_model} but the decoder's model has {gm.adapter.d_model}; "
                                 "encoder outputs only fit a decoder of the same width")
    targets = p.get("target") if exp.run == "patch" else None
    for target in [targets] if isinstance(targets, str) else targets or []:
        if target.startswith("encoder"):
            gm.adapter.require("encoder", analysis=f"target {target}")

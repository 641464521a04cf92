"""The command-line options verbs share, declared once, with the argument types that validate them at parse time.

    def add_arguments(p): model_arguments(p); query_arguments(p); stage_argument(p); output_arguments(p, "ablate")
    def handler(args): gm, dataset = load_model(args), ...; out = output_dir(args, "ablate")

Each group adds the same flags with the same help everywhere; the matching
config fields are filled by `query_fields` / `pair_fields`. Every value a user
types is checked by an argument type here (counts, fractions, stage specs,
name lists, regexes, paths), so a bad argument fails in well under two
seconds, before any model loads. That is also why this module and the verb
modules import no torch, transformers or nnsight at module level: the
handlers import their pipelines, and the names and bounds the options offer
come from genir_mech.vocabulary, which the library imports too.
"""
from __future__ import annotations

import argparse
import ast
import functools
import os
import re
from pathlib import Path

from ..errors import GenIRError
from ..vocabulary import ALL_STEPS, DTYPE_NAMES, MAX_BOOTSTRAP, MAX_N_BOOT, MAX_QUERY_TOKENS, PAIR_ALIGNMENTS, PATCH_DIRECTIONS

PACKAGE = Path(__file__).resolve().parents[1]


# -- names and defaults the library defines, read without importing it ------------------------------------

@functools.lru_cache(maxsize=None)  # several verbs read the same module: parse it once per process (--help stays fast)
def _module_tree(module: str) -> ast.Module:
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def dataclass_defaults(module: str, cls: str) -> dict[str, object]:
    """Field name -> default of a dataclass of literal defaults in genir_mech.<module>, read from the source: importing the
    training and data modules that define them would import torch (seconds) just to print --help or check an option."""
    body = next(n.body for n in _module_tree(module).body if isinstance(n, ast.ClassDef) and n.name == cls)
    return {n.target.id: ast.literal_eval(n.value) for n in body if isinstance(n, ast.AnnAssign) and n.value is not None}


# -- argument types: each turns the typed text into a value or raises one clear line ------------------------

def _number(kind, text: str, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """A count that must be at least 1 (batch sizes, numbers of queries, pairs, resamples, top-k)."""
    value = _number(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _at_most(text: str, maximum: int, why: str) -> int:
    value = positive_int(text)
    if value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value} ({why})")
    return value


def n_boot_count(text: str) -> int:
    """Bootstrap resamples of the patching pairs: 1 to MAX_N_BOOT (each resample is held in memory)."""
    return _at_most(text, MAX_N_BOOT, "every resample is held in memory")


def bootstrap_count(text: str) -> int:
    """Stage-boundary bootstrap resamples: 1 to MAX_BOOTSTRAP (each one segments the decoder again)."""
    return _at_most(text, MAX_BOOTSTRAP, "every resample segments the decoder again")


def non_negative_int(text: str) -> int:
    """A count where 0 means off (e.g. --verify-top-k) or a seed; negative values are errors."""
    value = _number(int, text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def fraction(text: str) -> float:
    """A share of queries or examples, between 0 and 1."""
    value = _number(float, text, "a number between 0 and 1")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def positive_float(text: str) -> float:
    """A strictly positive finite number (a penalty multiplier, a learning rate)."""
    value = _number(float, text, "a positive number")
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (0 often means off, e.g. a wall-clock cap)."""
    value = _number(float, text, "a number >= 0")
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def number_list(kind, what: str):
    """A type for comma-separated numbers, each checked by `kind` (e.g. positive_int, fraction); at least one."""
    def parse(text: str) -> tuple:
        values = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        return values
    parse.__name__ = what
    return parse


def _checked(text: str, check) -> str:
    try:
        check()
    except GenIRError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def stage_spec(text: str) -> str:
    """A stage definition (name=first-last,... or a stages.json), parsed now so an empty or reversed range fails at once."""
    from ..stage_definition import StageDefinition  # light: json and errors only
    return _checked(text, lambda: StageDefinition.parse(text))


def name_list(allowed: tuple[str, ...], what: str):
    """A type for comma-separated names from `allowed` (at least one, no unknown ones)."""
    def parse(text: str) -> str:
        names = split_list(text)
        if not names:
            raise argparse.ArgumentTypeError(f"expected one or more {what}, comma-separated, from {', '.join(allowed)}")
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(map(repr, unknown))}; choose from {', '.join(allowed)}")
        return text
    parse.__name__ = what
    return parse


def docid_regex(text: str) -> str:
    """A regex with at least one capture group (the document id)."""
    try:
        groups = re.compile(text).groups
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"invalid regular expression {text!r} ({exc})") from None
    if groups < 1:
        raise argparse.ArgumentTypeError(f"{text!r} needs one capture group for the document id, e.g. @DOC_ID_(.+?)@")
    return text


def checkpoint(text: str) -> str:
    """A model: a checkpoint directory (with config.json), an embedded checkpoint's short name or a hub id (models.names).

    An embedded checkpoint becomes its folder's path, so every later step finds it from any working folder;
    a directory or hub id stays as typed. A path that does not exist fails here, at once (no hub lookup).
    """
    from ..models.names import locate_model  # light: the file system and the embedded checkpoints only
    try:
        located = locate_model(text)
    except GenIRError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return located.source if located.embedded else text


def check_checkpoint(text: str, what: str) -> str:
    """`checkpoint` for a path that did not come from the command line (e.g. a default read from a model card)."""
    try:
        return checkpoint(text)
    except argparse.ArgumentTypeError as exc:
        raise GenIRError(f"{what}: {exc}") from None


def revision_name(text: str) -> str:
    """A hub revision: a branch, tag or commit (whether it exists is checked when the model loads)."""
    if not text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"expected a branch, tag or commit of the hub model (e.g. main), got {text!r}")
    return text


def _refuse_local_revision(model: str, revision: str) -> None:
    """GenIRError when --revision is given with a local or embedded --model (named as typed: an embedded one by its short name)."""
    from ..embedded import embedded_checkpoint
    from ..models.names import locate_model
    short = Path(model).name
    located_embedded = embedded_checkpoint(short)
    locate_model(short if located_embedded is not None and located_embedded == Path(model) else model, revision)


class _ModelAndRevision(argparse.Action):
    """Stores --model or --revision; once both are given, a revision for a local or embedded model is refused while parsing."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        model, revision = getattr(namespace, "model", None), getattr(namespace, "revision", None)
        if model is not None and revision is not None:
            try:
                _refuse_local_revision(model, revision)
            except GenIRError as exc:
                parser.error(f"argument {option_string}: {exc}")


model_action = _ModelAndRevision  # the action of every --model that has a --revision (verbs declaring --model themselves)


def revision_argument(p) -> None:
    """--revision, for the hub model of --model (refused with a local or embedded checkpoint while parsing)."""
    p.add_argument("--revision", type=revision_name, action=_ModelAndRevision,
                   help="hub models: the branch, tag or commit of --model to load (default: its default branch); "
                        "not for a checkpoint directory or an embedded checkpoint")


def existing_file(text: str) -> str:
    """A file that must exist now (pairs, specs, intervention files)."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: {'is a directory, expected a file' if path.is_dir() else 'no such file'}")
    return text


def data_spec(text: str) -> str:
    """A data spec: `synthetic:...` (its options checked now), `ir_datasets:<id>` (the library installed), or a directory that must exist."""
    if text.startswith("ir_datasets:"):
        import importlib.util
        if not text.split(":", 1)[1]:
            raise argparse.ArgumentTypeError("ir_datasets: names no dataset; e.g. ir_datasets:msmarco-passage/dev/small")
        if importlib.util.find_spec("ir_datasets") is None:
            raise argparse.ArgumentTypeError(f"{text}: ir_datasets is not installed (pip install ir_datasets)")
        return text
    if text.startswith("synthetic"):
        from ..data.loaders import parse_synthetic_spec  # light: json, csv and the pure-Python generator
        return _checked(text, lambda: parse_synthetic_spec(text))
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such data directory (or a spec 'synthetic:n_docs=N,...' or 'ir_datasets:<id>')")
    return text


def output_directory(text: str) -> str:
    """An output directory: not an existing file, and the nearest existing ancestor writable (checked before any compute)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a directory")
    ancestor = path.resolve()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is a file, so the directory cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is not writable")
    return text




def device_name(text: str) -> str:
    """cpu, cuda, cuda:N or mps (whether the device exists is checked when the model loads)."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N")
    return text


# -- option groups -----------------------------------------------------------------------------------------

def measure_list(text: str) -> tuple[str, ...]:
    """Comma-separated ir_measures names (or the aliases hits@1, mrr, ...), each parsed now."""
    from ..retrieval.measures import parse_measures  # light: ir_measures only
    names = split_list(text)
    _checked(text, lambda: parse_measures(names))
    return names


def device_arguments(p) -> None:
    """--device and --dtype, passed to load_genir for every model the verb loads."""
    p.add_argument("--device", type=device_name, default="cpu", help="where the model runs: cpu (default), cuda, cuda:N")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="weights and activations: float32 (default), bfloat16, float16")


MODEL_HELP = "checkpoint directory, embedded checkpoint (e.g. dsi-synth) or hub id (e.g. gpt2, owner/name)"


def model_arguments(p, what: str = MODEL_HELP, data: bool = True) -> None:
    p.add_argument("--model", required=True, type=checkpoint, action=_ModelAndRevision, help=what)
    revision_argument(p)
    if data:
        p.add_argument("--data", type=data_spec,
                       help="data: a BEIR directory, a directory of DSI JSONL, synthetic:n_docs=N,..., or ir_datasets:<id> "
                            "(default: the data named in the checkpoint's model_card.json)")
    p.add_argument("--docid-pattern", type=docid_regex, help="regex with one group matching docid tokens (default @DOC_ID_(.+?)@)")
    default = MAX_QUERY_TOKENS
    p.add_argument("--max-query-tokens", type=positive_int, default=default,
                   help=f"queries longer than this many tokens are cut, with a warning counting them (default {default})")
    device_arguments(p)


def split_argument(p, preferred: str, what: str) -> None:
    """--split; without it the preferred split when the data has it, else the split it has (said in a warning or the summary)."""
    p.add_argument("--split", help=f"{what} (default {preferred} when the data has it, else the split it has, e.g. a BEIR set's test)")


def query_arguments(p, split: str = "validation", batch_size: int = 64, sample: bool = True) -> None:
    split_argument(p, split, "analyse the model's correct queries of this split")
    if sample:
        p.add_argument("--max-queries", type=positive_int, help="a seeded random sample of at most N correct queries (default all)")
        p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the query sample and bootstraps (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=batch_size, help=f"queries per forward pass (default {batch_size})")


def stage_argument(p, help: str | None = None) -> None:
    p.add_argument("--stages", type=stage_spec,
                   help=help or "stage definition: a spec like priming=0-2,bridging=3-5,interaction=6-7 or the stages.json written by "
                                "`genir-mech stages` (default: three even thirds of the decoder, with a warning)")




def step_list(text: str):
    """`all`, or comma-separated decoding steps >= 0 (checked against the model's docid length once it is loaded)."""
    if text.strip().lower() == ALL_STEPS:
        return ALL_STEPS
    steps = [non_negative_int(t) for t in split_list(text)]
    if not steps:
        raise argparse.ArgumentTypeError(f"expected {ALL_STEPS!r} or decoding steps such as 0,1, got {text!r}")
    return sorted(set(steps))


def step_arguments(p) -> None:
    """--step T or --steps all|T,U: analyse the decoder at decoding step(s) of a multi-token docid; the tables get a `step` column."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--step", type=non_negative_int,
                       help="decoding step t of the docid: the decoder is teacher-forced to [start] + s[:t] and the metric is the "
                            "correct token s[t] (rank among the trie-valid continuations); 0 for atomic docids (default: the ranking step, no step column)")
    group.add_argument("--steps", type=step_list, help=f"several steps: {ALL_STEPS!r} (0 .. docid length - 1) or a list such as 0,2")


def steps_field(args):
    """The steps a verb's config takes: None (no step asked), an int (--step) or the --steps value."""
    return args.step if getattr(args, "step", None) is not None else getattr(args, "steps", None)


_SIZE_UNITS = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "k": 2**10, "m": 2**20, "g": 2**30, "b": 1}


def memory_size(text: str) -> int:
    """A memory size in bytes: 2GiB, 512MiB, 1.5GB, 800M or a plain number of bytes."""
    lowered = text.strip().lower().replace(" ", "")
    unit = next((u for u in _SIZE_UNITS if lowered.endswith(u)), "")
    try:
        value = float(lowered[: len(lowered) - len(unit)]) * _SIZE_UNITS.get(unit, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a memory size such as 2GiB, 512MiB or 1.5GB, got {text!r}") from None
    if not 1 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive memory size, got {text!r}")
    return int(value)


def rows_argument(p, what: str = "rows per forward pass") -> None:
    """The one memory knob of the verbs that run the intervention executor: --max-memory (or a fixed --rows-per-forward)."""
    p.add_argument("--max-memory", type=memory_size,
                   help=f"memory for the activations of one forward pass, e.g. 2GiB; sets the {what} (default: a quarter of the memory available at start)")
    p.add_argument("--rows-per-forward", type=positive_int, help=f"a fixed number of {what} instead of the number --max-memory holds")


def pair_arguments(p) -> None:
    p.add_argument("--pairs", type=existing_file,
                   help="JSONL or CSV of pairs: clean,corrupted[,clean_doc,corrupted_doc] or clean_query_id,corrupted_query_id "
                        "(default: the dataset's matched pairs)")
    p.add_argument("--n-pairs", type=positive_int, help="use the first N (kept) pairs (default all)")
    p.add_argument("--all-pairs", action="store_true", help="keep pairs even when the model does not rank both documents first")
    p.add_argument("--align", choices=PAIR_ALIGNMENTS,
                   help="pad the shorter query of a pair at its start or end when tokenizations differ in length (default: refuse such pairs)")
    p.add_argument("--direction", choices=PATCH_DIRECTIONS, default="denoise",
                   help="denoise: clean into corrupted (default); noise: corrupted into clean")
    p.add_argument("--pairs-per-batch", type=positive_int, default=64, help="pairs whose source activations are cached together (default 64)")
    p.add_argument("--n-boot", type=n_boot_count, default=1000, help="bootstrap resamples of the pairs for confidence intervals (default 1000)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="bootstrap seed (default 0)")


def output_arguments(p, verb: str, what: str = "one JSON object summarising the result") -> None:
    p.add_argument("--out", type=output_directory, help=f"output directory (default {default_out(verb, '<model>')})")
    p.add_argument("--json", action="store_true", help=f"print {what}")


def default_out(verb: str, model: str) -> Path:
    """The one output folder rule: runs/<verb>/<model folder name>."""
    return Path("runs") / verb / Path(model).name


def output_dir(args, verb: str) -> Path:
    """--out, else the default folder; the default is checked here, and --revision against --model (handlers call this before loading a model)."""
    check_revision(args)
    if args.out:
        return Path(args.out)
    out = default_out(verb, args.model)
    try:
        output_directory(str(out))
    except argparse.ArgumentTypeError as exc:
        raise GenIRError(f"default output directory {exc}; give --out") from None
    return out


def split_list(text: str | None) -> tuple[str, ...] | None:
    """`a,b, c` -> ("a", "b", "c"); None stays None."""
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


def check_revision(args) -> None:
    """Refuse --revision with a local or embedded --model at once, before anything loads (one line)."""
    if getattr(args, "revision", None) is not None and getattr(args, "model", None):
        _refuse_local_revision(args.model, args.revision)


def load_model(args, path: str | None = None, self_check: bool = True):
    """The model of --model (at --revision, for a hub model), or `path` (another model the verb loads: --other, --encoder-from)."""
    revision = getattr(args, "revision", None) if path is None else None
    if path is None:
        check_revision(args)
    from ..models.loading import load_genir  # torch, transformers, nnsight: only once the arguments are valid
    if getattr(args, "max_memory", None) is not None:
        from ..interventions.memory import set_budget
        set_budget(args.max_memory)  # the verb's sweeps size their forward passes from it (rows_per_forward None)
    gm = load_genir(path or args.model, docid_pattern=getattr(args, "docid_pattern", None), self_check=self_check,
                    device=getattr(args, "device", "cpu"), dtype=getattr(args, "dtype", "float32"), revision=revision)
    gm.max_query_tokens = getattr(args, "max_query_tokens", None) or gm.max_query_tokens
    gm.check_query_limit()  # beyond the model's positions: one line now, before any data is loaded
    return gm


def load_data(args, gm):
    """The dataset named by --data, else the one the checkpoint's model card names."""
    from ..models.loading import resolve_dataset
    return resolve_dataset(gm, args.data)


def query_fields(args) -> dict:
    """QueryConfig fields from query_arguments."""
    return {"split": args.split, "max_queries": getattr(args, "max_queries", None), "seed": getattr(args, "seed", 0), "batch_size": args.batch_size}


def pair_fields(args) -> dict:
    """PairConfig fields from pair_arguments."""
    return {"n_pairs": args.n_pairs, "all_pairs": args.all_pairs, "align": args.align, "seed": args.seed}


def load_pair_data(args, gm):
    """What the patching pipelines take as data: the pairs of --pairs (read against the dataset, when there is one), else the dataset."""
    from ..models.loading import resolve_dataset
    from ..patching.pairs import read_pairs
    try:
        dataset = resolve_dataset(gm, args.data)
    except GenIRError:
        if not args.pairs:
            raise
        dataset = None  # a pairs file of texts (and docids) needs no dataset
    return read_pairs(args.pairs, dataset) if args.pairs else dataset


def print_pair_counts(counts: dict, all_pairs: bool) -> None:
    rule = ("kept: all pairs with two different documents (--all-pairs)" if all_pairs
            else "kept where the model ranks the clean doc first for the clean query and the corrupted doc first for the corrupted query")
    print(f"pairs: {counts['n_used']} used of {counts['n_candidates']} ({counts['n_kept']} {rule})")

"""Load a GenIR checkpoint (local directory, embedded checkpoint or hub id) and check it before any analysis.

    gm = load_genir("dsi-synth")                    # an embedded checkpoint, by its short name, from any working folder
    gm = load_genir("AnReu/DSI-large-NQ10k")       # hub id: the hub, or the local Hugging Face cache when it cannot be reached
    gm = load_genir("owner/name", revision="v1")    # a hub id at a branch, tag or commit
    lm = load_lm("lm-niah")                         # decoder-only language model, no docids needed

Names are resolved by models.names (`locate_model`: a local folder wins, then
an embedded checkpoint, then a hub id; a path that does not exist fails at
once), and a hub model is checked with one quick request before it loads
(`hub_files`), so an unreachable hub costs seconds, not a retry loop.

The adapter family comes from the config, so T5 (encoder-decoder) and
Llama/Qwen2 (decoder-only) checkpoints load through one function. On load,
the logit lens of the final decoder residual must reproduce the
model's own logits; a model whose adapter maps the wrong modules fails here,
loudly, instead of producing wrong analyses later. A model with a NaN or
infinite weight, or whose forward pass produces one, is refused the same
way (it would otherwise rank with plausible-looking metrics), and a truncated
safetensors file is named before transformers tries to read it. Weights are
read from safetensors files only (`use_safetensors=True`): a checkpoint whose
weights are pickle files (pytorch_model.bin) is refused with the way to
convert it, since unpickling a file can run code.
"""
from __future__ import annotations

import json
import struct
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer
from transformers.utils import logging as hf_logging

from ..data.corpus import RetrievalDataset
from ..data.loaders import load_dataset
from ..docids import ATOMIC, AtomicDocids, SequenceDocids
from ..errors import GenIRError
from ..provenance import record_hub_revision
from ..vocabulary import DTYPE_NAMES
from .adapters import adapter_class
from .components import Site
from .execution import run
from .genir_model import GenIRModel
from .model_card import FILE_NAME as CARD_FILE
from .model_card import ModelCard
from .names import HubFiles, Located, hub_files, locate_model

SELF_CHECK_QUERIES = ["what is the capital", "who founded it", "a"]
DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16)))  # the names, in vocabulary order
# the self-check's tolerance (relative to the largest logit): half precision rounds the lens and the logits differently
SELF_CHECK_ATOL = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 1e-2}


def check_device(device: str) -> str:
    """`device` if torch can place a model there now; a GenIRError naming what is missing otherwise."""
    try:
        place = torch.device(device)
    except RuntimeError as exc:
        raise GenIRError(f"device {device!r}: not a torch device ({exc}); use cpu, cuda or cuda:N") from None
    if place.type == "cuda" and not torch.cuda.is_available():
        raise GenIRError(f"device {device!r}: no CUDA GPU is available here; use --device cpu")
    if place.type == "cuda" and place.index is not None and place.index >= torch.cuda.device_count():
        raise GenIRError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def load_genir(path_or_id: str, docid_pattern: str | None = None, device: str = "cpu", self_check: bool = True, dtype: str = "float32",
               revision: str | None = None) -> GenIRModel:
    """Load a GenIR checkpoint of any supported family (T5, mT5, BART, BERT2BERT, T5Gemma encoder-decoder; Llama/Qwen2/GPT-2 decoder-only) and check it.

    Example:
        >>> gm = load_genir("dsi-synth")                                 # an embedded checkpoint (or a directory with config.json)
        >>> gm = load_genir("AnReu/DSI-large-NQ10k")                     # hub id (the hub, or its copy in the local cache)
        >>> gm = load_genir("AnReu/DSI-large-NQ10k", revision="main")    # at a branch, tag or commit (hub ids only)
        >>> gm = load_genir(path, docid_pattern=r"<doc_(\\d+)>")         # docid tokens spelled another way
        >>> gm.adapter.family, gm.adapter.sides                          # ('llama', ('decoder',)) for a Llama checkpoint
        >>> gm = load_genir(path, device="cuda", dtype="bfloat16")         # on a GPU, in half precision

    The config picks the adapter (`models.adapters.adapter_class`), and the
    adapter names the transformers Auto class that loads the weights. With
    `self_check`, the logit lens of the final residual must reproduce the
    model's logits (`check_logit_lens`), or loading fails.
    """
    return _load(path_or_id, device, self_check, dtype, docid_pattern=docid_pattern, docids_required=True, revision=revision)


def load_lm(path_or_id: str, device: str = "cpu", self_check: bool = True, dtype: str = "float32", revision: str | None = None) -> GenIRModel:
    """Load a decoder-only language model (Llama, Qwen2, GPT-2; no docid tokens needed) by path or hub id, self-checked.

    Example:
        >>> lm = load_lm("lm-niah")                                      # an embedded checkpoint
        >>> lm = load_lm("Qwen/Qwen2.5-0.5B-Instruct", revision="main")   # hub id, at a branch, tag or commit
        >>> lm.adapter.family, lm.docids                                 # ('qwen2', None) unless it has docid tokens

    The decoder-only sibling of `load_genir`, for analyses of language models
    (retrieval heads): the same adapter lookup, finite-weight check and logit-lens
    self-check; docids are detected when the tokenizer has them and None
    otherwise. A tokenizer without a padding token (Llama-3) pads with its
    end-of-sequence token; padding is masked, so the choice does not matter.
    An encoder-decoder checkpoint is refused (use `load_genir`).
    """
    return _load(path_or_id, device, self_check, dtype, docid_pattern=None, docids_required=False, revision=revision)


def model_files(located: Located) -> HubFiles:
    """How to load a located model: a local folder as it is; a hub id after one quick check (`names.hub_files`)."""
    return HubFiles(None) if located.is_local else hub_files(located)


def _load(path_or_id: str, device: str, self_check: bool, dtype: str, docid_pattern: str | None, docids_required: bool,
          revision: str | None = None) -> GenIRModel:
    if dtype not in DTYPES:
        raise GenIRError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    check_device(device)
    located = locate_model(path_or_id, revision)
    source = located.source
    if located.is_local:
        found = sorted(located.path.glob("*.safetensors"))
        if not found:
            raise GenIRError(no_safetensors_message(path_or_id, sorted(p.name for p in located.path.iterdir() if p.suffix in PICKLE_SUFFIXES)))
        for weights in found:
            check_safetensors(weights)
    files = model_files(located)
    try:
        config = AutoConfig.from_pretrained(source, **files.kwargs)
    except OSError as exc:
        raise GenIRError(f"{path_or_id}: cannot load the config ({str(exc).splitlines()[0]})") from None
    family = adapter_class(config, source)
    if not docids_required and "encoder" in family.sides:
        raise GenIRError(f"{path_or_id}: a {family.family} model is encoder-decoder; language-model analyses need a decoder-only model (load it with load_genir)")
    try:
        with quiet_weight_loading():
            # use_safetensors: a hub model with pickle weights only fails here instead of being unpickled
            model = family.auto_class.from_pretrained(source, use_safetensors=True, **files.kwargs).to(device=device, dtype=DTYPES[dtype]).eval()
            tokenizer = AutoTokenizer.from_pretrained(source, **files.kwargs)
    except (OSError, ValueError) as exc:
        if not located.is_local and "safetensors" in str(exc).lower():
            raise GenIRError(no_safetensors_message(path_or_id, [])) from None
        raise GenIRError(f"{path_or_id}: cannot load the model or tokenizer ({str(exc).splitlines()[0]})") from None
    check_finite_parameters(model, source)
    if docids_required:
        docids = load_docids(source, tokenizer, docid_pattern)
    else:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        try:
            docids = AtomicDocids.detect(tokenizer)
        except GenIRError:
            docids = None
    if not located.is_local:
        record_hub_revision(source, revision, files.commit)
    gm = GenIRModel(model, tokenizer, docids, family(model), located.short_name, source)
    if self_check:
        check_logit_lens(gm, SELF_CHECK_ATOL[dtype])
    return gm


def load_docids(path_or_id: str, tokenizer, docid_pattern: str | None = None):
    """The docid scheme the model card names: atomic tokens detected in the tokenizer, or the sequence mapping beside the weights."""
    card = ModelCard.read(path_or_id) if Path(path_or_id).is_dir() else ModelCard()
    if card.scheme == ATOMIC:
        return AtomicDocids.detect(tokenizer, docid_pattern)
    if docid_pattern:
        raise GenIRError(f"{path_or_id}: its model card names {card.scheme} docids (docids.json), so --docid-pattern does not apply")
    docids = SequenceDocids.load(path_or_id, tokenizer)
    if docids.scheme != card.scheme:
        raise GenIRError(f"{docids.source}: a {docids.scheme} docid mapping, but the model card of {path_or_id} says {card.scheme}")
    return docids


@contextmanager
def quiet_weight_loading():
    """No "Loading weights" bar inside the block (the setting is restored after): every `from_pretrained` of the suite goes through here.

    transformers 5 draws that bar on stderr for every load, even of a tiny model; a verb or pipeline that loads
    several checkpoints, or one per step (training resumes, sweeps, the demo), would repeat it and interleave it
    with the one-line errors and warnings the CLI promises. Our own tqdm bars say what is being done.
    """
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def load_tokenizer(path_or_id: str, revision: str | None = None):
    """The tokenizer of a directory, an embedded checkpoint or a hub id alone (e.g. to count a model's tokens without loading it)."""
    located = locate_model(path_or_id, revision, what="tokenizer")
    files = model_files(located)
    try:
        with quiet_weight_loading():
            return AutoTokenizer.from_pretrained(located.source, **files.kwargs)
    except (OSError, ValueError) as exc:
        raise GenIRError(f"{path_or_id}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from None


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def no_safetensors_message(name: str, pickles: list[str]) -> str:
    """Why a model without safetensors weights is refused, and how to convert it."""
    found = f" (found {', '.join(pickles[:3])}{', ...' if len(pickles) > 3 else ''})" if pickles else ""
    return (f"{name}: no safetensors weights{found}; genir-mech loads safetensors weights only, because pickle weights "
            "(pytorch_model.bin and the like) can run code when loaded. To convert a model you trust: in a trusted "
            "environment, load it with from_pretrained and save it with save_pretrained(folder, safe_serialization=True)")


def check_safetensors(path: Path) -> None:
    """Raise unless `path` is a complete safetensors file: its header parses and its data is as long as the header says.

    transformers reports a truncated file with a traceback from the Rust reader that names neither file nor cause.
    """
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if 8 + header_len > size:
                raise ValueError(f"header of {header_len} bytes, file of {size}")
            header = json.loads(fh.read(header_len))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise GenIRError(f"{path}: not a valid safetensors file (truncated or corrupt: {exc})") from None
    if 8 + header_len + end > size:
        raise GenIRError(f"{path}: truncated safetensors file ({size} bytes, its header needs {8 + header_len + end})")


def check_finite_parameters(model: torch.nn.Module, name: str) -> None:
    """Raise, naming the model and the first such parameter, if any weight is NaN or infinite."""
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                n_bad = int((~torch.isfinite(param)).sum())
                raise GenIRError(f"{name}: parameter {param_name} has {n_bad} non-finite (NaN or inf) value(s); refusing a broken model")


def first_non_finite_module(gm: GenIRModel) -> str | None:
    """Name of the first module (in forward order) whose output holds a NaN or inf on the self-check queries, or None."""
    found: list[str] = []

    def hook(name):
        def check(module, inputs, output):
            tensors = [output] if torch.is_tensor(output) else [t for t in (output if isinstance(output, tuple) else ()) if torch.is_tensor(t)]
            if not found and any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors):
                found.append(name)
        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in gm.hf_model.named_modules() if n]
    try:
        gm.logits(gm.batch(SELF_CHECK_QUERIES))
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def check_logit_lens(gm: GenIRModel, atol: float = 1e-3) -> float:
    """Raise unless projecting the last decoder residual reproduces the logits, and they are finite; returns the max error.

    Example:
        >>> check_logit_lens(tiny_genir())      # ~1e-7; a GenIRError names the adapter when it does not match
    """
    last = Site("decoder", gm.n_layers("decoder") - 1, "", "resid_post")
    result = run(gm, gm.batch(SELF_CHECK_QUERIES), reads=[last])
    if not bool(torch.isfinite(result.logits).all()):
        # `err > tol` is False for NaN, so a broken model would pass the comparison below
        module = first_non_finite_module(gm)
        where = f"first non-finite output: {module}" if module else "the logits"
        raise GenIRError(f"{gm.path}: self-check failed: the model's logits are not finite (NaN or inf; {where})")
    with torch.no_grad():
        lens = gm.adapter.project(result.values[last][:, -1])
    err = float((lens - result.logits).abs().max())
    scale = float(result.logits.abs().max()) or 1.0
    if not err <= atol * max(1.0, scale):  # also refuses a NaN error
        raise GenIRError(
            f"{gm.path}: self-check failed: the logit lens of the final residual differs from the model's logits by {err:.3g}; "
            f"the {gm.adapter.family} adapter does not match this model's modules"
        )
    return err


def resolve_dataset(gm: GenIRModel, spec: str | None) -> RetrievalDataset:
    """The data named on the command line, or else the data the checkpoint was trained on."""
    if spec:
        return load_dataset(spec)
    card = ModelCard.read(gm.path)
    if not card.data:
        raise GenIRError(f"{gm.path}: no model_card.json naming its data; give the data explicitly (CLI: --data)")
    try:
        return load_dataset(card.data)
    except GenIRError as exc:  # name the card, whose spec it is (a bad or oversized spec, a data folder moved away)
        raise GenIRError(f"{Path(gm.path) / CARD_FILE}, field 'data': {exc}") from None

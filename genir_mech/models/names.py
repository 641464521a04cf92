"""Model names as Hugging Face users write them: a local folder, an embedded checkpoint's short name, or a hub id.

    located = locate_model("dsi-synth")                  # an embedded checkpoint, found from any working folder
    located = locate_model("runs/my-model")              # a local folder (it must hold config.json)
    located = locate_model("gpt2", revision="v1.0")      # a hub id, at a branch, tag or commit
    located.source                                       # what from_pretrained takes: the folder, or the hub id
    files = hub_files(located)                           # hub ids: one quick check that the hub serves it, else the local cache

The one rule every command, sweep config and model card reference goes through, in order:

1. an existing local folder wins (`~` expanded); it must be a folder holding config.json;
2. a bare name that is an embedded checkpoint (`dsi-synth`, genir_mech.embedded) is that folder;
3. a name that looks like a path (starts with `.`, `/` or `~`, holds a backslash, has two or more `/`, or
   its first component is a folder here, as in `checkpoints/typo`, or it is `checkpoints/<embedded name>`)
   and does not exist is refused at once, with the embedded checkpoint's short name when its last
   component is one;
4. anything else that is a valid hub id (`gpt2`, `t5-large`, `org/name`) is a hub id;
5. anything else is refused.

A revision (branch, tag or commit) applies to hub ids only. Locating a model reads the file system only:
no network, no torch, so a command-line argument is checked in milliseconds. `hub_files` is the one network
step before loading a hub model: a single metadata request for its config.json with a short timeout and no
retries. When the hub cannot be reached, a copy in the local Hugging Face cache is used (with a warning),
else one line says how to proceed; a missing repository, a missing revision and a gated repository are
one line each.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..embedded import embedded_checkpoint
from ..errors import GenIRError

# Hugging Face repo ids (huggingface_hub.utils.validate_repo_id): `name` or `namespace/name`, ASCII letters, digits,
# `-`, `_` and `.`, at most 96 characters each, not starting or ending with `-` or `.`, no `--` or `..`, no `.git` end.
_HUB_PART = r"(?=[A-Za-z0-9_])[A-Za-z0-9_.\-]{0,95}[A-Za-z0-9_]|[A-Za-z0-9_]"
HUB_ID = re.compile(rf"(?:{_HUB_PART})(?:/(?:{_HUB_PART}))?")
HUB_CHECK_TIMEOUT = 5.0  # seconds for the one metadata request before a hub model loads
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class Located:
    """Where a model name points: a local folder (`path`) or a hub id (`repo_id`, at `revision`)."""

    name: str  # the name as given
    path: Path | None = None  # the local folder (a folder given, or an embedded checkpoint)
    repo_id: str | None = None  # the hub id
    revision: str | None = None  # hub ids only: a branch, tag or commit (None: the default branch)
    embedded: bool = False  # `path` is an embedded checkpoint found by its short name

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def source(self) -> str:
        """What from_pretrained takes: the folder's path, or the hub id."""
        return str(self.path) if self.path is not None else str(self.repo_id)

    @property
    def short_name(self) -> str:
        """The folder name, or the name part of a hub id (e.g. the default output folder's name)."""
        if self.path is not None:
            return self.path.name or self.path.resolve().name
        return str(self.repo_id).rsplit("/", 1)[-1]


def _looks_like_path(name: str) -> bool:
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") >= 2:
        return True
    if "/" not in name:
        return False
    first, last = name.split("/", 1)
    # checkpoints/dsi-synth: an embedded checkpoint's path in a source checkout, typed in another folder
    return Path(first).is_dir() or (first == "checkpoints" and embedded_checkpoint(last) is not None)


def _local(name: str, path: Path, what: str, embedded: bool = False) -> Located:
    if not path.is_dir():
        raise GenIRError(f"{name}: is a file, expected a {what} directory")
    if what == "checkpoint" and not (path / "config.json").is_file():
        raise GenIRError(f"{name}: directory has no config.json; not a HuggingFace checkpoint")
    return Located(name, path=path, embedded=embedded)


def locate_model(name: str, revision: str | None = None, what: str = "checkpoint") -> Located:
    """The local folder or hub id `name` means (rule: module docstring), or one GenIRError line naming the fix.

    `what="tokenizer"` locates a tokenizer alone: its local folder need not hold a model's config.json.

    Example:
        >>> locate_model("dsi-synth").path           # <checkpoints folder>/dsi-synth, from any working folder
        >>> locate_model("gpt2").repo_id             # 'gpt2'
        >>> locate_model("checkpoints/dsi-synht")    # GenIRError: no such checkpoint directory
    """
    name = str(name)
    if not name.strip():
        raise GenIRError("empty model name; give a checkpoint directory, an embedded checkpoint (e.g. dsi-synth) or a hub id")
    if revision is not None and (not revision.strip() or any(c.isspace() for c in revision)):
        raise GenIRError(f"revision {revision!r}: expected a branch, tag or commit of the hub model (e.g. main)")
    path = Path(name).expanduser()
    if path.exists():
        located = _local(name, path, what)
    elif (embedded := embedded_checkpoint(name)) is not None:
        located = _local(name, embedded, what, embedded=True)
    elif _looks_like_path(name):
        last = re.split(r"[\\/]", name.rstrip("/\\"))[-1]
        hint = f"; use {last} (an embedded checkpoint)" if last != name and embedded_checkpoint(last) is not None else ""
        raise GenIRError(f"{name}: no such {what} directory{hint}")
    elif _valid_hub_id(name):
        return Located(name, repo_id=name, revision=revision)
    else:
        raise GenIRError(f"{name}: no such {what} directory, embedded checkpoint or hub id "
                         "(hub ids are name or owner/name: letters, digits, '-', '_' and '.')")
    if revision is not None:
        kind = "an embedded checkpoint" if located.embedded else f"a local {what} directory"
        raise GenIRError(f"{name}: revision {revision!r} applies to hub models only, and this is {kind}; "
                         "remove the revision, or give the folder holding that version")
    return located


def _valid_hub_id(name: str) -> bool:
    return (len(name) <= 96 * 2 + 1 and HUB_ID.fullmatch(name) is not None
            and "--" not in name and ".." not in name and not name.endswith(".git"))


def local_folder(name: str | None) -> str | None:
    """The folder a reference read from a file names (e.g. a model card's `base`), or None when it names none here.

    The same rule as `locate_model`, without raising: a folder relative to the working folder, or an embedded
    checkpoint's short name (as the embedded cards write their base), found from any working folder.
    """
    if not name:
        return None
    try:
        located = locate_model(name)
    except GenIRError:
        return None
    return located.source if located.is_local else None


# -- hub models: one quick check before from_pretrained ------------------------------------------------------


@dataclass(frozen=True)
class HubFiles:
    """How to load a hub model: from the hub at `revision`, or from the local cache only; `commit` when known."""

    revision: str | None
    local_files_only: bool = False
    commit: str | None = None

    @property
    def kwargs(self) -> dict:
        """Keyword arguments for every from_pretrained of the model (config, weights, tokenizer)."""
        return {"revision": self.revision, **({"local_files_only": True} if self.local_files_only else {})}


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cached_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit of `repo_id`'s config.json in the local Hugging Face cache at `revision`, or None when not cached."""
    from huggingface_hub import try_to_load_from_cache
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # an id or revision the hub library refuses: nothing cached for it
        return None
    parts = Path(found).parts if isinstance(found, str) else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


def hub_files(located: Located, timeout: float = HUB_CHECK_TIMEOUT) -> HubFiles:
    """Check that the hub serves `located` (one metadata request for its config.json, no retries) before loading it.

    Returns how to load it: from the hub, or, when the hub cannot be reached (or HF_HUB_OFFLINE is set), from
    the copy in the local Hugging Face cache. Raises one GenIRError line when the repository, the revision or
    access to a gated repository is missing, or when the hub cannot be reached and nothing is cached.
    """
    repo, revision = str(located.repo_id), located.revision
    at = f" at revision {revision!r}" if revision else ""
    cached = cached_commit(repo, revision)
    if _offline():
        if cached is None:
            raise GenIRError(f"{repo}: HF_HUB_OFFLINE is set and the model{at} is not in the local Hugging Face cache; "
                             "unset HF_HUB_OFFLINE on a machine that reaches the hub, or download the model and pass its folder")
        return HubFiles(revision, local_files_only=True, commit=cached)
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, "config.json", revision=revision), timeout=timeout, retry_on_errors=False)
    except GatedRepoError:
        raise GenIRError(f"{repo}: a gated model on the hub; accept its terms on its hub page and log in (hf auth login, "
                         "or set HF_TOKEN), then rerun") from None
    except RepositoryNotFoundError:
        raise GenIRError(f"{repo}: no such model on the hub (or a private one: log in with hf auth login, or set HF_TOKEN); "
                         "check the name, or give a checkpoint directory") from None
    except RevisionNotFoundError:
        raise GenIRError(f"{repo}: the hub model has no revision {revision!r}; give an existing branch, tag or commit") from None
    except EntryNotFoundError:
        raise GenIRError(f"{repo}: the hub repository{at} has no config.json; not a transformers model") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and status < 500 and status != 429:
            raise GenIRError(f"{repo}: the hub refused the request ({_first_line(exc)})") from None
        return _unreachable(repo, revision, at, cached, _first_line(exc))
    except Exception as exc:  # network: DNS, refused connection, timeout, proxy
        return _unreachable(repo, revision, at, cached, _first_line(exc))
    return HubFiles(revision, commit=getattr(meta, "commit_hash", None))


def _unreachable(repo: str, revision: str | None, at: str, cached: str | None, cause: str) -> HubFiles:
    from huggingface_hub import constants
    if cached is None:
        raise GenIRError(f"{repo}: the Hugging Face hub ({constants.ENDPOINT}) cannot be reached from this machine ({cause}) "
                         f"and the model{at} is not in the local Hugging Face cache; download it on a machine that reaches the hub "
                         "and pass its folder, or put a copy in the Hugging Face cache (HF_HOME) and set HF_HUB_OFFLINE=1")
    warnings.warn(f"{repo}: the Hugging Face hub cannot be reached ({cause}); loading the copy{at} in the local cache "
                  f"(commit {cached[:12]})", stacklevel=3)
    return HubFiles(revision, local_files_only=True, commit=cached)

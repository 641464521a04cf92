"""Result directories written as one transaction: staged beside `out`, moved into place whole, with a completion record.

    @atomic                                            # every pipelines.run_<experiment> is wrapped like this
    def run_patch(model, data, out, config): ...       # writes into <out>.partial-<pid>/; returns paths under <out>
    check_complete("runs/patch/dsi-synth/head_summary.csv")   # raises GenIRError unless part of a complete result

While a run lasts its files go to the sibling `<out>.partial-<pid>/`; `<out>.lock`
(created with O_CREAT|O_EXCL, holding pid, host and start time) refuses a second
writer. Only when the experiment returns is `COMPLETE.json` written (every file
with its size and sha256, the runs that wrote them, a provenance summary, wall
time) and the directory renamed to `<out>`, so a killed run leaves `<out>` as it
was: absent, or the previous complete result. A run into an `<out>` that already
holds a complete result adds its files to it (replacing files of the same name;
the record says which run wrote each file), which is how several verbs share one
results folder. The next run into the same `<out>` reports and deletes a dead
run's `.partial-*` (never a result) and takes over its stale lock; an `<out>`
with files but no `COMPLETE.json` (an older genir-mech, or not a results folder)
is refused, never merged into or deleted. A pipeline called inside another
pipeline writes into the outer run's staging folder: one transaction, one
lock, one move for the outermost `<out>`.
"""
from __future__ import annotations

import errno
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import time
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GenIRError

RECORD = "COMPLETE.json"
PARTIAL = re.compile(r"\.partial-\d+$")
HOST = socket.gethostname()


# A write that fails for want of space (a full disk, a quota, a file-size limit), or in a place that cannot be written.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_error(exc: BaseException, path: str | Path, written: tuple = ()) -> GenIRError | None:
    """The one-line error of an OSError met while writing `path`, or None when `exc` is no such error.

    A full disk (or quota) is always a write failure; permission and read-only errors count only when they name
    `path` or one of the `written` paths (or name no file), so a file that cannot be *read* keeps its own error.
    """
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    reason = os.strerror(exc.errno).lower()
    if exc.errno in DISK_FULL:
        return GenIRError(f"{reason} while writing {path}; free space and rerun")
    named = {str(Path(p)) for p in (path, *written)}
    if exc.errno in NOT_WRITABLE and (exc.filename is None or str(Path(exc.filename)) in named):
        return GenIRError(f"cannot write {path} ({reason}); choose a writable place and rerun")
    return None


def _disk_full_cause(exc: BaseException | None) -> OSError | None:
    """The full-disk OSError among the causes and contexts of `exc`, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


class ResultsWarning(UserWarning):
    """An interrupted run's leftovers were found (and cleaned up, or shown beside a complete result)."""


def hash_file(path: Path, h=None):
    """Feed a file into hash `h` (a new sha256 by default) in 1 MiB chunks, so large checkpoints never sit in memory."""
    h = h if h is not None else hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h


def _sha256(path: Path) -> str:
    return hash_file(path).hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _siblings(out: Path, tag: str) -> list[Path]:
    return sorted(p for p in out.parent.glob(f"{glob.escape(out.name)}.{tag}-*") if p.name[len(out.name) + len(tag) + 2:].isdigit())


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != RECORD)


def _table_stem(rel: str) -> str | None:
    """`a/lens` for `a/lens.csv` or `a/lens.parquet` (one table in either format); None for other files."""
    for suffix in (".csv", ".parquet"):
        if rel.endswith(suffix):
            return rel[: -len(suffix)]
    return None


def read_record(out: str | Path) -> dict | None:
    """The completion record of a results folder, None when it has none."""
    path = Path(out) / RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GenIRError(f"{path}: unreadable completion record ({exc}); the folder is not a trustworthy result: rerun the experiment") from None
    if not isinstance(record, dict) or not isinstance(record.get("files", {}), dict):
        raise GenIRError(f"{path}: not a completion record (expected an object with its files); the folder is not a trustworthy result: rerun the experiment")
    return record


# -- the lock -------------------------------------------------------------------------------------------


def _lock_holder(lock: Path) -> dict | None:
    # A writer creates the file and then writes its pid: give an empty file a moment before calling it stale.
    for _ in range(10):
        try:
            holder = json.loads(lock.read_text())
            if isinstance(holder, dict) and "pid" in holder:
                return holder
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        time.sleep(0.05)
    return None


def _held_message(out: Path, lock: Path, holder: dict) -> str:
    """Who holds the lock, for how long, and how to recover if that process is gone."""
    age = ""
    try:
        age = f", {(time.time() - lock.stat().st_mtime) / 3600:.1f} h ago"
    except OSError:
        pass
    who = f"process {holder['pid']} on {holder.get('host')} (since {holder.get('started')}{age})"
    if holder.get("host") != HOST:
        return (f"{out} is being written by {who}; this machine cannot tell whether that process still runs: wait for it, "
                f"or if it has stopped, delete {lock} and rerun")
    return (f"{out} is being written by {who}; wait for it to finish or choose another output folder "
            f"(if that pid now belongs to another program, delete {lock} and rerun)")


def acquire_lock(out: Path) -> Path:
    """Create `<out>.lock` exclusively (and `out`'s parent folders first); take over the lock of a dead process on this host
    (with a warning); else refuse."""
    lock = out.with_name(out.name + ".lock")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GenIRError(f"{out}: cannot create its parent folder ({exc.strerror})") from None
    record = json.dumps({"pid": os.getpid(), "host": HOST, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder == {}:  # released meanwhile
                continue
            if holder is not None and (holder.get("host") != HOST or _alive(int(holder["pid"]))):
                raise GenIRError(_held_message(out, lock, holder)) from None
            warnings.warn(f"{lock}: taking over the lock of a process that no longer runs "
                          f"({'pid ' + str(holder['pid']) if holder else 'unreadable lock'}); its run was interrupted", ResultsWarning, stacklevel=3)
            try:  # rename first, so two processes taking over the same stale lock cannot both succeed
                os.rename(lock, lock.with_name(f"{lock.name}.stale-{os.getpid()}"))
                os.unlink(lock.with_name(f"{lock.name}.stale-{os.getpid()}"))
            except FileNotFoundError:
                pass
            continue
        except OSError as exc:
            raise GenIRError(f"{out}: cannot write here ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(record)
        except OSError as exc:
            lock.unlink(missing_ok=True)  # an empty lock would hold the folder until it is seen to be stale
            error = write_error(exc, lock)
            if error is None:
                raise
            raise error from None
        return lock
    raise GenIRError(f"{out}: could not take the lock {lock}; another process keeps taking it")


def release_lock(lock: Path) -> None:
    try:
        holder = json.loads(lock.read_text())
        if holder.get("pid") == os.getpid() and holder.get("host") == HOST:
            lock.unlink()
    except (FileNotFoundError, json.JSONDecodeError):
        pass


# -- inspecting a results folder ------------------------------------------------------------------------


def check_out(out: str | Path) -> Path:
    """Refuse an `out` that cannot become a results folder: a file, or a folder of files without a completion record."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GenIRError(f"{out}: exists and is not a directory; choose another output folder")
    if out.is_dir() and read_record(out) is None and any(out.iterdir()):
        found = [p.name for p in sorted(out.iterdir())][:4]
        raise GenIRError(f"{out} holds files but no {RECORD} ({', '.join(found)}...): an interrupted run of an older genir-mech, or not "
                         "a results folder; it is neither merged into nor deleted: move it away, or choose another output folder")
    return out


def _clean_leftovers(out: Path) -> None:
    """Under the lock: restore a result an interrupted swap moved aside, delete dead runs' partial folders (with a warning)."""
    for leftover in _siblings(out, "replaced") + _siblings(out, "partial"):
        if leftover.is_symlink():  # never ours (we make real folders): remove the link, never what it points to
            leftover.unlink()
    for old in _siblings(out, "replaced"):
        if not out.exists():
            os.rename(old, out)
            warnings.warn(f"{out}: restored the previous complete result; a run interrupted while replacing it had moved it to {old.name}", ResultsWarning, stacklevel=4)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for partial in _siblings(out, "partial"):
        warnings.warn(f"{partial}: deleted the partial output of an interrupted run (pid {partial.name.rsplit('-', 1)[1]}); it was never a result", ResultsWarning, stacklevel=4)
        shutil.rmtree(partial, ignore_errors=True)


def check_complete(path: str | Path) -> None:
    """Refuse a result file that is not part of a complete result: inside a partial folder, changed since its run
    completed, or below no completion record at all. Warns when an interrupted run's leftovers lie beside it."""
    path = Path(path).resolve()
    for folder in path.parents:
        if PARTIAL.search(folder.name):
            raise GenIRError(f"{path}: inside {folder}, the partial output of an unfinished or interrupted run; it is not a result: rerun the experiment")
        record = read_record(folder)
        if record is None:
            continue
        entry = record.get("files", {}).get(path.relative_to(folder).as_posix())
        if entry and (path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]):
            raise GenIRError(f"{path}: changed since the run that wrote it completed (size or sha256 differs from {folder / RECORD}); rerun the experiment")
        for partial in _siblings(folder, "partial"):
            warnings.warn(f"{partial}: an unfinished or interrupted run into {folder}; showing the last complete result", ResultsWarning, stacklevel=3)
        return
    raise GenIRError(f"{path}: not part of a complete result (no {RECORD} in its folder or above): its run was interrupted, or it was written "
                     "by a genir-mech older than completion records; rerun the experiment")


# -- the transaction ------------------------------------------------------------------------------------


@dataclass
class Transaction:
    """One run writing into `staging`, published as `out` by `commit`; `nested` ones belong to an outer run."""

    out: Path
    staging: Path
    what: str
    lock: Path | None = None
    started: float = field(default_factory=time.time)
    nested: bool = False

    def final(self, value):
        """`value` (a summary: dicts, lists, strings, paths) with staging paths replaced by the final ones."""
        if self.nested:
            return value  # the outer run maps them when it publishes
        staging, out = str(self.staging), str(self.out)
        if isinstance(value, dict):
            return {k: self.final(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.final(v) for v in value)
        if isinstance(value, Path):
            return Path(self.final(str(value)))
        if isinstance(value, str) and value.startswith(staging) and value[len(staging):len(staging) + 1] in ("", os.sep):
            return out + value[len(staging):]
        return value

    def _record(self, previous: dict | None, new_files: list[str]) -> dict:
        run = {
            "pipeline": self.what, "pid": os.getpid(), "host": HOST,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_seconds": round(time.time() - self.started, 3),
            "provenance": _provenance_summary(self.staging, new_files),
        }
        files = {}
        runs = list((previous or {}).get("runs", []))
        for rel, entry in (previous or {}).get("files", {}).items():
            if rel not in new_files:
                files[rel] = entry
        used = sorted({e["run"] for e in files.values()})
        renumber = {old: i for i, old in enumerate(used)}
        runs = [runs[i] for i in used]
        files = {rel: {**e, "run": renumber[e["run"]]} for rel, e in files.items()}
        for rel in new_files:
            p = self.staging / rel
            files[rel] = {"bytes": p.stat().st_size, "sha256": _sha256(p), "run": len(runs)}
        return {"format": 1, "complete": True, "out": str(self.out), "files": dict(sorted(files.items())), "runs": [*runs, run]}

    def commit(self) -> None:
        """Write the completion record and move the staging folder to `out` (merging into a complete `out`)."""
        new_files = _files(self.staging)
        previous = read_record(self.out) if self.out.is_dir() else None
        if previous is not None:
            # Build the merged folder in staging (hard links: no copies, and the old files are never modified in place),
            # then swap it in with two renames; a kill between them leaves <out>.replaced-<pid>, restored by the next run.
            # Every old file is kept (files added by hand after completion too, though they stay unlisted).
            replaced = {_table_stem(rel) for rel in new_files} - {None}
            for rel in _files(self.out):
                src, dst = self.out / rel, self.staging / rel
                if rel in new_files or _table_stem(rel) in replaced:  # a table rewritten, perhaps now in the other format (CSV/Parquet)
                    continue
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
            previous["files"] = {rel: e for rel, e in previous.get("files", {}).items() if (self.staging / rel).exists()}
        (self.staging / RECORD).write_text(json.dumps(self._record(previous, new_files), indent=1))
        if previous is not None:
            aside = self.out.with_name(f"{self.out.name}.replaced-{os.getpid()}")
            os.rename(self.out, aside)
            os.rename(self.staging, self.out)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            if self.out.is_dir():
                self.out.rmdir()  # empty (check_out refused anything else)
            os.rename(self.staging, self.out)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def write_error(self, exc: BaseException) -> GenIRError | None:
        """The one-line error of a write into this run that failed (a full disk, an unwritable place), naming the final path."""
        if isinstance(exc, GenIRError):
            return None  # already one line (written_atomically names the file)
        if not isinstance(exc, OSError):
            exc = _disk_full_cause(exc)  # a library that fails while cleaning up after a full disk (matplotlib's PDF writer)
            if exc is None:
                return None
        name = exc.filename if isinstance(exc.filename, (str, Path)) else None
        inside_run = name is not None and inside_folder(Path(name), self.staging)
        if exc.errno not in DISK_FULL and not inside_run:
            return None  # e.g. an input file that cannot be read: its own error
        return write_error(exc, self.final(str(name)) if inside_run else self.out, (name,) if inside_run else ())


def _provenance_summary(staging: Path, files: list[str]) -> dict:
    """Models, data and seeds named by the run's table provenance records."""
    seen: dict[str, set] = {"model": set(), "model_hash": set(), "data_hash": set(), "seed": set()}
    versions = None
    for rel in files:
        if rel.endswith(".provenance.json"):
            try:
                record = json.loads((staging / rel).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            for key in seen:
                if record.get(key) is not None:
                    seen[key].add(str(record[key]))
            versions = versions or record.get("versions")
    return {**{k: sorted(v) for k, v in seen.items()}, "versions": versions}


_ACTIVE: ContextVar[tuple[Transaction, ...]] = ContextVar("genir_results_transactions", default=())


def _enclosing(out: Path) -> Transaction | None:
    """The active run whose final folder contains `out`, if any (a pipeline called by another pipeline)."""
    resolved = out.resolve()
    for tx in reversed(_ACTIVE.get()):
        for root in (tx.out.resolve(), tx.staging.resolve()):
            if resolved == root or root in resolved.parents:
                return tx
    return None


def begin(out: str | Path, what: str) -> Transaction:
    out = Path(out)
    if out.name in ("", ".", ".."):  # the staging folder and the lock are siblings: they need a folder name
        out = out.resolve()
    outer = _enclosing(out)
    if outer is not None:
        resolved, base = out.resolve(), outer.out.resolve()
        inner = outer.staging / (resolved.relative_to(base) if resolved == base or base in resolved.parents else resolved.relative_to(outer.staging.resolve()))
        inner.mkdir(parents=True, exist_ok=True)
        return Transaction(out, inner, what, nested=True)
    lock = acquire_lock(out)
    try:
        _clean_leftovers(out)
        check_out(out)
        staging = out.with_name(f"{out.name}.partial-{os.getpid()}")
        staging.mkdir()
    except BaseException as exc:
        release_lock(lock)
        error = write_error(exc, out)
        if error is None:
            raise
        raise error from None
    return Transaction(out, staging, what, lock=lock)


def atomic(run):
    """Wrap `run(model, data, out, ...)` so that it writes into a staging folder published whole as `out` when it returns.

    On an exception (or Ctrl-C) the staging folder is removed and `out` is left as it was; a write that failed
    for want of space, or in a place that cannot be written, becomes one GenIRError line naming the file.
    """

    @functools.wraps(run)
    def wrapper(model, data, out, *args, **kwargs):
        tx = begin(out, run.__name__)
        token = _ACTIVE.set((*_ACTIVE.get(), tx))
        try:
            result = run(model, data, tx.staging, *args, **kwargs)
            if not tx.nested:
                tx.commit()
        except BaseException as exc:
            if not tx.nested:
                tx.abort()
                error = tx.write_error(exc)  # a full disk or an unwritable place: one line; `out` is left as it was
                if error is not None:
                    raise error from None
            raise
        finally:
            _ACTIVE.reset(token)
            if tx.lock is not None:
                release_lock(tx.lock)
        return tx.final(result)

    wrapper.writes_atomically = True
    return wrapper


def inside_folder(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies below it (both resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def inside(out: str | Path, path: str | Path) -> Path:
    """`path` resolved, when it lies inside `out`; a GenIRError otherwise (nothing is written or deleted outside a run's folder)."""
    base, resolved = Path(out).resolve(), Path(path).resolve()
    if resolved != base and base not in resolved.parents:
        raise GenIRError(f"{path}: lies outside {out}; refusing to write or delete there")
    return resolved


def staged(path: str | Path) -> Path:
    """Where a running pipeline writes `path`: the same place in its staging folder when `path` lies inside the
    run's `out` (so the file is published with the run and listed in its record), else `path` itself."""
    target = Path(path).resolve()
    for tx in reversed(_ACTIVE.get()):
        if tx.nested:
            continue
        base = tx.out.resolve()
        if target == base:
            raise GenIRError(f"{path}: is the run's output folder itself; name a file inside it")
        if base in target.parents:
            return tx.staging / target.relative_to(base)
        break
    return Path(path)


def published(value):
    """`value` with the innermost active run's staging paths replaced by final ones (for provenance records written mid-run)."""
    active = _ACTIVE.get()
    for tx in reversed(active):
        if not tx.nested:
            return tx.final(value)
    return value

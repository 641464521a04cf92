"""Running a sweep: lock the output folder, skip finished units, run the rest (here or on Ray), assemble SWEEP.json.

    summary = run_sweep(load_config("examples/paper.yaml"))                  # in this process
    summary = run_sweep(config, backend="ray", workers=2)                   # Ray tasks, one model load per worker
    print(dry_run(config))                                                  # units and estimated cost, nothing written

Layout of `<out>`: one complete results folder per unit at `<out>/<model>/<experiment>[/<target>]`
(written by the pipeline's own transaction: staged, then renamed, with COMPLETE.json),
`.sweep/units/<unit>.json` (the unit's key, files with sha256, summary and wall time, written
atomically once its folder is complete), `.sweep/cache/` (shared inputs, sweep.caches) and, once
every unit is done, `SWEEP.json` (the config, every unit and its files): the sweep's assembled
result. `<out>.lock` refuses a second sweep into the same folder. After a kill -9, rerunning the
same command resumes: a unit counts as done only when its record's key matches the config and
every file it lists is on disk with its sha256; any other unit folder is removed and recomputed,
so no row is lost or duplicated and the tables equal those of an uninterrupted run.

One unit's failure ends that unit only: the others run and keep their results, units that read
from it are marked failed too, and SWEEP.json lists every unit with its status (done, skipped,
failed) and reason; a rerun retries the failed ones. A unit whose analysis does not apply to its
model (errors.NotApplicable, e.g. the paper's circuit on fewer than three stages) is recorded as
skipped with the reason, and a rerun with the same config does not retry it. The traceback of an
unexpected error is kept in `.sweep/errors/<unit>.txt`.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import GenIRError
from ..provenance import written_atomically
from ..results_directory import RECORD, acquire_lock, hash_file, inside, read_record, release_lock
from .caches import ModelPool
from .config import SweepConfig, model_shape
from .execute import DONE, FAILED, SKIPPED, STATE, Outcome, UnitRunner, blocked
from .units import Unit, estimate_costs, plan

MANIFEST = "SWEEP.json"
BACKENDS = ("local", "ray")


# -- the record of finished units -------------------------------------------------------------------------------


class UnitStore:
    """`.sweep/units/<unit>.json` per finished unit; `done` checks it against the config and the files on disk."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = self.out / STATE / "units"

    def path(self, unit: Unit) -> Path:
        return self.dir / (unit.id.replace("/", "__") + ".json")

    def done(self, unit: Unit) -> dict | None:
        """The unit's record when its key matches and its folder holds every listed file intact; None otherwise."""
        try:
            record = json.loads(self.path(unit).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if record.get("key") != unit.key:
            return None
        if record.get("status") == SKIPPED:
            return record
        folder = unit.folder(self.out)
        complete = read_record(folder)
        if complete is None:
            return None
        for rel, entry in record.get("files", {}).items():
            path, listed = folder / rel, complete.get("files", {}).get(rel, {})
            # the folder's completion record must still list the same bytes (a rerun of the unit outside the sweep changes it)
            if listed.get("sha256") != entry["sha256"] or not path.is_file() or path.stat().st_size != entry["bytes"]:
                return None
        return record

    def verify(self, unit: Unit, record: dict) -> bool:
        """Every listed file's sha256 matches (slower than `done`: reads every byte)."""
        folder = unit.folder(self.out)
        return all(hash_file(folder / rel).hexdigest() == e["sha256"] for rel, e in record.get("files", {}).items())

    def record(self, unit: Unit, summary: dict, seconds: float) -> dict:
        complete = read_record(unit.folder(self.out))
        if complete is None:
            raise GenIRError(f"{unit.id}: its pipeline returned but {unit.folder(self.out)} has no {RECORD}")
        files = {rel: {"bytes": e["bytes"], "sha256": e["sha256"]} for rel, e in complete["files"].items()}
        return self._write(unit, {"status": DONE, "seconds": seconds, "files": files, "summary": summary})

    def skip(self, unit: Unit, reason: str, seconds: float) -> dict:
        """Record that `unit` does not apply to its model (no folder): done for this config, with the reason."""
        return self._write(unit, {"status": SKIPPED, "reason": reason, "seconds": seconds, "files": {}, "summary": {}})

    def _write(self, unit: Unit, outcome: dict) -> dict:
        record = {"unit": unit.id, "key": unit.key, "run": unit.experiment.run, "model": unit.model, "params": unit.params, **outcome}
        with written_atomically(self.path(unit)) as tmp:
            tmp.write_text(json.dumps(record, indent=1, default=str))
        return record

    def clear(self, unit: Unit) -> None:
        """Remove what an earlier, unrecorded run of `unit` left (a complete folder from another config, or from a run
        killed before its record was written): moved aside in one rename, then deleted."""
        self.path(unit).unlink(missing_ok=True)
        folder = unit.folder(self.out)
        if folder.is_symlink():  # never made by a sweep: remove the link, not what it points to
            folder.unlink()
        elif folder.exists():
            inside(self.out, folder)  # unit ids are checked names; this holds even when a folder on the way is a link
            aside = self.out / STATE / f"trash-{os.getpid()}-{unit.id.replace('/', '__')}"
            shutil.rmtree(aside, ignore_errors=True)
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder, aside)
            shutil.rmtree(aside, ignore_errors=True)


# -- the sweep ----------------------------------------------------------------------------------------------------


def dry_run(config: SweepConfig) -> str:
    """The sweep's units in run order with their estimated cost (forward rows) and state; writes nothing."""
    units = plan(config)
    shapes = {m: model_shape(config, m) for m in {u.model for u in units}}
    pool = ModelPool(config)
    datasets = {m: pool.data(m) for m in shapes}
    estimate_costs(config, units, shapes, datasets)
    store = UnitStore(config.out)
    states = {u.id: ("done" if store.done(u) else "to run") for u in units}
    done_records = [store.done(u) for u in units if states[u.id] == "done"]
    rate = (sum(r["seconds"] for r in done_records) / sum(u.cost for u in units if states[u.id] == "done")) if done_records else None
    width = max(len(u.id) for u in units)
    lines = [f"{'unit':<{width}}  {'pipeline':<13} {'after':<20} {'est. rows':>10}  state"]
    for u in units:
        lines.append(f"{u.id:<{width}}  {u.experiment.run:<13} {','.join(u.after) or '-':<20} {u.cost:>10,}  {states[u.id]}")
    todo = sum(u.cost for u in units if states[u.id] != "done")
    total = f"{len(units)} units, {sum(states[u.id] != 'done' for u in units)} to run, about {todo:,} forward rows to compute"
    total += f" (~{todo * rate:.0f} s at this folder's measured {rate * 1000:.2f} ms/row)" if rate else " (time: no unit of this sweep has run yet)"
    return "\n".join(lines + [total])


def run_sweep(config: SweepConfig, *, backend: str = "local", workers: int = 2, progress: bool = True, log: str | Path | None = None) -> dict:
    """Run every unit not yet done (in this process, or on Ray), then write `<out>/SWEEP.json`; returns its content.

        manifest = run_sweep(load_config("examples/paper.yaml"))       # rerun to resume: finished units are skipped
        manifest["units"]["dsi/ablate"]["summary"], manifest["failed"]

    A failed unit does not stop the others (module docstring); `manifest["failed"]` lists the failed units."""
    if backend not in BACKENDS:
        raise GenIRError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    started = time.time()
    out = config.out
    lock = acquire_lock(out)
    failures: dict[str, Outcome] = {}
    try:
        units = plan(config)
        store = UnitStore(out)
        todo = [u for u in units if store.done(u) is None]
        logger = _Log(log)
        logger(f"sweep {config.source} into {out}: {len(units)} units, {len(todo)} to run ({backend})")
        if todo:
            (out / MANIFEST).unlink(missing_ok=True)  # the assembled result describes the latest run only
            for unit in todo:
                store.clear(unit)
            shapes = {m: model_shape(config, m) for m in {u.model for u in todo}}
            pool = ModelPool(config)
            estimate_costs(config, todo, shapes, {m: pool.data(m) for m in shapes})
            bar = tqdm(total=sum(u.cost for u in todo), unit="row", unit_scale=True, desc="sweep", disable=not progress, file=sys.stderr,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} rows [{elapsed}<{remaining}]{postfix}")

            def finished(unit: Unit, outcome: Outcome) -> None:
                if outcome.status in (DONE, SKIPPED):
                    _traceback_path(out, unit).unlink(missing_ok=True)  # an earlier failure's
                if outcome.status == DONE:
                    store.record(unit, outcome.summary, outcome.seconds)
                elif outcome.status == SKIPPED:
                    store.skip(unit, outcome.reason, outcome.seconds)
                else:
                    failures[unit.id] = outcome
                    _keep_traceback(out, unit, outcome)
                    if progress:
                        tqdm.write(f"{unit.id}: failed: {outcome.reason}", file=sys.stderr)
                bar.update(unit.cost)
                logger(f"{outcome.status} {unit.id} in {outcome.seconds:.1f} s" + (f": {outcome.reason}" if outcome.reason else ""))

            try:
                if backend == "ray":
                    from .ray_backend import run_on_ray
                    run_on_ray(config, todo, finished, workers=workers, done={u.id for u in units if u not in todo})
                else:
                    runner = UnitRunner(config)
                    for unit in todo:
                        bar.set_postfix_str(f"unit {unit.id}")  # the bar names the unit being computed
                        logger(f"start {unit.id}")
                        finished(unit, blocked(unit, set(failures)) or runner.attempt(unit))
            finally:
                bar.close()
        manifest = assemble(config, units, store, failures, round(time.time() - started, 3))
        logger(f"{'complete' if not manifest['failed'] else str(len(manifest['failed'])) + ' units failed'}: {out / MANIFEST} ({manifest['wall_seconds']} s)")
        return manifest
    finally:
        release_lock(lock)


def _traceback_path(out: Path, unit: Unit) -> Path:
    return out / STATE / "errors" / (unit.id.replace("/", "__") + ".txt")


def _keep_traceback(out: Path, unit: Unit, outcome: Outcome) -> None:
    """The traceback of an unexpected error, kept beside the unit records (the terminal shows one line)."""
    if outcome.detail:
        path = _traceback_path(out, unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(path) as tmp:
            tmp.write_text(outcome.detail)


def assemble(config: SweepConfig, units: list[Unit], store: UnitStore, failures: dict[str, Outcome], seconds: float) -> dict:
    """SWEEP.json: the config and, per unit, its status, folder, files (sha256), summary and wall time; written atomically."""
    records = {}
    for u in units:
        record = store.done(u)
        if record is None:
            failed = failures.get(u.id) or Outcome(FAILED, 0.0, reason="not complete after the sweep ran; rerun the sweep")
            record = {"status": FAILED, "reason": failed.reason, "seconds": failed.seconds, "files": {}, "summary": {}}
        records[u.id] = {"status": record.get("status", DONE), "reason": record.get("reason", ""), "folder": str(u.folder(config.out)),
                         "run": u.experiment.run, "model": u.model, "key": u.key, "seconds": record["seconds"], "files": record["files"],
                         "summary": record["summary"]}
    manifest = {"format": 2, "config": config.source, "settings": config.raw, "units": records, "wall_seconds": seconds,
                "failed": [uid for uid, r in records.items() if r["status"] == FAILED],
                "skipped": [uid for uid, r in records.items() if r["status"] == SKIPPED]}
    with written_atomically(config.out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, default=str))
    return manifest


def unit_lines(manifest: dict) -> str:
    """One line per unit: its status, wall time, and its folder or the reason it did not finish."""
    lines = []
    for uid, unit in manifest["units"].items():
        where = unit["folder"] if unit["status"] == "done" else f"{unit['status']}: {unit['reason']}"
        lines.append(f"  {uid:<32} {unit['seconds']:>8.1f} s  {where}")
    return "\n".join(lines)


def fail_if_any_failed(manifest: dict, where: Path) -> None:
    """A one-line error (non-zero exit) once every other unit has run and been recorded, when some unit failed."""
    if manifest["failed"]:
        reasons = "; ".join(f"{uid}: {manifest['units'][uid]['reason']}" for uid in manifest["failed"])
        raise GenIRError(f"{len(manifest['failed'])} of {len(manifest['units'])} units failed ({reasons}); the others' results are in {where.parent}; "
                         "fix the cause and rerun the same command to run only what is missing")


class _Log:
    """Timestamped lines appended to a log file for unattended runs (nothing without a file)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def __call__(self, line: str) -> None:
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

"""Benchmark: the paper example as one sweep (shared models and inputs) against the same experiments as separate verbs.

    python bench/bench_sweep.py                                   # examples/paper.yaml; writes bench/results/sweep.md
    python bench/bench_sweep.py --config examples/patching.yaml --results bench/results/sweep_patching.md

Three timings, each a fresh `genir-mech` process (interpreter start and imports included, as a user sees them):
(a) `genir-mech sweep CONFIG` into an empty folder; (b) one `genir-mech VERB` per unit of the same config, with
the same parameters (translated from the config: the stages reference becomes the stages.json the stages verb
wrote), run one after the other; (c) the sweep again on its finished folder: a resume with nothing left to do.
Every table of (a) must equal, byte for byte, the table the separate verb wrote, or the benchmark fails.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genir_mech.sweep.config import load_config  # noqa: E402
from genir_mech.sweep.units import plan  # noqa: E402

VERB = {"eval": "eval"}  # pipeline -> verb, where the names differ (none today: every pipeline has its verb)
NAMED = {"other": "--other", "encoders": "--encoder-from"}


def verb_argv(unit, config, verb_outs: dict[str, Path]) -> list[str]:
    """The `genir-mech` command running `unit` as its own verb, into verb_outs[unit.id]."""
    run = unit.experiment.run
    argv = [VERB.get(run, run), "--model", config.models[unit.model].path, "--out", str(verb_outs[unit.id]), "--json",
            "--device", config.model_device(unit.model), "--dtype", config.model_dtype(unit.model)]
    if config.data:
        argv += ["--data", config.data]
    for key, value in unit.params.items():
        if key in NAMED:
            names = value if isinstance(value, list) else [value]
            argv += [NAMED[key], *[config.models[n].path for n in names]]
        elif key == "stages" and isinstance(value, str) and value.startswith("@"):
            argv += ["--stages", str(verb_outs[f"{unit.model}/{value[1:]}"] / "stages.json")]
        elif key == "qk_fix":
            argv += [] if value else ["--no-qk-fix"]
        elif key == "ablation":
            argv += [] if value else ["--no-ablation"]
        elif isinstance(value, bool):
            argv += [f"--{key.replace('_', '-')}"] if value else []
        elif isinstance(value, list):
            argv += [f"--{key.replace('_', '-')}", ",".join(map(str, value))]
        else:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def timed(argv: list[str], log: Path, env: dict) -> float:
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write("$ genir-mech " + " ".join(argv) + "\n")
        fh.flush()
        proc = subprocess.run([sys.executable, "-m", "genir_mech.cli", *argv], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): genir-mech {' '.join(argv)}; see {log}")
    return seconds


def tables(folder: Path) -> dict[str, str]:
    record = json.loads((folder / "COMPLETE.json").read_text())
    return {rel: e["sha256"] for rel, e in record["files"].items() if rel.endswith((".csv", ".parquet"))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="examples/paper.yaml")
    p.add_argument("--work", default="/tmp/genir_bench_sweep", help="scratch folder (emptied first)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every process (OMP_NUM_THREADS)")
    p.add_argument("--results", default=str(ROOT / "bench" / "results" / "sweep.md"))
    args = p.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    sweep_out, log = work / "sweep", work / "commands.log"
    config = load_config(ROOT / args.config, out=sweep_out)
    units = plan(config)
    verb_outs = {u.id: work / "verbs" / u.id for u in units}

    sweep_seconds = timed(["sweep", args.config, "--out", str(sweep_out), "--quiet"], log, env)
    verb_seconds = {}
    for unit in units:
        verb_seconds[unit.id] = timed(verb_argv(unit, config, verb_outs), log, env)
    resume_seconds = timed(["sweep", args.config, "--out", str(sweep_out), "--quiet"], log, env)

    manifest = json.loads((sweep_out / "SWEEP.json").read_text())
    differ, compared = [], 0
    for unit in units:
        a, b = tables(unit.folder(sweep_out)), tables(verb_outs[unit.id])
        compared += len(a)
        differ += [f"{unit.id}/{rel}" for rel in sorted(set(a) | set(b)) if a.get(rel) != b.get(rel)]
    separate = sum(verb_seconds.values())
    rows = [f"| {u.id} | {manifest['units'][u.id]['seconds']:.1f} | {verb_seconds[u.id]:.1f} |" for u in units]
    text = "\n".join([
        "### The paper example as a sweep vs separate verbs (`bench/bench_sweep.py`)",
        "",
        f"Config `{args.config}` ({len(units)} units) on {platform.machine()} with {os.cpu_count()} cores, torch threads {args.threads} per process; "
        "every timing is a fresh `genir-mech` process (interpreter start and imports included); one run each.",
        "",
        "| run | wall time (s) | ratio to the sweep |",
        "|:--|--:|--:|",
        f"| (a) `genir-mech sweep` (models loaded once, one ranking per split shared by the analyses) | {sweep_seconds:.1f} | 1.00 |",
        f"| (b) the same experiments as {len(units)} separate verbs | {separate:.1f} | {separate / sweep_seconds:.2f} |",
        f"| (c) resume of the finished sweep (nothing left to do) | {resume_seconds:.1f} | {resume_seconds / sweep_seconds:.3f} |",
        "",
        f"Tables compared between (a) and (b): {compared}; differing: {len(differ)}" + (f" ({', '.join(differ[:6])})" if differ else " (byte-identical)") + ".",
        "",
        "<details><summary>per unit: seconds inside the sweep (pipeline only) vs the separate verb (whole process)</summary>",
        "",
        "| unit | in the sweep | separate verb |",
        "|:--|--:|--:|",
        *rows,
        "",
        "</details>",
        "",
        f"Command: `python bench/bench_sweep.py --config {args.config} --threads {args.threads}`",
    ])
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text + "\n")
    print(text)
    if differ:
        sys.exit(f"tables differ between the sweep and the separate verbs: {differ[:10]}")


if __name__ == "__main__":
    main()

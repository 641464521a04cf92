"""Benchmark: how long `genir-mech --help` and a parse-time error take, as ratios to a bare Python start measured in the same run.

    python bench/bench_cli_startup.py            # writes bench/results/cli_startup.md

The CLI promises `--help` in well under 2 s: verbs and options import no
torch, transformers, nnsight, pandas or ir_measures/ir_datasets before the
arguments are valid (tests/test_cli_polish.py checks the imports; this
measures the time). Each command runs `--repeats` times in a fresh
interpreter; medians of wall and CPU (user+sys) time are reported, CPU time
being the one that does not grow with the machine's load.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass (baseline)": [sys.executable, "-c", "pass"],
    "genir-mech --help": [sys.executable, "-m", "genir_mech.cli", "--help"],
    "genir-mech --version": [sys.executable, "-m", "genir_mech.cli", "--version"],
    "genir-mech eval --help": [sys.executable, "-m", "genir_mech.cli", "eval", "--help"],
    "genir-mech ablate --batch-size 0 (parse error)": [sys.executable, "-m", "genir_mech.cli", "ablate", "--model", "checkpoints/dsi-synth", "--batch-size", "0"],
}


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "cli_startup.md"))
    args = parser.parse_args()
    results = {}
    for name, cmd in COMMANDS.items():
        runs = [timed(cmd) for _ in range(args.repeats)]
        results[name] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
    base_wall, base_cpu = results["python -c pass (baseline)"]
    load = os.getloadavg()[0]
    lines = [
        "# CLI start-up",
        "",
        f"`python bench/bench_cli_startup.py --repeats {args.repeats}`; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {load:.1f} at the end of the run. Medians of {args.repeats} fresh interpreters.",
        "",
        "| command | wall s | CPU s | wall / baseline | CPU / baseline |",
        "|---|---|---|---|---|",
    ]
    for name, (wall, cpu) in results.items():
        lines.append(f"| {name} | {wall:.3f} | {cpu:.3f} | {wall / base_wall:.1f} | {cpu / base_cpu:.1f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

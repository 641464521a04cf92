"""Benchmark: `genir-mech demo` as a newcomer runs it, from an empty working folder, then its resume.

    python bench/bench_demo.py                                 # writes bench/results/demo.md
    python bench/bench_demo.py --genir-mech .venv/bin/genir-mech --results bench/results/demo.md

Two timings, each a fresh `genir-mech` process (interpreter start, imports and model loading included):
(a) `genir-mech demo` in an empty temporary folder (it writes `runs/demo/` there); (b) the same command again
on the finished folder: a resume with nothing left to do. Wall time is what a user waits; the CPU time of the
process and the load average before and after say how busy the machine was. The demo must exit 0 and write
REPORT.md, or the benchmark fails.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str], cwd: Path) -> dict:
    """Run `argv` in `cwd`; its wall seconds, CPU seconds (user + system of the child) and load average before/after."""
    before_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"bench_demo: {' '.join(argv)} exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    cpu = (after_cpu.ru_utime - before_cpu.ru_utime) + (after_cpu.ru_stime - before_cpu.ru_stime)
    return {"wall": wall, "cpu": cpu, "load_before": load_before, "load_after": os.getloadavg()[0], "stdout": done.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genir-mech", default=shutil.which("genir-mech") or str(ROOT / ".venv" / "bin" / "genir-mech"),
                        help="the genir-mech executable (default: the one on PATH, else .venv/bin/genir-mech)")
    parser.add_argument("--results", default=str(ROOT / "bench" / "results" / "demo.md"), help="Markdown file to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genir-demo-") as folder:
        cwd = Path(folder)
        argv = [str(Path(args.genir_mech).absolute()), "demo", "--json"]  # run from the empty folder
        first = timed(argv, cwd)
        report = cwd / "runs" / "demo" / "REPORT.md"
        if not report.is_file():
            sys.exit("bench_demo: the demo exited 0 but wrote no runs/demo/REPORT.md")
        manifest = json.loads((cwd / "runs" / "demo" / "SWEEP.json").read_text())
        resume = timed(argv, cwd)
    units = manifest["units"]
    lines = [
        "### `genir-mech demo` from an empty folder (`bench/bench_demo.py`)",
        "",
        f"Command: `genir-mech demo` in an empty working folder (it writes `runs/demo/`), then the same command again (a resume). "
        f"Measured with `python bench/bench_demo.py` on {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| run | wall s | CPU s | load average before / after |",
        "| --- | ---: | ---: | --- |",
        f"| fresh demo | {first['wall']:.1f} | {first['cpu']:.1f} | {first['load_before']:.2f} / {first['load_after']:.2f} |",
        f"| resume (nothing left to do) | {resume['wall']:.1f} | {resume['cpu']:.1f} | {resume['load_before']:.2f} / {resume['load_after']:.2f} |",
        "",
        "Units of the fresh demo (wall seconds inside the process; a skipped unit's reason is in REPORT.md):",
        "",
        "| unit | status | seconds |",
        "| --- | --- | ---: |",
        *[f"| {uid} | {u['status']} | {u['seconds']:.1f} |" for uid, u in units.items()],
        "",
    ]
    Path(args.results).write_text("\n".join(lines))
    print(f"fresh {first['wall']:.1f} s wall, resume {resume['wall']:.1f} s wall: {args.results}")


if __name__ == "__main__":
    main()

"""CLI polish: --version, a --help that imports nothing heavy, parse-time checks of the new data and metric options."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from genir_mech import __version__
from genir_mech.cli import main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "nnsight", "matplotlib", "pandas", "ir_measures", "ir_datasets")


def run_cli(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_version_is_one_line_with_the_libraries(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_info:
        assert exit_info.code == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"genir-mech {__version__} (python ")
    assert f"torch {version('torch')}" in out and f"nnsight {version('nnsight')}" in out


def test_help_imports_no_heavy_library():
    # what keeps `genir-mech --help` well under 2 s (bench/bench_cli_startup.py measures it)
    code = ("import sys\nfrom genir_mech.cli import main\n"
            "for argv in (['--help'], ['eval', '--help'], ['--version']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\nassert not heavy, heavy")
    proc = run_cli(code)
    assert proc.returncode == 0, proc.stderr
    assert "usage: genir-mech [-h] [--version] VERB" in proc.stdout


def test_new_options_fail_at_parse_time_in_one_line(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    cases = {
        ("--metrics", "hits@1,Sucess@1"): "argument --metrics: unknown retrieval measure 'Sucess@1'",
        ("--data", "ir_datasets:"): "argument --data: ir_datasets: names no dataset",
        ("--max-query-tokens", "0"): "argument --max-query-tokens: must be a positive integer, got 0",
        ("--qrels", str(tmp_path / "none.txt")): f"argument --qrels: {tmp_path / 'none.txt'}: no such file",
    }
    for args, message in cases.items():
        assert main(["eval", "--model", str(ckpt), *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"genir-mech eval: error: {message}"), err

"""`genir-mech show RESULT`: print a result table (CSV or Parquet), a summary, a provenance record or a sweep's units.

    genir-mech show runs/paper/dsi/lens/lens.parquet --rows 20
    genir-mech show runs/paper/dsi/ablate/ablation            # the table, whichever format it was written in
    genir-mech show runs/paper                                # a sweep (SWEEP.json) or a results folder: what it holds
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import GenIRError
from . import Verb
from .options import positive_int

TEXT = (".md", ".tex", ".txt")


def result_path(text: str) -> str:
    """A file or folder that exists, or a table named without its suffix."""
    from argparse import ArgumentTypeError
    path = Path(text)
    if not path.exists() and not any(path.with_name(path.name + s).is_file() for s in (".csv", ".parquet")):
        raise ArgumentTypeError(f"{text}: no such result file, table or folder")
    return text


def add_arguments(p):
    p.add_argument("result", metavar="RESULT", type=result_path, help="a table (.csv/.parquet, or its name without suffix), a .json/.md file, or a results folder")
    p.add_argument("--rows", type=positive_int, default=40, help="rows of a table to print (default 40)")
    p.add_argument("--json", action="store_true", help="print tables as JSON records")


def _folder(path: Path) -> None:
    from ..results_directory import read_record
    manifest = path / "SWEEP.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        print(f"sweep {data['config']} ({len(data['units'])} units, {data['wall_seconds']} s)")
        for uid, unit in data["units"].items():
            tables = [f for f in unit["files"] if f.endswith((".csv", ".parquet"))]
            print(f"  {uid:<32} {unit['run']:<13} {unit['seconds']:>8.1f} s  {len(tables)} tables: {', '.join(tables[:6])}{' ...' if len(tables) > 6 else ''}")
        return
    record = read_record(path)
    files = sorted(record["files"]) if record else sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    print(f"{path}: {'complete result' if record else 'no COMPLETE.json (not a complete result)'}, {len(files)} files")
    for rel in files:
        print(f"  {rel}")


def handler(args):
    try:
        return _show(args)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:  # JSON, text, table or record that is not what it claims
        what = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        raise GenIRError(f"{args.result}: not a readable genir_mech result ({what}); it may be damaged or not written by genir_mech") from None


def _show(args):
    path = Path(args.result)
    if path.is_dir():
        _folder(path)
        return None
    if path.suffix == ".json":
        print(json.dumps(json.loads(path.read_text()), indent=1))
        return None
    if path.suffix in TEXT:
        print(path.read_text(encoding="utf-8"))
        return None
    import pandas as pd

    from ..provenance import read_table
    frame, record = read_table(path)
    if args.json:
        print(frame.head(args.rows).to_json(orient="records"))
        return None
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(frame.head(args.rows).to_string(index=False))
    print(f"[{len(frame):,} rows x {len(frame.columns)} columns; model {record.get('model')}, written {record.get('created')}]")
    return None


VERB = Verb("Print a result table (CSV or Parquet), summary, provenance record or a sweep's units", add_arguments, handler)

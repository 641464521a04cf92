"""The benchmark results (bench/results/*.md, written by `make bench`) as LaTeX tables and macros for the paper.

    python -m genir_mech.reporting.benchmarks bench/results paper/results/bench
    tables = markdown_tables(Path("bench/results/table3.md"))      # [(section heading, DataFrame), ...]

Each Markdown pipe table of a benchmark file becomes `<file>_<n>.tex` (a
LaTeX float captioned with its section), and `numbers.tex` holds the
headline ratios read from those tables (`\\benchLoopSpeedUp`, ...), so the
paper quotes what the benchmark measured rather than a number typed in.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

from ..errors import GenIRError
from ..figures.tables import latex_table, write_macros


def markdown_tables(path: Path) -> list[tuple[str, pd.DataFrame]]:
    """Every pipe table in a Markdown file with the heading above it."""
    tables, heading, rows = [], path.stem, []

    def close():
        if len(rows) >= 2:
            header, body = rows[0], [r for r in rows[2:]]
            tables.append((heading, pd.DataFrame(body, columns=header)))
        rows.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        close()
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    close()
    return tables


def _number(text: str) -> float:
    match = re.search(r"-?[\d,]*\.?\d+", str(text))
    if not match:
        raise GenIRError(f"no number in benchmark cell {text!r}")
    return float(match.group(0).replace(",", ""))


def _cell(table: pd.DataFrame, row_starts: str, column: str, where: str) -> float:
    rows = table[table.iloc[:, 0].str.startswith(row_starts)]
    if rows.empty or column not in table:
        raise GenIRError(f"{where}: no row starting {row_starts!r} with column {column!r}; rerun the benchmark (make bench)")
    return _number(rows[column].iloc[0])


def benchmark_facts(tables: dict[str, list[tuple[str, pd.DataFrame]]]) -> dict[str, str]:
    """The ratios the paper states, read from the benchmark tables (file stem -> tables)."""
    facts = {}
    if "table3" in tables:
        t3 = tables["table3"][0][1]
        facts["LoopSpeedUp"] = f"{_cell(t3, 'batch-1 loop', 'time / genir_mech', 'table3.md'):.1f}"
        facts["OverFloor"] = f"{_cell(t3, 'genir_mech', 'time / floor', 'table3.md'):.2f}"
    if "patching" in tables:
        by_heading = dict(tables["patching"])
        for heading, name in (("components", "Components"), ("heads", "Heads")):
            table = next((t for h, t in by_heading.items() if h.startswith("Exact sweep") and heading in h), None)
            if table is not None:
                facts[f"Patch{name}SpeedUp"] = f"{_cell(table, '(b)', 'time vs (a)', 'patching.md'):.0f}"
                facts[f"Patch{name}Floor"] = f"{_cell(table, '(d)', 'time vs (a)', 'patching.md'):.2f}"
        atp = next((t for h, t in by_heading.items() if h.startswith("Attribution")), None)
        if atp is not None:
            row = atp[(atp.iloc[:, 0] == "every node, QK fix") & (atp["estimate"] == "atp_qk")]
            if not row.empty:
                facts["AtPRhoHeads"] = f"{_number(row['rho: cross-attention heads'].iloc[0]):.2f}"
                facts["AtPRhoNodes"] = f"{_number(row['rho: every node'].iloc[0]):.2f}"
    return facts


def write_benchmark_inputs(results: str | Path, out: str | Path) -> list[Path]:
    """LaTeX tables and `numbers.tex` for every bench/results/*.md; returns the files written."""
    results, out = Path(results), Path(out)
    files = sorted(results.glob("*.md"))
    if not files:
        raise GenIRError(f"{results}: no benchmark results (*.md); run `make bench` first")
    tables = {f.stem: markdown_tables(f) for f in files}
    written = []
    for stem, found in tables.items():
        for i, (heading, table) in enumerate(found, start=1):
            path = out / f"{stem}_{i}.tex"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(latex_table(table, f"Benchmark: {heading} (bench/results/{stem}.md).", f"tab:bench-{stem}-{i}", index=False))
            written.append(path)
    written.append(write_macros(benchmark_facts(tables), out / "numbers.tex", prefix="bench"))
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m genir_mech.reporting.benchmarks BENCH_RESULTS_DIR OUT_DIR")
    for written_path in write_benchmark_inputs(sys.argv[1], sys.argv[2]):
        print(written_path)

"""Copy the benchmark result files into the README's benchmark section (between its two markers), each under a level-3 heading.

    python bench/update_readme.py          # after bench/run_all.sh (make bench runs both)

The README's benchmark numbers are never typed in: they are these files.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench results: written by bench/update_readme.py -->", "<!-- end of bench results -->"
# Small model first, then the T5-large shape, then depth: the order a reader compares them in.
FILES = ["table3.md", "patching.md", "patching-cpu-clock.md", "table3-t5-large-shape.md", "patching-t5-large-shape.md", "depth-t5-large-shape.md",
         "heads.md", "sweep.md", "minilm_training.md", "docid_ranking.md", "cli_startup.md"]


def section(results: Path) -> str:
    parts = []
    for name in FILES:
        path = results / name
        if path.exists():
            text = path.read_text().strip()
            # each file's top heading becomes a README level-3 heading, whatever level the benchmark wrote it at
            top = min((len(h) for h in re.findall(r"^(#+) ", text, flags=re.M)), default=3)
            parts.append(re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) - top + 3) + " ", text, flags=re.M) + f"\n\n(from `bench/results/{name}`)")
    return "\n\n".join(parts)


def main():
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: the benchmark section markers are missing ({START} ... {END})")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n\n{section(ROOT / 'bench' / 'results')}\n\n{END}{tail}")
    print(f"{readme}: benchmark section rewritten from bench/results")


if __name__ == "__main__":
    main()

"""The demo's Markdown report, written from the summaries its pipelines return.

    path = write_report(out, gm, metrics, found, swap, patching, figures, timings)   # -> <out>/REPORT.md
"""
from __future__ import annotations

import json
from pathlib import Path


def _markdown(records: list[dict]) -> str:
    keys = list(records[0]) if records else []
    return "\n".join(["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"] + ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in records])


def write_report(out: Path, gm, metrics: dict, found: dict, swap: dict, patching: dict, figures: dict, timings: dict) -> Path:
    lines = [
        f"# genir_mech demo: {gm.name}",
        "",
        f"Model `{gm.path}`: {gm.n_layers('encoder')} encoder and {gm.n_layers('decoder')} decoder layers, {gm.adapter.n_heads} heads, {len(gm.docids)} docids.",
        "",
        "## Retrieval (test split, held-out templates)",
        "",
        "| " + " | ".join(metrics) + " |",
        "| " + " | ".join("---" for _ in metrics) + " |",
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in metrics.values()) + " |",
        "",
        "## Stages (located automatically)",
        "",
        "```",
        found["report"],
        "```",
        "",
        "## Encoder swap",
        "",
    ]
    for key, title in (("removed_docs", "Documents the encoder's model never saw (paper Table 2)"), ("vanilla", "Vanilla pretrained encoder")):
        if key in swap:
            lines += [f"{title}:", "", _markdown(swap[key]), ""]
    lines += ["## Outputs", ""]
    for name, path in sorted(figures.items()):
        rel = Path(path).relative_to(out) if Path(path).is_relative_to(out) else Path(path)
        lines.append(f"- {name}: [{rel}]({rel})" + (f"\n\n  ![{name}]({rel})" if str(path).endswith(".png") else ""))
    lines += ["", "## Patching", ""]
    for target, result in patching.items():
        if "spearman" in result:
            lines.append(f"- {target}: Spearman rank correlation of {result['method']} with exact patching on its top candidates: {result['spearman']:.3f}")
        else:
            lines.append(f"- {target}: largest normalised effects `{json.dumps(result.get('top', []), default=str)[:600]}`")
    lines += ["", "## Time per step (s)", ""] + [f"- {k}: {v}" for k, v in timings.items()]
    path = out / "REPORT.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path

"""The paper's tables (2-6) built from the tidy result tables and written as Markdown and LaTeX; the numbers a paper quotes as LaTeX macros.

    t3 = ablation_table(ablation_df)                         # Table 3: stage x component rows, method x rank-threshold columns
    write_display(t3, "runs/paper/tables/table3", "Stage ablations ...")   # table3.md + table3.tex
    removed_docs_table(swap_summary), vanilla_table(swap_summary)    # the encoder-swap experiments, one row per model x condition
    write_macros({"RetrievalHitsOne": "0.890"}, "numbers.tex")   # \\newcommand{\\gmRetrievalHitsOne}{0.890}: numbers a paper quotes

Each builder takes the DataFrame an analysis wrote and returns a display
table; nothing here recomputes an analysis.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..provenance import written_atomically
from ..stage_definition import StageDefinition

RANK_COLUMNS = ["rank>1", "rank>5", "rank>10", "rank>100"]


def latex_escape(text: str) -> str:
    """Text safe for LaTeX: the ten special characters escaped, < > and SentencePiece's word mark made printable in the default fonts."""
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\u2581": r"\_", "<": r"\textless{}", ">": r"\textgreater{}"}
    return "".join(special.get(c, c) for c in str(text))


def latex_table(table: pd.DataFrame, caption: str, label: str, index: bool = True) -> str:
    """A float with an escaped caption and a label, shrunk to the line width only when wider.

    Needs booktabs and graphicx (texlive-latex-base and -recommended), not multirow:
    a repeated index value is printed once, on its first row.
    """
    body = table.to_latex(index=index, escape=True, float_format="%.2f", multirow=False, multicolumn_format="c", na_rep="--")
    # the default (OT1) fonts have no < > and no SentencePiece word mark
    body = body.replace("\u2581", r"\_").replace("<", r"\textless{}").replace(">", r"\textgreater{}")
    return ("\\begin{table}[htbp]\n\\centering\\small\n"
            f"\\caption{{{latex_escape(caption)}}}\\label{{{label}}}\n"
            "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
            f"{body.rstrip()}\n}}\n\\end{{table}}\n")


def write_macros(facts: dict[str, str], path: str | Path, prefix: str = "gm") -> Path:
    """`\\newcommand{\\gmRetrievalHitsOne}{0.890}` for every fact (names: letters only, as LaTeX needs), written atomically."""
    lines = ["% Written by genir_mech from result tables; do not edit: rerun `make paper`."]
    for name, value in facts.items():
        if not re.fullmatch(r"[A-Za-z]+", name):
            raise ValueError(f"macro name {name!r} must be letters only")
        lines.append(f"\\newcommand{{\\{prefix}{name}}}{{{latex_escape(value)}}}")
    path = Path(path)
    with written_atomically(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def write_display(table: pd.DataFrame, path, caption: str, index: bool = True) -> list[Path]:
    """Write a display table as Markdown and LaTeX (`tab:<file name>`) with its caption; returns both paths."""
    path = Path(path)
    table = table.round(2)
    md, tex = path.with_suffix(".md"), path.with_suffix(".tex")
    with written_atomically(md) as tmp:
        tmp.write_text(f"{caption}\n\n{_flat(table, index).to_markdown(index=False)}\n")
    with written_atomically(tex) as tmp:
        tmp.write_text(latex_table(table, caption, f"tab:{path.stem}", index=index))
    return [md, tex]


def _flat(table: pd.DataFrame, index: bool) -> pd.DataFrame:
    """Markdown has one header row: join multi-level column names, turn the index into columns."""
    flat = table.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        flat.columns = [" ".join(str(part) for part in col if str(part)) for col in flat.columns]
    return flat.reset_index() if index else flat


def _in_order(values, order) -> list:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order]


def ablation_table(df: pd.DataFrame, stages: StageDefinition | None = None) -> pd.DataFrame:
    """Table 3: % of correct queries whose relevant document leaves rank 1 / falls below rank 5, 10, 100."""
    df = df[(df.method != "intact") & df.metric.isin(RANK_COLUMNS)]
    table = df.pivot_table(index=["stage", "component"], columns=["method", "metric"], values="value", sort=False)
    stage_order = _in_order(df.stage, stages.names() if stages else [])
    table = table.reindex(sorted(table.index, key=lambda i: (stage_order.index(i[0]), i[1])))
    methods = _in_order(df.method, ["zero", "mean", "cross-model"])
    return table.reindex(columns=pd.MultiIndex.from_product([methods, RANK_COLUMNS], names=["method", "metric"]))


def circuit_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table 4: Hits@1/5/10 of intact model and circuit, relative %, and components kept."""
    hits = df[df.metric.str.startswith("hits@")].pivot_table(index=["circuit", "configuration"], columns="metric", values="value", sort=False)
    counts = df[df.metric.isin(["components_kept", "components_total"])].pivot_table(index="circuit", columns="metric", values="value")
    kept = (counts.components_kept.astype(int).astype(str) + " / " + counts.components_total.astype(int).astype(str)).rename("components kept")
    table = hits.join(kept, on="circuit")
    table.loc[table.index.get_level_values("configuration") != "circuit", "components kept"] = ""
    return table


def docid_share_table(lens: pd.DataFrame, stages: StageDefinition | None, component: str = "cross_attn") -> pd.DataFrame:
    """Table 5: % of docid tokens among the top 10/100/1000 of `component`'s vocabulary projection, per stage (and per layer)."""
    share = lens[(lens.component == component) & (lens.facet == "out") & lens.metric.str.startswith("pct_docids_top")].copy()
    share["top"] = share.metric.str.replace("pct_docids_", "", regex=False)
    share["stage"] = share.layer.map(lambda l: stages.stage_of(int(l)) if stages else None).fillna("-")
    table = share.pivot_table(index=["stage", "layer"], columns="top", values="value", sort=False)
    by_stage = share.pivot_table(index="stage", columns="top", values="value", sort=False)
    by_stage.index = pd.MultiIndex.from_tuples([(s, "all") for s in by_stage.index], names=["stage", "layer"])
    columns = sorted(table.columns, key=lambda c: int(c.replace("top", "")))
    order = _in_order(share.stage, stages.names() if stages else [])
    out = pd.concat([table, by_stage])[columns]
    return out.reindex(sorted(out.index, key=lambda i: (order.index(i[0]), i[1] != "all", str(i[1]).zfill(4))))


def head_tokens_table(heads: pd.DataFrame, stages: StageDefinition | None, stage_index: int = 1, n_queries: int = 3, n_tokens: int = 8) -> pd.DataFrame:
    """Table 6: decoded top tokens of each cross-attention head of one stage (default the second), for a few example queries."""
    if stages is not None and len(stages.stages) > stage_index:
        heads = heads[heads.layer.isin(stages.stages[stage_index].layers)]
    queries = list(dict.fromkeys(heads.query_id))[:n_queries]
    heads = heads[heads.query_id.isin(queries) & (heads["rank"] <= n_tokens)].sort_values(["query_id", "layer", "head", "rank"])
    keys = ["query_id", "query", "layer", "head"] if "query" in heads else ["query_id", "layer", "head"]
    table = heads.groupby(keys, sort=False).token.agg(", ".join).rename("top tokens").reset_index()
    return table.set_index(keys)


def swap_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table 2: the encoder-swap helper's summary (variant/condition rows, metric columns)."""
    keys = [c for c in df.columns if c not in ("metric", "value")]
    return df.pivot_table(index=keys, columns="metric", values="value", sort=False)


def layer_ablation_table(df: pd.DataFrame, metric: str = "rank>1") -> pd.DataFrame:
    """Per-layer ablations (not in the paper): layer rows, component x method columns, one metric."""
    df = df[(df.method != "intact") & (df.metric == metric)]
    return df.pivot_table(index="layer", columns=["component", "method"], values="value", sort=False).sort_index()


def _value(summary: pd.DataFrame, metric: str) -> float:
    return float(summary.loc[summary["metric"] == metric, "value"].iloc[0])


def removed_docs_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Display table of encoder-swap experiment 1: one row per variant x condition."""
    rows = []
    for (variant, condition), s in summary[summary["condition"] != ""].groupby(["variant", "condition"], sort=False):
        n, hits, docs = int(_value(s, "n_queries")), int(_value(s, "hits@1_count")), int(_value(s, "n_documents"))
        rows.append({"encoder from (B)": variant, "condition": condition, "queries (docs)": f"{n} ({docs})", "Hits@1": f"{hits}/{n}",
                     "Hits@1 %": round(100 * hits / n, 1), "MRR": round(_value(s, "mrr"), 3)})
    return pd.DataFrame(rows)


def vanilla_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Display table of encoder-swap experiment 2: one row per vanilla model x condition."""
    rows = []
    for (source, condition), s in summary.groupby(["encoder_from", "condition"], sort=False):
        n = int(_value(s, "n_queries"))
        rows.append({
            "encoder from (B)": source, "condition": condition, "queries": n, "mean rank": round(_value(s, "mean_rank"), 1),
            "median rank": _value(s, "median_rank"), "% rank 1": round(100 * _value(s, "hits@1"), 1), "% within rank 10": round(100 * _value(s, "hits@10"), 1),
            "MRR": round(_value(s, "mrr"), 3),
        })
    return pd.DataFrame(rows)

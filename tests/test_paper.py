"""The paper and every generated LaTeX table compile with a LaTeX engine; its numbers are macros the pipelines write.

A demo run on a tiny planted model writes every display table, numbers.tex and the figures;
each table is compiled alone with the paper's preamble, then paper/main.tex against those results.
Skips, saying so, only when no LaTeX engine is installed (`make tex` or paper/install_tex.sh installs one).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from genir_mech.figures.tables import latex_table, latex_escape
from genir_mech.pipelines.benchmarks import benchmark_facts, markdown_tables, write_benchmark_inputs
from genir_mech.pipelines.demo import DemoConfig, run_demo
from genir_mech.pipelines.report import write_macros
from genir_mech.testing import planted_cross_attention, tiny_genir, toy_tokenizer
from genir_mech.data.corpus import RetrievalDataset

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper"
ENGINE = shutil.which("pdflatex")
needs_tex = pytest.mark.skipif(ENGINE is None, reason="no LaTeX engine: pdflatex is not installed (run `make tex`, i.e. paper/install_tex.sh)")


def _compile(tex: Path, results: Path | None = None) -> subprocess.CompletedProcess:
    """pdflatex in the file's folder; `results` is the folder the paper reads its generated inputs from."""
    source = tex.name if results is None else f"\\def\\results{{{results}}}\\input{{{tex.name}}}"
    return subprocess.run([ENGINE, "-interaction=nonstopmode", "-halt-on-error", "-jobname", tex.stem, source],
                          cwd=tex.parent, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A demo run on a tiny model with planted cross-attention, plus the benchmark tables: every generated input of the paper."""
    out = tmp_path_factory.mktemp("paper") / "results"
    gm = planted_cross_attention(tiny_genir(decoder_layers=6), [2, 3])
    ds = toy_tokenizer(len(gm.docids), 0)[1]
    top = gm.docids.scores(gm.logits(gm.batch([q.text for q in ds.queries]))).argmax(1).tolist()
    dataset = RetrievalDataset(ds.documents, ds.queries, {q.query_id: {gm.docids.doc_ids[j]} for q, j in zip(ds.queries, top)}, ds.pairs, ds.meta)
    config = DemoConfig(max_queries=6, n_pairs=3, bootstrap=2, n_boot=10, verify_top_k=2, all_pairs=True)
    run_demo(gm, dataset, out, config, base=planted_cross_attention(tiny_genir(decoder_layers=6), [2, 3]), progress=False)
    write_benchmark_inputs(ROOT / "bench" / "results", out / "bench")
    return out


def test_captions_and_cells_are_escaped():
    table = pd.DataFrame({"rank>1 (%)": [12.5], "token": ["\u2581colour_&"]}, index=pd.Index(["cross_attn"], name="component"))
    tex = latex_table(table, "Share (%) of queries_with rank>1 & more", "tab:x")
    caption = re.search(r"\\caption\{(.*)\}\\label", tex).group(1)
    assert caption == r"Share (\%) of queries\_with rank\textgreater{}1 \& more"
    assert r"cross\_attn" in tex and r"\_colour\_\&" in tex and "%" not in tex.replace(r"\%", "").replace("{%\n", "")
    assert latex_escape("a_b%c") == r"a\_b\%c"


def test_macros_are_letters_only_and_escaped(tmp_path):
    path = write_macros({"TopSite": "decoder.layers.0.cross_attn", "Share": "5%"}, tmp_path / "numbers.tex")
    assert path.read_text().splitlines()[1:] == [r"\newcommand{\gmTopSite}{decoder.layers.0.cross\_attn}", r"\newcommand{\gmShare}{5\%}"]
    with pytest.raises(ValueError):
        write_macros({"hits@1": "0.5"}, tmp_path / "bad.tex")


def test_benchmark_numbers_are_read_from_the_benchmark_tables():
    tables = {f.stem: markdown_tables(f) for f in sorted((ROOT / "bench" / "results").glob("*.md"))}
    facts = benchmark_facts(tables)
    t3 = tables["table3"][0][1]
    loop = t3[t3.iloc[:, 0].str.startswith("batch-1 loop")]["time / genir_mech"].iloc[0]
    assert facts["LoopSpeedUp"] == f"{float(loop):.1f}"


def test_the_demo_writes_a_report_in_sentences_and_the_paper_numbers(results):
    report = (results / "REPORT.md").read_text()
    assert "{" not in report.split("```")[0] + report.split("```")[-1], "a raw JSON dict in REPORT.md"
    assert "Hits@1" in report and "Spearman" in report
    for line in report.splitlines():
        if line.startswith("!["):
            # every figure has a caption sentence two lines above it
            previous = report.splitlines()[report.splitlines().index(line) - 2]
            assert previous.endswith(".") and not previous.startswith(("!", "|", "#")), line
    numbers = (results / "numbers.tex").read_text()
    used = set(re.findall(r"\\gm\{(\w+)\}", (PAPER / "main.tex").read_text()))
    defined = set(re.findall(r"\\newcommand\{\\gm(\w+)\}", numbers))
    assert used and {"RetrievalHitsOne", "StagesFound", "CrossRatioFirst", "AtPSpearman"} <= defined
    assert typed_numbers(PAPER / "main.tex") <= NOT_RESULTS


# Words with digits in the paper's prose that are names, not results: models, metrics, the seed paper's figure and
# table numbers, the first layer, rank cut-offs.
NOT_RESULTS = {"T5", "mT5", "UMT5", "Qwen2", "Hits@1", "Hits@10", "batch-1", "Fig.~3", "Table~3", "0", "1", "10", "top-10"}


def typed_numbers(tex: Path) -> set[str]:
    """Words with a digit in the body text of `tex`, after removing comments, macros with generated values, paths and references."""
    body = tex.read_text().split("\\begin{document}")[1].split("\\begin{thebibliography}")[0]
    body = re.sub(r"(?<!\\)%.*", "", body)
    body = re.sub(r"\\(gm|bench|ref|label|resultinput|cite)\{[^}]*\}", "", body)
    body = re.sub(r"\\resultfigure(\[[^]]*\])?\{[^}]*\}", "", body)
    return {w.strip(",;:(){}.") for w in re.findall(r"\S*\d\S*", body)}


@needs_tex
def test_every_generated_table_compiles(results, tmp_path):
    tables = sorted(results.rglob("*.tex"))
    tables = [t for t in tables if t.name != "numbers.tex"]
    assert len(tables) >= 8, tables
    shutil.copy(PAPER / "preamble.tex", tmp_path)
    for i, table in enumerate(tables):
        doc = tmp_path / f"table{i}.tex"
        doc.write_text("\\documentclass{article}\n\\input{preamble.tex}\n\\begin{document}\n" + table.read_text() + "\n\\end{document}\n")
        proc = _compile(doc)
        assert proc.returncode == 0, f"{table.relative_to(results)} does not compile:\n{proc.stdout[-1500:]}"


@needs_tex
def test_the_paper_compiles_with_generated_numbers_figures_and_tables(results, tmp_path):
    for name in ("main.tex", "preamble.tex"):
        shutil.copy(PAPER / name, tmp_path)
    if (PAPER / "pretraining-study").is_dir():  # committed results of `genir-mech study pretraining`, read beside main.tex
        shutil.copytree(PAPER / "pretraining-study", tmp_path / "pretraining-study")
    proc = _compile(tmp_path / "main.tex", results)
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = re.sub(r"(?m)^(.{79})\n", r"\1", (tmp_path / "main.log").read_text(errors="replace"))  # TeX wraps its log at 79 characters
    assert (tmp_path / "main.pdf").stat().st_size > 10_000
    # the tiny demo has no removed-documents variant, and its lens need not reach rank 1: only those numbers may be missing
    missing = set(re.findall(r"no number gm(\w+)", log))
    assert missing <= {"SwapRemovedHits", "SwapRemovedMRR", "SwapRemovedDocs", "LensFirstRankOneLayer"}, missing
    assert {m.rstrip(".") for m in re.findall(r"missing result (\S+)", log)} <= {"swap/tables/table2_swap_removed_docs.tex"}


def test_report_tables_are_found_in_both_layouts_and_formats(tmp_path):
    """run_demo keeps the decoder tables in decoder/; a sweep gives each experiment its folder under the model's folder
    and writes long tables as Parquet: the report reads its numbers from either, never from a staging folder."""
    from genir_mech.pipelines.report import _table
    table = pd.DataFrame({"layer": [0, 1], "value": [0.5, 0.25]})
    (tmp_path / "demo" / "decoder").mkdir(parents=True)
    table.to_csv(tmp_path / "demo" / "decoder" / "contributions.csv", index=False)
    (tmp_path / "sweep" / "dsi" / "lens").mkdir(parents=True)
    table.to_parquet(tmp_path / "sweep" / "dsi" / "lens" / "lens.parquet")
    (tmp_path / "sweep" / "dsi" / "ablate.partial-7").mkdir(parents=True)
    table.to_csv(tmp_path / "sweep" / "dsi" / "ablate.partial-7" / "ablation.csv", index=False)
    assert _table(tmp_path / "demo", "contributions").equals(table)
    assert _table(tmp_path / "sweep" / "dsi", "lens").equals(table)
    assert _table(tmp_path / "sweep" / "dsi", "ablation") is None

"""The paper and every generated LaTeX table compile with a LaTeX engine; its numbers are macros the report writes.

The paper example (examples/paper.yaml, edited as `genir-mech demo` edits it) runs as a sweep on a tiny model with
planted cross-attention and sizes cut down, then its report: every display table, numbers.tex and the figures, in
the folders `make paper` reads (`<results>/demo/dsi/<experiment>/`, `<results>/demo/numbers.tex`, `<results>/bench/`).
Each table is compiled alone with the paper's preamble, then paper/main.tex against those results.
Skips, saying so, only when no LaTeX engine is installed (`make tex` or paper/install_tex.sh installs one).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from genir_mech.data.corpus import RetrievalDataset
from genir_mech.data.loaders import save_dsi_jsonl
from genir_mech.embedded import example_config
from genir_mech.figures.tables import latex_escape, latex_table, write_macros
from genir_mech.reporting.benchmarks import benchmark_facts, markdown_tables, write_benchmark_inputs
from genir_mech.reporting.report import paper_report
from genir_mech.reporting.results import SweepResults
from genir_mech.sweep import load_config, run_sweep
from genir_mech.testing import planted_stages, toy_tokenizer
from genir_mech.verbs.demo import paper_example

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper"
ENGINE = shutil.which("pdflatex")
needs_tex = pytest.mark.skipif(ENGINE is None, reason="no LaTeX engine: pdflatex is not installed (run `make tex`, i.e. paper/install_tex.sh)")
# the example's sizes cut down for a tiny model, wherever the example sets them
SMALL = {"max_queries": 6, "n_pairs": 3, "bootstrap": 2, "n_boot": 10, "verify_top_k": 2, "examples": 2}


def _compile(tex: Path, results: Path | None = None) -> subprocess.CompletedProcess:
    """pdflatex in the file's folder; `results` is the folder the paper reads its generated inputs from."""
    source = tex.name if results is None else f"\\def\\results{{{results}}}\\input{{{tex.name}}}"
    return subprocess.run([ENGINE, "-interaction=nonstopmode", "-halt-on-error", "-jobname", tex.stem, source],
                          cwd=tex.parent, capture_output=True, text=True, timeout=300)


def tiny_paper_sweep(root: Path, out: Path, patch_targets: tuple[str, ...] = ("component", "head")):
    """The paper example as `genir-mech demo` runs it, on a tiny model with planted cross-attention saved under `root`
    (data: the toy corpus with each query's relevant document set to the model's own first choice, so every query is
    correct), with SMALL sizes; the model is its own base and has no removed-documents variant. Returns (config, manifest)."""
    gm = planted_stages()  # the paper's three stages planted, so every experiment of the example applies
    ds = toy_tokenizer(len(gm.docids), 0)[1]
    top = gm.docids.scores(gm.logits(gm.batch([q.text for q in ds.queries]))).argmax(1).tolist()
    save_dsi_jsonl(RetrievalDataset(ds.documents, ds.queries, {q.query_id: {gm.docids.doc_ids[j]} for q, j in zip(ds.queries, top)}, ds.pairs, ds.meta),
                   root / "data")
    model = root / "tiny-planted"
    gm.hf_model.save_pretrained(model)
    gm.tokenizer.save_pretrained(model)
    (model / "model_card.json").write_text(json.dumps({"data": str(root / "data")}))
    options = argparse.Namespace(model=str(model), revision=None, base=str(model), variants=[], device="cpu", dtype="float32",
                                 max_queries=SMALL["max_queries"], n_pairs=SMALL["n_pairs"])
    demo = paper_example(options)

    def small(raw: dict) -> dict:
        raw = {**demo(raw), "threads": 1}
        experiments = []
        for exp in raw["experiments"]:
            exp = {**exp, **{k: v for k, v in SMALL.items() if k in exp}}
            if exp["run"] in ("patch", "attribute"):
                exp["all_pairs"] = True  # the tiny model need not get a pair right
            if exp["run"] == "patch":
                exp["target"] = list(patch_targets)
            experiments.append(exp)
        return {**raw, "experiments": experiments}

    config = load_config(example_config("paper.yaml"), out=out, edit=small)
    return config, run_sweep(config, progress=False)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The tiny paper sweep with its report, plus the benchmark tables: every generated input of the paper under `results`."""
    root = tmp_path_factory.mktemp("paper")
    results = root / "results"
    config, manifest = tiny_paper_sweep(root, results / "demo")
    paper_report(config, manifest)
    write_benchmark_inputs(ROOT / "bench" / "results", results / "bench")
    return config, manifest, results


@pytest.fixture(scope="module")
def results(sweep) -> Path:
    return sweep[2]


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
    report = (results / "demo" / "REPORT.md").read_text()
    assert "{" not in report.split("```")[0] + report.split("```")[-1], "a raw JSON dict in REPORT.md"
    assert "Hits@1" in report and "Spearman" in report
    for line in report.splitlines():
        if line.startswith("!["):
            # every figure has a caption sentence two lines above it
            previous = report.splitlines()[report.splitlines().index(line) - 2]
            assert previous.endswith(".") and not previous.startswith(("!", "|", "#")), line
    # every experiment's figures, linked into its folder of the sweep
    images = {line[2:].split("]", 1)[0]: line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")}
    assert {"retrieval_ranks", "stages", "fig3_contributions", "fig4_logit_lens", "ablation", "layer_ablation", "circuit", "fig5_reading",
            "swap", "component", "head", "attribution_heads"} <= set(images), sorted(images)
    assert all((results / "demo" / image).is_file() for image in images.values()), images
    assert images["head"] == "dsi/patch/head/figures/head.png"
    numbers = (results / "demo" / "numbers.tex").read_text()
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
    assert {m.rstrip(".") for m in re.findall(r"missing result (\S+)", log)} <= {REMOVED_DOCS_TABLE}


REMOVED_DOCS_TABLE = "demo/dsi/swap/tables/table2_swap_removed_docs.tex"  # needs a removed-documents variant, which the tiny sweep has not


def test_every_result_the_paper_includes_is_in_the_demo_sweeps_folders(results):
    """main.tex includes its figures and tables from the folders the demo's sweep writes (`demo/<model>/<experiment>/`)
    and the benchmark tables; the pretraining study's from its committed folder."""
    tex = (PAPER / "main.tex").read_text()
    included = re.findall(r"\\result(?:figure(?:\[[^]]*\])?|input)\{([^}]+)\}", tex)
    numbers = re.findall(r"\\numbersfile\{([^}]+)\}", tex)
    assert included and numbers == ["demo/numbers.tex", "bench/numbers.tex"]
    missing = [p for p in included + numbers if not (results / p).is_file() and not (PAPER / "pretraining-study" / p).is_file()]
    assert missing == [REMOVED_DOCS_TABLE], missing
    assert all(p.startswith(("demo/dsi/", "bench/")) for p in included if not (PAPER / "pretraining-study" / p).is_file()), included


def test_the_report_reads_each_table_from_its_experiments_folder(sweep):
    """The stage localiser also writes a contributions table: the report's contribution numbers come from the
    contributions experiment's folder only, and are left out when that experiment did not finish."""
    config, manifest, _ = sweep
    from genir_mech.reporting.facts import demo_facts
    results = SweepResults.of(manifest, "dsi")
    assert results.folder("contributions") == config.out / "dsi" / "contributions"
    assert (config.out / "dsi" / "stages" / "contributions.csv").is_file() or (config.out / "dsi" / "stages" / "contributions.parquet").is_file()
    assert "CrossRatioFirst" in demo_facts(results)
    failed = {**manifest["units"], "dsi/contributions": {**manifest["units"]["dsi/contributions"], "status": "failed", "reason": "boom"}}
    broken = SweepResults.of({**manifest, "units": failed}, "dsi")
    assert broken.table("contributions", "contributions") is None and "CrossRatioFirst" not in demo_facts(broken)
    assert broken.not_run() == {"contributions": "failed: boom"}
    assert set(results.patching()) == {"component", "head"} and results.figure("patch", "head").endswith("patch/head/figures/head.png")


def test_the_report_loads_no_model_weights(sweep, monkeypatch):
    """The report takes the model's shape from its config and its docids from its tokenizer: no weights are loaded."""
    import genir_mech.models.loading as loading
    config, manifest, results = sweep
    before = (results / "demo" / "numbers.tex").read_bytes()

    def no_weights(*args, **kwargs):
        raise AssertionError("the report loaded a model")

    monkeypatch.setattr(loading, "load_genir", no_weights)
    monkeypatch.setattr(loading, "_load", no_weights)
    assert paper_report(config, manifest) == results / "demo" / "REPORT.md"
    assert (results / "demo" / "numbers.tex").read_bytes() == before

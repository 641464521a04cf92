"""Hostile or careless inputs that once gave a traceback or ran on with a wrong value: each is now one line, exit 2.

In the style of tests/test_bad_input.py (in-process `genir_mech.cli.main`, one `genir-mech VERB: error: ...`
line, no traceback), by class:

1. BEIR qrels: fractional, infinite, NaN or non-numeric grades and lines with more than three columns;
2. `--data ir_datasets:<id>` whose files cannot be downloaded and are not cached;
3. sweep configs: a negative `threads`, booleans and floats for integer fields, and resample counts and synthetic
   corpus sizes beyond the bounds that keep them within a machine (one constant each, shared with the CLI);
4. user text files that are not UTF-8 (intervention files, stage definitions, pair CSVs, sweep configs);
5. model cards with wrongly typed fields;
6. checkpoints whose weights are pickle files only;
7. a full disk (or an unwritable place) while results or a dataset are written;
8. a --max-query-tokens beyond the model's positions, or a batch too large for the memory available;
9. queries that tokenize to nothing but unknown or special tokens.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genir_mech.cli import main
from genir_mech.errors import GenIRError
from test_model_names import one_error_line as process_error_line  # noqa: E402  (tests/ is on sys.path: the same check for a command run in its own process)

ROOT = Path(__file__).resolve().parents[1]
EVAL = ["eval", "--model", "dsi-synth", "--max-queries", "8", "--beams", "0", "--split", "validation"]


def error_line(code: int, capsys, verb: str) -> str:
    """The one error line of a refused command (exit 2, no traceback), as tests/test_bad_input.py checks it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"genir-mech {verb}: error: "), err
    return lines[0]


def beir(root: Path, qrels: str) -> Path:
    """A two-document, two-query BEIR folder whose qrels/test.tsv is `qrels`."""
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n')
    (root / "qrels" / "test.tsv").write_text(qrels)
    return root


# -- 1. BEIR qrels grades and columns -------------------------------------------------------------------------

HEADER = "query-id\tcorpus-id\tscore\n"
QRELS = [
    ("inf", HEADER + "q1\td1\t1\nq2\td2\tinf\n", "test.tsv, line 3: score 'inf' is not an integer"),
    ("nan", HEADER + "q1\td1\t1\nq2\td2\tnan\n", "test.tsv, line 3: score 'nan' is not an integer"),
    ("fraction above 1", HEADER + "q1\td1\t1\nq2\td2\t2.9\n", "test.tsv, line 3: score '2.9' is not an integer"),
    ("fraction below 1", HEADER + "q1\td1\t1\nq2\td2\t0.7\n", "fractional grades are not rounded"),
    ("not a number", HEADER + "q1\td1\tvery\n", "test.tsv, line 2: score 'very' is not a number; relevance grades are integers"),
    ("extra column", HEADER + "q1\td1\t1\nq2\td2\t1\tgood\n", "test.tsv, line 3: expected 3 tab-separated columns (query-id, corpus-id, score), got 4"),
    ("TREC line", "q1\t0\td1\t1\n", "test.tsv, line 1: expected 3 tab-separated columns"),
    ("extra header column", "query-id\tcorpus-id\tscore\tnote\nq1\td1\t1\n", "test.tsv, line 1: expected 3 tab-separated columns"),
    ("another header", "qid\tdocid\tgrade\nq1\td1\t1\n", "line 1: score 'grade' is not a number; relevance grades are integers (0: not relevant, 1, 2, ...: relevant) (a header row"),
]


@pytest.mark.parametrize("qrels,expected", [q[1:] for q in QRELS], ids=[q[0] for q in QRELS])
def test_beir_qrels_take_integer_grades_in_three_columns(qrels, expected, tmp_path, capsys):
    data = beir(tmp_path / "beir", qrels)
    line = error_line(main(["data", "--data", str(data), "--out", str(tmp_path / "out")]), capsys, "data")
    assert expected in line and str(data / "qrels" / "test.tsv") in line
    assert not (tmp_path / "out").exists()


def test_whole_number_grades_load_and_dsi_relevance_grades_follow_the_same_rule(tmp_path):
    from genir_mech.data.loaders import load_beir, load_dsi_jsonl
    ds = load_beir(beir(tmp_path / "beir", HEADER + "q1\td1\t2.0\nq2\td2\t-1\nq2\td1\t1\n"))
    assert ds.grades == {"q1": {"d1": 2}, "q2": {"d1": 1, "d2": -1}}
    (tmp_path / "documents.jsonl").write_text('{"doc_id": "a", "text": "x"}\n{"doc_id": "b", "text": "y"}\n')
    for grade, expected in [("0.5", "relevance grade of document 'a': 0.5 is not an integer"), ("true", "True is not an integer"),
                            ('"many"', "'many' is not a number"), ("1e400", "inf is not an integer")]:
        (tmp_path / "queries.jsonl").write_text('{"text": "q", "relevance": {"a": %s, "b": 1}}\n' % grade)
        with pytest.raises(GenIRError, match="queries.jsonl, line 1: ") as info:
            load_dsi_jsonl(tmp_path / "documents.jsonl", tmp_path / "queries.jsonl")
        assert expected in str(info.value)


# -- 2. ir_datasets without network ---------------------------------------------------------------------------


def test_ir_datasets_without_network_is_one_line_naming_the_id(tmp_path):
    # A proxy on the discard port refuses every connection at once: ir_datasets' own download code fails as it does
    # offline, in well under a second, and never downloads anything even where the network is reachable.
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "https_proxy", "http_proxy", "all_proxy")}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", IR_DATASETS_HOME=str(tmp_path / "irds"),
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "genir_mech.cli", "data", "--data", "ir_datasets:antique/test", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    line = process_error_line(proc, "data")
    assert "ir_datasets:antique/test: the dataset's files could not be downloaded from ciir.cs.umass.edu" in line
    assert f"are not in the ir_datasets cache ({tmp_path / 'irds'})" in line
    assert not (tmp_path / "out").exists()


def test_a_file_to_obtain_by_hand_is_named(tmp_path):
    """A registered dataset whose local file is missing: ir_datasets cannot download it; the line says where it belongs."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    from genir_mech.data.loaders import load_dataset
    dataset_id = f"genir-mech-missing-{os.getpid()}/test"
    missing = tmp_path / "docs.tsv"
    ir_datasets.registry.register(dataset_id, Dataset(
        TsvDocs(LocalDownload(missing)), TsvQueries(LocalDownload(tmp_path / "q.tsv")), TrecQrels(LocalDownload(tmp_path / "qrels"), {1: "relevant"})))
    with pytest.raises(GenIRError, match=f"ir_datasets:{dataset_id}: the dataset's files are not in the ir_datasets cache") as info:
        load_dataset(f"ir_datasets:{dataset_id}")
    assert str(missing) in str(info.value)


# -- 3. sweep configs: strict types and bounds --------------------------------------------------------------------

SWEEP_MISTAKES = [
    ("negative threads", "threads: -4", "threads: must be a positive integer (torch threads per process)"),
    ("boolean threads", "threads: true", "threads: Input should be a valid integer (got True)"),
    ("boolean count", "experiments: [{run: eval, max_queries: true}]", "experiments[0] (eval).max_queries: Input should be a valid integer (got True)"),
    ("float count", "experiments: [{run: eval, max_queries: 8.0}]", "experiments[0] (eval).max_queries: Input should be a valid integer (got 8.0)"),
    ("string count", "experiments: [{run: eval, max_queries: '8'}]", "experiments[0] (eval).max_queries: Input should be a valid integer (got '8')"),
    ("boolean step", "experiments: [{run: contributions, steps: [0, true]}]", "experiments[0] (contributions).steps"),
    ("boolean float", "experiments: [{run: stages, penalty: true}]", "experiments[0] (stages).penalty: Input should be a valid number (got True)"),
    ("number for a boolean", "models: {dsi: {path: dsi-synth, self_check: 0}}", "models.dsi.self_check: Input should be a valid boolean (got 0)"),
    ("n_boot beyond the bound", "experiments: [{run: patch, target: head, n_boot: 1000000000000}]", "experiments[0] (patch).n_boot: must be at most 100000"),
    ("n_boot as a float", "experiments: [{run: patch, target: head, n_boot: 1.0e+12}]", "experiments[0] (patch).n_boot: Input should be a valid integer"),
    ("n_boot as YAML 1.1 text", "experiments: [{run: patch, target: head, n_boot: 1e12}]", "experiments[0] (patch).n_boot: Input should be a valid integer (got '1e12')"),
    ("bootstrap beyond the bound", "experiments: [{run: stages, bootstrap: 1000000000}]", "experiments[0] (stages).bootstrap: must be at most 100000"),
    ("synthetic corpus beyond the bound", "data: synthetic:n_docs=1000000000", "data: data spec 'synthetic:n_docs=1000000000': n_docs must be at most 100,000"),
]


@pytest.mark.parametrize("change,expected", [m[1:] for m in SWEEP_MISTAKES], ids=[m[0] for m in SWEEP_MISTAKES])
def test_sweep_config_types_are_strict_and_sizes_bounded(change, expected, tmp_path, capsys):
    text = f"out: {tmp_path / 'out'}\nmodels: {{dsi: dsi-synth}}\n{change}\n"
    if "experiments:" not in change:
        text += "experiments: [{run: eval, max_queries: 8}]\n"
    (tmp_path / "sweep.yaml").write_text(text)
    line = error_line(main(["sweep", str(tmp_path / "sweep.yaml"), "--dry-run"]), capsys, "sweep")
    assert expected in line and "fix:" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_integers_stay_valid_floats_and_the_bounds_are_accepted(tmp_path, capsys):
    from genir_mech.sweep import load_config
    (tmp_path / "sweep.yaml").write_text(f"out: {tmp_path / 'out'}\nthreads: 2\nmodels: {{dsi: dsi-synth}}\nexperiments:\n"
                                         "  - {run: stages, penalty: 2, bootstrap: 100000}\n  - {run: patch, target: head, n_boot: 100000}\n")
    config = load_config(tmp_path / "sweep.yaml")
    assert config.threads == 2 and config.experiments[0].params["penalty"] == 2 and config.experiments[1].params["n_boot"] == 100000


@pytest.mark.parametrize("argv,expected", [
    (["patch", "--model", "dsi-synth", "--target", "head", "--n-boot", "100001"], "argument --n-boot: must be at most 100000, got 100001"),
    (["stages", "--model", "dsi-synth", "--bootstrap", "1000000"], "argument --bootstrap: must be at most 100000, got 1000000"),
    (["study", "--bootstrap", "1000000"], "argument --bootstrap: must be at most 100000"),
    (["data", "--data", "synthetic:n_docs=100001"], "n_docs must be at most 100,000, got 100,001"),
    (["data", "--data", "synthetic:n_pairs=-1"], "n_pairs must be between 0 and 100,000, got -1"),
    (["data", "--data", "synthetic:attribute_values=1000000000"], "attribute_values must be at most 10,000"),
], ids=["n-boot", "stages bootstrap", "study bootstrap", "n_docs", "n_pairs", "attribute_values"])
def test_command_line_sizes_share_the_bounds(argv, expected, tmp_path, capsys):
    assert expected in error_line(main([*argv, "--out", str(tmp_path / "out")]), capsys, argv[0])


def test_each_bound_is_one_constant_read_by_the_cli_and_the_sweep():
    from genir_mech.analyses.stage_localisation import MAX_BOOTSTRAP
    from genir_mech.patching.aggregation import MAX_N_BOOT
    from genir_mech import vocabulary
    from genir_mech.sweep.config import maxima
    assert MAX_N_BOOT is vocabulary.MAX_N_BOOT and MAX_N_BOOT == maxima()["n_boot"]
    assert MAX_BOOTSTRAP is vocabulary.MAX_BOOTSTRAP and MAX_BOOTSTRAP == maxima()["bootstrap"]
    from genir_mech.analyses.stage_localisation import localise_stages
    from genir_mech.patching.aggregation import bootstrap_means
    import numpy as np
    with pytest.raises(GenIRError, match="n_boot must be at most 100000"):
        bootstrap_means(np.zeros((2, 3)), n_boot=MAX_N_BOOT + 1)
    with pytest.raises(GenIRError, match="bootstrap must be at most 100000"):
        localise_stages(None, bootstrap=MAX_BOOTSTRAP + 1)



# -- 4. user text files that are not UTF-8 ----------------------------------------------------------------------

LATIN1 = [
    ("intervention file", "specs.yaml", b'interventions:\n  - labels: {note: "caf\xe9"}\n    specs: [{site: decoder.layers.0.mlp, value: zero}]\n',
     ["patch", "--model", "dsi-synth", "--specs", "{file}"], "specs.yaml, line 2: not valid UTF-8 (byte 0xe9 at column 24)"),
    ("stage definition", "stages.json", b'{"stages": [{"name": "caf\xe9", "layers": [0]}]}',
     ["ablate", "--model", "dsi-synth", "--stages", "{file}"], "stages.json, line 1: not valid UTF-8"),
    ("pairs CSV", "pairs.csv", b"clean,corrupted\ncaf\xe9 x,caf\xe9 y\n",
     ["patch", "--model", "dsi-synth", "--target", "head", "--pairs", "{file}"], "pairs.csv, line 2: not valid UTF-8 (byte 0xe9 at column 4)"),
    ("sweep config", "sweep.yaml", b"out: out\n# caf\xe9\nmodels: {dsi: dsi-synth}\nexperiments: [{run: eval}]\n",
     ["sweep", "{file}", "--dry-run"], "sweep.yaml, line 2: not valid UTF-8"),
]


@pytest.mark.parametrize("name,content,argv,expected", [c[1:] for c in LATIN1], ids=[c[0] for c in LATIN1])
def test_text_files_in_another_encoding_are_one_line_saying_utf8(name, content, argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_bytes(content)
    argv = [a.format(file=tmp_path / name) for a in argv]
    line = error_line(main([*argv, *(["--out", str(tmp_path / "out")] if argv[0] != "sweep" else [])]), capsys, argv[0])
    assert expected in line and "text files must be UTF-8" in line
    assert not (tmp_path / "out").exists()


def test_library_readers_of_text_files_name_file_and_line(tmp_path):
    from genir_mech.data.loaders import read_utf8
    from genir_mech.interventions import load_interventions
    from genir_mech.stage_definition import StageDefinition
    (tmp_path / "a.json").write_bytes(b'{"interventions": []}\n\n{"x": "\xff"}')
    with pytest.raises(GenIRError, match=r"a.json, line 3: not valid UTF-8 \(byte 0xff at column 8\)"):
        load_interventions(tmp_path / "a.json")
    (tmp_path / "s.json").write_bytes(b'{"stages": [{"name": "\xe9", "layers": [0]}]}')
    with pytest.raises(GenIRError, match="s.json, line 1: not valid UTF-8"):
        StageDefinition.load(tmp_path / "s.json")
    (tmp_path / "ok.txt").write_text("caf\u00e9\n")
    assert read_utf8(tmp_path / "ok.txt") == "caf\u00e9\n"


# -- 5. model cards with wrongly typed fields ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_copy(tmp_path_factory) -> Path:
    """A copy of the embedded dsi-synth checkpoint, whose model card each test rewrites in its own copy."""
    from genir_mech.embedded import embedded_checkpoint
    source = embedded_checkpoint("dsi-synth")
    if source is None:
        pytest.skip("the embedded checkpoints are not installed")
    root = tmp_path_factory.mktemp("embedded") / "dsi-synth"
    root.mkdir()
    for item in Path(source).iterdir():
        if item.is_file():
            (root / item.name).write_bytes(item.read_bytes())
    return root


def with_card(source: Path, folder: Path, **changes) -> Path:
    folder.mkdir()
    for item in source.iterdir():
        os.symlink(item, folder / item.name) if item.name != "model_card.json" else None
    card = json.loads((source / "model_card.json").read_text())
    (folder / "model_card.json").write_text(json.dumps({**card, **changes}))
    return folder


CARDS = [
    ("data a number", {"data": 123}, "eval", "field 'data' must be a data spec (a string: synthetic:..., ir_datasets:<id> or a data folder; or an object of synthetic corpus options), got int 123"),
    ("data an object of unknown options", {"data": {"a": 1}}, "eval", "field 'data': unknown synthetic corpus option 'a' (options: n_docs, seed, attribute_values, n_pairs)"),
    ("data an object of wrong values", {"data": {"n_docs": "20"}}, "eval", "field 'data': synthetic corpus option 'n_docs' must be an integer, got \"20\""),
    ("data a list", {"data": ["synthetic:n_docs=20"]}, "eval", "field 'data' must be a data spec (a string: synthetic:..., ir_datasets:<id> or a data folder; or an object"),
    ("removed documents a string", {"removed_documents": "0123"}, "swap", "field 'removed_documents' must be a list of document ids, got str \"0123\""),
    ("removed documents of objects", {"removed_documents": [1, {"id": 2}]}, "swap", "field 'removed_documents' must list document ids"),
    ("metrics a list", {"metrics": [1, 2]}, "eval", "field 'metrics' must be a JSON object, got list"),
    ("base a number", {"base": 7}, "eval", "field 'base' must be a model name"),
    ("a huge synthetic corpus", {"data": "synthetic:n_docs=50000000"}, "eval", "field 'data': data spec 'synthetic:n_docs=50000000': n_docs must be at most 100,000"),
    ("a huge synthetic corpus as an object", {"data": {"n_docs": 50000000}}, "eval", "field 'data': n_docs must be at most 100,000"),
]


@pytest.mark.parametrize("changes,verb,expected", [c[1:] for c in CARDS], ids=[c[0] for c in CARDS])
def test_a_model_card_with_wrongly_typed_fields_is_one_line_naming_card_and_field(changes, verb, expected, embedded_copy, tmp_path, capsys):
    model = with_card(embedded_copy, tmp_path / "model", **changes)
    argv = EVAL if verb == "eval" else ["swap", "--encoder-from", "dsi-synth"]
    argv = [str(model) if a == "dsi-synth" and argv is EVAL else a for a in argv]
    if verb == "swap":
        argv = [*argv, "--model", str(model)]
    line = error_line(main([*argv, "--out", str(tmp_path / "out")]), capsys, verb)
    assert f"{model / 'model_card.json'}" in line and expected in line
    assert not (tmp_path / "out").exists()


def test_a_card_with_nulls_reads_as_defaults_and_ids_as_strings(tmp_path):
    from genir_mech.models.model_card import ModelCard
    (tmp_path / "model_card.json").write_text(json.dumps({"data": None, "removed_documents": [3, "7"], "metrics": None, "future_key": [1]}))
    card = ModelCard.read(tmp_path)
    assert card.data is None and card.removed_documents == ["3", "7"] and card.metrics == {} and card.extra == {"future_key": [1]}
    (tmp_path / "model_card.json").write_bytes(b'{"data": "synthetic:n_docs=20", "note": "caf\xe9"}')
    with pytest.raises(GenIRError, match="model_card.json, line 1: not valid UTF-8"):
        ModelCard.read(tmp_path)


# -- 6. pickle-only checkpoints -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pickle_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint whose weights are pytorch_model.bin only (a pickle), as older transformers wrote them."""
    import torch
    from genir_mech.models.loading import quiet_weight_loading
    from genir_mech.testing import tiny_genir
    root = tmp_path_factory.mktemp("pickle") / "tiny"
    gm = tiny_genir(decoder_layers=2)
    with quiet_weight_loading():
        gm.hf_model.save_pretrained(root)
        gm.tokenizer.save_pretrained(root)
    (root / "model_card.json").write_text(json.dumps({"data": "synthetic:n_docs=20,seed=0,n_pairs=16"}))
    torch.save(gm.hf_model.state_dict(), root / "pytorch_model.bin")
    (root / "model.safetensors").unlink()
    return root


CONVERT = ("genir-mech loads safetensors weights only, because pickle weights (pytorch_model.bin and the like) can run code when loaded. "
           "To convert a model you trust: in a trusted environment, load it with from_pretrained and save it with "
           "save_pretrained(folder, safe_serialization=True)")


def test_a_pickle_only_checkpoint_is_refused_with_the_way_to_convert_it(pickle_checkpoint, tmp_path, capsys, monkeypatch):
    from genir_mech.models import loading
    unpickled = []
    monkeypatch.setattr("torch.load", lambda *a, **k: unpickled.append(a) or pytest.fail("a pickle file was loaded"))
    line = error_line(main(["eval", "--model", str(pickle_checkpoint), "--out", str(tmp_path / "out")]), capsys, "eval")
    assert f"{pickle_checkpoint}: no safetensors weights (found pytorch_model.bin); {CONVERT}" in line
    assert not unpickled and not (tmp_path / "out").exists()
    with pytest.raises(GenIRError, match="no safetensors weights"):
        loading.load_lm(str(pickle_checkpoint))


def test_a_cached_hub_model_with_pickle_weights_only_is_refused(pickle_checkpoint, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = tmp_path / "hf" / "hub" / "models--owner--tiny"
    (cached / "snapshots" / commit).mkdir(parents=True)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(commit)
    for item in pickle_checkpoint.iterdir():
        (cached / "snapshots" / commit / item.name).write_bytes(item.read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "genir_mech.cli", "eval", "--model", "owner/tiny", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert f"owner/tiny: no safetensors weights; {CONVERT}" in process_error_line(proc, "eval")


def test_training_from_a_pickle_only_base_is_refused_before_anything_is_written(pickle_checkpoint, tmp_path, capsys):
    code = main(["train", "--base", str(pickle_checkpoint), "--data", "synthetic:n_docs=20,seed=0", "--epochs", "1", "--out", str(tmp_path / "out")])
    line = error_line(code, capsys, "train")
    assert f"base {pickle_checkpoint} (CLI: --base): no safetensors weights (found pytorch_model.bin); {CONVERT}" in line
    assert not (tmp_path / "out").exists()


# -- 7. a full disk or an unwritable place while writing -------------------------------------------------------------


def folder_state(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def full_disk(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def previous_eval(tmp_path, capsys) -> Path:
    out = tmp_path / "eval"
    assert main([*EVAL, "--out", str(out)]) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize("code,expected", [
    (errno.ENOSPC, "no space left on device while writing {out}/per_query.csv; free space and rerun"),
    (errno.EDQUOT, "disk quota exceeded while writing {out}/per_query.csv; free space and rerun"),
    (errno.EROFS, "cannot write {out}/per_query.csv (read-only file system); choose a writable place and rerun"),
], ids=["no space", "quota", "read-only"])
def test_a_failed_rename_while_writing_results_is_one_line_and_the_previous_result_stays(code, expected, previous_eval, tmp_path, capsys, monkeypatch):
    before = folder_state(tmp_path)

    def failing_replace(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", failing_replace)
    line = error_line(main([*EVAL, "--out", str(previous_eval)]), capsys, "eval")
    monkeypatch.undo()
    assert expected.format(out=previous_eval) in line
    assert folder_state(tmp_path) == before  # the previous result, byte for byte; no staging folder, no temporary file, no lock


def test_a_full_disk_in_the_table_writer_or_a_library_cleaning_up_after_it(previous_eval, tmp_path, capsys, monkeypatch):
    import matplotlib.figure
    import pandas as pd
    before = folder_state(tmp_path)
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, **kw: (Path(path).write_text("query_id,ran"), full_disk()))
    line = error_line(main([*EVAL, "--out", str(previous_eval)]), capsys, "eval")
    assert f"no space left on device while writing {previous_eval}/per_query.csv; free space and rerun" in line
    assert folder_state(tmp_path) == before
    monkeypatch.undo()

    def broken_savefig(self, *args, **kwargs):
        try:
            full_disk()
        except OSError:
            raise AttributeError("'Stream' object has no attribute 'pos'")  # matplotlib's PDF writer after a full disk

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    line = error_line(main([*EVAL, "--out", str(previous_eval)]), capsys, "eval")
    assert f"no space left on device while writing {previous_eval}; free space and rerun" in line
    assert folder_state(tmp_path) == before


def test_a_full_disk_while_taking_the_lock_leaves_no_lock(tmp_path, capsys, monkeypatch):
    from genir_mech import results_directory

    class Full:
        def __init__(self, fd, mode):
            os.close(fd)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        write = staticmethod(full_disk)

    monkeypatch.setattr(results_directory.os, "fdopen", Full)
    line = error_line(main([*EVAL, "--out", str(tmp_path / "eval")]), capsys, "eval")
    assert f"no space left on device while writing {tmp_path / 'eval.lock'}; free space and rerun" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


class FillingFile:
    """A file that takes `room` bytes, then fails as a full disk does (after a partial write)."""

    def __init__(self, fh, room: int):
        self.fh, self.room = fh, room

    def write(self, text: str) -> int:
        if len(text) > self.room:
            self.fh.write(text[: self.room])
            self.fh.flush()
            full_disk()
        self.room -= len(text)
        return self.fh.write(text)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()
        return False


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh folder", "over an earlier dataset"])
def test_a_full_disk_while_writing_a_dataset_leaves_no_truncated_file(fresh, tmp_path, capsys, monkeypatch):
    out = tmp_path / "data"
    if not fresh:
        assert main(["data", "--data", "synthetic:n_docs=30,seed=1,n_pairs=0", "--out", str(out)]) == 0
        capsys.readouterr()
    before = folder_state(tmp_path)
    real_open = Path.open

    def filling_open(self, mode="r", *args, **kwargs):
        fh = real_open(self, mode, *args, **kwargs)
        return FillingFile(fh, 500) if "w" in mode and self.name.startswith(".queries.jsonl.") else fh

    monkeypatch.setattr(Path, "open", filling_open)
    line = error_line(main(["data", "--data", "synthetic:n_docs=40,seed=0", "--out", str(out)]), capsys, "data")
    assert f"no space left on device while writing {out / 'queries.jsonl'}; free space and rerun" in line
    assert folder_state(tmp_path) == before and (out.exists() != fresh)


def test_a_dataset_written_without_pairs_removes_the_pairs_of_an_earlier_one(tmp_path, capsys):
    from genir_mech.data.loaders import load_dataset
    out = tmp_path / "data"
    assert main(["data", "--data", "synthetic:n_docs=30,seed=1,n_pairs=8", "--out", str(out)]) == 0
    assert main(["data", "--data", "synthetic:n_docs=30,seed=2,n_pairs=0", "--out", str(out)]) == 0
    assert not (out / "pairs.jsonl").exists() and load_dataset(str(out)).pairs == []
    assert sorted(p.name for p in out.iterdir()) == ["documents.jsonl", "queries.jsonl"]


# -- 8. --max-query-tokens beyond the model or the memory ------------------------------------------------------------


def long_query_data(root: Path, words: int) -> Path:
    root.mkdir()
    (root / "documents.jsonl").write_text("".join(json.dumps({"doc_id": i, "text": f"document {i}"}) + "\n" for i in range(3)))
    (root / "queries.jsonl").write_text(json.dumps({"query_id": "long", "text": "who founded zorblax " * (words // 3), "doc_id": 0}) + "\n"
                                        + json.dumps({"query_id": "short", "text": "who founded zorblax", "doc_id": 1}) + "\n")
    return root


def test_a_huge_max_query_tokens_on_a_model_without_a_position_limit_is_refused_by_its_memory(tmp_path, capsys, monkeypatch):
    from genir_mech.models import capacity, genir_model
    monkeypatch.setattr(genir_model, "available_memory", lambda device=None: 320 * 2**20)  # the same answer on every machine
    data = long_query_data(tmp_path / "long", 24000)
    argv = ["eval", "--model", "dsi-synth", "--data", str(data), "--beams", "0", "--max-query-tokens", "100000000", "--out", str(tmp_path / "out")]
    line = error_line(main(argv), capsys, "eval")
    from genir_mech.models.loading import load_genir
    gm = load_genir("dsi-synth")
    fits = capacity.max_fitting_length(gm, 2, capacity.SHARE * 320 * 2**20)
    assert capacity.batch_bytes(gm, 2, fits) <= capacity.SHARE * 320 * 2**20 < capacity.batch_bytes(gm, 2, fits + 1)
    assert (f"2 queries of 24001 tokens need about {capacity.batch_bytes(gm, 2, 24001) / 2**30:.1f} GiB for one forward pass, more than the 0.2 GiB "
            f"it may take of the 0.3 GiB available; lower max_query_tokens (CLI: --max-query-tokens, now 100000000) to at most {fits}") in line
    assert not (tmp_path / "out").exists()
    # what it suggests runs (the long query cut, with the usual warning)
    argv[argv.index("100000000")] = str(fits)
    assert main(argv) == 0
    assert f"1 of 2 queries are longer than {fits} tokens" in capsys.readouterr().err


def test_max_query_tokens_is_bounded_by_the_model_positions(tmp_path, capsys):
    from genir_mech.models.loading import quiet_weight_loading
    from genir_mech.testing import tiny_llama_genir
    gm = tiny_llama_genir()
    assert gm.max_input_tokens == 128
    with quiet_weight_loading():
        gm.hf_model.save_pretrained(tmp_path / "llama")
        gm.tokenizer.save_pretrained(tmp_path / "llama")
    (tmp_path / "llama" / "model_card.json").write_text(json.dumps({"data": "synthetic:n_docs=20,seed=0,n_pairs=16"}))
    capsys.readouterr()
    line = error_line(main(["eval", "--model", str(tmp_path / "llama"), "--max-query-tokens", "1000", "--out", str(tmp_path / "out")]), capsys, "eval")
    assert "max_query_tokens 1000 is more than the 128 tokens the model reads (its config's position limit); give at most 128 (CLI: --max-query-tokens)" in line
    gm.max_query_tokens = 129
    with pytest.raises(GenIRError, match="give at most 128"):
        gm.batch(["who founded zorblax"])
    gm.max_query_tokens = 128
    assert gm.batch(["who founded zorblax " * 100]).input_ids.shape[1] == 128


def test_the_memory_estimate_follows_the_attention_kernel():
    from genir_mech.models import capacity
    from genir_mech.testing import tiny_genir
    gm = tiny_genir(decoder_layers=2)
    heads, element = gm.adapter.n_heads, gm.hf_model.dtype.itemsize
    hidden = 8 * 1000 * (gm.hf_model.config.d_ff + 8 * gm.adapter.d_model) * element
    gm.hf_model.config._attn_implementation = "sdpa"
    assert capacity.batch_bytes(gm, 8, 1000) == element * heads * 1000**2 * 3 + hidden
    gm.hf_model.config._attn_implementation = "eager"
    assert capacity.batch_bytes(gm, 8, 1000) == element * heads * 1000**2 * 17 + hidden


# -- 9. queries that tokenize to nothing ------------------------------------------------------------------------------

UNREADABLE = {"emoji": "\U0001F600\U0001F600 \U0001F389", "control": "\x01\x02", "unknown words": "Z\u00fcrich gr\u00fc\u00dfe"}


def unreadable_data(root: Path, readable: bool = True) -> Path:
    root.mkdir()
    (root / "documents.jsonl").write_text("".join(json.dumps({"doc_id": i, "text": f"document {i}"}) + "\n" for i in range(4)))
    rows = [{"query_id": name.replace(" ", "-"), "text": text, "doc_id": i} for i, (name, text) in enumerate(UNREADABLE.items())]
    if readable:
        rows += [{"query_id": "fine", "text": "who founded zorblax", "doc_id": 3}, {"query_id": "fine2", "text": "what region is it in", "doc_id": 1}]
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_queries_that_tokenize_to_nothing_are_left_out_with_one_warning(tmp_path, capsys):
    import pandas as pd
    out = tmp_path / "out"
    assert main(["eval", "--model", "dsi-synth", "--data", str(unreadable_data(tmp_path / "data")), "--beams", "2", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if "warning" in line]
    assert warned == ["genir-mech eval: warning: 3 of 5 queries of split 'test' tokenize to nothing dsi-synth can read (only unknown, padding or "
                      "boundary tokens, e.g. query 'emoji': '\U0001F600\U0001F600 \U0001F389'); they are left out of the ranking and the metrics"]
    assert json.loads(captured.out)["n_queries"] == 2
    assert sorted(pd.read_csv(out / "per_query.csv").query_id) == ["fine", "fine2"]


def test_a_split_of_queries_the_model_cannot_read_is_refused(tmp_path, capsys):
    line = error_line(main(["eval", "--model", "dsi-synth", "--data", str(unreadable_data(tmp_path / "data", readable=False)),
                            "--out", str(tmp_path / "out")]), capsys, "eval")
    assert "all 3 queries of split 'test' tokenize to nothing dsi-synth can read" in line and "nothing to rank" in line
    assert not (tmp_path / "out").exists()


def test_the_library_leaves_them_out_of_evaluation_and_refuses_to_rank_them(tmp_path):
    from genir_mech.data.loaders import load_dataset
    from genir_mech.models.loading import load_genir
    from genir_mech.retrieval import correct_queries, evaluate, rank_texts
    gm = load_genir("dsi-synth")
    assert gm.unreadable([*UNREADABLE.values(), "who founded zorblax", "  \U0001F600 zorblax kelbor founded"]) == [0, 1, 2]
    dataset = load_dataset(str(unreadable_data(tmp_path / "data")))
    with pytest.warns(UserWarning, match="3 of 5 queries of split 'test' tokenize to nothing"):
        metrics, per_query = evaluate(gm, dataset, "test")
    assert metrics["n_queries"] == 2 and list(per_query.query_id) == ["fine", "fine2"]
    with pytest.warns(UserWarning, match="left out of the ranking"):
        assert {q.query_id for q in correct_queries(gm, dataset, "test")} <= {"fine", "fine2"}
    with pytest.raises(GenIRError, match=r"texts\[1\] '\\x01\\x02' tokenizes to nothing dsi-synth can read"):
        rank_texts(gm, ["who founded zorblax", "\x01\x02"])

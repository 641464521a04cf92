"""Bad input through the CLI: 74 bad or hostile inputs over all 16 verbs, each refused with exit code 2 and one line.

For every case (the `CASES` table below, run in-process through `genir_mech.cli.main`):
exit code 2, exactly one line on stderr (`genir-mech VERB: error: ...`), no
traceback, the line names the culprit (a flag, file, line or parameter), and
no result (*.csv, *.png) left in --out. The kinds, by verb:

- numbers (parse time): non-positive counts, negative seeds and --verify-top-k,
  fractions out of [0, 1], non-numbers (demo, train, eval, stages, swap, lens,
  ablate, read, patch, attribute);
- names and specs (parse time): reversed, empty, duplicate or malformed stage
  ranges, unknown --methods / --kinds / --direction / --verify-method, bad
  synthetic data specs, an invalid --docid-pattern regex;
- paths (parse time): a model path with a typo (no hub retries), missing
  --other / --encoder-from / --pairs / --specs / --stages / --circuit files,
  --out an existing file or below a file, a missing results directory;
- data (data, eval, patch): duplicate query ids (DSI: twice in one split, or
  with two documents; BEIR queries.jsonl; BEIR qrels across splits), empty and whitespace-only and non-string query
  texts, non-UTF-8 queries, documents, qrels and pair files;
- broken models (eval, lens): a NaN weight, an inf weight, a truncated and a
  garbage safetensors file;
- figures: a 0-byte CSV, a wrongly shaped CSV, a non-UTF-8 CSV.

Library-level checks of the same rules (StageDefinition, gm.batch,
rank_texts, check_logit_lens, the data round trip keeping pairs.jsonl) and a
check that a bad argument imports no torch follow the table.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genir_mech import results_directory
from genir_mech.cli import main
from genir_mech.errors import GenIRError
from genir_mech.testing import tiny_genir

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = "synthetic:n_docs=20,seed=0,n_pairs=16"


# -- fixtures: a tiny checkpoint, broken copies of it, and bad data files ------------------------------------


def save_checkpoint(gm, path: Path) -> Path:
    gm.hf_model.save_pretrained(path)
    gm.tokenizer.save_pretrained(path)
    (path / "model_card.json").write_text(json.dumps({"data": TINY_DATA}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every path the cases name: checkpoints (good and broken), bad data directories, bad CSVs, plain files."""
    root = tmp_path_factory.mktemp("bad_input")
    f = {"root": root}
    f["ckpt"] = save_checkpoint(tiny_genir(decoder_layers=3), root / "tiny")

    gm = tiny_genir(decoder_layers=3)
    with torch.no_grad():
        gm.hf_model.decoder.block[1].layer[2].DenseReluDense.wi.weight[0, 0] = float("nan")
    f["nan_ckpt"] = save_checkpoint(gm, root / "nan")
    gm = tiny_genir(decoder_layers=3)
    with torch.no_grad():
        gm.hf_model.encoder.block[0].layer[0].SelfAttention.q.weight[1, 2] = float("inf")
    f["inf_ckpt"] = save_checkpoint(gm, root / "inf")
    for name, keep in [("truncated_ckpt", 0.5), ("garbage_ckpt", None)]:
        copy = root / name
        copy.mkdir()
        for item in f["ckpt"].iterdir():
            (copy / item.name).write_bytes(item.read_bytes())
        weights = copy / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: int(len(data) * keep)] if keep else b"\xff" * 64)
        f[name] = copy

    def dsi(name: str, queries: list, documents: list | None = None, pairs: bytes | None = None) -> Path:
        d = root / name
        d.mkdir()
        docs = documents or [json.dumps({"doc_id": i, "text": f"document {i}"}).encode() for i in range(3)]
        (d / "documents.jsonl").write_bytes(b"\n".join(docs) + b"\n")
        (d / "queries.jsonl").write_bytes(b"\n".join(q if isinstance(q, bytes) else json.dumps(q).encode() for q in queries) + b"\n")
        if pairs is not None:
            (d / "pairs.jsonl").write_bytes(pairs)
        return d

    q = lambda qid, text, doc=0: {"query_id": qid, "text": text, "doc_id": doc, "split": "test"}
    f["dup_ids"] = dsi("dup_ids", [q("a", "first query"), q("b", "second"), q("a", "third query", 1)])
    f["dup_other_doc"] = dsi("dup_other_doc", [q("a", "first query"), {**q("a", "same id, other document", 1), "split": "train"}])
    f["empty_query"] = dsi("empty_query", [q("a", "fine"), q("b", "")])
    f["blank_query"] = dsi("blank_query", [q("a", "fine"), q("b", "   \t ")])
    f["number_query"] = dsi("number_query", [q("a", "fine"), q("b", 42)])
    f["latin1_queries"] = dsi("latin1_queries", [q("a", "fine"), '{"query_id": "b", "text": "caf\xe9", "doc_id": 0}'.encode("latin-1")])
    f["latin1_docs"] = dsi("latin1_docs", [q("a", "fine")], documents=[b'{"doc_id": 0, "text": "na\xefve"}'])
    pair = {"clean": "who made it", "corrupted": "who sold it", "clean_doc": "0", "corrupted_doc": "1"}
    f["latin1_pairs_dir"] = dsi("latin1_pairs_dir", [q("a", "fine")], pairs=json.dumps(pair).encode() + b"\n" + b'{"clean": "\xe9"}\n')

    beir = root / "beir_dup"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    (beir / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n{"_id": "q1", "text": "again"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    f["beir_dup"] = beir
    beir2 = root / "beir_two_splits"
    (beir2 / "qrels").mkdir(parents=True)
    (beir2 / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n')
    (beir2 / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n')
    (beir2 / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (beir2 / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\nq1\td2\t1\n")
    f["beir_two_splits"] = beir2
    beir3 = root / "beir_latin1_qrels"
    (beir3 / "qrels").mkdir(parents=True)
    (beir3 / "corpus.jsonl").write_text('{"_id": "d1", "text": "one"}\n')
    (beir3 / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n')
    (beir3 / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq\xe91\td1\t1\n")
    f["beir_latin1_qrels"] = beir3

    f["pairs_latin1"] = root / "pairs_latin1.jsonl"
    f["pairs_latin1"].write_bytes(json.dumps(pair).encode() + b"\n" + b'{"clean": "caf\xe9", "corrupted": "x"}\n')

    for name, content in [("empty_results", b""), ("shape_results", b"foo,bar\n1,2\n"), ("latin1_results", b"layer,ratio\n1,caf\xe9\n")]:
        # published with a completion record, so `figures` gets past "incomplete result" to the table itself
        run = results_directory.begin(root / name, "bad-table fixture")
        (run.staging / ("ablation.csv" if name == "empty_results" else "contributions.csv")).write_bytes(content)
        run.commit()
        results_directory.release_lock(run.lock)
        f[name] = root / name
    f["a_file"] = root / "a_file.txt"
    f["a_file"].write_text("not a directory\n")
    return f


# -- the table: (verb and arguments, text the one error line must contain) ------------------------------------
# {name} is replaced by files[name]; {out} by a fresh --out directory per case.

CASES = [
    # demo
    ("demo --max-queries 0 --out {out}", "--max-queries: must be a positive integer, got 0"),
    ("demo --n-pairs -1 --out {out}", "--n-pairs: must be a positive integer, got -1"),
    ("demo --model ./no-such-checkpoint --out {out}", "./no-such-checkpoint: no such checkpoint directory"),
    ("demo --out {a_file}", "exists and is not a directory"),
    # data
    ("data --data synthetic:n_docs=abc --out {out}", "n_docs must be an integer"),
    ("data --data synthetic:bogus=1 --out {out}", "unknown option 'bogus'"),
    ("data --data /no/such/corpus --out {out}", "/no/such/corpus: no such data directory"),
    ("data --data {dup_ids} --out {out}", "line 3: query id 'a' already given on line 1 (in the same split 'test')"),
    ("data --data {dup_other_doc} --out {out}", "line 2: query id 'a' already given on line 1 (with document '0', here '1')"),
    ("data --data {empty_query} --out {out}", "queries.jsonl, line 2: query text is empty"),
    ("data --data {blank_query} --out {out}", "queries.jsonl, line 2: query text is empty"),
    ("data --data {number_query} --out {out}", "queries.jsonl, line 2: query text must be a string, got int"),
    ("data --data {latin1_queries} --out {out}", "queries.jsonl, line 2: not valid UTF-8"),
    ("data --data {latin1_docs} --out {out}", "documents.jsonl, line 1: not valid UTF-8"),
    ("data --data {latin1_pairs_dir} --out {out}", "pairs.jsonl, line 2: not valid UTF-8"),
    ("data --data {beir_dup} --out {out}", "queries.jsonl, line 3: query id 'q1' already given on line 1 with another text"),
    ("data --data {beir_two_splits} --out {out}", "test.tsv, line 3: query 'q1' is already judged in split validation"),
    ("data --data {beir_latin1_qrels} --out {out}", "test.tsv, line 3: not valid UTF-8"),
    # train (parse-time numbers only; --out, --base and resume are checked by the training code)
    ("train --out {out} --epochs 0", "--epochs: must be a positive integer, got 0"),
    ("train --out {out} --batch-size 0", "--batch-size: must be a positive integer, got 0"),
    ("train --out {out} --lr=-1e-3", "--lr: must be a positive number"),
    ("train --out {out} --dropout 1.5", "--dropout: must be between 0 and 1"),
    ("train --out {out} --d-model wide", "--d-model: expected a positive integer, got 'wide'"),
    # eval
    ("eval --model {ckpt} --batch-size 0 --out {out}", "--batch-size: must be a positive integer, got 0"),
    ("eval --model checkpoints/dsi-synht --out {out}", "checkpoints/dsi-synht: no such checkpoint directory"),
    ("eval --model {ckpt} --docid-pattern @DOC_( --out {out}", "--docid-pattern: invalid regular expression"),
    ("eval --model {ckpt} --docid-pattern @DOC@ --out {out}", "needs one capture group"),
    ("eval --model {ckpt} --out {a_file}", "exists and is not a directory"),
    ("eval --model {ckpt} --out {a_file}/sub", "is a file, so the directory cannot be created"),
    ("eval --model {nan_ckpt} --out {out}", "parameter decoder.block.1.layer.2.DenseReluDense.wi.weight has 1 non-finite"),
    ("eval --model {inf_ckpt} --out {out}", "parameter encoder.block.0.layer.0.SelfAttention.q.weight has 1 non-finite"),
    ("eval --model {truncated_ckpt} --out {out}", "model.safetensors: truncated safetensors file"),
    ("eval --model {garbage_ckpt} --out {out}", "model.safetensors: not a valid safetensors file"),
    ("eval --model {ckpt} --data {dup_ids} --out {out}", "line 3: query id 'a' already given on line 1"),
    ("eval --model {ckpt} --data {blank_query} --out {out}", "line 2: query text is empty"),
    # stages
    ("stages --model {ckpt} --bootstrap -5 --out {out}", "--bootstrap: must be a positive integer, got -5"),
    ("stages --model {ckpt} --cheap-ablation 2 --out {out}", "--cheap-ablation: must be between 0 and 1"),
    ("stages --model {ckpt} --penalty 0 --out {out}", "--penalty: must be a positive number"),
    # swap
    ("swap --model {ckpt} --encoder-from ./missing-encoder --out {out}", "./missing-encoder: no such checkpoint directory"),
    ("swap --model {ckpt} --batch-size 0 --out {out}", "--batch-size: must be a positive integer"),
    # contributions
    ("contributions --model {ckpt} --stages a=3-1 --out {out}", "range a=3-1 is reversed"),
    ("contributions --model {ckpt} --stages {root}/missing_stages.json --out {out}", "stage definition file not found"),
    # lens
    ("lens --model {ckpt} --top-k 0 --out {out}", "--top-k: must be a positive integer, got 0"),
    ("lens --model {ckpt} --examples -2 --out {out}", "--examples: must be a positive integer, got -2"),
    ("lens --model {nan_ckpt} --out {out}", "non-finite"),
    # ablate
    ("ablate --model {ckpt} --batch-size 0 --out {out}", "--batch-size: must be a positive integer, got 0"),
    ("ablate --model {ckpt} --methods zero,bogus --out {out}", "--methods: unknown ablation methods 'bogus'"),
    ("ablate --model {ckpt} --kinds mlp,attn --out {out}", "--kinds: unknown component kinds 'attn'"),
    ("ablate --model {ckpt} --other ./no-other --out {out}", "./no-other: no such checkpoint directory"),
    ("ablate --model {ckpt} --rows-per-forward 0 --out {out}", "--rows-per-forward: must be a positive integer"),
    ("ablate --model {ckpt} --stages a=0-1,a=2-2 --out {out}", "stage 'a' appears twice"),
    ("ablate --model {ckpt} --methods cross-model --out {out}", "--methods cross-model needs --other"),
    # circuit
    ("circuit --model {ckpt} --circuit {root}/missing_circuit.json --out {out}", "missing_circuit.json: no such file"),
    ("circuit --model {ckpt} --stages priming= --out {out}", "expected name=first-last"),
    # read
    ("read --model {ckpt} --max-queries 0 --out {out}", "--max-queries: must be a positive integer, got 0"),
    ("read --model {ckpt} --seed -1 --out {out}", "--seed: must be an integer >= 0, got -1"),
    # figures
    ("figures {empty_results} --out {out}", "ablation.csv: empty file"),
    ("figures {shape_results} --out {out}", "contributions.csv: not a result table of the expected shape"),
    ("figures {latin1_results} --out {out}", "contributions.csv: not a readable CSV"),
    ("figures {root}/no_results --out {out}", "no such results directory"),
    # patch
    ("patch --model {ckpt} --target resid --n-boot 0 --out {out}", "--n-boot: must be a positive integer, got 0"),
    ("patch --model {ckpt} --target resid --pairs {root}/missing.jsonl --out {out}", "missing.jsonl: no such file"),
    ("patch --model {ckpt} --specs {root}/missing_specs.json --out {out}", "missing_specs.json: no such file"),
    ("patch --model {ckpt} --target resid --direction sideways --out {out}", "--direction: invalid choice: 'sideways'"),
    ("patch --model {ckpt} --target resid --pairs-per-batch 0 --out {out}", "--pairs-per-batch: must be a positive integer"),
    ("patch --model {ckpt} --target resid --all-pairs --pairs {pairs_latin1} --out {out}", "pairs_latin1.jsonl, line 2: not valid UTF-8"),
    # attribute
    ("attribute --model {ckpt} --verify-top-k -3 --out {out}", "--verify-top-k: must be an integer >= 0, got -3"),
    ("attribute --model {ckpt} --n-pairs 0 --out {out}", "--n-pairs: must be a positive integer, got 0"),
    ("attribute --model {ckpt} --verify-method bogus --out {out}", "--verify-method: invalid choice: 'bogus'"),
    # device and precision (every verb that loads a model)
    ("eval --model {ckpt} --device gpu0 --out {out}", "'gpu0' is not a device"),
    ("lens --model {ckpt} --dtype float8 --out {out}", "--dtype: invalid choice: 'float8'"),
    # sweep and show (config mistakes: tests/test_sweep.py)
    ("sweep no/such/sweep.yaml", "no/such/sweep.yaml: no such file"),
    ("sweep {a_file} --workers 0", "--workers: must be a positive integer, got 0"),
    ("show no/such/table", "no/such/table: no such result file, table or folder"),
]


def test_the_docstring_counts_the_cases():
    assert f": {len(CASES)} bad or hostile inputs over all 16 verbs" in __doc__
    assert {c.split()[0] for c, _ in CASES} == {"demo", "data", "train", "eval", "stages", "swap", "contributions", "lens", "ablate",
                                                 "circuit", "read", "figures", "patch", "attribute", "sweep", "show"}


@pytest.mark.parametrize("command,expected", CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_line_exit_2(command, expected, files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # checkpoints/dsi-synht must be looked up beside checkpoints/
    out = tmp_path / "out"
    argv = [part.format(out=out, **files) for part in command.split()]
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"genir-mech {argv[0]}: error: "), err
    assert expected in lines[0], err
    left = [p for p in out.rglob("*") if p.suffix in (".csv", ".png")] if out.exists() else []
    assert not left, left


@contextlib.contextmanager
def unwritable_folder(path: Path):
    """A folder nobody may write into, root included: without write permission, and under root immutable too
    (root ignores permission bits, not the immutable flag), so the refusal is tested in CI, which runs as root."""
    path.mkdir()
    path.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without the immutable flag: every folder is writable")
    try:
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


@pytest.mark.parametrize("where", ["--out", "--trec-run"])
def test_an_unwritable_place_is_refused_before_loading(where, tmp_path, capsys):
    from genir_mech.embedded import embedded_checkpoint
    with unwritable_folder(tmp_path / "locked") as locked:
        out = tmp_path / "out" if where == "--trec-run" else locked / "eval"
        argv = ["eval", "--model", str(embedded_checkpoint("dsi-synth")), "--max-queries", "2", "--beams", "0", "--out", str(out)]
        if where == "--trec-run":
            argv += ["--trec-run", str(locked / "run.txt")]
        capsys.readouterr()
        assert main(argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "not writable" in err[0], err
        assert list(locked.iterdir()) == [] and not out.exists()


# -- the same rules in the library ---------------------------------------------------------------------------


def test_stage_definitions_refuse_empty_and_reversed_ranges():
    from genir_mech.stage_definition import StageDefinition
    for spec in ["a=3-1", "a=0-1,a=2-3"]:
        with pytest.raises(GenIRError):
            StageDefinition.parse(spec)
    for data in [{"stages": [{"name": "a", "layers": []}]}, {"stages": [{"name": "a", "layers": [-1]}]}, {"stages": [{"name": "", "layers": [0]}]}]:
        with pytest.raises(GenIRError):
            StageDefinition.from_json(data)
    assert StageDefinition.parse("a=0-1,b=2").layers("b") == [2]


def test_batch_refuses_empty_and_non_string_queries_and_ranking_warns_once_on_truncation():
    from genir_mech.retrieval import rank_texts
    gm = tiny_genir(decoder_layers=2)
    for texts in [["fine", "  "], ["fine", ""], ["fine", 3]]:
        with pytest.raises(GenIRError, match=r"texts\[1\]"):
            gm.batch(texts)
    long = " ".join(["who founded zorblax"] * 40)
    with pytest.warns(UserWarning, match="2 of 3 queries are longer than 64 tokens"):
        rank_texts(gm, [long, "who founded zorblax", long])


def test_non_finite_logits_are_refused_naming_the_model_and_the_first_bad_module():
    from genir_mech.models.loading import check_logit_lens
    from genir_mech.retrieval import rank_texts
    gm = tiny_genir(decoder_layers=2)
    with torch.no_grad():
        # finite weights whose output overflows float32: only the forward pass shows it
        gm.hf_model.decoder.final_layer_norm.weight.fill_(3e38)
    with pytest.raises(GenIRError, match=r"tiny-t5-2x2: self-check failed.*not finite.*decoder\.final_layer_norm"):
        check_logit_lens(gm)
    with pytest.raises(GenIRError, match="tiny-t5-2x2: the model's ranking logits are not finite"):
        rank_texts(gm, ["who founded zorblax"])


def test_data_round_trip_keeps_the_pairs(tmp_path, capsys):
    from genir_mech.data.loaders import load_dataset
    assert main(["data", "--data", TINY_DATA, "--out", str(tmp_path / "d")]) == 0
    original, copy = load_dataset(TINY_DATA), load_dataset(str(tmp_path / "d"))
    assert len(copy.pairs) == 16 and copy.pairs == original.pairs
    assert copy.data_hash() == original.data_hash()


def test_the_library_and_the_options_share_one_vocabulary():
    """Every name list and bound the options check against is the library's own object, defined once in vocabulary.py."""
    from genir_mech import provenance, vocabulary
    from genir_mech.analyses import ablation, stage_localisation
    from genir_mech.data import synthetic
    from genir_mech.docids import DOCID_SCHEMES
    from genir_mech.models import components, genir_model
    from genir_mech.patching import aggregation, attribution, engine, pairs, specs
    from genir_mech.retrieval.steps import ALL_STEPS
    from genir_mech.training.architecture import T5Shape
    from genir_mech.training.loop import LoopConfig
    from genir_mech.verbs.options import dataclass_defaults
    shared = [(ablation.METHODS, vocabulary.ABLATION_METHODS), (components.KINDS, vocabulary.COMPONENT_KINDS),
              (attribution.METHODS, vocabulary.ATTRIBUTION_METHODS), (engine.DIRECTIONS, vocabulary.PATCH_DIRECTIONS),
              (pairs.ALIGNMENTS, vocabulary.PAIR_ALIGNMENTS), (specs.TARGETS, vocabulary.PATCH_TARGETS), (DOCID_SCHEMES, vocabulary.DOCID_SCHEMES),
              (ALL_STEPS, vocabulary.ALL_STEPS), (provenance.PACKAGES, vocabulary.RESULT_PACKAGES),
              (genir_model.MAX_QUERY_TOKENS, vocabulary.MAX_QUERY_TOKENS), (aggregation.MAX_N_BOOT, vocabulary.MAX_N_BOOT),
              (stage_localisation.MAX_BOOTSTRAP, vocabulary.MAX_BOOTSTRAP), (synthetic.MAX_N_DOCS, vocabulary.MAX_N_DOCS)]
    assert all(library is defined for library, defined in shared)
    assert dataclass_defaults("training.architecture", "T5Shape") == vars(T5Shape())
    assert dataclass_defaults("training.loop", "LoopConfig") == vars(LoopConfig())


def test_a_bad_argument_imports_no_heavy_library():
    # what makes a bad argument cost well under 2 s: nothing heavy is imported before the arguments are valid
    code = ("import sys; from genir_mech.cli import main; "
            "assert main(['ablate', '--model', 'checkpoints/dsi-synth', '--batch-size', '0']) == 2; "
            "heavy = [m for m in ('torch', 'transformers', 'nnsight', 'matplotlib', 'pandas') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "genir-mech ablate: error: argument --batch-size: must be a positive integer, got 0"

"""`genir-mech sweep`: config mistakes refused before anything is written, --dry-run, kill -9 at random moments then resume
to byte-identical tables, one sweep per output folder (a lock), and a local Ray with 2 workers giving the local tables.

The sweep is a small paper-like one on the embedded checkpoint (stages -> contributions, lens, ablation, reading on the
located stages; patching over two targets; attribution with exact verification of its top nodes), on a slice of the
checkpoint's own corpus (all 1,000 documents, the first VALIDATION_QUERIES validation queries and PAIRS pairs, written as
DSI JSONL), so that ranking the split, the fixed cost of each fresh sweep, takes a second rather than half a minute. The forking tests run
in a fresh interpreter (see tests/test_interruption.py: forking a pytest process that earlier tests left with threads can
hang), and fork `genir_mech.cli.main` children from it, so each resume costs no imports. The number of kills is
GENIR_SWEEP_KILLS (default 3) and the config GENIR_SWEEP_CONFIG (default the small one below); the issue's 10 kills
of the paper example are `GENIR_SWEEP_KILLS=10 GENIR_SWEEP_CONFIG=examples/paper.yaml pytest -s tests/test_sweep.py -k kill`.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from genir_mech.cli import main
from test_interruption import fork_cli  # noqa: E402  (tests/ is on sys.path: one forking helper)

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "dsi-synth"
SMALL = {
    "out": "PLACEHOLDER",
    "threads": 1,
    "models": {"dsi": str(CHECKPOINT)},
    "experiments": [
        {"run": "stages", "max_queries": 8, "bootstrap": 3, "ablation": False},
        {"run": "contributions", "max_queries": 8, "stages": "@stages"},
        {"run": "lens", "max_queries": 8, "stages": "@stages", "examples": 2},
        {"run": "ablate", "max_queries": 8, "stages": "@stages", "methods": ["zero"]},
        {"run": "read", "max_queries": 8, "stages": "@stages"},
        {"run": "patch", "target": ["component", "head"], "n_pairs": 4, "n_boot": 10},
        {"run": "attribute", "n_pairs": 4, "n_boot": 10, "verify_top_k": 2},
    ],
}
VALIDATION_QUERIES, PAIRS = 120, 24
pytestmark = pytest.mark.skipif(not (CHECKPOINT / "config.json").exists(), reason="the embedded checkpoints are not in this checkout")


def corpus_slice(root: Path) -> Path:
    """The checkpoint's corpus with only its first VALIDATION_QUERIES validation queries and PAIRS pairs, as DSI JSONL."""
    from genir_mech.data.corpus import RetrievalDataset
    from genir_mech.data.loaders import load_dataset, save_dsi_jsonl
    full = load_dataset(json.loads((CHECKPOINT / "model_card.json").read_text())["data"])
    kept = full.split("validation")[:VALIDATION_QUERIES]
    save_dsi_jsonl(RetrievalDataset(full.documents, kept, {q.query_id: full.qrels[q.query_id] for q in kept}, full.pairs[:PAIRS]), root)
    return root


def write_config(path: Path, out: Path, **changes) -> Path:
    data = path.parent / "data"
    config = {**SMALL, "out": str(out), "data": str(data if data.is_dir() else corpus_slice(data)), **changes}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# -- config mistakes: one line naming the key and the fix, nothing written ---------------------------------------


def _experiments(**change):
    """SMALL's experiments with experiment 3 (the ablation) changed."""
    exps = [dict(e) for e in SMALL["experiments"]]
    exps[3].update(change)
    return exps


MISTAKES = [
    ("unknown top-level key", {"modles": {}}, ["unknown key 'modles'", "fix:"]),
    ("unknown experiment key", {"experiments": _experiments(method=["zero"])}, ["experiments[3] (ablate)", "unknown key 'method'", "fix:"]),
    ("unknown pipeline", {"experiments": [{"run": "ablation"}]}, ["experiments[0].run", "'ablation' is not an experiment", "fix:"]),
    ("missing checkpoint", {"models": {"dsi": "checkpoints/no-such-model"}}, ["models.dsi.path", "no such checkpoint directory", "fix:"]),
    ("missing pairs file", {"experiments": [{"run": "patch", "target": "head", "pairs": "no/such/pairs.jsonl"}]}, ["experiments[0] (patch 'patch').pairs", "no such file", "fix:"]),
    ("stage layer beyond the model", {"experiments": _experiments(stages="a=0-3,b=4-11")}, ["experiments[3] (ablate 'ablate').stages", "8", "fix:"]),
    ("bad value: zero batch size", {"experiments": _experiments(batch_size=0)}, ["experiments[3] (ablate).batch_size", "positive", "fix:"]),
    ("bad value: unknown method", {"experiments": _experiments(methods=["median"])}, ["experiments[3] (ablate).methods", "'median' is not one of", "fix:"]),
    ("bad value: wrong type", {"experiments": _experiments(max_queries="many")}, ["experiments[3] (ablate).max_queries", "fix:"]),
    ("bad dtype", {"dtype": "float8"}, ["dtype", "'float8' is not one of", "fix:"]),
    ("unknown stages reference", {"experiments": _experiments(stages="@stagez")}, ["experiments[3] (ablate 'ablate').stages", "'@stagez'", "fix:"]),
]


@pytest.mark.parametrize("what, change, expected", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_config_mistake_is_one_line_naming_the_key_and_nothing_is_written(what, change, expected, tmp_path, capsys):
    out = tmp_path / "out"
    config = write_config(tmp_path / "sweep.yaml", out, **change)
    assert main(["sweep", str(config)]) == 2
    line = one_error_line(capsys)
    for part in expected:
        assert part in line, (what, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sweep.yaml"], "a refused config wrote something"


def test_a_head_index_beyond_the_model_in_a_spec_file_is_refused(tmp_path, capsys):
    specs = tmp_path / "specs.yaml"
    specs.write_text(yaml.safe_dump({"interventions": [{"specs": [{"site": "decoder.layers.0.cross_attn.heads", "head": 9, "value": "source"}]}]}))
    config = write_config(tmp_path / "sweep.yaml", tmp_path / "out", experiments=[{"run": "patch", "specs": str(specs)}])
    assert main(["sweep", str(config)]) == 2
    line = one_error_line(capsys)
    assert "experiments[0] (patch 'patch').specs" in line and "head 9 out of range" in line and "4 heads" in line, line
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_units_and_costs_and_writes_nothing(tmp_path, capsys):
    config = write_config(tmp_path / "sweep.yaml", tmp_path / "out")
    assert main(["sweep", str(config), "--dry-run"]) == 0
    text = capsys.readouterr().out
    for unit in ("dsi/stages", "dsi/ablate", "dsi/patch/component", "dsi/patch/head", "dsi/attribute"):
        assert unit in text
    assert "8 units, 8 to run" in text and "forward rows" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "sweep.yaml"]


# -- kill -9 and resume, two sweeps at once, Ray ------------------------------------------------------------------

CLEAN = "GENIR_TEST_CLEAN_PROCESS"
forking = pytest.mark.skipif(not os.environ.get(CLEAN), reason="forks: run in a fresh interpreter by test_forking_sweep_tests_in_a_clean_process")


def test_forking_sweep_tests_in_a_clean_process():
    """Runs the kill, lock and Ray tests below in a fresh interpreter that has done nothing else (see the module docstring)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", __file__, "-k", "sigkill or second_sweep or ray"],
                          env={**os.environ, CLEAN: "1", "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=1800)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0 and ("3 passed" in proc.stdout or "2 passed, 1 skipped" in proc.stdout), proc.stdout[-4000:] + proc.stderr[-2000:]


def wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def unit_tables(out: Path) -> dict[str, str]:
    """unit-relative table path -> sha256, from each unit's completion record (listed in SWEEP.json)."""
    manifest = json.loads((out / "SWEEP.json").read_text())
    return {f"{uid}/{rel}": e["sha256"] for uid, unit in manifest["units"].items() for rel, e in unit["files"].items() if rel.endswith((".csv", ".parquet"))}


def check_nothing_false_is_complete(out: Path) -> tuple[int, int, str]:
    """After a kill: every recorded unit verifies on disk, every unit folder is complete or absent, SWEEP.json only if all are."""
    from genir_mech.results_directory import read_record
    from genir_mech.sweep.runner import UnitStore
    from genir_mech.sweep.config import load_config
    from genir_mech.sweep.units import plan
    config = load_config(out.parent / "killed.yaml")
    store, units = UnitStore(out), plan(config)
    recorded = 0
    for unit in units:
        record = store.done(unit)
        if record is not None:
            assert store.verify(unit, record), f"{unit.id}: recorded as done but its files differ from the record"
            recorded += 1
        folder = unit.folder(out)
        if folder.exists():
            assert read_record(folder) is not None, f"{folder} exists without COMPLETE.json: a partial result in place of a result"
    if (out / "SWEEP.json").exists():
        assert recorded == len(units), "SWEEP.json present while units are missing"
    partials = sorted(p.name for p in out.rglob("*.partial-*"))
    return recorded, len(units), f"{recorded}/{len(units)} units recorded" + (f", partial folders {partials}" if partials else "")


def config_for_kills(tmp_path: Path, name: str, out: Path) -> Path:
    source = os.environ.get("GENIR_SWEEP_CONFIG")
    if source:
        raw = yaml.safe_load((ROOT / source).read_text())
        raw["out"] = str(out)
        raw["models"] = {k: (str(ROOT / v) if isinstance(v, str) else {**v, "path": str(ROOT / v["path"])}) for k, v in raw["models"].items()}
        (tmp_path / name).write_text(yaml.safe_dump(raw, sort_keys=False))
        return tmp_path / name
    return write_config(tmp_path / name, out)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the sweep (timed), the tables every other run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "out"
    config = config_for_kills(tmp, "reference.yaml", out)
    start = time.monotonic()
    pid = fork_cli(["sweep", str(config), "--quiet"], tmp / "reference.log")
    assert wait(pid) == 0, (tmp / "reference.log").read_text()[-3000:]
    return out, time.monotonic() - start


@forking
def test_sigkill_at_random_moments_then_resume_gives_identical_tables(reference, tmp_path, record_property):
    ref_out, seconds = reference
    out = tmp_path / "out"
    config = config_for_kills(tmp_path, "killed.yaml", out)
    kills = int(os.environ.get("GENIR_SWEEP_KILLS", "3"))
    seed = int(os.environ.get("GENIR_SWEEP_SEED", str(int(time.time()) % 100000)))
    rng = random.Random(seed)
    outcomes, progress = [f"seed {seed}, reference run {seconds:.1f} s"], []
    per_unit = {uid: u["seconds"] for uid, u in json.loads((ref_out / "SWEEP.json").read_text())["units"].items()}  # run order
    order = list(per_unit)

    def recorded() -> int:
        return len(list((out / ".sweep" / "units").glob("*.json"))) if (out / ".sweep" / "units").is_dir() else 0

    for k in range(kills):
        # a random moment of what is left: wait until a random number (up to `step`) more units are recorded, then a random
        # share of the next unit's reference time; each run after a kill is a resume of the one before
        step = -(-len(order) // kills)  # kills spread over the whole sweep: each advances at most `step` units
        target = min(recorded() + rng.randrange(0, step + 1), len(order) - 1)
        if k == kills - 1 and not any(0 < d < t for d, t in progress):
            target = max(target, 1)  # at least one kill between units done and units left
        delay = rng.uniform(0.0, 0.9) * per_unit[order[target]]
        pid = fork_cli(["sweep", str(config), "--quiet"], tmp_path / f"kill{k}.log")
        start, reached, ended = time.monotonic(), None, False
        while not ended:
            now = time.monotonic()
            if reached is None and recorded() >= target:
                reached = now
            if reached is not None and now - reached >= delay:
                break
            ended = os.waitpid(pid, os.WNOHANG) != (0, 0)  # reaped when it has finished by itself
            time.sleep(0.005)
        moment = time.monotonic() - start
        if ended:
            state = f"finished before {moment:.2f} s"
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            state = f"killed at {moment:.2f} s ({delay:.2f} s into {order[target]})"
        done, total, text = check_nothing_false_is_complete(out)
        progress.append((done, total))
        outcomes.append(f"{state}: {text}")
    pid = fork_cli(["sweep", str(config), "--quiet"], tmp_path / "final.log")
    assert wait(pid) == 0, (tmp_path / "final.log").read_text()[-3000:]
    outcomes.append("resumed to the end")
    print("\n".join(outcomes))
    record_property("kill_points", json.dumps(outcomes))
    if kills >= 3:  # some kill must have met a sweep with units done and units left (the interesting case)
        assert any(0 < done < total for done, total in progress), outcomes
    a, b = unit_tables(out), unit_tables(ref_out)
    assert set(a) == set(b)
    assert [t for t in a if a[t] != b[t]] == [], "tables differ from the uninterrupted run"
    assert not list(out.rglob("*.partial-*")) and not out.with_name("out.lock").exists()


@forking
def test_a_second_sweep_into_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    config = write_config(tmp_path / "sweep.yaml", out)
    first = fork_cli(["sweep", str(config), "--quiet"], tmp_path / "first.log")
    lock = out.with_name("out.lock")
    while not lock.exists():
        assert os.waitpid(first, os.WNOHANG) == (0, 0), (tmp_path / "first.log").read_text()[-2000:]
        time.sleep(0.005)
    capsys.readouterr()
    assert main(["sweep", str(config), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert "is being written by process" in line and str(first) in line, line
    assert os.waitpid(first, os.WNOHANG) == (0, 0), "the first sweep ended before the second was refused: the test proved nothing"
    os.kill(first, 9)  # the rest of its run is not what this test is about
    os.waitpid(first, 0)


@forking
def test_ray_with_two_workers_gives_the_local_tables(reference, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'genir_mech[ray]')")
    if os.environ.get("GENIR_SWEEP_CONFIG"):
        pytest.skip("the Ray comparison runs on the small config")
    ref_out, _ = reference
    out = tmp_path / "out"
    config = write_config(tmp_path / "ray.yaml", out)
    pid = fork_cli(["sweep", str(config), "--quiet", "--backend", "ray", "--workers", "2"], tmp_path / "ray.log")
    assert wait(pid) == 0, (tmp_path / "ray.log").read_text()[-3000:]
    a, b = unit_tables(out), unit_tables(ref_out)
    assert set(a) == set(b) and [t for t in a if a[t] != b[t]] == [], "Ray's tables differ from the local backend's"


# -- storage, provenance, device and precision --------------------------------------------------------------------


def test_long_tables_are_parquet_short_ones_csv_and_both_read_back(tmp_path, capsys):
    import pandas as pd

    from genir_mech.provenance import PARQUET_ROWS, read_table, write_table
    from genir_mech.results_directory import atomic

    long = pd.DataFrame({"query_id": [f"q{i}" for i in range(PARQUET_ROWS + 1)], "layer": 3, "head": pd.array([None] * (PARQUET_ROWS + 1), dtype="Int64"),
                         "value": [i / 7 for i in range(PARQUET_ROWS + 1)]})

    @atomic
    def run(model, data, out):
        return {"long": str(write_table(data, Path(out) / "lens", {"model": model})), "short": str(write_table(data.head(5), Path(out) / "summary", {}))}

    made = run("m", long, tmp_path / "res")
    assert made["long"].endswith("lens.parquet") and made["short"].endswith("summary.csv")
    frame, record = read_table(tmp_path / "res" / "lens")
    pd.testing.assert_frame_equal(frame, long)
    assert record["table"] == "lens.parquet"
    # a rerun writing the same table short replaces the Parquet file: one table, one format
    run("m", long.head(3), tmp_path / "res")
    assert not (tmp_path / "res" / "lens.parquet").exists() and len(read_table(tmp_path / "res" / "lens")[0]) == 3
    capsys.readouterr()
    assert main(["show", str(tmp_path / "res" / "summary"), "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "q1" in out and "0.285714" not in out and "[3 rows x 4 columns" in out  # two rows shown of the rerun's three


def test_the_command_line_and_sweep_config_are_in_the_provenance(tmp_path):
    from genir_mech.provenance import provenance, run_context
    with run_context(command=["genir-mech", "sweep", "x.yaml"], sweep={"unit": "dsi/lens"}):
        record = provenance(model=str(CHECKPOINT))
    assert record["command"] == ["genir-mech", "sweep", "x.yaml"] and record["sweep"] == {"unit": "dsi/lens"}
    assert record["model_revision"] is None and "code_commit" in record  # a local checkpoint has no hub revision
    assert "command" not in provenance()


def test_dtype_and_device_reach_the_loaded_model():
    import torch

    from genir_mech.errors import GenIRError
    from genir_mech.models.loading import load_genir
    gm = load_genir(str(CHECKPOINT), dtype="bfloat16")  # the self-check passes at bfloat16's tolerance
    assert next(gm.hf_model.parameters()).dtype == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(GenIRError, match="no CUDA GPU is available"):
            load_genir(str(CHECKPOINT), device="cuda")


def test_the_demo_is_the_paper_example_with_its_options(tmp_path):
    from argparse import Namespace

    from genir_mech.sweep import load_config
    from genir_mech.sweep.units import plan
    from genir_mech.embedded import example_config
    from genir_mech.verbs.demo import EXAMPLE, paper_example
    rd1 = str(ROOT / "checkpoints" / "dsi-synth-rd1")
    args = Namespace(model=str(CHECKPOINT), base=str(ROOT / "checkpoints" / "t5-synth-base"), variants=[rd1], max_queries=16, n_pairs=5,
                     device="cpu", dtype="bfloat16")
    config = load_config(example_config(EXAMPLE), out=tmp_path / "demo", edit=paper_example(args))
    units = {u.id: u for u in plan(config)}
    runs = [u.experiment.run for u in units.values()]
    assert runs == ["eval", "stages", "contributions", "lens", "ablate", "circuit", "read", "swap", "patch", "patch", "attribute"]
    assert {u.params.get("max_queries") for u in units.values() if "max_queries" in u.params} == {16}
    assert {u.params["n_pairs"] for u in units.values() if u.experiment.run in ("patch", "attribute")} == {5}
    assert units["dsi/swap"].params["encoders"] == ["variant1", "base"] and config.models["variant1"].path == rd1
    assert config.model_dtype("dsi") == "bfloat16" and not (tmp_path / "demo").exists()

"""Interruption and concurrency: a killed run never leaves something that looks like a result, one writer per output
folder, and `train` never destroys or mixes a checkpoint.

The kill test runs `genir-mech patch` and `genir-mech stages` once uninterrupted (the reference, timed: when its
staging folder appears and when it ends), then SIGKILLs the same command into one output folder at five moments
spread over that run (one while loading, four across the writing window), and after each kill requires `<out>` to
be absent or a complete result byte-identical to the reference, and any partial folder to be refused by
`genir-mech figures`. A final uninterrupted run into the same folder must report and remove the leftovers and
produce the reference result. Each kill point's outcome is printed (pytest -s) and attached to the test report
(record_property, kill_points).

Each command runs in a process forked from this one, `genir_mech.cli.main(argv)` with the package already imported:
a fresh interpreter spends about 15 s importing torch, transformers and nnsight on the 2-core test machine, and the
kill points are about what happens after that. The child is SIGKILLed like any process.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from genir_mech.cli import main
from genir_mech.errors import GenIRError
from genir_mech.provenance import read_table, write_table
from genir_mech.results_directory import RECORD, ResultsWarning, atomic, check_complete
from genir_mech.testing import planted_cross_attention, tiny_genir, tiny_llama_genir

VOLATILE = {"created", "wall_seconds", "command"}  # provenance fields that say when, how long and into which --out, not what
N_DOCS = 20


def _save(gm, path: Path, card: dict) -> Path:
    gm.hf_model.save_pretrained(path)
    gm.tokenizer.save_pretrained(path)
    (path / "model_card.json").write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny planted T5 with the synthetic data it belongs to named in its card (patch and stages run on it in about a second)."""
    gm = planted_cross_attention(tiny_genir(decoder_layers=6, n_docs=N_DOCS), [2, 3])
    return _save(gm, tmp_path_factory.mktemp("ckpt") / "tiny", {"data": {"n_docs": N_DOCS, "seed": 0, "n_pairs": 16}})


def patch_args(ckpt, out):
    return ["patch", "--model", str(ckpt), "--target", "component", "--all-pairs", "--n-pairs", "8", "--n-boot", "20", "--out", str(out), "--json"]


def stages_args(ckpt, out):
    return ["stages", "--model", str(ckpt), "--split", "train", "--max-queries", "16", "--bootstrap", "5", "--no-ablation", "--out", str(out), "--json"]


CLEAN = "GENIR_TEST_CLEAN_PROCESS"  # set in the fresh interpreter that runs the forking tests
forking = pytest.mark.skipif(not os.environ.get(CLEAN), reason="forks: run in a fresh interpreter by test_forking_tests_in_a_clean_process")


def test_forking_tests_in_a_clean_process():
    """The kill and two-writer tests fork; forking a pytest process that earlier tests left with threads and held
    locks can hang the child, so they run in a fresh interpreter (one import, ~15 s) that has done nothing else."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", __file__, "-k", "sigkill or second_writer"],
                          env={**os.environ, CLEAN: "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                          capture_output=True, text=True, timeout=300)
    print(proc.stdout[-3000:])
    assert proc.returncode == 0 and "2 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]


def fork_cli(argv, log: Path) -> int:
    """`genir-mech ARGV` in a child process (stdout and stderr to `log`); returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            sys.stdout = sys.stderr = open(log, "w", buffering=1)
            code = main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def finished(pid: int) -> int | None:
    """The exit code of a child that has ended (reaping it), None while it runs."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


# -- comparing results ----------------------------------------------------------------------------------


def listed(out: Path) -> dict:
    return json.loads((out / RECORD).read_text())["files"]


def same_result(out: Path, reference: Path) -> list[str]:
    """Differences between two complete results: the files each record lists, every one intact on disk, equal byte
    for byte, except that provenance records are compared without their VOLATILE fields."""
    a, b = listed(out), listed(reference)
    problems = [f"only in one: {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
    for rel in sorted(set(a) & set(b)):
        check_complete(out / rel)  # the file on disk is the one the record lists
        if rel.endswith(".provenance.json"):
            x, y = (json.loads((d / rel).read_text()) for d in (out, reference))
            if {k: v for k, v in x.items() if k not in VOLATILE} != {k: v for k, v in y.items() if k not in VOLATILE}:
                problems.append(rel)
        elif a[rel]["sha256"] != b[rel]["sha256"]:
            problems.append(rel)
    return problems


def partials(out: Path) -> list[Path]:
    return sorted(out.parent.glob(out.name + ".partial-*"))


# -- the kill test --------------------------------------------------------------------------------------


def timed_reference(argv, out: Path, log: Path) -> tuple[float, float]:
    """Run once to completion; returns (seconds until the staging folder appeared, seconds until the end)."""
    start, staged = time.monotonic(), None
    pid = fork_cli(argv, log)
    while (code := finished(pid)) is None:
        if staged is None and partials(out):
            staged = time.monotonic() - start
        time.sleep(0.001)
    assert code == 0, log.read_text()[-2000:]
    total = time.monotonic() - start
    return (staged if staged is not None else total), total


def kill_at(argv, out: Path, log: Path, before_staging: float | None, into_staging: float | None) -> None:
    """SIGKILL the command `before_staging` seconds after its start, or `into_staging` seconds after its staging folder
    appears (the part of the run where results are being written)."""
    old = set(partials(out))
    start, staged = time.monotonic(), None
    pid = fork_cli(argv, log)
    while finished(pid) is None:
        now = time.monotonic()
        if before_staging is not None and now - start >= before_staging:
            break
        if into_staging is not None:
            if staged is None and set(partials(out)) - old:
                staged = now
            if staged is not None and now - staged >= into_staging:
                break
        time.sleep(0.001)
    else:
        return  # ended by itself before the kill point
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # reaped: its pid no longer runs, so its lock is stale


def kill_series(name, argv_for, tmp: Path, outcomes: list) -> None:
    reference, out = tmp / f"{name}-reference", tmp / f"{name}-killed"
    staged, total = timed_reference(argv_for(reference), reference, tmp / f"{name}-reference.log")
    window = max(total - staged, 0.01)
    points = [(f"{0.5 * staged:.2f} s after start (loading)", 0.5 * staged, None)]
    points += [(f"{f:.0%} into writing ({f * window:.2f} s after staging)", None, f * window) for f in (0.0, 0.3, 0.6, 0.95)]
    for label, before, into in points:
        kill_at(argv_for(out), out, tmp / f"{name}-kill.log", before, into)
        left = partials(out)
        for partial in left:  # never presented as a result
            assert main(["figures", str(partial)]) == 2
        if out.exists():
            assert (out / RECORD).exists(), f"{name}, kill {label}: {out} exists without {RECORD}: a partial result in place of a result"
            problems = same_result(out, reference)
            assert not problems, f"{name}, kill {label}: {out} differs from the uninterrupted run: {problems}"
            state = "complete, identical to the uninterrupted run"
        else:
            state = "absent"
        outcomes.append((name, label, state + (f"; partial folder left ({left[0].name}), refused by figures" if left else "")))
    # the next run reports and removes the leftovers, and its result is the reference one
    had_partial, log = bool(partials(out)), tmp / f"{name}-final.log"
    pid = fork_cli(argv_for(out), log)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, log.read_text()[-2000:]
    text = log.read_text()
    if had_partial:
        assert "deleted the partial output of an interrupted run" in text, text[-2000:]
    assert not partials(out) and not out.with_name(out.name + ".lock").exists()
    assert not same_result(out, reference)
    assert ".partial-" not in text.strip().splitlines()[-1]  # the printed paths are the final ones
    outcomes.append((name, "rerun", "leftovers reported and removed, result identical" if had_partial else "result identical"))


@forking
def test_sigkill_leaves_no_result_that_is_not_one(checkpoint, tmp_path, record_property):
    outcomes: list = []
    try:
        kill_series("patch", lambda o: patch_args(checkpoint, o), tmp_path, outcomes)
        kill_series("stages", lambda o: stages_args(checkpoint, o), tmp_path, outcomes)
    finally:
        for name, label, state in outcomes:
            print(f"{name:<7} {label:<40} {state}")
        record_property("kill_points", json.dumps(outcomes))
    assert len([o for o in outcomes if o[1] != "rerun"]) == 10
    # the points inside the writing window must have met the interesting case at least once
    assert any("partial folder left" in state for _, _, state in outcomes), outcomes


# -- two writers ----------------------------------------------------------------------------------------


@forking
def test_second_writer_to_one_out_is_refused_and_the_first_completes(checkpoint, tmp_path, capsys):
    out, log = tmp_path / "shared", tmp_path / "first.log"
    # the first writer sweeps every head one row at a time: several seconds with the lock held
    first = fork_cli(patch_args(checkpoint, out)[:-1] + ["--target", "head", "--rows-per-forward", "4", "--json"], log)
    lock = out.with_name("shared.lock")
    while not lock.exists():
        assert finished(first) is None, log.read_text()[-2000:]
        time.sleep(0.001)
    capsys.readouterr()
    assert main(patch_args(checkpoint, out)) == 2  # the second writer, in this process
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "Loading weights" not in line]  # transformers' load bars
    assert len(err) == 1 and "is being written by process" in err[0] and str(first) in err[0], err
    assert finished(first) is None, "the first writer finished before the second was refused: the test proved nothing"
    assert os.waitstatus_to_exitcode(os.waitpid(first, 0)[1]) == 0, log.read_text()[-2000:]
    for rel in listed(out):
        check_complete(out / rel)
    assert not partials(out) and not lock.exists()
    assert (out / "head_summary.csv").exists() and not (out / "component_summary.csv").exists()  # the first writer's result only
    assert str(out / "head_summary.csv") in log.read_text()


# -- the transaction, in process ------------------------------------------------------------------------


@atomic
def _toy_run(model, data, out, fail: bool = False, inner=None) -> dict:
    """A pipeline in miniature: one table, an optional nested pipeline, an optional failure after writing."""
    path = write_table(data, Path(out) / "per_query", {"model": model})
    summary = {"table": str(path)}
    if inner is not None:
        summary["inner"] = inner(model, data, Path(out) / "sub")
    if fail:
        raise GenIRError("failed after writing")
    return summary


@pytest.fixture
def frame():
    import pandas as pd
    return pd.DataFrame({"query_id": ["q1", "q2"], "rank": [1, 3], "correct": [True, False]})


def test_a_failed_run_leaves_out_as_it_was_and_a_nested_run_is_one_transaction(tmp_path, frame):
    out = tmp_path / "res"
    with pytest.raises(GenIRError, match="failed after writing"):
        _toy_run("m", frame, out, fail=True)
    assert not out.exists() and not list(tmp_path.iterdir())  # no partial folder, no lock
    summary = _toy_run("m", frame, out, inner=_toy_run)
    assert summary == {"table": str(out / "per_query.csv"), "inner": {"table": str(out / "sub" / "per_query.csv")}}
    assert sorted(listed(out)) == ["per_query.csv", "per_query.provenance.json", "sub/per_query.csv", "sub/per_query.provenance.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"] and not (out / "sub" / RECORD).exists()
    # a second run adds its files, replacing those of the same name, and the record says which run wrote each
    _toy_run("m2", frame.head(1), out)
    files = listed(out)
    assert files["per_query.csv"]["run"] != files["sub/per_query.csv"]["run"]
    assert read_table(out / "per_query")[1]["model"] == "m2" and len(read_table(out / "sub" / "per_query")[0]) == 2


def test_partial_changed_and_unrecorded_results_are_never_shown(tmp_path, frame, capsys):
    out = tmp_path / "res"
    _toy_run("m", frame, out)
    csv = out / "per_query.csv"
    csv.write_text(csv.read_text()[:-5])  # truncated after completion
    with pytest.raises(GenIRError, match="changed since the run"):
        read_table(out / "per_query")
    partial = tmp_path / "res.partial-999999"
    write_table(frame, partial / "per_query", {})
    legacy = tmp_path / "legacy"
    write_table(frame, legacy / "per_query", {})
    capsys.readouterr()
    assert main(["figures", str(partial)]) == 2 and "partial output of an unfinished or interrupted run" in capsys.readouterr().err
    assert main(["figures", str(legacy)]) == 2 and "not part of a complete result" in capsys.readouterr().err
    # a run into a folder of files without a completion record refuses it: never merged into, never deleted
    with pytest.raises(GenIRError, match="holds files but no COMPLETE.json"):
        _toy_run("m", frame, legacy)
    assert (legacy / "per_query.csv").exists()
    # the next run into `res` removes the dead run's partial folder, with a warning
    with pytest.warns(ResultsWarning, match="deleted the partial output"):
        _toy_run("m", frame, out)
    assert not partial.exists() and not same_result(out, out)


def test_a_run_killed_while_swapping_in_its_result_leaves_the_previous_one_restorable(tmp_path, frame):
    out = tmp_path / "res"
    _toy_run("m", frame, out, inner=_toy_run)
    os.rename(out, tmp_path / "res.replaced-999999")  # where a kill between commit's two renames leaves the old result
    (tmp_path / "res.partial-999999").mkdir()  # ... and the new one, not yet a result
    with pytest.warns(ResultsWarning) as caught:
        _toy_run("m2", frame.head(1), out)
    messages = " ".join(str(w.message) for w in caught)
    assert "restored the previous complete result" in messages and "deleted the partial output" in messages
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert read_table(out / "per_query")[1]["model"] == "m2" and read_table(out / "sub" / "per_query")[1]["model"] == "m"


def test_a_dead_writers_lock_is_taken_over_and_a_live_ones_refuses(tmp_path, frame):
    out = tmp_path / "res"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "res.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "earlier"}))
    with pytest.warns(ResultsWarning, match="no longer runs"):
        _toy_run("m", frame, out)
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename, "started": "now"}))
    with pytest.raises(GenIRError, match=f"being written by process {os.getppid()}"):
        _toy_run("m2", frame, out)
    assert read_table(out / "per_query")[1]["model"] == "m"


def test_every_pipeline_writes_through_a_transaction():
    import importlib
    import pkgutil

    import genir_mech.pipelines as pipelines

    runs = []
    for info in pkgutil.iter_modules(pipelines.__path__):
        module = importlib.import_module(f"genir_mech.pipelines.{info.name}")
        runs += [(info.name, n, f) for n, f in vars(module).items() if n.startswith("run_") and callable(f) and f.__module__ == module.__name__]
    assert len(runs) >= 12
    # The pretraining study is not one transaction by design: it resumes model by model, each model's analyses are
    # atomic pipelines and each of its summary files is written atomically (a crash loses at most the model under way).
    per_model = {"study_pretraining.run_study"}
    assert [f"{m}.{n}" for m, n, f in runs if not getattr(f, "writes_atomically", False) and f"{m}.{n}" not in per_model] == []
    assert all(not getattr(f, "writes_atomically", False) for m, n, f in runs if f"{m}.{n}" in per_model), "drop it from per_model"


# -- training -------------------------------------------------------------------------------------------

TINY = ["--data", "synthetic:n_docs=30,seed=1", "--objective", "span", "--d-model", "32", "--d-ff", "64", "--num-heads", "2",
        "--encoder-layers", "1", "--decoder-layers", "2", "--warmup-steps", "5", "--batch-size", "64", "--epochs", "1"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_train_never_destroys_or_mixes_a_checkpoint(checkpoint, tmp_path, capsys):
    out = tmp_path / "base"
    assert main(["train", "--out", str(out), *TINY]) == 0
    weights = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    # the same finished command again: nothing to do, nothing rewritten
    assert main(["train", "--out", str(out), *TINY]) == 0
    assert "already trained" in capsys.readouterr().out and (out / "model.safetensors").read_bytes() == weights
    # other arguments: refused, naming what differs
    assert main(["train", "--out", str(out), *TINY, "--lr", "0.01"]) == 2
    assert "lr 0.001 -> 0.01" in _one_error_line(capsys)
    assert main(["train", "--out", str(out), *TINY, "--data", "synthetic:n_docs=31,seed=1"]) == 2
    line = _one_error_line(capsys)
    assert "data synthetic:n_docs=30,seed=1 -> synthetic:n_docs=31,seed=1" in line and "data_hash" in line
    assert (out / "model.safetensors").read_bytes() == weights
    # a truncated resume state is one clear line, not a traceback
    state = out / "resume" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    assert main(["train", "--out", str(out), *TINY, "--epochs", "2"]) == 2
    line = _one_error_line(capsys)
    assert "resume state refused as invalid or unsafe: not a complete torch file" in line and str(state) in line
    # a checkpoint this run has no record of (here: one not trained by genir-mech train) is only replaced with --overwrite
    foreign = shutil.copytree(checkpoint, tmp_path / "foreign")
    capsys.readouterr()
    assert main(["train", "--out", str(foreign), *TINY]) == 2
    assert "--overwrite" in _one_error_line(capsys) and (foreign / "model.safetensors").read_bytes() == (checkpoint / "model.safetensors").read_bytes()
    assert main(["train", "--out", str(out), *TINY, "--lr", "0.01", "--overwrite"]) == 0
    assert json.loads((out / "model_card.json").read_text())["loop"]["lr"] == 0.01


@pytest.mark.parametrize("bad, message", [
    (["--epochs", "0"], "argument --epochs: must be a positive integer, got 0"),  # the CLI refuses while parsing ...
    (["--batch-size", "-4"], "argument --batch-size"),
    (["--lr", "0"], "argument --lr"),
    (["--decoder-layers", "0"], "argument --decoder-layers"),
    (["--base", "LLAMA"], "decoder-only llama model"),
])
def test_train_refuses_non_positive_counts_and_a_base_that_is_not_t5(bad, message, tmp_path, capsys):
    if "LLAMA" in bad:
        _save(tiny_llama_genir(), tmp_path / "llama", {})
        bad = ["--base", str(tmp_path / "llama"), "--objective", "dsi"]
        capsys.readouterr()  # saving prints progress bars
    assert main(["train", "--out", str(tmp_path / "out"), *TINY, *bad]) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("change, message", [
    ({"loop": {"epochs": 0}}, "epochs must be at least 1, got 0"),  # ... and the library refuses the same for Python callers
    ({"loop": {"batch_size": -4}}, "batch_size must be at least 1"),
    ({"loop": {"lr": 0.0}}, "lr must be positive"),
    ({"shape": {"decoder_layers": 0}}, "decoder_layers must be at least 1"),
])
def test_train_model_refuses_the_same_settings_from_python(change, message, tmp_path):
    from dataclasses import replace

    from genir_mech.training.architecture import T5Shape
    from genir_mech.training.loop import LoopConfig
    from genir_mech.training.train import TrainRequest, train_model

    request = TrainRequest("synthetic:n_docs=20,seed=0,n_pairs=16", str(tmp_path / "out"),
                           shape=replace(T5Shape(), **change.get("shape", {})), loop=replace(LoopConfig(), **change.get("loop", {})))
    with pytest.raises(GenIRError, match=message):
        train_model(request)
    assert not (tmp_path / "out").exists()

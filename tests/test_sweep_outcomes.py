"""A sweep finishes whatever one unit does: a unit that fails or does not apply ends alone, the others keep their
results, SWEEP.json and the demo's report say which and why, and a rerun retries only the failed units. The demo verb
runs from a working folder without `runs/`, and a sweep creates its output folder's missing parents."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from genir_mech.cli import main
from genir_mech.errors import NotApplicable
from test_sweep import CHECKPOINT, write_config  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.skipif(not (CHECKPOINT / "config.json").exists(), reason="the embedded checkpoints are not in this checkout")

FEW = [{"run": "stages", "max_queries": 8, "bootstrap": 3, "ablation": False},
       {"run": "contributions", "max_queries": 8, "stages": "@stages"},
       {"run": "lens", "max_queries": 8, "stages": "@stages", "examples": 2},
       {"run": "read", "max_queries": 8, "stages": "@stages"}]


def manifest(out: Path) -> dict:
    return json.loads((out / "SWEEP.json").read_text())


def test_a_sweep_creates_the_missing_parents_of_its_output_folder(tmp_path, capsys):
    out = tmp_path / "not" / "yet" / "there"
    config = write_config(tmp_path / "sweep.yaml", out, experiments=FEW[:1])
    assert main(["sweep", str(config), "--quiet"]) == 0, capsys.readouterr().err
    assert manifest(out)["units"]["dsi/stages"]["status"] == "done" and (out / "dsi" / "stages" / "COMPLETE.json").is_file()


def test_a_failed_unit_ends_alone_and_a_rerun_retries_only_it(tmp_path, capsys, monkeypatch):
    import genir_mech.sweep.execute as execute

    real = execute._pipelines()

    def not_applicable(*args, **kwargs):
        raise NotApplicable("contributions do not apply to this model")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the lens")

    monkeypatch.setattr(execute, "_pipelines", lambda: {**real, "contributions": not_applicable, "lens": broken})
    out = tmp_path / "out"
    config = write_config(tmp_path / "sweep.yaml", out, experiments=FEW)
    capsys.readouterr()
    assert main(["sweep", str(config), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0] and "dsi/lens: RuntimeError: a bug in the lens" in err[0], err
    units = manifest(out)["units"]
    assert {u: units[u]["status"] for u in units} == {"dsi/stages": "done", "dsi/contributions": "skipped", "dsi/lens": "failed", "dsi/read": "done"}
    assert units["dsi/contributions"]["reason"] == "contributions do not apply to this model"
    assert manifest(out)["failed"] == ["dsi/lens"] and manifest(out)["skipped"] == ["dsi/contributions"]
    assert (out / "dsi" / "read" / "COMPLETE.json").is_file() and not (out / "dsi" / "lens").exists()
    assert "RuntimeError: a bug in the lens" in (out / ".sweep" / "errors" / "dsi__lens.txt").read_text()  # the traceback is kept
    read_before = (out / "dsi" / "read" / "COMPLETE.json").read_bytes()

    monkeypatch.setattr(execute, "_pipelines", lambda: real)  # the bug is fixed: the rerun runs the lens only
    assert main(["sweep", str(config), "--quiet"]) == 0, capsys.readouterr().err
    units = manifest(out)["units"]
    assert {u: units[u]["status"] for u in units} == {"dsi/stages": "done", "dsi/contributions": "skipped", "dsi/lens": "done", "dsi/read": "done"}
    assert (out / "dsi" / "read" / "COMPLETE.json").read_bytes() == read_before and not (out / "dsi" / "contributions").exists()
    assert not (out / ".sweep" / "errors" / "dsi__lens.txt").exists()  # the fixed unit's old traceback is gone


def test_a_unit_that_reads_from_a_failed_one_fails_without_running(tmp_path, capsys, monkeypatch):
    import genir_mech.sweep.execute as execute

    real = execute._pipelines()
    ran = []

    def broken(*args, **kwargs):
        raise RuntimeError("stages broke")

    monkeypatch.setattr(execute, "_pipelines", lambda: {**real, "stages": broken, "read": lambda *a, **k: ran.append(a)})
    out = tmp_path / "out"
    config = write_config(tmp_path / "sweep.yaml", out, experiments=[FEW[0], FEW[3]])
    assert main(["sweep", str(config), "--quiet"]) == 2
    assert ran == [] and manifest(out)["units"]["dsi/read"]["reason"] == "needs dsi/stages, which did not finish"


def test_the_demo_verb_runs_from_a_folder_without_runs(tmp_path, capsys, monkeypatch):
    """The README's first command from a working folder that has nothing in it (sizes cut down; CI runs the full demo)."""
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--max-queries", "8", "--n-pairs", "4", "--variants", "dsi-synth-rd1"]) == 0, capsys.readouterr().err
    report = (tmp_path / "runs" / "demo" / "REPORT.md").read_text()
    units = manifest(tmp_path / "runs" / "demo")["units"]
    assert all(u["status"] in ("done", "skipped") for u in units.values()), {k: (u["status"], u["reason"]) for k, u in units.items()}
    for uid, unit in units.items():  # every unit that did not run says why in the report
        if unit["status"] == "skipped":
            assert unit["reason"] in report
    for image in [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        assert (tmp_path / "runs" / "demo" / image).is_file(), image


@pytest.mark.parametrize("experiment, expected", [
    ({"run": "swap", "model": "dsi", "encoders": ["lm"]}, "encoders on model 'dsi'"),
    ({"run": "patch", "model": "lm", "target": "encoder-position", "n_pairs": 2}, "target on model 'lm'"),
], ids=["swap with a decoder-only encoder", "encoder patching of a decoder-only model"])
def test_what_a_model_cannot_do_is_refused_before_anything_runs(experiment, expected, tmp_path, capsys):
    out = tmp_path / "out"
    config = write_config(tmp_path / "sweep.yaml", out, models={"dsi": str(CHECKPOINT), "lm": str(CHECKPOINT.parent / "lm-niah")},
                          experiments=[{"run": "stages", "model": "dsi", "max_queries": 8, "bootstrap": 3}, experiment])
    capsys.readouterr()
    assert main(["sweep", str(config), "--quiet"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and expected in err[0] and "needs encoder" in err[0] and "fix:" in err[0], err
    assert not out.exists()  # not even the first, valid experiment ran

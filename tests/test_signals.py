"""Ctrl-C (SIGINT) and SIGTERM stop a verb, a sweep and `train` cleanly: one line, exit 130 or 143, no partial folder
or lock left, and the same command run again finishes (a sweep keeps the units done before the signal, `train`
resumes from its last finished epoch).

Each command is a fresh `python -m genir_mech.cli` process, signalled once it has visibly started its work.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "dsi-synth"
SIGNALS = {"SIGINT": (signal.SIGINT, 130, "interrupted"), "SIGTERM": (signal.SIGTERM, 143, "terminated (SIGTERM)")}
pytestmark = pytest.mark.skipif(not (CHECKPOINT / "config.json").exists(), reason="the embedded checkpoints are not in this checkout")


def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genir_mech.cli", *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_when(proc: subprocess.Popen, started, sig: int, timeout: float = 240) -> tuple[int, str]:
    """Send `sig` once `started()` holds; the exit code and stderr."""
    deadline = time.time() + timeout
    while not started():
        assert proc.poll() is None, f"ended before the signal: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, "the command never started its work"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def check_stopped(code: int, err: str, name: str, verb: str) -> None:
    _, expected_code, words = SIGNALS[name]
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]  # progress bars aside
    assert code == expected_code and "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith(f"genir-mech {verb}: {words};") and "rerun the same command" in lines[-1], lines[-3:]


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".partial-" in p.name or p.name.endswith(".lock"))


@pytest.mark.parametrize("name", SIGNALS)
def test_a_verb_stops_cleanly(name, tmp_path):
    out = tmp_path / "out"
    argv = ["stages", "--model", str(CHECKPOINT), "--max-queries", "64", "--bootstrap", "200", "--out", str(out)]
    code, err = signal_when(start(argv, tmp_path), lambda: any(tmp_path.glob("out.partial-*")), SIGNALS[name][0])
    check_stopped(code, err, name, "stages")
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("name", SIGNALS)
def test_a_sweep_stops_cleanly_and_resumes(name, tmp_path):
    from test_sweep import write_config  # noqa: E402  (tests/ is on sys.path)
    out = tmp_path / "out"
    experiments = [{"run": "stages", "max_queries": 8, "bootstrap": 3, "ablation": False},
                   {"run": "stages", "name": "slow", "max_queries": 64, "bootstrap": 400}]
    config = write_config(tmp_path / "sweep.yaml", out, experiments=experiments)
    first_unit = out / ".sweep" / "units" / "dsi__stages.json"
    code, err = signal_when(start(["sweep", str(config), "--quiet"], tmp_path), first_unit.exists, SIGNALS[name][0])
    check_stopped(code, err, name, "sweep")
    assert leftovers(tmp_path) == [] and not (out / "dsi" / "slow").exists()
    record = first_unit.read_bytes()
    done = subprocess.run([sys.executable, "-m", "genir_mech.cli", "sweep", str(config), "--quiet",
                           "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert first_unit.read_bytes() == record  # the unit finished before the signal was not run again
    assert {u["status"] for u in json.loads((out / "SWEEP.json").read_text())["units"].values()} == {"done"}


TRAIN = ["train", "--data", "synthetic:n_docs=100,seed=1", "--objective", "span", "--d-model", "32", "--d-ff", "64", "--num-heads", "2",
         "--encoder-layers", "1", "--decoder-layers", "2", "--warmup-steps", "5", "--batch-size", "64", "--epochs", "3"]


@pytest.mark.parametrize("name", SIGNALS)
def test_train_stops_cleanly_and_resumes(name, tmp_path):
    out = tmp_path / "model"
    state = out / "resume" / "state.pt"
    code, err = signal_when(start([*TRAIN, "--out", str(out)], tmp_path), state.exists, SIGNALS[name][0])
    check_stopped(code, err, name, "train")
    assert leftovers(tmp_path) == [] and not (out / "model_card.json").exists()  # no card: not a finished model
    done = subprocess.run([sys.executable, "-m", "genir_mech.cli", *TRAIN, "--out", str(out)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout + done.stderr and (out / "model.safetensors").is_file()
    assert len(json.loads((out / "model_card.json").read_text())["history"]) == 3

"""Every write and delete stays inside its `out`: names from a sweep config are plain folder names, a config's
trec_run lands in its unit's folder, links planted where a run writes are never followed, and `eval --trec-run`
works inside `--out` and keeps an existing file elsewhere unless asked to replace it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from genir_mech.cli import main
from test_sweep import CHECKPOINT, write_config  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.skipif(not (CHECKPOINT / "config.json").exists(), reason="the embedded checkpoints are not in this checkout")
STAGES = {"run": "stages", "max_queries": 8, "bootstrap": 3, "ablation": False}


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("change, expected", [
    ({"experiments": [{**STAGES, "name": "../../victim"}]}, "experiments[0] (stages '../../victim').name"),
    ({"experiments": [{**STAGES, "name": "/tmp/victim"}]}, ".name"),
    ({"models": {"../victim": str(CHECKPOINT)}}, "models.../victim"),
    ({"experiments": [{"run": "eval", "max_queries": 4, "beams": 0, "trec_run": "/tmp/victim.txt"}]}, "trec_run"),
    ({"experiments": [{"run": "eval", "max_queries": 4, "beams": 0, "trec_run": "../../victim.txt"}]}, "trec_run"),
], ids=["experiment name climbing out", "absolute experiment name", "model key climbing out", "absolute trec_run", "trec_run climbing out"])
def test_a_config_name_that_would_leave_out_is_refused(change, expected, tmp_path, capsys):
    out = tmp_path / "sweep" / "out"
    config = write_config(tmp_path / "sweep.yaml", out, **change)
    capsys.readouterr()
    assert main(["sweep", str(config), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert expected in line and "fix:" in line, line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data", "sweep.yaml"]


def test_a_config_trec_run_is_written_into_its_units_folder(tmp_path, capsys):
    out = tmp_path / "out"
    config = write_config(tmp_path / "sweep.yaml", out, experiments=[{"run": "eval", "split": "validation", "max_queries": 4, "beams": 0, "trec_run": "run.txt"}])
    assert main(["sweep", str(config), "--quiet"]) == 0, capsys.readouterr().err
    record = json.loads((out / "dsi" / "eval" / "COMPLETE.json").read_text())
    assert "run.txt" in record["files"] and len((out / "dsi" / "eval" / "run.txt").read_text().splitlines()) > 0


def test_a_link_planted_where_a_unit_folder_goes_is_removed_not_followed(tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    out = tmp_path / "out"
    config = write_config(tmp_path / "sweep.yaml", out, experiments=[STAGES])
    (out / "dsi").mkdir(parents=True)
    (out / "dsi" / "stages").symlink_to(victim, target_is_directory=True)
    assert main(["sweep", str(config), "--quiet"]) == 0, capsys.readouterr().err
    assert (victim / "precious.txt").read_text() == "keep me" and sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert not (out / "dsi" / "stages").is_symlink() and (out / "dsi" / "stages" / "COMPLETE.json").is_file()


def test_links_planted_beside_a_result_are_never_followed(tmp_path):
    from genir_mech.provenance import written_atomically
    from genir_mech.results_directory import atomic

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "out" / "table.csv"
    target.parent.mkdir()
    for pid in range(os.getpid() - 5, os.getpid() + 5):  # the names temporary files had before: now unpredictable
        (target.parent / f".table.csv.tmp-{pid}").symlink_to(victim)
    with written_atomically(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and victim.read_text() == "keep me"

    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir()
    (victim_dir / "precious.txt").write_text("keep me")
    result = tmp_path / "result"
    (tmp_path / "result.partial-999999").symlink_to(victim_dir, target_is_directory=True)  # a dead run's "partial folder"

    @atomic
    def run(model, data, out):
        (Path(out) / "x.txt").write_text("x")
        return {}

    run(None, None, result)
    assert (result / "x.txt").is_file() and sorted(p.name for p in victim_dir.iterdir()) == ["precious.txt"]
    assert not (tmp_path / "result.partial-999999").exists()


def _eval(out: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(CHECKPOINT), "--split", "validation", "--max-queries", "8", "--beams", "0", "--out", str(out), *extra]


def test_eval_trec_run_inside_out_is_part_of_the_result(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_eval(out, "--trec-run", str(out / "runs" / "run.txt"))) == 0, capsys.readouterr().err
    record = json.loads((out / "COMPLETE.json").read_text())
    assert "runs/run.txt" in record["files"] and (out / "runs" / "run.txt").read_text().count(" Q0 ") >= 8


def test_eval_keeps_an_existing_trec_run_unless_asked_to_overwrite(tmp_path, capsys):
    run = tmp_path / "mine.txt"
    run.write_text("my earlier run\n")
    capsys.readouterr()
    assert main(_eval(tmp_path / "out", "--trec-run", str(run))) == 2
    line = one_error_line(capsys)
    assert "exists and is kept" in line and "--overwrite-trec-run" in line, line
    assert run.read_text() == "my earlier run\n" and not (tmp_path / "out").exists()
    assert main(_eval(tmp_path / "out", "--trec-run", str(run), "--overwrite-trec-run")) == 0, capsys.readouterr().err
    assert run.read_text().count(" Q0 ") >= 8


class _Hostile:
    """Unpickling this runs code: it creates the file named by `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_hostile_cache_entry_never_runs_and_is_computed_again(tmp_path, capsys):
    import pickle

    out, marker = tmp_path / "out", tmp_path / "code-ran"
    lens = {"run": "lens", "max_queries": 8, "stages": "a=0-3,b=4-7", "examples": 2}
    config = write_config(tmp_path / "sweep.yaml", out, experiments=[lens, {"run": "patch", "target": "component", "n_pairs": 4, "n_boot": 10}])
    assert main(["sweep", str(config), "--quiet"]) == 0, capsys.readouterr().err
    cache = out / ".sweep" / "cache"
    entries = sorted(cache.iterdir())
    assert {p.suffix for p in entries} == {".json", ".parquet"}, entries  # data formats only
    for path in [*entries, cache / "correct-planted.pkl"]:
        path.write_bytes(pickle.dumps(_Hostile(marker)))
    config = write_config(tmp_path / "sweep.yaml", out, experiments=[{**lens, "name": "lens2"}, {"run": "patch", "name": "patch2", "target": "component", "n_pairs": 4, "n_boot": 10}])
    capsys.readouterr()
    assert main(["sweep", str(config), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert not marker.exists(), "a cache entry ran code"
    assert "not a valid cache entry" in err and "Traceback" not in err, err
    assert (out / "dsi" / "lens2" / "COMPLETE.json").is_file() and (out / "dsi" / "patch2" / "COMPLETE.json").is_file()


@pytest.mark.parametrize("name, content", [
    ("bad.json", b"\xff\xfe not json"), ("bad.md", b"\xff\xfe"), ("half.json", b'{"a": '),
    ("sweep/SWEEP.json", b'{"units": 3}'), ("folder/COMPLETE.json", b"[1, 2]"),
], ids=["json with bad bytes", "markdown with bad bytes", "truncated json", "sweep record without its keys", "completion record not an object"])
def test_show_on_a_damaged_file_is_one_line(name, content, tmp_path, capsys):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    shown = path if path.name not in ("SWEEP.json", "COMPLETE.json") else path.parent
    capsys.readouterr()
    assert main(["show", str(shown)]) == 2
    assert "genir-mech show: error:" in one_error_line(capsys)


def test_a_lock_from_another_host_says_how_old_it_is_and_how_to_clear_it(tmp_path, capsys):
    out = tmp_path / "out"
    lock = tmp_path / "out.lock"
    lock.write_text(json.dumps({"pid": 4242, "host": "another-machine", "started": "2026-01-01T00:00:00+0000"}))
    os.utime(lock, (lock.stat().st_atime, lock.stat().st_mtime - 7200))
    capsys.readouterr()
    assert main(_eval(out)) == 2
    line = one_error_line(capsys)
    assert "process 4242 on another-machine" in line and "2.0 h ago" in line and f"delete {lock}" in line, line

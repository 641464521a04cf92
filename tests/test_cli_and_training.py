"""The command line: every verb has --help, user errors print one line (no traceback), training resumes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from genir_mech.cli import VERBS, build_parser, main

TINY = ["--data", "synthetic:n_docs=30,seed=1", "--d-model", "32", "--d-ff", "64", "--num-heads", "2", "--encoder-layers", "1", "--decoder-layers", "2", "--warmup-steps", "5", "--batch-size", "64"]


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage: genir-mech " + verb in capsys.readouterr().out


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "genir_mech.cli", "eval", "--model", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr == f"genir-mech eval: error: argument --model: {tmp_path}: directory has no config.json; not a HuggingFace checkpoint\n"


def test_training_resumes_and_writes_a_model_card(tmp_path, capsys):
    base, dsi = str(tmp_path / "base"), str(tmp_path / "dsi")
    assert main(["train", "--out", base, "--objective", "span", "--epochs", "1", *TINY]) == 0
    # one epoch, then the same command with more epochs continues from the saved state
    assert main(["train", "--out", dsi, "--base", base, "--epochs", "1", "--remove-docs", "3,4", *TINY]) == 0
    first = json.loads((tmp_path / "dsi" / "model_card.json").read_text())
    assert len(first["history"]) == 1
    # other arguments are refused, naming what differs (tests/test_interruption.py has the rest)
    assert main(["train", "--out", dsi, "--base", base, "--epochs", "2", *TINY]) == 2
    assert "removed_documents ['3', '4'] -> []" in capsys.readouterr().err
    assert main(["train", "--out", dsi, "--base", base, "--epochs", "2", "--remove-docs", "3,4", *TINY]) == 0
    card = json.loads((tmp_path / "dsi" / "model_card.json").read_text())
    assert [h["epoch"] for h in card["history"]] == [1, 2]
    assert "resuming" in capsys.readouterr().out
    assert card["removed_documents"] == ["3", "4"] and card["data_hash"] == first["data_hash"]
    assert set(card["metrics"]) == {"validation", "test", "removed_documents_test"}
    assert main(["eval", "--model", dsi, "--out", str(tmp_path / "eval"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"hits@1", "hits@5", "hits@10", "mrr", "n_queries"} <= set(metrics)
    assert (tmp_path / "eval" / "correct_queries.csv").exists() and (tmp_path / "eval" / "per_query.provenance.json").exists()
    assert (tmp_path / "eval" / "figures" / "retrieval_ranks.png").stat().st_size > 0

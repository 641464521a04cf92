"""End to end on the committed checkpoints: they load, pass the self-check, and reproduce their model cards."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from genir_mech.cli import main
from genir_mech.data.loaders import load_dataset
from genir_mech.models.loading import load_genir
from genir_mech.models.model_card import ModelCard

ROOT = Path(__file__).resolve().parents[1] / "checkpoints"
NAMES = ["t5-synth-base", "dsi-synth", "dsi-synth-rd1", "dsi-synth-rd2"]


def test_checkpoints_are_complete_and_small():
    total = 0
    for name in NAMES:
        folder = ROOT / name
        assert (folder / "model_card.json").exists(), f"{folder} has no model card"
        total += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert total < 100 * 2**20


def test_dsi_synth_eval_reproduces_its_model_card(tmp_path, capsys):
    card = ModelCard.read(ROOT / "dsi-synth")
    assert load_dataset(card.data).data_hash() == card.data_hash, "the synthetic data no longer regenerates identically"
    gm = load_genir(str(ROOT / "dsi-synth"))  # runs the logit-lens self-check
    assert gm.n_layers("decoder") >= 8 and len(gm.docids) >= 1000
    assert main(["eval", "--model", str(ROOT / "dsi-synth"), "--out", str(tmp_path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["n_queries"] == card.metrics["test"]["n_queries"]
    for key in ("hits@1", "hits@5", "hits@10", "mrr"):
        assert metrics[key] == pytest.approx(card.metrics["test"][key], abs=1e-6)
    assert metrics["hits@1"] >= 0.6


@pytest.mark.parametrize("name", ["dsi-synth-rd1", "dsi-synth-rd2"])
def test_removed_docs_variants_never_saw_their_documents(name):
    card = ModelCard.read(ROOT / name)
    removed = card.removed_documents
    assert len(removed) >= 10
    full = ModelCard.read(ROOT / "dsi-synth")
    assert card.data_hash == full.data_hash and card.base == full.base
    # the variant ranks its own documents far better than the ones it never saw
    assert card.metrics["test"]["hits@10"] > card.metrics["removed_documents_test"]["hits@10"]
    other = ModelCard.read(ROOT / ("dsi-synth-rd2" if name.endswith("1") else "dsi-synth-rd1"))
    assert set(removed) != set(other.removed_documents)

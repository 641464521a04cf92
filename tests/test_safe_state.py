"""A results folder is data, never code: a training run's resume state is read as tensors and plain data only.

A planted pickle whose `__reduce__` would run a command, an old whole-pickle state, a state with wrong entries: each
is refused with one line naming the file, and the command never runs (its marker file never appears). A state
saved and loaded again is the same, and a run resumed from it ends exactly where an uninterrupted run does.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from genir_mech.cli import main
from genir_mech.errors import GenIRError
from genir_mech.pipelines.study_pretraining import snapshot_card
from genir_mech.training.loop import LoopConfig, TrainLoop
from genir_mech.training.resume_state import FORMAT, ResumeState, load_resume_state, save_resume_state

TINY = ["--data", "synthetic:n_docs=30,seed=1", "--objective", "span", "--d-model", "32", "--d-ff", "64", "--num-heads", "2",
        "--encoder-layers", "1", "--decoder-layers", "2", "--warmup-steps", "5", "--batch-size", "64"]


class Hostile:
    """Unpickling this runs a shell command that creates `marker`."""
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def plant(path: Path, marker: Path, how: str) -> None:
    """Replace the state at `path` by a hostile one: a torch file holding it, or a bare pickle of it."""
    if how == "torch":
        torch.save({"format": FORMAT, "model": {}, "meta": Hostile(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Hostile(marker), protocol=4))


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in captured.err, err
    return err[0]


def _tiny_state(epoch: int = 2) -> ResumeState:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    history = [{"epoch": 1, "loss": 1.25, "validation": np.float64(0.5), "seconds": 3.0},
               {"epoch": 2, "loss": float(np.float32(0.75)), "validation": np.float32(0.25), "seconds": 6.5}]
    return ResumeState(model=model.state_dict(), optimizer=opt.state_dict(), torch_rng=torch.get_rng_state(), epoch=epoch,
                       best=float("-inf"), bad_epochs=1, elapsed=6.5, history=history, scheduler=sched.state_dict(),
                       config={"epochs": 3, "lr": 1e-3, "max_minutes": 0.0})


def test_a_state_round_trips(tmp_path):
    state, path = _tiny_state(), tmp_path / "resume" / "state.pt"
    save_resume_state(path, state)
    loaded = load_resume_state(path, "remedy")
    assert loaded.model.keys() == state.model.keys() and all(torch.equal(loaded.model[k], state.model[k]) for k in state.model)
    assert torch.equal(loaded.torch_rng, state.torch_rng) and loaded.torch_rng.dtype == torch.uint8
    assert loaded.optimizer["param_groups"] == state.optimizer["param_groups"]
    for i, per_param in state.optimizer["state"].items():
        assert all(torch.equal(loaded.optimizer["state"][i][k], v) for k, v in per_param.items())
    assert (loaded.epoch, loaded.best, loaded.bad_epochs, loaded.elapsed) == (2, float("-inf"), 1, 6.5)
    assert loaded.scheduler == state.scheduler and loaded.config == state.config
    assert loaded.history == [{k: float(v) if k == "validation" else v for k, v in h.items()} for h in state.history]
    assert [name for name in os.listdir(path.parent)] == ["state.pt"]  # written atomically: no temporary left


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(vocab_size=24, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
                                               num_decoder_layers=1, decoder_start_token_id=0, pad_token_id=0))


def _examples(epoch: int):
    rng = np.random.default_rng(epoch)
    return [(rng.integers(1, 24, 6).tolist(), rng.integers(1, 24, 3).tolist()) for _ in range(40)]


class Killed(Exception):
    pass


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path, capsys):
    config = LoopConfig(epochs=3, batch_size=16, lr=1e-2, warmup_steps=2, patience=5)
    scores = iter([0.1, 0.3, 0.2] * 2)
    whole = _t5()
    TrainLoop(whole, config, tmp_path / "whole").fit(_examples, lambda: next(scores), lambda: None)

    def killed_in_epoch_three(epoch):
        if epoch == 2:
            raise Killed  # after epoch two's state was saved
        return _examples(epoch)

    with pytest.raises(Killed):
        TrainLoop(_t5(), config, tmp_path / "resumed").fit(killed_in_epoch_three, lambda: next(scores), lambda: None)
    resumed = _t5()
    loop = TrainLoop(resumed, config, tmp_path / "resumed")
    result = loop.fit(_examples, lambda: next(scores), lambda: None)
    printed = capsys.readouterr()
    assert "resuming" in printed.out + printed.err
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3] and result["best_validation"] == 0.3
    finished = {name: load_resume_state(tmp_path / name / "resume" / "state.pt", "") for name in ("whole", "resumed")}
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [h["loss"] for h in finished["whole"].history] == [h["loss"] for h in finished["resumed"].history]
    assert finished["whole"].scheduler == finished["resumed"].scheduler
    assert finished["whole"].bad_epochs == finished["resumed"].bad_epochs == 1


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_train_refuses_a_planted_pickle_and_runs_none_of_it(how, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--epochs", "1"]) == 0
    state, marker = out / "resume" / "state.pt", tmp_path / "pwned"
    plant(state, marker, how)
    capsys.readouterr()
    assert main(["train", "--out", str(out), *TINY, "--epochs", "2"]) == 2
    line = _one_error_line(capsys)
    assert not marker.exists(), "the planted pickle ran"
    assert f"{state}: resume state refused as invalid or unsafe" in line and "tampered with" in line
    assert f"delete {state.parent} to restart" in line and "weights_only" not in line
    assert "it holds the Python object posix.system" in line if how == "torch" else "it is a pickle of Python objects" in line
    # the planted file is a real attack: unpickled whole, as earlier versions did, it runs its command
    pickle.loads(state.read_bytes()) if how == "pickle" else torch.load(state, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("number", [float, np.float64])
def test_a_state_from_an_older_genir_mech_is_refused(number, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY, "--epochs", "1"]) == 0
    state = out / "resume" / "state.pt"
    new = load_resume_state(state, "")
    # the previous layout: one pickled dict (its scores could be numpy floats, which only a whole-pickle load reads)
    torch.save({"model": new.model, "optimizer": new.optimizer, "scheduler": new.scheduler, "epoch": new.epoch, "best": number(new.best),
                "bad_epochs": 0, "elapsed": new.elapsed, "history": new.history, "torch_rng": new.torch_rng, "config": new.config}, state)
    capsys.readouterr()
    assert main(["train", "--out", str(out), *TINY, "--epochs", "2"]) == 2
    line = _one_error_line(capsys)
    assert f"{state}: resume state refused as invalid or unsafe" in line and "written by an older genir_mech" in line


@pytest.mark.parametrize("change, reason", [
    (lambda raw: raw.pop("meta"), "unexpected or missing entries meta"),
    (lambda raw: raw.update(extra=1), "unexpected or missing entries extra"),
    (lambda raw: raw.update(format="something else"), "it has no genir_mech resume-state format marker"),
    (lambda raw: raw.update(meta=json.dumps({**json.loads(raw["meta"]), "epoch": "2"})), "its epoch is a str"),
    (lambda raw: raw.update(meta="{not json"), "its run facts are not valid JSON"),
    (lambda raw: raw.update(model={"w": [1.0]}), "model is not a dict of named tensors"),
    (lambda raw: raw.update(torch_rng=torch.zeros(3)), "torch_rng is not a uint8 RNG state"),
])
def test_a_state_with_wrong_entries_is_refused(change, reason, tmp_path):
    path = tmp_path / "state.pt"
    save_resume_state(path, _tiny_state())
    raw = torch.load(path, weights_only=True)
    change(raw)
    torch.save(raw, path)
    with pytest.raises(GenIRError) as refused:
        load_resume_state(path, "delete it")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: resume state refused as invalid or unsafe: {reason}")
    assert message.endswith("; delete it")


@pytest.mark.parametrize("how", ["torch", "pickle", "truncated"])
def test_a_pretraining_snapshot_refuses_a_bad_state_and_runs_none_of_it(how, tmp_path):
    out, marker = tmp_path / "t5-scratch", tmp_path / "pwned"
    state = out / "resume" / "state.pt"
    save_resume_state(state, _tiny_state())
    (out / "config.json").write_text("{}")
    card = snapshot_card(out)  # a good state gives the run's facts
    assert card["history"][1]["validation"] == 0.25 and card["loop"]["epochs"] == 3 and card["trained_at"] == "snapshot after epoch 3"
    if how == "truncated":
        state.write_bytes(state.read_bytes()[:500])
    else:
        plant(state, marker, how)
    with pytest.raises(GenIRError) as refused:
        snapshot_card(out)
    message = str(refused.value)
    assert not marker.exists(), "the planted pickle ran"
    assert "\n" not in message and message.startswith(f"{state}: resume state refused as invalid or unsafe") and "--snapshot" in message

"""Model names as Hugging Face users write them (genir_mech.models.names): a local folder, an embedded
checkpoint's short name from any working folder, or a hub id (with --revision), and quick one-line failures
when a path does not exist or the hub cannot be reached."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genir_mech.cli import main
from genir_mech.embedded import embedded_checkpoint
from genir_mech.errors import GenIRError
from genir_mech.models import loading
from genir_mech.models.names import HubFiles, Located, locate_model, local_folder
from genir_mech.testing import tiny_genir

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: connections are refused at once
COMMIT = "0123456789abcdef0123456789abcdef01234567"

needs_embedded = pytest.mark.skipif(embedded_checkpoint("dsi-synth") is None, reason="the embedded checkpoints are not installed")


def cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """`genir-mech ARGS` in a fresh process run in `cwd`; returns the process and its wall time."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "genir_mech.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or os.environ)
    return proc, time.perf_counter() - started


def offline_env(home: Path) -> dict:
    """This environment with a hub that refuses connections and an (initially empty) Hugging Face cache under `home`."""
    unset = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN")
    return {**{k: v for k, v in os.environ.items() if k not in unset}, "HF_ENDPOINT": UNREACHABLE, "HF_HOME": str(home)}


def one_error_line(proc: subprocess.CompletedProcess, verb: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"genir-mech {verb}: error: "), proc.stderr
    return lines[0]


def save_checkpoint(path: Path) -> Path:
    gm = tiny_genir(decoder_layers=2)
    with loading.quiet_weight_loading():  # no "Writing model shards" bar on stderr
        gm.hf_model.save_pretrained(path)
        gm.tokenizer.save_pretrained(path)
    return path


# -- the rule ------------------------------------------------------------------------------------------------


@needs_embedded
def test_a_local_folder_wins_over_the_embedded_checkpoint_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    embedded = locate_model("dsi-synth")
    assert embedded.embedded and embedded.path == embedded_checkpoint("dsi-synth") and embedded.source == str(embedded.path)
    (tmp_path / "dsi-synth").mkdir()
    (tmp_path / "dsi-synth" / "config.json").write_text("{}")
    local = locate_model("dsi-synth")
    assert local.is_local and not local.embedded and local.path == Path("dsi-synth")
    (tmp_path / "dsi-synth" / "config.json").unlink()  # a folder of that name without config.json is refused, not skipped
    with pytest.raises(GenIRError, match="dsi-synth: directory has no config.json"):
        locate_model("dsi-synth")


@pytest.mark.parametrize("name,repo_id", [("gpt2", "gpt2"), ("t5-large", "t5-large"), ("openai-community/gpt2", "openai-community/gpt2"),
                                          ("AnReu/DSI-large-NQ10k", "AnReu/DSI-large-NQ10k"), ("org/name.v2_b", "org/name.v2_b")])
def test_hub_ids_are_classified_as_hub_ids(name, repo_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    located = locate_model(name, revision="main")
    assert located == Located(name, repo_id=repo_id, revision="main") and not located.is_local and located.source == repo_id
    assert located.short_name == repo_id.rsplit("/", 1)[-1]


INVALID = "no such checkpoint directory, embedded checkpoint or hub id"


@pytest.mark.parametrize("name,message", [
    ("./nope", "./nope: no such checkpoint directory"),
    ("x/y/z", "x/y/z: no such checkpoint directory"),
    ("~/no-such-genir-model", "~/no-such-genir-model: no such checkpoint directory"),
    ("a\\b", "a\\b: no such checkpoint directory"),
    ("checkpoints/nope", "checkpoints/nope: no such checkpoint directory"),  # checkpoints/ exists in the working folder
    ("bad name", f"bad name: {INVALID}"),
    ("-x", f"-x: {INVALID}"),
    ("a--b", f"a--b: {INVALID}"),
    ("x.git", f"x.git: {INVALID}"),
])
def test_names_that_are_neither_folders_nor_hub_ids_are_refused(name, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(GenIRError) as info:
        locate_model(name)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@needs_embedded
def test_a_missing_path_to_an_embedded_checkpoint_names_its_short_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here: the old repo-root path is still refused at once, not tried on the hub
    for name in ("checkpoints/dsi-synth", "./checkpoints/dsi-synth", "some/where/dsi-synth"):
        with pytest.raises(GenIRError, match=r"no such checkpoint directory; use dsi-synth \(an embedded checkpoint\)"):
            locate_model(name)
    assert local_folder("dsi-synth") == str(embedded_checkpoint("dsi-synth"))  # a model card's base, by short name
    assert local_folder("checkpoints/dsi-synth") is None and local_folder(None) is None


@needs_embedded
def test_a_revision_applies_to_hub_ids_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GenIRError, match="dsi-synth: revision 'main' applies to hub models only, and this is an embedded checkpoint"):
        locate_model("dsi-synth", revision="main")
    save_checkpoint(tmp_path / "mine")
    with pytest.raises(GenIRError, match="mine: revision 'v1' applies to hub models only, and this is a local checkpoint directory"):
        locate_model("mine", revision="v1")


# -- the command line ----------------------------------------------------------------------------------------


@needs_embedded
def test_eval_of_an_embedded_checkpoint_from_an_empty_folder(tmp_path):
    proc, _ = cli(["eval", "--model", "dsi-synth", "--max-queries", "20", "--beams", "0", "--out", "out", "--json"], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n_queries"] == 20 and summary["Success@1"] > 0.5
    record = json.loads((tmp_path / "out" / "per_query.provenance.json").read_text())
    assert record["model"] == str(embedded_checkpoint("dsi-synth")) and record["model_revision"] is None
    assert record["model_revision_requested"] is None


@pytest.mark.parametrize("name", ["./nope", "x/y/z", "checkpoints/nope"])
def test_a_missing_path_fails_in_one_line_in_under_a_second(name, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    proc, seconds = cli(["eval", "--model", name], tmp_path)
    line = one_error_line(proc, "eval")
    assert f"argument --model: {name}: no such checkpoint directory" in line
    assert seconds < 1.0, f"{seconds:.2f} s"


@needs_embedded
def test_revision_with_a_local_or_embedded_model_is_refused_while_parsing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "mine")
    for argv in (["eval", "--model", "dsi-synth", "--revision", "main"], ["lens", "--revision", "main", "--model", "dsi-synth"],
                 ["eval", "--model", "mine", "--revision", "v1"], ["heads", "detect", "--model", "lm-niah", "--revision", "main"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "applies to hub models only" in err, err
    assert main(["eval", "--model", "gpt2", "--revision", "a b"]) == 2
    assert "expected a branch, tag or commit" in capsys.readouterr().err


def test_an_unreachable_hub_fails_in_one_line_within_seconds(tmp_path):
    proc, seconds = cli(["eval", "--model", "gpt2", "--out", "out"], tmp_path, env=offline_env(tmp_path / "hf"))
    line = one_error_line(proc, "eval")
    assert "gpt2: the Hugging Face hub (http://127.0.0.1:9) cannot be reached from this machine" in line
    assert "pass its folder" in line and "HF_HUB_OFFLINE" in line
    assert seconds < 30, f"{seconds:.1f} s (the process imports torch first; the hub check itself is one refused connection)"


def test_the_hub_check_itself_takes_a_fraction_of_a_second(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from genir_mech.models.names import hub_files
    monkeypatch.setattr(constants, "ENDPOINT", UNREACHABLE)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(GenIRError, match="cannot be reached from this machine"):
        hub_files(locate_model("t5-large"))
    assert time.perf_counter() - started < 3.0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GenIRError, match="HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache"):
        hub_files(locate_model("t5-large"))


# -- revisions reach every from_pretrained, and the hub cache serves an unreachable hub ------------------------


def test_the_revision_reaches_every_from_pretrained_and_the_provenance(tmp_path, monkeypatch):
    from genir_mech.provenance import provenance

    folder = save_checkpoint(tmp_path / "tiny")
    calls = []

    def recording(original):
        def load(name, *args, **kwargs):  # from the hub id, at the revision: record, then read the local copy
            calls.append((name, kwargs.get("revision"), kwargs.get("local_files_only")))
            kwargs.pop("revision", None)
            return original(str(folder), *args, **kwargs)
        return load

    import transformers
    for owner in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForSeq2SeqLM):
        monkeypatch.setattr(owner, "from_pretrained", staticmethod(recording(owner.from_pretrained)))
    monkeypatch.setattr(loading, "hub_files", lambda located: HubFiles(located.revision, commit=COMMIT))
    gm = loading.load_genir("owner/tiny", revision="v1.2")
    assert gm.path == "owner/tiny" and gm.name == "tiny"
    ours = [c for c in calls if c[0] != str(folder)]  # transformers itself reads the (local) config again while loading
    assert ours == [("owner/tiny", "v1.2", None)] * 3, calls  # config, weights, tokenizer
    record = provenance(model=gm.path)
    assert record["model_revision"] == COMMIT and record["model_revision_requested"] == "v1.2"


def fake_hub_cache(home: Path, repo: str, refs: dict[str, str]) -> Path:
    """A tiny model in the Hugging Face cache layout under `home` (hub/models--owner--name/{refs,snapshots}), as a download leaves it."""
    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    save_checkpoint(root / "snapshots" / COMMIT)
    (root / "refs").mkdir(parents=True)
    for ref, commit in refs.items():
        (root / "refs" / ref).write_text(commit)
    return root


def test_a_cached_hub_model_loads_when_the_hub_cannot_be_reached(tmp_path):
    home = tmp_path / "hf"
    fake_hub_cache(home, "owner/tiny", {"v1": COMMIT})  # only the tag v1: loading it needs the revision passed through
    code = ("import json, warnings; warnings.simplefilter('always')\n"
            "from genir_mech.models.loading import load_genir\n"
            "from genir_mech.provenance import provenance\n"
            "gm = load_genir('owner/tiny', revision='v1')\n"
            "r = provenance(model=gm.path)\n"
            "print(json.dumps({'name': gm.name, 'n_docs': len(gm.docids.doc_ids), 'commit': r['model_revision'], 'asked': r['model_revision_requested']}))\n")
    env = offline_env(home)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"name": "tiny", "n_docs": 20, "commit": COMMIT, "asked": "v1"}
    warned = [line for line in proc.stderr.splitlines() if "cannot be reached" in line]
    assert len(warned) == 1 and "loading the copy at revision 'v1' in the local cache (commit 0123456789ab)" in warned[0], proc.stderr
    # the default branch is not cached: one line saying so
    proc = subprocess.run([sys.executable, "-c", code.replace(", revision='v1'", "")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode != 0 and "not in the local Hugging Face cache" in proc.stderr


# -- sweep configs -------------------------------------------------------------------------------------------


@needs_embedded
def test_sweep_models_take_short_names_and_a_revision_for_hub_ids_only(tmp_path, monkeypatch):
    from genir_mech.sweep.config import ModelEntry, load_config
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sweep.yaml"
    path.write_text("out: runs/x\nmodels:\n  dsi: dsi-synth\nexperiments:\n  - {run: eval, max_queries: 5}\n")
    config = load_config(path)
    assert config.models["dsi"].path == str(embedded_checkpoint("dsi-synth"))
    assert "revision" not in config.models["dsi"].model_dump()  # unit keys of older sweeps stay the same
    assert ModelEntry(path="x", revision="main").model_dump()["revision"] == "main"
    path.write_text("out: runs/x\nmodels:\n  dsi: {path: dsi-synth, revision: main}\nexperiments:\n  - {run: eval}\n")
    with pytest.raises(GenIRError, match=r"models\.dsi\.revision: dsi-synth: revision 'main' applies to hub models only.*fix: remove it"):
        load_config(path)
    path.write_text("out: runs/x\nmodels:\n  dsi: checkpoints/dsi-synth\nexperiments:\n  - {run: eval}\n")
    with pytest.raises(GenIRError, match=r"models\.dsi\.path: checkpoints/dsi-synth: no such checkpoint directory; use dsi-synth"):
        load_config(path)


@needs_embedded
def test_embedded_cards_and_examples_name_models_by_short_name():
    from genir_mech.models.model_card import ModelCard
    from genir_mech.pipelines.swap import default_encoder_paths
    for card_file in sorted(embedded_checkpoint("dsi-synth").parent.glob("*/model_card.json")):
        assert "checkpoints/" not in card_file.read_text(), card_file
    assert ModelCard.read(embedded_checkpoint("dsi-synth")).base == "t5-synth-base"
    # the card's base resolves from any folder: the encoder swap's default encoders include it
    paths = default_encoder_paths(embedded_checkpoint("dsi-synth"))
    assert str(embedded_checkpoint("t5-synth-base")) in paths
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        assert "checkpoints/" not in example.read_text(), example

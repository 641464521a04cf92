"""Packaging: the wheel carries the embedded checkpoints and example configs; a source checkout finds its own.

The first tests are fast (no build). `test_wheel_carries_the_embedded_checkpoints_and_examples` builds the real
wheel (about 5 s on a 2-core CPU, 80 MB); it is marked `slow` but runs in the default suite, CI's `make test`.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from genir_mech import embedded

ROOT = Path(__file__).resolve().parents[1]


def _setup_module():
    """setup.py as a module: its `setup()` call runs only as __main__ (a build), not on import."""
    spec = importlib.util.spec_from_file_location("genir_mech_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _checkpoint_names() -> set[str]:
    return {p.name for p in (ROOT / "checkpoints").iterdir() if (p / "config.json").is_file()}


def test_wheel_hook_copies_every_checkpoint_folder_and_the_examples():
    setup = _setup_module()
    names = _checkpoint_names()
    assert "dsi-synth" in names
    assert {p.name for p in setup.checkpoint_folders(ROOT)} == names
    copied = {relative.as_posix(): source for source, relative in setup.embedded_files(ROOT)}
    for name in names:
        for f in (ROOT / "checkpoints" / name).iterdir():
            if f.is_file():
                assert f"genir_mech/embedded/checkpoints/{name}/{f.name}" in copied, f"{f} would be left out of the wheel"
    for f in (ROOT / "examples").glob("*.yaml"):
        assert copied[f"genir_mech/embedded/examples/{f.name}"] == f
    assert not any("/resume/" in r for r in copied), "training state (resume/) must stay out of the wheel"


def test_source_checkout_finds_its_checkpoints_and_examples(monkeypatch):
    monkeypatch.delenv(embedded.ENVIRONMENT_VARIABLE, raising=False)
    assert not (ROOT / "genir_mech" / "embedded").exists(), "a build copied the checkpoints into the source tree"
    assert embedded.checkpoints_folder() == ROOT / "checkpoints"
    assert embedded.embedded_checkpoint("dsi-synth") == ROOT / "checkpoints" / "dsi-synth"
    assert set(embedded.embedded_names()) == _checkpoint_names()
    assert embedded.example_config("paper.yaml") == ROOT / "examples" / "paper.yaml"


def test_environment_variable_comes_first(tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    monkeypatch.setenv(embedded.ENVIRONMENT_VARIABLE, str(tmp_path))
    assert embedded.checkpoints_folder() == tmp_path
    assert embedded.embedded_names() == ["mine"]
    assert embedded.embedded_checkpoint("dsi-synth") is None


def test_citation_and_licence_match_the_package():
    import yaml

    import genir_mech

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["title"] == "genir_mech"
    assert citation["version"] == genir_mech.__version__, "CITATION.cff's version lags genir_mech.__version__"
    assert citation["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert f"version = {{{genir_mech.__version__}}}" in (ROOT / "README.md").read_text(), "the README's BibTeX version lags"


def _setuptools_can_build() -> str | None:
    """Why this venv cannot build the wheel without build isolation, or None."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed"
    major = int(setuptools.__version__.split(".")[0])
    if major < 77:  # pyproject.toml's build-system requires (PEP 639 licence metadata); bdist_wheel is built in
        return f"setuptools {setuptools.__version__} is older than the build-system's setuptools>=77"
    return None


@pytest.mark.slow
def test_wheel_carries_the_embedded_checkpoints_and_examples(tmp_path):
    reason = _setuptools_can_build()
    if reason:
        pytest.skip(reason)
    # build/ and *.egg-info go to tmp_path, not the checkout (distutils reads DIST_EXTRA_CONFIG)
    extra = tmp_path / "build.cfg"
    extra.write_text(f"[build]\nbuild_base = {tmp_path / 'build'}\n[egg_info]\negg_base = {tmp_path}\n")
    env = {**os.environ, "DIST_EXTRA_CONFIG": str(extra), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    out = tmp_path / "wheel"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("genir_mech-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "genir_mech/embedded/checkpoints/dsi-synth/config.json" in names
    assert "genir_mech/embedded/checkpoints/dsi-synth/model.safetensors" in names
    assert "genir_mech/embedded/examples/paper.yaml" in names
    assert "genir_mech/embedded.py" in names
    assert {n.split("/")[3] for n in names if n.startswith("genir_mech/embedded/checkpoints/") and n.endswith("/config.json")} == _checkpoint_names()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not (ROOT / "genir_mech" / "embedded").exists(), "the wheel build wrote into the source tree"

"""Wheel build hook: the installed package carries the embedded checkpoints and example configs.

All metadata lives in pyproject.toml; this file only adds a `build_py` step that copies the
repository's `checkpoints/<name>/` folders (those with a config.json) and `examples/*.yaml` to
`genir_mech/embedded/` in the build folder, where genir_mech/embedded.py looks for them after a
non-editable `pip install .`. An editable install copies nothing: there embedded.py finds
`checkpoints/` and `examples/` beside the package in the source checkout.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
EMBEDDED = Path("genir_mech") / "embedded"  # inside the build folder (and so inside site-packages)
CHECKPOINT_NOTES = ("README.md",)  # shipped beside the checkpoint folders


def checkpoint_folders(root: Path = ROOT) -> list[Path]:
    """Every embedded checkpoint folder: `checkpoints/<name>/` with a config.json, sorted by name."""
    folder = root / "checkpoints"
    return sorted(p for p in folder.iterdir() if (p / "config.json").is_file()) if folder.is_dir() else []


def embedded_files(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(source file, path relative to the build folder) for everything the wheel adds under genir_mech/embedded/.

    A checkpoint folder contributes its own files, not its subfolders (a `resume/` training state stays out).
    """
    pairs = []
    for folder in checkpoint_folders(root):
        for f in sorted(folder.iterdir()):
            if f.is_file():
                pairs.append((f, EMBEDDED / "checkpoints" / folder.name / f.name))
    for name in CHECKPOINT_NOTES:
        if (root / "checkpoints" / name).is_file():
            pairs.append((root / "checkpoints" / name, EMBEDDED / "checkpoints" / name))
    for f in sorted((root / "examples").glob("*.yaml")):
        pairs.append((f, EMBEDDED / "examples" / f.name))
    return pairs


class build_py_with_embedded(build_py):
    """build_py, then the embedded checkpoints and examples into build_lib/genir_mech/embedded/."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable install: embedded.py reads the source checkout, nothing is copied
        if not checkpoint_folders():
            raise SystemExit(f"setup.py: no checkpoint folder with a config.json under {ROOT / 'checkpoints'}; "
                             "the wheel would ship without its embedded checkpoints")
        target = Path(self.build_lib) / EMBEDDED
        if target.exists():
            shutil.rmtree(target)  # a checkpoint removed from the repository leaves no stale copy behind
        for source, relative in embedded_files():
            destination = Path(self.build_lib) / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [str(Path(self.build_lib) / relative) for _, relative in embedded_files()]


if __name__ == "__main__":
    setup(cmdclass={"build_py": build_py_with_embedded})

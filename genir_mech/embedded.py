"""The checkpoints and example configs that ship with genir_mech, found from any working folder.

    embedded_checkpoint("dsi-synth")     # -> Path of that checkpoint, or None
    embedded_names()                     # every embedded checkpoint's short name
    example_config("paper.yaml")         # -> Path of examples/paper.yaml

Lookup order for the checkpoints folder (the first that exists wins):
1. the folder named by the environment variable GENIR_MECH_CHECKPOINTS;
2. the copy installed with the package (`pip install .` puts `checkpoints/` and
   `examples/` under `genir_mech/embedded/`);
3. `checkpoints/` of the source checkout the package is imported from (a clone,
   or an editable install).
Examples follow the same order without the environment variable.
"""
from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENT_VARIABLE = "GENIR_MECH_CHECKPOINTS"
_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "embedded"  # filled by the wheel build (setup.py), absent in a source checkout
_SOURCE = _PACKAGE.parent  # the clone's root when genir_mech is imported from a source checkout


def checkpoints_folder() -> Path | None:
    """The folder holding the embedded checkpoints (lookup order: module docstring); None when there is none."""
    override = os.environ.get(ENVIRONMENT_VARIABLE)
    candidates = [Path(override).expanduser()] if override else []
    candidates += [_INSTALLED / "checkpoints", _SOURCE / "checkpoints"]
    return next((c for c in candidates if c.is_dir()), None)


def embedded_checkpoint(name: str) -> Path | None:
    """The embedded checkpoint called `name` (a bare name such as `dsi-synth`), or None."""
    folder = checkpoints_folder()
    if folder is None or not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = folder / name
    return path if (path / "config.json").is_file() else None


def embedded_names() -> list[str]:
    """The short names of every embedded checkpoint, sorted."""
    folder = checkpoints_folder()
    if folder is None:
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "config.json").is_file())


def display_name(path: str | Path) -> str:
    """How to name a model to a reader: an embedded checkpoint by its short name (which resolves anywhere), else as given."""
    folder = checkpoints_folder()
    resolved = Path(path).expanduser().resolve()
    if folder is not None and resolved.parent == folder.resolve() and embedded_checkpoint(resolved.name) is not None:
        return resolved.name
    return str(path)


def example_config(name: str) -> Path | None:
    """An example config shipped with genir_mech (`paper.yaml`), or None when this installation has none."""
    for folder in (_INSTALLED / "examples", _SOURCE / "examples"):
        if (folder / name).is_file():
            return folder / name
    return None

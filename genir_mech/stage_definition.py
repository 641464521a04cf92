"""Stage definitions: named groups of decoder layers, as one JSON file.

    stages = StageDefinition.load("runs/stages/stages.json")
    stages = StageDefinition.parse("priming=0-2,bridging=3-5,interaction=6-7")
    stages.layers("bridging") -> [3, 4, 5]
    stages = StageDefinition.resolve(None, n_layers=8)   # no localisation run: even thirds, with a StageWarning

The stage-localisation pipeline writes this format and every pipeline that
groups layers reads it, so the paper's analyses run without hand-typed layer
numbers.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import GenIRError


class StageWarning(UserWarning):
    """An analysis fell back to even thirds because no stage definition was given."""


@dataclass(frozen=True)
class Stage:
    name: str
    layers: tuple[int, ...]


def _check_stages(stages: tuple[Stage, ...], where: str) -> None:
    """Every stage named, non-empty, with layers >= 0, and no name twice: an empty stage would be reported as a 0.0% effect."""
    seen = set()
    for s in stages:
        if not s.name:
            raise GenIRError(f"{where}: a stage has no name")
        if s.name in seen:
            raise GenIRError(f"{where}: stage {s.name!r} appears twice")
        seen.add(s.name)
        if not s.layers:
            raise GenIRError(f"{where}: stage {s.name!r} has no layers")
        if min(s.layers) < 0:
            raise GenIRError(f"{where}: stage {s.name!r} names negative layer {min(s.layers)}")


@dataclass(frozen=True)
class StageDefinition:
    stages: tuple[Stage, ...]
    source: str = ""

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def layers(self, name: str) -> list[int]:
        for s in self.stages:
            if s.name == name:
                return list(s.layers)
        raise GenIRError(f"no stage {name!r} in the stage definition ({', '.join(self.names())})")

    def stage_of(self, layer: int) -> str | None:
        return next((s.name for s in self.stages if layer in s.layers), None)

    def check(self, n_layers: int) -> "StageDefinition":
        for s in self.stages:
            bad = [l for l in s.layers if not 0 <= l < n_layers]
            if bad:
                raise GenIRError(f"stage {s.name!r} names layer(s) {bad} but the decoder has {n_layers} layers (0..{n_layers - 1})")
        return self

    def to_json(self) -> dict:
        return {"stages": [{"name": s.name, "layers": list(s.layers)} for s in self.stages], "source": self.source}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path

    @classmethod
    def from_json(cls, data: dict, source: str = "") -> "StageDefinition":
        try:
            stages = tuple(Stage(str(s["name"]), tuple(int(l) for l in s["layers"])) for s in data["stages"])
        except (KeyError, TypeError, ValueError) as exc:
            raise GenIRError(f"{source or 'stage definition'}: expected {{\"stages\": [{{\"name\": ..., \"layers\": [...]}}]}} ({exc})") from None
        if not stages:
            raise GenIRError(f"{source or 'stage definition'}: no stages")
        _check_stages(stages, source or "stage definition")
        return cls(stages, data.get("source", source))

    @classmethod
    def load(cls, path: str | Path) -> "StageDefinition":
        path = Path(path)
        if not path.exists():
            raise GenIRError(f"{path}: stage definition file not found")
        from .data.loaders import read_utf8  # light: json and csv; not UTF-8 is one line naming the file and line
        try:
            data = json.loads(read_utf8(path))
        except json.JSONDecodeError as exc:
            raise GenIRError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
        return cls.from_json(data, str(path))

    @classmethod
    def parse(cls, text: str) -> "StageDefinition":
        """`name=a-b,name=c-d` (inclusive ranges) or a path to a JSON file."""
        if Path(text).suffix == ".json":
            return cls.load(text)
        stages = []
        for part in filter(None, text.split(",")):
            name, _, span = part.partition("=")
            lo, _, hi = span.partition("-")
            try:
                first, last = int(lo), int(hi or lo)
            except ValueError:
                raise GenIRError(f"stage spec {text!r}: expected name=first-last, e.g. priming=0-2,bridging=3-5") from None
            if last < first:
                # range(3, 2) is empty: the stage would silently report a 0.0% effect
                raise GenIRError(f"stage spec {text!r}: range {name.strip()}={lo}-{hi} is reversed (first layer after last)")
            stages.append(Stage(name.strip(), tuple(range(first, last + 1))))
        if not stages:
            raise GenIRError(f"stage spec {text!r}: no stages")
        _check_stages(tuple(stages), f"stage spec {text!r}")
        return cls(tuple(stages), "spec")

    @classmethod
    def even_thirds(cls, n_layers: int) -> "StageDefinition":
        """A neutral default when no localisation has been run: three equal contiguous groups.

        A decoder of fewer than three layers cannot hold three stages: it gets one stage per layer (1 layer:
        `all`; 2 layers: `first`, `last`), never an empty stage (which would be reported as a 0% effect).
        """
        if n_layers < 1:
            raise GenIRError(f"a decoder of {n_layers} layers has no stages")
        if n_layers < 3:
            names = ("all",) if n_layers == 1 else ("first", "last")
            return cls(tuple(Stage(n, (i,)) for i, n in enumerate(names)), f"one stage per layer ({n_layers}-layer decoder; no localisation run)")
        cuts = [round(n_layers * k / 3) for k in range(4)]
        names = ("priming", "bridging", "interaction")
        return cls(tuple(Stage(n, tuple(range(cuts[i], cuts[i + 1]))) for i, n in enumerate(names)), "even thirds (no localisation run)")

    @classmethod
    def resolve(cls, stages: "StageDefinition | str | Path | None", n_layers: int, fallback: bool = True) -> "StageDefinition | None":
        """The stage definition an analysis uses: `stages` (a definition, a spec or a stages.json path) checked
        against the decoder's `n_layers`, or, when None, even thirds with one StageWarning (the one place of this
        default); with `fallback=False` a missing definition stays None (analyses for which stages are optional)."""
        if stages is None and not fallback:
            return None
        if stages is None:
            fallback_desc = "three even thirds of the decoder layers" if n_layers >= 3 else f"one stage per layer of the {n_layers}-layer decoder"
            warnings.warn(
                f"no stage definition given; using {fallback_desc}. Localise this model's stages "
                "(pipelines.stages.run_stages; CLI: genir-mech stages) and pass its stages.json.",
                StageWarning,
                stacklevel=2,
            )
            return cls.even_thirds(n_layers)
        definition = stages if isinstance(stages, cls) else cls.parse(str(stages))
        return definition.check(n_layers)

"""Running one unit in a process: its pipeline on models loaded once, with the sweep's shared inputs and provenance.

    runner = UnitRunner(config)          # one per process (the local backend's, or one per Ray worker)
    summary, seconds = runner.run(unit)  # writes the unit's results folder atomically (results_directory)
"""
from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import GenIRError, NotApplicable

from ..progress import no_bars
from ..provenance import run_context
from .caches import InputCache, ModelPool
from .config import SweepConfig, pipeline_configs
from .units import Unit

STATE = ".sweep"  # the sweep's own files under <out>: unit records, the input cache
DONE, SKIPPED, FAILED = "done", "skipped", "failed"  # how a unit ended


@dataclass
class Outcome:
    """How one unit ended: done (its folder is complete), skipped (its analysis does not apply to this model:
    `reason` says why; a rerun with the same config skips it again) or failed (`reason` is the one-line error,
    `detail` the traceback of an unexpected one; a rerun tries it again)."""
    status: str
    seconds: float
    summary: dict = field(default_factory=dict)
    reason: str = ""
    detail: str = ""


def blocked(unit: Unit, failed: set[str]) -> Outcome | None:
    """A failed outcome for `unit` when a unit it reads from failed (it cannot run), else None."""
    missing = [a for a in unit.after if a in failed]
    return Outcome(FAILED, 0.0, reason=f"needs {', '.join(missing)}, which did not finish") if missing else None


def _pipelines() -> dict[str, Callable]:
    from ..pipelines.ablate import run_ablate
    from ..pipelines.attribute import run_attribute
    from ..pipelines.circuit import run_circuit
    from ..pipelines.contributions import run_contributions
    from ..pipelines.evaluate import run_eval
    from ..pipelines.lens import run_lens
    from ..pipelines.patch import run_patch
    from ..pipelines.read import run_read
    from ..pipelines.stages import run_stages
    from ..pipelines.swap import run_swap
    return {"eval": run_eval, "contributions": run_contributions, "lens": run_lens, "stages": run_stages, "ablate": run_ablate,
            "circuit": run_circuit, "read": run_read, "swap": run_swap, "patch": run_patch, "attribute": run_attribute}


NO_PROGRESS_ARGUMENT = ("eval", "swap")  # pipelines that draw no progress bars of their own


class UnitRunner:
    """Runs units in one process: models loaded once (ModelPool), shared inputs cached on disk (InputCache)."""

    def __init__(self, config: SweepConfig):
        self.config = config
        if config.threads:
            import torch
            torch.set_num_threads(config.threads)
        self.pool = ModelPool(config)
        self.cache = InputCache(config.out / STATE / "cache")

    def run(self, unit: Unit) -> tuple[dict, float]:
        """Run `unit` into its folder; returns its summary and wall time."""
        from ..pipelines.inputs import shared_inputs
        started = time.time()
        run, params = unit.experiment.run, dict(unit.params)
        other, encoders, pairs_file = params.pop("other", None), params.pop("encoders", None), params.pop("pairs", None)
        if params.get("trec_run"):  # a file name of the config: written into the unit's folder, never elsewhere
            params["trec_run"] = str(unit.folder(self.config.out) / params["trec_run"])
        stages = params.get("stages")
        if isinstance(stages, str) and stages.startswith("@"):
            params["stages"] = str(self.config.out / unit.model / stages[1:] / "stages.json")
        settings = pipeline_configs()[run](**params)
        gm, data = self.pool.model(unit.model), self.pool.data(unit.model)
        kwargs: dict = {} if run in NO_PROGRESS_ARGUMENT else {"progress": False}
        if other:
            kwargs["other"] = self.pool.model(other)
        if run == "swap":
            kwargs["encoders"] = [self.pool.model(e) for e in encoders or ()]
        if pairs_file:
            from ..patching.pairs import read_pairs
            data = read_pairs(pairs_file, data)
        context = {"sweep": {"config": self.config.source, "unit": unit.id, "key": unit.key, "settings": self.config.raw}}
        with shared_inputs(self.cache), run_context(**context), no_bars():  # the sweep's bar names the unit
            summary = _pipelines()[run](gm, data, unit.folder(self.config.out), settings, **kwargs)
        return json.loads(json.dumps(summary, default=str)), round(time.time() - started, 3)

    def attempt(self, unit: Unit) -> Outcome:
        """Run `unit` and say how it ended; an error ends this unit only (Ctrl-C still stops the sweep)."""
        started = time.time()
        try:
            summary, seconds = self.run(unit)
        except NotApplicable as exc:
            return Outcome(SKIPPED, round(time.time() - started, 3), reason=" ".join(str(exc).split()))
        except GenIRError as exc:
            return Outcome(FAILED, round(time.time() - started, 3), reason=" ".join(str(exc).split()))
        except Exception as exc:  # a bug in a pipeline: this unit fails, the others' results stay; the traceback is kept
            return Outcome(FAILED, round(time.time() - started, 3), reason=f"{type(exc).__name__}: {' '.join(str(exc).split())}",
                           detail=traceback.format_exc())
        return Outcome(DONE, seconds, summary)



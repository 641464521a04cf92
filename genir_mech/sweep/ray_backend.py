"""`--backend ray`: a sweep's units as Ray actor tasks, one model load per worker, the same atomic unit outputs.

    run_on_ray(config, todo, finished, workers=2, done=set())    # called by runner.run_sweep(backend="ray")

Ray is the engine (no scheduler is written here): `workers` actors each hold
a UnitRunner, so a model is loaded at most once per worker and reused by every
unit of that model the worker runs; units go to an idle actor as soon as the
units they read from (a stages reference) are finished, preferring an actor
that already holds the unit's model. Each actor gets `num_gpus=1` when the
driver sees a CUDA GPU (and the sweep's device is not cpu), and writes its
unit's results folder itself, atomically, so the output folder must be storage
every node sees (one machine, NFS, a mounted bucket). The driver records each
finished unit and assembles SWEEP.json exactly as the local backend does, so the
tables are the same bytes.

On a cluster: start Ray on each node (`ray start --head` on one, `ray start
--address=HEAD:6379` on the others), put the checkpoints, data and `out` on
shared storage at the same path, then run `RAY_ADDRESS=HEAD:6379 genir-mech
sweep CONFIG --backend ray --workers N` with N = the number of GPUs.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import GenIRError
from .config import SweepConfig
from .execute import FAILED, Outcome, blocked
from .units import Unit

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class _Worker:
    """A Ray actor: one UnitRunner (models and input cache) for the life of the sweep, in the driver's working directory."""

    def __init__(self, config: SweepConfig, cwd: str):
        os.chdir(cwd)  # relative checkpoint, data and output paths mean what they mean to the driver
        from .execute import UnitRunner
        self.runner = UnitRunner(config)

    def run(self, unit: Unit):
        return self.runner.attempt(unit)

    def models(self) -> list[str]:
        return self.runner.pool.loaded


def wants_gpu(config: SweepConfig) -> bool:
    """Whether actors should each hold a GPU: the sweep does not ask for the CPU and this machine has CUDA."""
    import torch
    return config.device != "cpu" and torch.cuda.is_available()


def run_on_ray(config: SweepConfig, todo: list[Unit], finished: Callable[[Unit, Outcome], None], *, workers: int = 2, done: set[str] = frozenset()) -> None:
    """Run `todo` on `workers` Ray actors (a local Ray started here unless RAY_ADDRESS or ray.init named one); calls `finished`
    with each unit's outcome (a unit that reads from a failed one fails without running)."""
    try:
        import ray
    except ImportError:
        raise GenIRError("--backend ray needs Ray: pip install 'genir_mech[ray]' (or pip install ray)") from None
    started_here = not ray.is_initialized()
    if started_here:
        path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        ray.init(num_cpus=None if os.environ.get("RAY_ADDRESS") else workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}})
    try:
        actor = ray.remote(num_cpus=1, num_gpus=1 if wants_gpu(config) else 0)(_Worker)
        actors = [actor.remote(config, os.getcwd()) for _ in range(workers)]
        holds: dict[int, set[str]] = {i: set() for i in range(workers)}
        waiting, finished_ids, failed_ids, running = list(todo), set(done), set(), {}
        idle = list(range(workers))
        while waiting or running:
            for unit in [u for u in waiting if blocked(u, failed_ids)]:
                waiting.remove(unit)
                failed_ids.add(unit.id)
                finished(unit, blocked(unit, failed_ids))
            for unit in [u for u in waiting if all(a in finished_ids for a in u.after)]:
                if not idle:
                    break
                worker = next((i for i in idle if unit.model in holds[i]), idle[0])  # prefer a worker that has the model
                idle.remove(worker)
                waiting.remove(unit)
                holds[worker].update(unit.models)
                running[actors[worker].run.remote(unit)] = (unit, worker)
            if not running and not waiting:
                break
            if not running:
                raise GenIRError(f"units {[u.id for u in waiting]} wait for units that never finish")
            ready, _ = ray.wait(list(running), num_returns=1)
            unit, worker = running.pop(ready[0])
            outcome = ray.get(ready[0])
            finished(unit, outcome)
            (failed_ids if outcome.status == FAILED else finished_ids).add(unit.id)
            idle.append(worker)
    finally:
        for a in locals().get("actors", []):
            ray.kill(a)
        if started_here:
            ray.shutdown()

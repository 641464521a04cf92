"""Scripted sweeps from a config file: validated first, split into units, resumable after kill -9, cached, and scaled out on Ray.

    from genir_mech.sweep import load_config, run_sweep, dry_run
    config = load_config("examples/paper.yaml")           # one GenIRError line naming the key and the fix
    print(dry_run(config))                                # units, dependencies, estimated forward rows; writes nothing
    manifest = run_sweep(config)                          # or backend="ray", workers=2
    manifest["units"]["dsi/ablate"]["summary"]

    config      the YAML schema (pydantic, generated from the pipelines' config dataclasses) and its checks
    units       the work units (model x experiment [x patching target]), their keys and estimated costs
    caches      models loaded once per process; correct-query lists and kept pairs cached on disk by content hash
    runner      the lock, the record of finished units, running them here, SWEEP.json
    ray_backend the same units as Ray actor tasks (optional extra `ray`)
"""
from .config import SweepConfig, load_config
from .runner import dry_run, run_sweep

__all__ = ["SweepConfig", "load_config", "dry_run", "run_sweep"]

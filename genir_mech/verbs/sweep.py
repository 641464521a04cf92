"""`genir-mech sweep CONFIG`: run a sweep from a YAML config: validated first, resumable after kill -9, optionally on Ray.

    genir-mech sweep examples/paper.yaml                      # rerun the same command to resume
    genir-mech sweep examples/paper.yaml --dry-run            # the units and their estimated cost; writes nothing
    genir-mech sweep examples/patching.yaml --backend ray --workers 2 --quiet --log sweep.log
"""
from __future__ import annotations

from pathlib import Path

from ..vocabulary import DTYPE_NAMES
from . import Verb
from .options import device_name, existing_file, output_directory, positive_int


def add_arguments(p):
    p.add_argument("config", metavar="CONFIG", type=existing_file, help="sweep config (YAML): models, data, experiments, out; see examples/")
    p.add_argument("--out", type=output_directory, help="output directory (default: the config's out)")
    p.add_argument("--dry-run", action="store_true", help="print the work units and their estimated cost, then stop (nothing is written)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="run units in this process (default) or as Ray tasks")
    p.add_argument("--workers", type=positive_int, default=2, help="Ray workers (actors), each loading a model once (default 2)")
    p.add_argument("--device", type=device_name, help="override the config's device (cpu, cuda, cuda:N)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="override the config's dtype")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--log", help="append a timestamped line per unit to this file (for unattended runs)")
    p.add_argument("--json", action="store_true", help="print SWEEP.json's summary as one JSON object")


def handler(args):
    from ..sweep import dry_run, load_config, run_sweep  # pydantic, then the pipelines: only once the arguments are valid
    from ..sweep.runner import fail_if_any_failed, unit_lines

    config = load_config(args.config, out=args.out)
    if args.device:
        config.device = args.device
    if args.dtype:
        config.dtype = args.dtype
    if args.dry_run:
        print(dry_run(config))
        return None
    manifest = run_sweep(config, backend=args.backend, workers=args.workers, progress=not (args.quiet or args.json), log=args.log)
    if not args.json:
        print(f"{len(manifest['units'])} units in {manifest['wall_seconds']} s: {Path(config.out) / 'SWEEP.json'}")
        print(unit_lines(manifest))
    fail_if_any_failed(manifest, Path(config.out) / "SWEEP.json")
    return {"out": str(config.out), "wall_seconds": manifest["wall_seconds"], "units": {u: v["folder"] for u, v in manifest["units"].items()},
            "skipped": manifest["skipped"]}


VERB = Verb("Run a sweep of experiments from a YAML config: validated first, resumable after kill -9, shared caches, optional Ray backend", add_arguments, handler)

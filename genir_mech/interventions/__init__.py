"""Interventions: what to overwrite in a GenIR model, with what, and the one executor that runs them as batched rows.

    groups = [Intervention.of(gm.components("decoder", ("mlp",)), "zero", method="zero")]
    save_interventions(groups, "sweep.yaml"); groups = validate_interventions(gm, load_interventions("sweep.yaml"))
    for out in InterventionExecutor(gm, groups, rows_per_forward=4096).row_logits(gm.batch(texts)):
        out.intervention, out.item, out.logits

spec: `InterventionSpec` (site, head, position, value) and `Intervention`
(a labelled group); files: the one JSON/YAML file format; values: source-run
caches, means, other-model activations; executor: `InterventionExecutor`;
backend: where the executor's chunks run (`LocalBackend`).
Ablations, circuits and activation patching are thin layers over this package.
"""
from .backend import Backend, LocalBackend
from .executor import InterventionExecutor, RowChunk, RowLogits, site_writes
from .files import load_interventions, save_interventions
from .spec import ENCODER_OUTPUT, VALUES, Intervention, InterventionSpec, check_spec, validate_interventions
from .values import Replacements, check_compatible, other_model_values, site_means, source_run

__all__ = [
    "Backend", "LocalBackend", "InterventionExecutor", "RowChunk", "RowLogits", "site_writes", "load_interventions", "save_interventions",
    "ENCODER_OUTPUT", "VALUES", "Intervention", "InterventionSpec", "check_spec", "validate_interventions", "Replacements",
    "check_compatible", "other_model_values", "site_means", "source_run",
]

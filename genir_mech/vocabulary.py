"""The names and bounds that options, configs and the library share, defined once, importable without torch.

    from genir_mech.vocabulary import PATCH_TARGETS, COMPONENT_KINDS, MAX_N_BOOT

The library modules that own each idea (patching.specs, models.components, analyses.ablation, ...)
take their constants from here, and so do the command-line options (verbs/options.py) and the sweep
schema (sweep/config.py): an argument is checked against the same list the analysis uses, and checking
it imports nothing heavy (a bad argument costs a fraction of a second).
"""
from __future__ import annotations

# -- vocabularies ---------------------------------------------------------------------------------------

PAPER_STAGES = ("priming", "bridging", "interaction")  # Reusch & Belinkov's decoder stages, in their order
COMPONENT_KINDS = ("self_attn", "cross_attn", "mlp")  # the sublayers of a decoder layer, in forward order
PATCH_TARGETS = ("resid", "component", "head", "encoder-position", "encoder-layer-position")
ABLATION_METHODS = ("zero", "mean", "cross-model")
ATTRIBUTION_METHODS = ("atp", "atp_qk")  # attribution patching, and with the QK fix of AtP*
PATCH_DIRECTIONS = ("denoise", "noise")  # clean into corrupted, or corrupted into clean
PAIR_ALIGNMENTS = ("left-pad", "right-pad")
DOCID_SCHEMES = ("atomic", "naive", "semantic", "title")
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # models.loading maps them to torch dtypes
ALL_STEPS = "all"  # --steps all: every decoding step of a multi-token docid
STUDY_MODELS = ("t5-scratch", "t5-span", "bert2bert-minilm", "t5-span-subword")  # the pretraining study's four models
RESULT_PACKAGES = ("genir_mech", "torch", "transformers", "nnsight", "numpy", "pandas", "ir_measures", "ir_datasets")  # versions in provenance

# -- defaults and bounds ----------------------------------------------------------------------------------

# The stage localiser's profile criterion (analyses.change_point): it draws the knob path; with the paper's tests
# (the default) it does not decide the stage count.
STAGE_RESOLUTION = 0.1  # feature differences below this are noise (ten percentage points of a share or a cosine)
STAGE_PENALTY = 1.0  # multiplier of the BIC penalty
PRIMING_MAX_MEAN_COST = 0.10  # priming MLPs are query-agnostic: mean-ablating them sends at most 10% off rank 1 (paper Stage I 0.8%)

MAX_QUERY_TOKENS = 64  # default query length in tokens (longer queries are truncated, with a warning)
# At most this many bootstrap resamples: every patching resample is held in memory, and every stage-boundary
# resample segments the decoder again; the estimates are exact to the third decimal long before.
MAX_N_BOOT = 100_000
MAX_BOOTSTRAP = 100_000
# Synthetic corpora: the generator holds the whole corpus in memory, and every document brings 17 queries:
# 100,000 documents take about 1.8 GB and 21 s to generate on a 2-core machine.
MAX_N_DOCS = 100_000
MAX_N_PAIRS = 100_000
MAX_ATTRIBUTE_VALUES = 10_000

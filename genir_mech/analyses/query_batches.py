"""The queries an analysis sees: a seeded sample, iterated in padded, masked batches.

    queries = sample_queries(queries, 256, seed=0)                     # seeded, original order kept
    for rows, batch in query_batches(gm, texts, batch_size=64): ...   # encoder already run on each batch
    for rows, batch in query_batches(gm, texts, decoder_inputs=view.decoder_inputs): ...   # at a decoding step (retrieval.steps)
"""
from __future__ import annotations

import random
from collections.abc import Iterator

from tqdm.auto import tqdm

from ..errors import GenIRError


def query_batches(gm, texts: list[str], batch_size: int = 64, encode: bool = True, progress: bool = False, desc: str = "queries",
                  decoder_inputs=None) -> Iterator[tuple[slice, object]]:
    """Padded, masked batches of `texts`; with `encode` the encoder runs here, once per batch.

    `decoder_inputs` (one row per text, a `StepView`'s teacher-forced prefixes) become each batch's decoder inputs, so every
    run reads the step they lead to at the last decoder position; None is the ranking step of atomic docids."""
    if not texts:
        raise GenIRError("empty query set: no queries to analyse (did the model get any validation query right?)")
    if batch_size < 1:
        raise GenIRError(f"batch size must be positive, got {batch_size}")
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        rows = slice(start, min(start + batch_size, len(texts)))
        batch = gm.batch(texts[rows])
        if decoder_inputs is not None:
            batch.decoder_input_ids = decoder_inputs[rows].to(gm.device)
        yield rows, gm.encode(batch) if encode else batch


def check_view(view, texts: list[str]) -> None:
    """A step view (retrieval.steps.StepView) must cover exactly the queries an analysis is given, in their order."""
    if view is not None and len(view) != len(texts):
        raise GenIRError(f"the step-{view.step} view covers {len(view)} queries but the analysis was given {len(texts)}; "
                         "select the view's rows of the queries first (retrieval.steps.step_view: `rows`)")


def sample_queries(queries: list, n: int | None, seed: int = 0) -> list:
    """A seeded random sample of at most `n` queries, in their original order (all of them when n is None)."""
    if n is None or n >= len(queries):
        return list(queries)
    if n < 1:
        raise GenIRError(f"the number of queries to analyse must be positive, got {n}")
    keep = set(random.Random(seed).sample(range(len(queries)), n))
    return [q for i, q in enumerate(queries) if i in keep]

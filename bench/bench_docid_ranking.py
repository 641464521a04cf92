"""Benchmark: ranking every document of a multi-token docid model, exact (trie walk) against one pass per docid and beam search.

    python bench/bench_docid_ranking.py --model checkpoints/dsi-synth-naive --queries 8   # writes bench/results/docid_ranking.md

Four rankers over the same validation queries, in one process, timed in alternation (median of --repeats):
- trie walk (genir_mech, exact): the docid trie decoded level by level with the KV cache, each distinct prefix once per
  query, queries batched; every document's log-probability;
- exact top-100 (genir_mech): a beam of 100 over the trie gives a floor, then the trie walk skips every prefix below it;
  the exact scores of the top 100 (what Success@k, RR and nDCG@10 on a depth-100 run read);
- exact top-10 (genir_mech): the same with a floor from a beam of 10, the exact counterpart of beam search with 10 beams;
- one pass per (query, docid): teacher forcing of each docid on its own, the floor of naive scoring;
- HF beam search, beam 10: `generate` with the trie logits processor (approximate: 10 documents per query).

The trie walk's scores must equal the one-pass scores (max difference below 1e-3), the top-100 scores the walk's, and
beam search's scores of the documents it finds the walk's, or the benchmark fails. Times are CPU seconds of this process
(`--clock cpu`, the default: the machine is shared) or wall seconds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clock_sentence, machine_line, set_clock, timed  # noqa: E402

from genir_mech.models.loading import load_genir, resolve_dataset  # noqa: E402
from genir_mech.retrieval.beam_ranking import beam_log_probs  # noqa: E402
from genir_mech.retrieval.sequence_ranking import teacher_forced_log_probs, top_k_log_probs, trie_log_probs  # noqa: E402


def one_pass_per_docid(gm, texts):
    """(queries, n_docs): one teacher-forced forward pass per (query, docid)."""
    return torch.cat([teacher_forced_log_probs(gm, gm.batch([t]), gm.docids) for t in texts])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="checkpoints/dsi-synth-naive")
    ap.add_argument("--queries", type=int, default=8, help="validation queries ranked by every ranker")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    ap.add_argument("--out", default="bench/results/docid_ranking.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    set_clock(args.clock)
    gm = load_genir(args.model)
    dataset = resolve_dataset(gm, None)
    texts = [q.text for q in dataset.split("validation")[: args.queries]]
    batch = gm.batch(texts)
    docids = gm.docids
    runs = {
        "trie walk, every document (exact)": lambda: trie_log_probs(gm, batch, docids),
        "trie walk, exact top 100": lambda: top_k_log_probs(gm, batch, docids, 100),
        "trie walk, exact top 10": lambda: top_k_log_probs(gm, batch, docids, 10),
        "HF beam search, beam 10": lambda: beam_log_probs(gm, batch, docids, beams=10),
        "one pass per (query, docid)": lambda: one_pass_per_docid(gm, texts),
    }
    results, seconds = {}, {}
    for name, fn in runs.items():
        results[name], seconds[name], _ = timed(fn, args.repeats)
    exact = results["trie walk, every document (exact)"]
    checks = {
        "one pass per (query, docid)": (exact - results["one pass per (query, docid)"]).abs().max().item(),
        "trie walk, exact top 100": _found_error(results["trie walk, exact top 100"], exact),
        "trie walk, exact top 10": _found_error(results["trie walk, exact top 10"], exact),
        "HF beam search, beam 10": _found_error(results["HF beam search, beam 10"], exact),
    }
    bad = {k: v for k, v in checks.items() if not v < 1e-3}
    if bad:
        raise SystemExit(f"scores differ from the exact trie walk: {bad}")
    top100 = results["trie walk, exact top 100"]
    # Scores, not document ids: tied documents at the 100th place may be cut either way.
    same_top = torch.allclose(top100.topk(100).values, exact.topk(100).values, atol=1e-4)
    if not same_top:
        raise SystemExit("the exact top 100's scores differ from the full walk's top 100")
    beam = results["HF beam search, beam 10"]
    misses = float((beam.argmax(1) != exact.argmax(1)).float().mean())
    base = seconds["HF beam search, beam 10"]
    levels = [len(level.prefixes) for level in docids.levels()]
    lines = [
        f"# Ranking multi-token docids: exact trie walk vs one pass per docid vs beam search ({gm.name}, {docids.scheme} docids)",
        "",
        f"{len(docids)} documents, docids of up to {docids.max_length} tokens + eos; the trie has {docids.n_prefixes()} distinct prefixes "
        f"(rows decoded per query and step: {', '.join(map(str, levels))}); {len(texts)} validation queries, batched.",
        "",
        "| ranker | seconds per query | x beam 10 | what it returns |",
        "| --- | --- | --- | --- |",
    ]
    what = {
        "trie walk, every document (exact)": "every document's exact log-probability",
        "trie walk, exact top 100": "exact scores of the top 100 (the rest known lower)",
        "trie walk, exact top 10": "exact scores of the top 10: what beam 10 approximates",
        "HF beam search, beam 10": f"10 documents per query; misses the exact top-1 for {misses:.0%} of these queries",
        "one pass per (query, docid)": "every document's exact log-probability",
    }
    for name in runs:
        lines.append(f"| {name} | {seconds[name] / len(texts):.3f} | {seconds[name] / base:.2f} | {what[name]} |")
    lines += [
        "",
        f"The trie walk is {seconds['one pass per (query, docid)'] / seconds['trie walk, every document (exact)']:.1f}x faster than one pass "
        f"per docid (the same scores, max difference {checks['one pass per (query, docid)']:.1e}); exact top-100 is "
        f"{seconds['trie walk, every document (exact)'] / seconds['trie walk, exact top 100']:.1f}x faster than the full walk and returns the same top 100; "
        f"exact top-10 takes {seconds['trie walk, exact top 10'] / base:.2f}x the time of beam 10 (aim: <= 1x).",
        "",
        machine_line(torch.get_num_threads()) + clock_sentence(),
        f"Command: `python bench/bench_docid_ranking.py --model {args.model} --queries {args.queries} --repeats {args.repeats} "
        f"--threads {args.threads} --clock {args.clock}`; run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _found_error(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest difference between a partial ranking's finite scores and the exact ones (0 when it found nothing)."""
    finite = torch.isfinite(found)
    return (found[finite] - exact[finite]).abs().max().item() if bool(finite.any()) else 0.0


if __name__ == "__main__":
    main()

"""Multi-token docids (issue 10): the mapping file, the prefix trie, loading from the model card, exact ranking.

Exact ranking (a cached walk over the docid trie) must equal brute-force teacher forcing of every docid one by
one; bad mappings (duplicate sequences, tokens missing from the vocabulary, a scheme that differs from the card)
are refused in one line naming the file and docid.
"""
from __future__ import annotations

import json

import pytest
import torch

from genir_mech.data.docid_assignment import SemanticConfig, naive_docids, semantic_docids, title_docids
from genir_mech.docids import MAPPING_FILE, DocidMapping, SequenceDocids
from genir_mech.errors import GenIRError
from genir_mech.models.loading import load_genir
from genir_mech.models.model_card import ModelCard
from genir_mech.retrieval import SequenceScorer, rank_texts, scorer_for
from genir_mech.retrieval.sequence_ranking import teacher_forced_log_probs, trie_log_probs
from genir_mech.testing import tiny_sequence_genir, toy_queries


@pytest.fixture(scope="module")
def naive_gm():
    return tiny_sequence_genir("naive", n_docs=60)


def test_naive_trie_keeps_a_docid_that_is_a_prefix_of_another(naive_gm):
    docids = naive_gm.docids
    five, two = docids.sequence("5"), docids.sequence("2")
    assert docids.sequence("52") == five + two
    assert set(docids.children(five)) == {docids.eos_id, *[docids.sequence(str(d))[0] for d in range(10)]}
    assert docids.doc_at(five) == "5" and docids.doc_at(five + two + (docids.eos_id,)) == "52"
    assert docids.children((docids.eos_id,)) == [] and docids.target_ids("52") == [*five, *two, docids.eos_id]
    # the walk's plan visits every distinct prefix exactly once and ends every docid once
    levels = docids.levels()
    assert sum(len(level.prefixes) for level in levels) == docids.n_prefixes() + 1
    assert sorted(int(d) for level in levels for d in level.doc.tolist() if d >= 0) == list(range(len(docids)))


@pytest.mark.parametrize("rows_per_forward", [7, 4096])
def test_exact_trie_ranking_equals_one_by_one_teacher_forcing(naive_gm, rows_per_forward):
    batch = naive_gm.batch(toy_queries(naive_gm, 5))
    exact = trie_log_probs(naive_gm, batch, naive_gm.docids, rows_per_forward)
    brute = teacher_forced_log_probs(naive_gm, batch, naive_gm.docids)
    assert exact.shape == (5, 60)
    torch.testing.assert_close(exact, brute, atol=1e-4, rtol=0)
    # one by one (a single query, a single docid) agrees too
    one = teacher_forced_log_probs(naive_gm, naive_gm.batch(toy_queries(naive_gm, 5)[2:3]), naive_gm.docids, ["37"])
    torch.testing.assert_close(one[0, 0], exact[2, naive_gm.docids.index("37")], atol=1e-4, rtol=0)
    # log-probabilities of disjoint events: the docids' total probability is at most 1
    assert bool((torch.logsumexp(exact, dim=1) <= 1e-5).all())


def test_title_scheme_ranks_exactly():
    gm = tiny_sequence_genir("title", n_docs=24)
    assert gm.docids.max_length >= 2
    batch = gm.batch(toy_queries(gm, 3))
    torch.testing.assert_close(trie_log_probs(gm, batch, gm.docids), teacher_forced_log_probs(gm, batch, gm.docids), atol=1e-4, rtol=0)


def test_semantic_ids_are_paths_of_bounded_clusters_and_deterministic():
    pytest.importorskip("sklearn", reason="semantic docids need the optional extra minilm (scikit-learn)")
    rng = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=rng) * 5
    points = (centers.repeat_interleave(12, 0) + torch.randn(60, 16, generator=rng)).numpy()
    ids = [str(i) for i in range(60)]
    config = SemanticConfig(branches=5, leaf_size=12, seed=3)
    mapping = semantic_docids(ids, points, config)
    assert mapping == semantic_docids(ids, points, config)
    # five well separated blobs of 12: one split, then the index inside the blob
    assert {len(s) for s in mapping.sequences.values()} == {2}
    assert len({s[0] for s in mapping.sequences.values()}) == 5
    assert all(mapping.sequences[str(i)][0] == mapping.sequences[str(12 * (i // 12))][0] for i in range(60))
    deep = semantic_docids(ids, points, SemanticConfig(branches=2, leaf_size=4, max_depth=3, seed=0))
    assert max(len(s) for s in deep.sequences.values()) <= 4


def test_title_docids_are_the_shortest_unique_word_prefixes():
    docs = {"0": "alpha beta gamma", "1": "alpha beta delta", "2": "omega", "3": "alpha beta gamma"}
    titles = title_docids(docs).sequences
    assert titles["2"] == ("omega",) and titles["1"] == ("alpha", "beta", "delta")
    assert titles["0"] != titles["3"] and titles["3"][-2:] == ("#", "2")


def test_mapping_round_trip_and_card_scheme(tmp_path, naive_gm):
    mapping = naive_docids({str(i): "" for i in range(12)})
    path = mapping.write(tmp_path / MAPPING_FILE)
    again = DocidMapping.read(tmp_path)
    assert again.sequences == mapping.sequences and again.scheme == "naive" and again.source == str(path)
    assert ModelCard().scheme == "atomic" and ModelCard(docid_scheme="semantic").scheme == "semantic"


def _saved_sequence_model(tmp_path, gm, scheme="naive"):
    out = tmp_path / "model"
    gm.hf_model.save_pretrained(out)
    gm.tokenizer.save_pretrained(out)
    tokens = {d: gm.tokenizer.convert_ids_to_tokens(list(gm.docids.sequence(d))) for d in gm.docids.doc_ids}
    DocidMapping(gm.docids.scheme, tokens).write(out / MAPPING_FILE)
    ModelCard(objective="dsi", docid_scheme=scheme).write(out)
    return out


def test_load_genir_reads_the_scheme_from_the_card(tmp_path, naive_gm):
    out = _saved_sequence_model(tmp_path, naive_gm)
    gm = load_genir(str(out))
    assert isinstance(gm.docids, SequenceDocids) and isinstance(scorer_for(gm), SequenceScorer)
    texts = toy_queries(gm, 4)
    ranking = rank_texts(gm, texts, batch_size=3)
    torch.testing.assert_close(ranking.doc_scores, teacher_forced_log_probs(naive_gm, naive_gm.batch(texts), naive_gm.docids), atol=1e-4, rtol=0)
    with pytest.raises(GenIRError, match="first step"):
        scorer_for(gm).score_logits(ranking.logits)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_bad_mappings_are_refused_in_one_line(tmp_path, naive_gm):
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"scheme": "naive", "docids": {"1": ["1", "2"], "7": ["3"], "12": ["1", "2"]}}))
    with pytest.raises(GenIRError) as exc:
        DocidMapping.read(dup)
    assert all(s in _one_line(exc) for s in (str(dup), "'1'", "'12'", "same token sequence"))

    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"scheme": "naive", "docids": {"1": ["1"], "2": ["zz-not-a-token"]}}))
    with pytest.raises(GenIRError) as exc:
        SequenceDocids.load(missing, naive_gm.tokenizer)
    assert all(s in _one_line(exc) for s in (str(missing), "docid '2'", "zz-not-a-token", "missing from the tokenizer"))

    for text, expected in (("{", "line 1"), (json.dumps({"scheme": "atomic", "docids": {"1": ["1"]}}), "not a sequence scheme"),
                           (json.dumps({"scheme": "naive", "docids": {"1": "1"}}), "docid '1'")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(GenIRError) as exc:
            DocidMapping.read(bad)
        assert str(bad) in _one_line(exc) and expected in str(exc.value)


def test_scheme_mismatch_between_card_and_mapping_is_refused(tmp_path, naive_gm):
    out = _saved_sequence_model(tmp_path, naive_gm, scheme="semantic")
    with pytest.raises(GenIRError) as exc:
        load_genir(str(out))
    assert all(s in _one_line(exc) for s in ("naive docid mapping", "says semantic", MAPPING_FILE))
    (out / MAPPING_FILE).unlink()
    with pytest.raises(GenIRError) as exc:
        load_genir(str(out))
    assert "no docid mapping file" in _one_line(exc)


def test_beam_search_as_wide_as_the_trie_equals_the_exact_ranking(naive_gm):
    from genir_mech.retrieval.beam_ranking import beam_log_probs

    small = tiny_sequence_genir("naive", n_docs=24)
    batch = small.batch(toy_queries(small, 3))
    exact = trie_log_probs(small, batch, small.docids)
    torch.testing.assert_close(beam_log_probs(small, batch, small.docids, beams=len(small.docids)), exact, atol=1e-4, rtol=0)
    # a narrow beam finds `beams` documents, each with its exact score
    narrow = beam_log_probs(small, batch, small.docids, beams=3)
    assert (torch.isfinite(narrow).sum(dim=1) == 3).all()
    torch.testing.assert_close(narrow[torch.isfinite(narrow)], exact[torch.isfinite(narrow)], atol=1e-4, rtol=0)
    # the trie walk's own beam agrees on what it finds being exact
    walk = trie_log_probs(small, batch, small.docids, beam=3)
    torch.testing.assert_close(walk[torch.isfinite(walk)], exact[torch.isfinite(walk)], atol=1e-4, rtol=0)


def test_pruned_walk_keeps_the_exact_top_k_and_every_document_above_the_relevant_one(naive_gm):
    from genir_mech.retrieval.sequence_ranking import top_k_log_probs

    batch = naive_gm.batch(toy_queries(naive_gm, 4))
    exact = trie_log_probs(naive_gm, batch, naive_gm.docids)
    relevant = [["3"], [], ["59", "0"], ["41"]]
    pruned = top_k_log_probs(naive_gm, batch, naive_gm.docids, 5, relevant)
    for i, docs in enumerate(relevant):
        floor = min([exact[i].topk(5).values[-1].item()] + [exact[i, naive_gm.docids.index(d)].item() for d in docs])
        above = exact[i] >= floor
        torch.testing.assert_close(pruned[i, above], exact[i, above], atol=1e-4, rtol=0)
        # below it: -inf, or exact where the beam's floor was lower still (the k-th document a beam finds may score below the true k-th)
        below = pruned[i, ~above]
        torch.testing.assert_close(below[torch.isfinite(below)], exact[i, ~above][torch.isfinite(below)], atol=1e-4, rtol=0)
        if not docs:  # the top 5 alone: the walk skipped part of the trie
            assert int(torch.isinf(below).sum()) > 0
        # ranks of the relevant documents, as evaluation computes them, are unchanged
        for d in docs:
            j = naive_gm.docids.index(d)
            assert int((pruned[i] >= pruned[i, j]).sum()) == int((exact[i] >= exact[i, j]).sum())


def test_data_the_mapping_does_not_name_is_refused_in_one_line(naive_gm):
    from genir_mech.data.corpus import Query, RetrievalDataset
    from genir_mech.data.docid_assignment import check_mapping_covers
    from genir_mech.retrieval import evaluate

    texts = toy_queries(naive_gm, 2)
    data = RetrievalDataset({"1": "a", "999": "b"}, [Query("q0", texts[0], "test"), Query("q1", texts[1], "test")], {"q0": {"1"}, "q1": {"999"}})
    with pytest.raises(GenIRError) as exc:
        evaluate(naive_gm, data, "test")
    assert all(s in _one_line(exc) for s in ("'999'", "does not name it"))
    mapping = naive_docids({str(i): "" for i in range(5)})
    with pytest.raises(GenIRError) as exc:
        check_mapping_covers(mapping, data, "the training data")
    assert all(s in _one_line(exc) for s in ("naive docid mapping (5 documents)", "the training data (2 documents)", "lacks document(s) '999'"))


def test_eval_reports_both_rankers_on_a_sequence_model(tmp_path, naive_gm):
    from genir_mech.data.corpus import Query, RetrievalDataset
    from genir_mech.pipelines.evaluate import EvalConfig, run_eval

    texts = toy_queries(naive_gm, 6)
    data = RetrievalDataset({str(i): "x" for i in range(60)}, [Query(f"q{i}", t, "test") for i, t in enumerate(texts)],
                            {f"q{i}": {str(7 * i)} for i in range(6)})
    summary = run_eval(naive_gm, data, tmp_path / "eval", EvalConfig(split="test", beams=len(naive_gm.docids), max_queries=5))
    full = run_eval(naive_gm, data, tmp_path / "full", EvalConfig(split="test", beams=0, full_ranking=True, max_queries=5))
    # exact top-depth + relevant documents gives the metrics of the full ranking; a beam as wide as the trie too
    for name in ("Success@1", "Success@10", "RR", "nDCG@10"):
        assert summary[name] == pytest.approx(full[name]) == pytest.approx(summary[f"beam:{name}"])
    assert summary["n_queries"] == 5 and summary["beam_misses_exact_top1"] == 0.0 and "beam:RR" not in full
    assert (tmp_path / "eval" / "per_query_beam.csv").exists()


def test_data_docids_verb_writes_a_loadable_mapping(tmp_path):
    from genir_mech.cli import main

    for scheme in ("naive", "title"):
        assert main(["data", "docids", "--scheme", scheme, "--data", "synthetic:n_docs=30,seed=0", "--out", str(tmp_path / scheme), "--json"]) == 0
        mapping = DocidMapping.read(tmp_path / scheme)
        assert mapping.scheme == scheme and len(mapping.sequences) == 30 and mapping.data_hash
    assert DocidMapping.read(tmp_path / "naive").sequences["17"] == ("1", "7")


def test_new_docid_tokens_get_distinct_rows_at_the_vocabulary_scale():
    # HF's mean initialisation gives every added digit the same row: identical logits for any query, a saddle
    # that kept the naive and semantic checkpoints at chance. The rows must differ and match the old rows' scale.
    gm = tiny_sequence_genir("naive", n_docs=30)
    weight = gm.hf_model.get_input_embeddings().weight.detach()
    digits = torch.tensor([gm.docids.sequence(str(d))[0] for d in range(10)])
    old = weight[: int(digits.min())]
    rows = weight[digits]
    assert torch.cdist(rows, rows).add(torch.eye(10) * 1e9).min() > 0.1 * old.norm(dim=1).mean()
    assert rows.norm(dim=1).mean() == pytest.approx(float(old.norm(dim=1).mean()), rel=0.5)
    output = gm.hf_model.get_output_embeddings().weight
    assert output.shape[0] == weight.shape[0]
    if output.data_ptr() == weight.data_ptr():  # tied: the output rows are the same draw
        assert torch.equal(output[digits].detach(), rows)


def test_correct_queries_from_the_depth_one_walk_equal_the_full_ranking(naive_gm):
    from genir_mech.data.corpus import Query, RetrievalDataset
    from genir_mech.retrieval import correct_query_targets, evaluate

    texts = toy_queries(naive_gm, 8, seed=4)
    docs = {str(i): "x" for i in range(60)}
    queries = [Query(f"q{i}", t, "validation") for i, t in enumerate(texts)]
    full_top = evaluate(naive_gm, RetrievalDataset(docs, queries, {q.query_id: {"0"} for q in queries}), "validation", full=True)[1]["top_doc"]
    # half the queries judge the model's own top document relevant (correct), half another one (not)
    qrels = {q.query_id: {top if i % 2 == 0 else str((int(top) + 1) % 60)} for i, (q, top) in enumerate(zip(queries, full_top))}
    data = RetrievalDataset(docs, queries, qrels)
    _, per_query = evaluate(naive_gm, data, "validation", full=True)
    expected = dict(zip(per_query[per_query.correct]["query_id"], per_query[per_query.correct]["relevant_doc"]))
    assert correct_query_targets(naive_gm, data, "validation") == expected
    assert sorted(expected) == [f"q{i}" for i in range(0, 8, 2)]

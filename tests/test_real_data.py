"""Real-data correctness: multi-relevant and graded qrels scored like ir_measures scores them, TREC I/O, split defaults."""
from __future__ import annotations

import json
import warnings

import ir_measures
import pytest
import torch

from genir_mech.data.corpus import Query, RetrievalDataset
from genir_mech.data.loaders import load_beir, load_dsi_jsonl, save_dsi_jsonl
from genir_mech.data.trec import read_trec_qrels
from genir_mech.errors import GenIRError
from genir_mech.retrieval import correct_query_targets, evaluate, parse_measures, scorer_for
from genir_mech.testing import tiny_genir

# every text has a word of the tiny vocabulary: a query of unknown words only is left out of evaluation (GenIRModel.unreadable)
TEXTS = ["who founded zorblax", "where is quintar", "what is the capital of mirel", "zorblax founded",
         "quintar river", "mirel capital river"]


@pytest.fixture(scope="module")
def model_and_order():
    gm = tiny_genir(decoder_layers=2)
    scores = scorer_for(gm).score(gm, gm.batch(TEXTS))
    order = [[gm.docids.doc_ids[j] for j in row] for row in scores.argsort(dim=1, descending=True).tolist()]
    return gm, scores, order


def dataset_with(gm, grades: dict[str, dict[str, int]], split: str = "test") -> RetrievalDataset:
    docs = {d: f"document {d}" for d in gm.docids.doc_ids}
    return RetrievalDataset(docs, [Query(f"q{i}", t, split) for i, t in enumerate(TEXTS)], grades)


def direct(scores, gm, grades, measures):
    """ir_measures on the full score matrix (every document) and the qrels as given: no genir_mech code in between."""
    run = [ir_measures.ScoredDoc(f"q{i}", d, float(scores[i, j])) for i in range(len(TEXTS)) for j, d in enumerate(gm.docids.doc_ids)]
    qrels = [ir_measures.Qrel(q, d, g) for q, judged in grades.items() for d, g in judged.items()]
    return {str(m): v for m, v in ir_measures.calc_aggregate(parse_measures(measures), qrels, run).items()}


def test_multi_relevant_graded_qrels_match_ir_measures(model_and_order):
    gm, scores, order = model_and_order
    # Every query: its model-top document is relevant (grade 1) beside a lower-ranked document of grade 2, and its
    # second document is judged not relevant (grade 0). Collapsing to sorted(docs)[0] would lose rank-1 hits.
    grades = {f"q{i}": {o[0]: 1, o[5]: 2, o[1]: 0} for i, o in enumerate(order)}
    ds = dataset_with(gm, grades)
    measures = ("Success@1", "Success@5", "RR", "R@10", "nDCG@10", "P@5", "AP")
    metrics, per_query = evaluate(gm, ds, "test", measures=measures)
    expected = direct(scores, gm, grades, measures)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    assert metrics["Success@1"] == 1.0 and metrics["hits@1"] == 1.0 and metrics["mrr"] == metrics["RR"]
    # the documented definition: correct <=> the first document is relevant <=> Success@1 of the query
    assert per_query["correct"].all() and (per_query["Success@1"] == 1.0).all()
    assert (per_query["relevant_doc"] == [o[0] for o in order]).all() and (per_query["n_relevant"] == 2).all()
    # grades matter: swapping them changes nDCG@10 and ir_measures agrees
    swapped = {q: {d: {1: 2, 2: 1}.get(g, g) for d, g in judged.items()} for q, judged in grades.items()}
    metrics2, _ = evaluate(gm, dataset_with(gm, swapped), "test", measures=measures)
    assert metrics2["nDCG@10"] == pytest.approx(direct(scores, gm, swapped, measures)["nDCG@10"]) and metrics2["nDCG@10"] > metrics["nDCG@10"]


def test_correct_queries_follow_the_first_ranked_relevant_document(model_and_order):
    gm, _, order = model_and_order
    # q0: top document not relevant (2nd and 3rd are) -> incorrect, rank 2; q1..: top relevant among three
    grades = {"q0": {order[0][1]: 1, order[0][2]: 1}, **{f"q{i}": {o[2]: 1, o[0]: 1, o[7]: 3} for i, o in enumerate(order) if i}}
    ds = dataset_with(gm, grades, split="validation")
    targets = correct_query_targets(gm, ds, "validation")
    assert targets == {f"q{i}": o[0] for i, o in enumerate(order) if i}
    _, per_query = evaluate(gm, ds, "validation")
    q0 = per_query.set_index("query_id").loc["q0"]
    assert q0["rank"] == 2 and not q0["correct"] and q0["relevant_doc"] == order[0][1] and q0["top_doc"] == order[0][0]
    with pytest.raises(GenIRError, match="has 3 relevant documents"):
        ds.relevant("q1")


def test_best_relevant_rank_ties():
    from genir_mech.retrieval import best_relevant_ranks
    scores = torch.tensor([[3.0, 3.0, 1.0, 0.0],    # two relevant documents tied first: rank 1
                           [3.0, 2.0, 2.0, 0.0],    # relevant tied with a non-relevant one: the tie counts against it
                           [0.0, 1.0, 5.0, 5.0]])   # best relevant behind two non-relevant
    ranks, cols = best_relevant_ranks(scores, [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0, 1])])
    assert ranks.tolist() == [1, 3, 3] and cols.tolist() == [0, 2, 1]


def test_single_relevant_data_keeps_its_hash_and_api():
    from genir_mech.data.synthetic import SyntheticConfig, generate_corpus
    ds = generate_corpus(SyntheticConfig(n_docs=20, seed=0))
    q = ds.queries[0]
    assert ds.relevant(q.query_id) in ds.documents and not ds.is_graded
    assert ds.relevant_docs(q.query_id) == {ds.relevant(q.query_id): 1}
    # the hash of binary data is the one it had before grades were stored (model cards record it)
    import hashlib
    old = {"documents": sorted(ds.documents.items()), "queries": sorted((x.query_id, x.text, x.split) for x in ds.queries),
           "qrels": sorted((k, sorted(v)) for k, v in ds.qrels.items())}
    assert ds.data_hash() == hashlib.sha256(json.dumps(old).encode()).hexdigest()[:16]
    graded = RetrievalDataset(ds.documents, ds.queries, {**ds.grades, q.query_id: {ds.relevant(q.query_id): 2}})
    assert graded.is_graded and graded.data_hash() != ds.data_hash()


def test_beir_graded_qrels_and_dsi_round_trip_keep_every_judgement(tmp_path, model_and_order):
    gm, scores, order = model_and_order
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": f"document {d}"}) + "\n" for d in gm.docids.doc_ids))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    grades = {f"q{i}": {o[3]: 2, o[0]: 1, o[1]: 0} for i, o in enumerate(order)}
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{g}\n" for q, j in grades.items() for d, g in j.items()))
    ds = load_beir(root)
    assert ds.grades == grades and ds.qrels["q0"] == {order[0][3], order[0][0]}
    # only test exists: evaluation and analyses default to it instead of failing on 'validation'
    metrics, _ = evaluate(gm, ds, None, measures=("Success@1", "nDCG@10"))
    assert metrics["split"] == "test" and metrics["Success@1"] == 1.0
    assert metrics["nDCG@10"] == pytest.approx(direct(scores, gm, grades, ("nDCG@10",))["nDCG@10"])
    with pytest.warns(UserWarning, match="using split 'test'"):
        assert len(correct_query_targets(gm, ds, None)) == len(TEXTS)
    save_dsi_jsonl(ds, tmp_path / "dsi")
    back = load_dsi_jsonl(tmp_path / "dsi" / "documents.jsonl", tmp_path / "dsi" / "queries.jsonl")
    assert back.grades == ds.grades and back.data_hash() == ds.data_hash()


def test_trec_qrels_and_run_files(tmp_path, model_and_order):
    gm, scores, order = model_and_order
    ds = dataset_with(gm, {f"q{i}": {o[0]: 1} for i, o in enumerate(order)})
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"q{i} 0 {o[1]} 2\nq{i} 0 {o[0]} 0\n" for i, o in enumerate(order[:4])) + f"q4 0 {order[4][0]} 0\n")
    judged = ds.with_qrels(read_trec_qrels(qrels), str(qrels))
    assert [q.query_id for q in judged.queries] == ["q0", "q1", "q2", "q3"] and judged.grades["q0"] == {order[0][1]: 2, order[0][0]: 0}
    metrics, per_query = evaluate(gm, judged, "test")
    assert metrics["Success@1"] == 0.0 and metrics["RR"] == pytest.approx(0.5) and (per_query["rank"] == 2).all()
    # a TREC run read back by ir_measures scores the same
    from genir_mech.retrieval import rank_texts
    ranking = rank_texts(gm, TEXTS[:4], ["q0", "q1", "q2", "q3"])
    run = ranking.write_trec_run(tmp_path / "run.txt", depth=5)
    lines = run.read_text().splitlines()
    assert len(lines) == 4 * 5 and lines[0].split()[:4] == ["q0", "Q0", order[0][0], "1"]
    # q4 is judged only non-relevant: left out of the evaluated queries, so left out of the direct computation too
    file_qrels = [q for q in ir_measures.read_trec_qrels(str(qrels)) if q.query_id != "q4"]
    from_file = ir_measures.calc_aggregate(parse_measures("RR,nDCG@10"), file_qrels, ir_measures.read_trec_run(str(run)))
    assert from_file[ir_measures.RR] == pytest.approx(metrics["RR"])
    bad = tmp_path / "bad.txt"
    bad.write_text("q0 0 d1 1\nq1 0 d2\n")
    with pytest.raises(GenIRError, match=r"bad.txt, line 2: expected 4 columns"):
        read_trec_qrels(bad)
    with pytest.raises(GenIRError, match="not a query of the data"):
        ds.with_qrels({"nope": {order[0][0]: 1}}, "x")


def test_measure_names_and_aliases():
    assert [str(m) for m in parse_measures("hits@1,mrr,nDCG@10,R@10")] == ["Success@1", "RR", "nDCG@10", "R@10"]
    with pytest.raises(GenIRError, match="unknown retrieval measure 'hits@x1'"):
        parse_measures("hits@x1")


def test_query_truncation_length_and_warning(model_and_order):
    gm, _, order = model_and_order
    ds = dataset_with(gm, {f"q{i}": {o[0]: 1} for i, o in enumerate(order)})
    old = gm.max_query_tokens
    try:
        gm.max_query_tokens = 3
        with pytest.warns(UserWarning, match=r"\b[0-9]+ of 6 queries are longer than 3 tokens"):
            evaluate(gm, ds, "test")
        assert gm.batch(["who founded zorblax today"]).input_ids.shape[1] == 3
    finally:
        gm.max_query_tokens = old
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(gm, ds, "test")


@pytest.fixture()
def local_ir_dataset(tmp_path, monkeypatch, model_and_order):
    """An ir_datasets dataset registered from local files (TSV documents and queries, TREC qrels): no download."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import TrecQrels, TsvDocs, TsvQueries
    from ir_datasets.util import LocalDownload

    gm, _, order = model_and_order
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds_home"))
    (tmp_path / "docs.tsv").write_text("".join(f"{d}\tdocument {d}\n" for d in gm.docids.doc_ids))
    (tmp_path / "queries.tsv").write_text("".join(f"q{i}\t{t}\n" for i, t in enumerate(TEXTS)) + "q-unjudged\tnobody judged this\n")
    grades = {f"q{i}": {o[0]: 1, o[4]: 2, o[1]: 0} for i, o in enumerate(order)}
    (tmp_path / "qrels.txt").write_text("".join(f"{q} 0 {d} {g}\n" for q, j in grades.items() for d, g in j.items()))
    dataset_id = f"genir-mech-local-{tmp_path.name}/dev"
    ir_datasets.registry.register(dataset_id, Dataset(
        TsvDocs(LocalDownload(tmp_path / "docs.tsv")), TsvQueries(LocalDownload(tmp_path / "queries.tsv")),
        TrecQrels(LocalDownload(tmp_path / "qrels.txt"), {0: "not relevant", 1: "relevant", 2: "highly relevant"})))
    return dataset_id, grades


def test_ir_datasets_local_dataset_loads_and_evaluates_from_the_cli(local_ir_dataset, model_and_order, tmp_path, capsys):
    from genir_mech.cli import main
    from genir_mech.data.loaders import load_dataset

    dataset_id, grades = local_ir_dataset
    ds = load_dataset(f"ir_datasets:{dataset_id}")
    assert ds.splits == ["validation"] and ds.grades == grades and len(ds.documents) == len(model_and_order[0].docids.doc_ids)
    assert "q-unjudged" not in {q.query_id for q in ds.queries} and ds.meta == {"generator": "ir_datasets", "id": dataset_id}
    gm, scores, _ = model_and_order
    ckpt = tmp_path / "ckpt"
    gm.hf_model.save_pretrained(ckpt)
    gm.tokenizer.save_pretrained(ckpt)
    run = tmp_path / "run.txt"
    # the only split is validation: eval (default test) uses it and says so
    assert main(["eval", "--model", str(ckpt), "--data", f"ir_datasets:{dataset_id}", "--out", str(tmp_path / "eval"),
                 "--metrics", "Success@1,nDCG@10,mrr", "--trec-run", str(run), "--run-depth", "7", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    expected = direct(scores, gm, grades, ("Success@1", "nDCG@10", "RR"))
    assert summary["split"] == "validation" and summary["Success@1"] == 1.0 and summary["mrr"] == summary["RR"] == 1.0
    assert summary["nDCG@10"] == pytest.approx(expected["nDCG@10"])
    assert len(run.read_text().splitlines()) == 7 * len(TEXTS)
    # a TREC qrels file replaces the judgements
    qrels = tmp_path / "other-qrels.txt"
    qrels.write_text("q0 0 nothing-here 1\n")
    assert main(["eval", "--model", str(ckpt), "--data", f"ir_datasets:{dataset_id}", "--out", str(tmp_path / "eval2"), "--qrels", str(qrels)]) == 2
    assert "document 'nothing-here'" in capsys.readouterr().err


def test_ir_datasets_unknown_id_is_one_line(tmp_path):
    from genir_mech.data.loaders import load_dataset
    with pytest.raises(GenIRError, match="not a dataset id ir_datasets knows"):
        load_dataset("ir_datasets:no-such-dataset/at-all")


def test_encoder_swap_uses_the_same_correct_queries_on_multi_relevant_data(model_and_order):
    from genir_mech.analyses.encoder_swap import vanilla_encoder_experiment
    gm, _, order = model_and_order
    grades = {"q0": {order[0][1]: 1, order[0][2]: 1}, **{f"q{i}": {o[3]: 1, o[0]: 2} for i, o in enumerate(order) if i}}
    summary, per_query = vanilla_encoder_experiment(gm, gm, dataset_with(gm, grades, "validation"), "validation")
    own = per_query[per_query.condition == per_query.condition.iloc[0]]
    assert list(own.query_id) == [f"q{i}" for i in range(1, len(TEXTS))] and list(own.relevant_doc) == [o[0] for o in order[1:]]
    assert (per_query["rank"] == 1).all()  # A's own encoder, A's own decoder (here the same model): the first document

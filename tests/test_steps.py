"""Every analysis per decoding step (issue 10): atomic step 0 is today's computation, a planted two-token model's
steps are found in their own layers, and a step beyond the docid length is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from genir_mech.analyses.ablation import ablate, layer_ablation
from genir_mech.analyses.contributions import contributions
from genir_mech.analyses.logit_lens import logit_lens
from genir_mech.analyses.stage_localisation import localise_stages
from genir_mech.cli import main
from genir_mech.data.corpus import RetrievalDataset
from genir_mech.errors import GenIRError
from genir_mech.patching.engine import component_sweep
from genir_mech.patching.pairs import QueryPair, keep_correct, step_pairs, tokenize_pairs
from genir_mech.pipelines.attribute import AttributeConfig, run_attribute
from genir_mech.pipelines.patch import PatchConfig, run_patch
from genir_mech.pipelines.rendering import redraw
from genir_mech.pipelines.stages import StagesConfig, run_stages
from genir_mech.retrieval import rank_texts
from genir_mech.retrieval.ranks import rank_of
from genir_mech.retrieval.scoring import scorer_for
from genir_mech.retrieval.steps import resolve_steps, step_view
from genir_mech.stage_definition import StageDefinition
from genir_mech.testing import planted_cross_attention, planted_step_model, tiny_genir, toy_queries, toy_tokenizer

STEP_LAYERS = (1, 2)  # the planted model decides docid step 0 in decoder layer 1, step 1 in layer 2


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Exact equality of two tables (values, dtypes, order), the step column of `b` set aside."""
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.drop(columns=["step"], errors="ignore").reset_index(drop=True), check_exact=True)


@pytest.fixture(scope="module")
def atomic():
    gm = planted_cross_attention(tiny_genir(decoder_layers=4), [1, 2])
    texts = toy_queries(gm, 12)
    docs = [str(d) for d in gm.docids.scores(gm.logits(gm.batch(texts))).argmax(1).tolist()]
    return gm, texts, [str(i) for i in range(len(texts))], docs


@pytest.fixture(scope="module")
def atomic_dataset(atomic):
    """The toy corpus with each query's relevant document set to the model's own first choice, so every query is correct."""
    gm = atomic[0]
    ds = toy_tokenizer(len(gm.docids), 0)[1]
    top = gm.docids.scores(gm.logits(gm.batch([q.text for q in ds.queries]))).argmax(1).tolist()
    qrels = {q.query_id: {gm.docids.doc_ids[j]} for q, j in zip(ds.queries, top)}
    return RetrievalDataset(ds.documents, ds.queries, qrels, ds.pairs, ds.meta)


@pytest.fixture(scope="module")
def planted():
    gm = planted_step_model(decoder_layers=4, step_layers=STEP_LAYERS)
    texts = toy_queries(gm, 24)
    docs = gm.docids.doc_ids
    return gm, texts, [str(i) for i in range(len(texts))], [docs[i % len(docs)] for i in range(len(texts))]


# -- the step view -------------------------------------------------------------------------------------------


def test_step_view_teacher_forces_the_prefix_and_ranks_among_valid_continuations(planted):
    gm, texts, _, docs = planted
    assert resolve_steps(gm, "all") == [0, 1]
    view = step_view(gm, docs, 1)
    sequences = [gm.docids.sequence(d) for d in docs]
    assert view.decoder_inputs[:, 0].tolist() == [gm.decoder_start_id] * len(docs)
    assert view.decoder_inputs[:, 1].tolist() == [s[0] for s in sequences]
    assert view.tokens.tolist() == [s[1] for s in sequences]
    # the rank among the valid continuations is the rank among the children of the prefix, computed by hand
    logits = torch.randn(len(docs), len(gm.tokenizer))
    for i, s in enumerate(sequences):
        children = torch.tensor(gm.docids.children(s[:1]))
        assert int(view.rank(logits)[i]) == int((logits[i, children] >= logits[i, s[1]]).sum())
        assert int(view.vocab_rank(logits)[i]) == int((logits[i] >= logits[i, s[1]]).sum())
    assert step_view(gm, docs, 0).decoder_inputs is None  # step 0: the ranking step every analysis used before


# -- atomic docids: step 0 is today's computation ----------------------------------------------------------------


def test_atomic_step_zero_equals_todays_analyses(atomic):
    gm, texts, qids, docs = atomic
    view = step_view(gm, docs, 0)
    stages = StageDefinition.parse("early=0,middle=1-2,late=3")
    same(contributions(gm, texts, qids, stages), contributions(gm, texts, qids, stages, view=view))
    today, stepped = logit_lens(gm, texts, qids, docs, n_examples=4), logit_lens(gm, texts, qids, docs, n_examples=4, view=view)
    same(today.ranks, stepped.ranks)
    same(today.head_tokens, stepped.head_tokens)
    same(ablate(gm, texts, docs, stages), ablate(gm, texts, docs, stages, view=view))
    same(layer_ablation(gm, texts, docs, method=("zero", "mean")), layer_ablation(gm, texts, docs, method=("zero", "mean"), view=view))


def test_atomic_step_zero_equals_todays_pipelines(atomic, atomic_dataset, tmp_path):
    gm = atomic[0]
    small = dict(max_queries=8, batch_size=8, bootstrap=5)
    run_stages(gm, atomic_dataset, tmp_path / "today", StagesConfig(**small), progress=False)
    stepped = run_stages(gm, atomic_dataset, tmp_path / "step0", StagesConfig(**small, steps=0), progress=False)
    for name in ("contributions", "layer_ablation", "stage_layer_means", "boundary_stability", "stage_evidence"):
        today_df, step_df = pd.read_csv(tmp_path / "today" / f"{name}.csv"), pd.read_csv(tmp_path / "step0" / f"{name}.csv")
        assert set(step_df["step"]) == {0}
        same(today_df, step_df)
    assert (tmp_path / "today" / "stages.json").read_text() == (tmp_path / "step0" / "stages_step0.json").read_text()
    assert stepped["steps"][0]["stages"]

    pairs = dict(all_pairs=True, n_pairs=6, n_boot=20)
    for run, config, names in ((run_patch, PatchConfig, ("component_per_pair", "component_summary", "pairs")),
                               (run_attribute, AttributeConfig, ("attribution_per_pair", "attribution_summary", "pairs"))):
        extra = {"target": "component"} if run is run_patch else {}
        run(gm, atomic_dataset, tmp_path / f"{run.__name__}-today", config(**pairs, **extra), progress=False)
        run(gm, atomic_dataset, tmp_path / f"{run.__name__}-step0", config(**pairs, **extra, steps=[0]), progress=False)
        for name in names:
            today_df = pd.read_csv(tmp_path / f"{run.__name__}-today" / f"{name}.csv")
            step_df = pd.read_csv(tmp_path / f"{run.__name__}-step0" / f"{name}.csv")
            assert set(step_df["step"]) == {0}, name
            same(today_df, step_df)


# -- planted: each step is decided in its own layer ----------------------------------------------------------


def test_planted_steps_are_located_in_their_own_layers(planted):
    gm, texts, qids, docs = planted
    for step in resolve_steps(gm, "all"):
        found = localise_stages(contributions(gm, texts, qids, view=step_view(gm, docs, step)), bootstrap=10)
        assert found.definition.layers("bridging") == [STEP_LAYERS[step]], (step, found.summary())


def test_planted_steps_through_the_stages_pipeline(planted, tmp_path):
    gm = planted[0]
    ds = toy_tokenizer(len(gm.docids), 0)[1]
    # relevant document of each query: the model's own exact first choice, so every query is correct
    ranking = rank_texts(gm, [q.text for q in ds.queries])
    top = ranking.doc_scores.argmax(1).tolist()
    data = RetrievalDataset(ds.documents, ds.queries, {q.query_id: {ranking.doc_ids[j]} for q, j in zip(ds.queries, top)}, ds.pairs, ds.meta)
    summary = run_stages(gm, data, tmp_path / "stages", StagesConfig(max_queries=24, bootstrap=5, ablation=False, steps="all"), progress=False)
    table = pd.read_csv(tmp_path / "stages" / "step_stages.csv")
    bridging = table[table.stage == "bridging"].set_index("step")
    assert {int(s): (int(r.first_layer), int(r.last_layer)) for s, r in bridging.iterrows()} == {0: (1, 1), 1: (2, 2)}
    assert "stages_per_step" in summary["figures"] and Path(summary["figures"]["stages_per_step"]).stat().st_size > 0
    assert set(pd.read_csv(tmp_path / "stages" / "contributions.csv")["step"]) == {0, 1}
    # redrawn from the tables alone; the one-step figures are not drawn from several steps' rows
    made = redraw(tmp_path / "stages", out_dir=tmp_path / "redrawn")
    assert "stages_per_step" in made and "fig3" not in made and "stages" not in made


def test_planted_step_patching_finds_the_deciding_layer(planted):
    gm, texts, _, docs = planted
    ds = toy_tokenizer(len(gm.docids), 0)[1]
    queries = ds.split("validation")
    targets = [gm.docids.doc_ids[i % len(gm.docids)] for i in range(len(queries))]
    for step in (0, 1):
        pairs = step_pairs(gm, queries, targets, step, n=8, seed=0)
        assert pairs, step
        for p in pairs:
            a, b = gm.docids.sequence(p.clean_doc), gm.docids.sequence(p.corrupted_doc)
            assert a[:step] == b[:step] and a[step] != b[step]
        table = component_sweep(gm, tokenize_pairs(gm, pairs, step=step), kinds=("cross_attn",), metrics=None)
        effect = table[(table.metric == "logit_diff")].groupby("layer").normalised.mean()
        assert effect.idxmax() == STEP_LAYERS[step], (step, effect)
        assert effect[STEP_LAYERS[step]] == pytest.approx(1.0, abs=1e-4)  # the only way the query reaches this step
        assert effect.drop(STEP_LAYERS[step]).abs().max() < 1e-6


def test_kept_pairs_ranks_from_the_pruned_walk_equal_the_full_ranking(planted):
    """keep_correct ranks each query's own document by a depth-1 walk that must score it: its rank must be the full ranking's."""
    gm, texts, _, docs = planted
    pairs = [QueryPair(f"p{i}", texts[i], texts[i + 1], docs[i], docs[i + 3]) for i in range(0, 12, 2)]
    _, table = keep_correct(gm, pairs)
    full = rank_texts(gm, [t for p in pairs for t in (p.clean, p.corrupted)])
    columns = scorer_for(gm).columns([d for p in pairs for d in (p.clean_doc, p.corrupted_doc)])
    expected = rank_of(full.doc_scores, columns).view(-1, 2)
    assert table[["clean_rank", "corrupted_rank"]].values.tolist() == expected.tolist()
    assert (expected > 1).any()  # the pruned walk is tested on documents below the top too


def test_the_cli_reads_the_library_step_keyword():
    from genir_mech import vocabulary
    from genir_mech.retrieval import steps
    from genir_mech.verbs.options import step_list

    assert steps.ALL_STEPS is vocabulary.ALL_STEPS
    assert step_list("all") == steps.ALL_STEPS and step_list("2,0,2") == [0, 2]


# -- bad input ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("steps") / "tiny"
    gm = tiny_genir(decoder_layers=3)
    gm.hf_model.save_pretrained(path)
    gm.tokenizer.save_pretrained(path)
    (path / "model_card.json").write_text(json.dumps({"data": "synthetic:n_docs=20,seed=0,n_pairs=16"}))
    return path


@pytest.mark.parametrize("command,expected", [
    ("stages --model {ckpt} --step 1 --out {out}", "--step 1 is beyond the docid length"),
    ("lens --model {ckpt} --steps 0,3 --out {out}", "--step 3 is beyond the docid length"),
    ("patch --model {ckpt} --target component --step 2 --out {out}", "--step 2 is beyond the docid length"),
    ("contributions --model {ckpt} --step -1 --out {out}", "--step: must be an integer >= 0"),
    ("ablate --model {ckpt} --steps first --out {out}", "--steps: expected an integer >= 0"),
    ("attribute --model {ckpt} --step 0 --steps all --out {out}", "not allowed with argument"),
])
def test_a_step_beyond_the_docid_length_is_one_line(command, expected, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [part.format(ckpt=checkpoint, out=out) for part in command.split()]
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert expected in lines[0], err
    assert not (out.exists() and any(p.suffix in (".csv", ".png") for p in out.rglob("*")))


def test_step_view_refuses_a_step_beyond_the_docid_length(planted):
    gm, _, _, docs = planted
    with pytest.raises(GenIRError, match=r"--step 2 is beyond the docid length .* at most 2 tokens \(steps 0-1\)"):
        step_view(gm, docs, 2)


def test_a_step_no_docid_reaches_is_left_out_with_a_warning(atomic_dataset, atomic, tmp_path):
    from genir_mech.pipelines.inputs import Inputs, QueryConfig
    from genir_mech.pipelines.steps import per_step

    gm = atomic[0]
    inputs = Inputs.for_queries(gm, atomic_dataset, tmp_path, QueryConfig(max_queries=4))
    measure = lambda texts, qids, docs, view: {"n": pd.DataFrame({"queries": [len(view)]})}  # noqa: E731
    assert per_step(inputs, [0], measure)["n"].to_dict("list") == {"step": [0], "queries": [4]}
    # one-token docids end before step 1 (as one-digit naive ids do in a longer scheme)
    with pytest.warns(UserWarning, match=r"has a token at step\(s\) 1; those steps are left out"):
        assert per_step(inputs, [0, 1], measure)["n"]["step"].tolist() == [0]
    with pytest.raises(GenIRError, match="nothing to analyse"):
        per_step(inputs, [1], measure)


def test_a_multi_token_model_without_a_step_is_one_line(planted, tmp_path):
    gm = planted[0]
    with pytest.raises(GenIRError, match=r"has semantic docids of up to 2 tokens: activation patching follows one docid token, so give the decoding step"):
        run_patch(gm, [], tmp_path / "patch", PatchConfig(target="component"), progress=False)

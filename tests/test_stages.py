"""Stage localisation: change-point candidates, functional names, the count criterion, the knob path, bootstrap, planted models.

Pure-function tests on synthetic tidy tables with a known structure (contributions, a span-test callback, lens
facts); tests/test_stage_naming.py runs the real pipeline on planted models.
"""
from __future__ import annotations

import json
import zlib
from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from genir_mech.analyses.change_point import knob_path, optimal_partitions, segment_profile
from genir_mech.analyses.contributions import contributions
from genir_mech.analyses.stage_localisation import (
    CORRECT, MLP_MEAN, MLP_ZERO, READER_ALONE, READER_MEAN, SegmentTest, admissible, localise_stages, name_segments, paper_proportional_stages,
)
from genir_mech.errors import GenIRError
from genir_mech.figures.stages import plot_stage_path, plot_stages
from genir_mech.models.components import KINDS, Site
from genir_mech.models.execution import run
from genir_mech.stage_definition import StageDefinition
from genir_mech.testing import planted_cross_attention, tiny_genir, toy_queries


def synthetic_contributions(stages: dict[str, tuple[int, int]], n_layers: int, n_queries: int = 30, noise: float = 0.05, seed: int = 0,
                            paper_cosine: bool = False) -> pd.DataFrame:
    """A contribution table whose layers follow the named stage pattern, plus per-query noise (cos_resid_post too with `paper_cosine`)."""
    rng = np.random.default_rng(seed)
    rows = []
    for layer in range(n_layers):
        stage = next((name for name, (a, b) in stages.items() if a <= layer <= b), "flat")
        ratio = {"self_attn": 0.1, "cross_attn": 0.2, "mlp": 0.3}
        cos = {"self_attn": 0.1, "cross_attn": 0.1, "mlp": 0.2}
        if stage in ("priming", "interaction", "inert"):
            ratio["mlp"] = 0.9
        if stage == "bridging":
            ratio["cross_attn"] = 0.9
        if stage == "idle":
            ratio["self_attn"] = 0.9
        if stage == "interaction":
            cos = {k: -0.5 for k in KINDS}
        metrics = ("ratio", "cos_residual", "cos_resid_post") if paper_cosine else ("ratio", "cos_residual")
        for q in range(n_queries):
            for k in KINDS:
                for metric in metrics:
                    value = ratio[k] if metric == "ratio" else cos[k]
                    rows.append(("decoder", layer, k, f"q{q}", metric, value + rng.normal(0, noise)))
    return pd.DataFrame(rows, columns=["side", "layer", "component", "query_id", "metric", "value"])


def layer_ablation_table(n_layers: int, expensive_mlp_layers: set[int]) -> pd.DataFrame:
    """A layer_ablation-shaped table: % of queries leaving rank 1 under single-layer mean ablation."""
    rows = [{"layer": -1, "component": "intact", "method": "intact", "metric": "rank>1", "value": 0.0}]
    for layer in range(n_layers):
        for k in KINDS:
            rows.append({"layer": layer, "component": k, "method": "mean", "metric": "rank>1", "value": 40.0 if (k == "mlp" and layer in expensive_mlp_layers) else 2.0})
    return pd.DataFrame(rows)


# -- a synthetic decoder with known functions: span tests and lens facts ------------------------------


class SyntheticDecoder:
    """Per-layer roles (priming, bridging, interaction, idle, inert) and what ablating any span of layers would do to each query.

    Priming layers are each necessary (zeroing any sends 90% off rank 1) and query-agnostic; bridging layers carry the
    query redundantly (the whole block mean-ablated costs 100%, part of it 30%; any part alone keeps 70%); interaction
    MLPs promote the relevant docid (rank share 0.02) and turn against the residual; idle and inert layers do nothing.
    """

    def __init__(self, roles: dict[str, tuple[int, int]], n_layers: int, n_queries: int = 40, seed: int = 0, priming_zero: float = 0.9):
        self.n_layers, self.n_queries, self.seed, self.priming_zero = n_layers, n_queries, seed, priming_zero
        self.role = {l: name for name, (a, b) in roles.items() for l in range(a, b + 1)}
        self.qids = [f"q{q}" for q in range(n_queries)]
        self.calls = 0

    def _layers(self, role):
        return {l for l, r in self.role.items() if r == role}

    def left(self, share: float, key) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(repr((self.seed, key)).encode()))
        out = np.zeros(self.n_queries, dtype=bool)
        out[rng.choice(self.n_queries, int(round(share * self.n_queries)), replace=False)] = True
        return out

    def span_tests(self, spans):
        self.calls += 1
        out = {}
        for a, b in spans:
            inside = set(range(a, b + 1))
            priming, bridging, interaction = self._layers("priming"), self._layers("bridging"), self._layers("interaction")
            zero = self.priming_zero if inside & priming else (1.0 if interaction and interaction <= inside else 0.0)
            mean = 0.6 if inside & interaction else 0.0
            reader = 1.0 if bridging and bridging <= inside else (0.3 if inside & bridging else 0.0)
            kept = 1.0 if bridging and bridging <= inside else (0.7 if inside & bridging else 0.0)
            tests = {CORRECT: np.ones(self.n_queries, dtype=bool), MLP_ZERO: self.left(zero, (a, b, "z")), MLP_MEAN: self.left(mean, (a, b, "m")),
                     READER_MEAN: self.left(reader, (a, b, "r"))}
            if len(inside) < self.n_layers:
                tests[READER_ALONE] = self.left(1.0 - kept, (a, b, "a"))
            out[(a, b)] = tests
        return out

    def lens(self) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        rows = []
        for q in self.qids:
            rank = 500.0
            for layer in range(self.n_layers):
                promotes = self.role.get(layer) == "interaction"
                after = max(1.0, rank / 8) if promotes else rank
                values = {"mlp_out_rank_share": (0.02 if promotes else 0.5) * rng.uniform(0.8, 1.2), "rank_in": rank, "rank_out": after,
                          "mlp_rank_gain": np.log2(rank / after), "reader_rank_gain": 0.0}
                rows += [{"query_id": q, "layer": layer, "metric": m, "value": v} for m, v in values.items()]
                rank = after
        return pd.DataFrame(rows)

    def contributions(self, noise: float = 0.05) -> pd.DataFrame:
        roles = {}
        for l, r in self.role.items():
            roles.setdefault(r, []).append(l)
        pattern = {r: (min(ls), max(ls)) for r, ls in roles.items()}
        return synthetic_contributions(pattern, self.n_layers, self.n_queries, noise=noise, seed=self.seed, paper_cosine=True)

    def localise(self, **kwargs):
        return localise_stages(self.contributions(), None, self.span_tests, lens=self.lens(), **{"bootstrap": 20, **kwargs})


# -- change points ------------------------------------------------------------------------------------


def test_dynamic_programme_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 3))
    parts = optimal_partitions(x, max_stages=3, min_size=1)

    def sse(starts):
        bounds = [*starts, len(x)]
        return sum(((x[a:b] - x[a:b].mean(0)) ** 2).sum() for a, b in zip(bounds, bounds[1:]))

    for k in (1, 2, 3):
        best = min((sse((0, *c)), (0, *c)) for c in combinations(range(1, 7), k - 1))
        assert parts[k][0] == pytest.approx(best[0])
        assert parts[k][1] == best[1]


def test_min_stage_size_is_respected():
    x = np.zeros((8, 2))
    x[3, 0] = 5.0  # a one-layer spike that a min size of 2 may not isolate
    seg = segment_profile(x, min_size=2)
    assert all(b - a + 1 >= 2 for a, b in seg.spans())


def test_knob_path_moves_from_many_stages_to_one():
    rng = np.random.default_rng(0)
    x = np.repeat(np.array([[0.0], [0.2], [0.4]]), 4, axis=0) + rng.normal(0, 0.01, (12, 1))
    path = knob_path(x, (0.001, 0.05, 10.0))
    assert path[0][1].n_stages >= 3 and path[-1][1].n_stages == 1


# -- names from the paper's definitions ---------------------------------------------------------------


def seg(first, last, p=False, b=False, i=False, **numbers):
    values = dict(n_queries=10, mlp_zero_cost=0.0, mlp_mean_cost=0.0, reader_mean_cost=0.0, reader_alone_kept=0.0, mlp_out_rank_share=0.5,
                  mlp_cos_resid_post=0.2, mlp_cos_residual=0.1, rank_in=5.0, rank_out=5.0, mlp_rank_gain=0.0, reader_rank_gain=0.0)
    return SegmentTest(first, last, **{**values, **numbers}, priming=p, bridging=b, interaction=i)


def test_names_follow_the_paper_order():
    named = name_segments([seg(0, 1, p=True), seg(2, 4, b=True), seg(5, 7, i=True, b=True)])
    assert [n.name for n in named] == ["priming", "bridging", "interaction"]
    assert "also meets bridging" in named[2].reason  # the paper's Stage III passes bridging's cost test too


def test_out_of_order_functions_are_unassigned_and_said_so():
    named = name_segments([seg(0, 1, i=True), seg(2, 3, b=True), seg(4, 5, p=True)])
    assert [n.function for n in named] == ["unassigned", "bridging", "unassigned"]
    assert all(n.out_of_order for n in (named[0], named[2]))
    assert "no bridging stage comes before it" in named[0].reason and "comes after bridging" in named[2].reason
    assert [n.name for n in named] == ["unassigned (layers 0-1)", "bridging", "unassigned (layers 4-5)"]  # unique names, never "-2"


def test_a_function_met_again_is_unassigned_not_numbered():
    named = name_segments([seg(0, 1, b=True), seg(2, 3), seg(4, 5, b=True)])
    assert [n.function for n in named] == ["bridging", "unassigned", "unassigned"]
    assert "meets bridging's test again (bridging is layers 0-1)" in named[2].reason
    assert "meets no definition" in named[1].reason and not named[1].out_of_order


def test_neighbours_with_one_function_are_one_stage():
    assert not admissible([seg(0, 1, b=True), seg(2, 3, b=True)])
    assert admissible([seg(0, 1, b=True), seg(2, 3, b=True, i=True)])  # bridging | interaction (which also passes bridging)
    assert not admissible([seg(0, 1), seg(2, 3)])  # two unassigned neighbours


# -- the functional localiser on synthetic decoders ----------------------------------------------------


@pytest.mark.parametrize("n_layers", [8, 24])
def test_paper_pattern_is_found_named_and_stable(n_layers):
    a, b = n_layers // 3, 2 * n_layers // 3
    dec = SyntheticDecoder({"priming": (0, a - 1), "bridging": (a, b - 1), "interaction": (b, n_layers - 1)}, n_layers)
    found = dec.localise()
    assert found.definition.names() == ["priming", "bridging", "interaction"] and found.matches_paper
    assert found.definition.layers("bridging") == list(range(a, b))
    assert found.boundary_stability() == {a: 1.0, b: 1.0}
    assert found.count["bootstrap_same_stages"] == 1.0 and found.naming == "functional"
    assert dec.calls == 1  # every candidate span of the data and of the resamples tested in one batch


@pytest.mark.parametrize("roles,names", [
    ({"bridging": (0, 3), "interaction": (4, 7)}, ["bridging", "interaction"]),
    ({"priming": (0, 1), "bridging": (2, 3), "idle": (4, 5), "interaction": (6, 7)}, ["priming", "bridging", "unassigned", "interaction"]),
])
def test_two_or_four_segments_are_not_forced_into_three(roles, names):
    found = SyntheticDecoder(roles, 8).localise()
    assert found.definition.names() == names
    assert [(min(s.layers), max(s.layers)) for s in found.definition.stages] == list(roles.values())


def test_the_resolution_knob_does_not_decide_the_count():
    dec = SyntheticDecoder({"priming": (0, 1), "bridging": (2, 5), "interaction": (6, 7)}, 8)
    answers = {r: dec.localise(resolution=r, bootstrap=0) for r in (0.003, 0.1, 0.5)}
    assert len({tuple((s.name, s.layers) for s in f.definition.stages) for f in answers.values()}) == 1
    path = answers[0.1].path
    assert path["n_stages"].nunique() > 1  # the profile criterion alone moves with the knob ...
    assert path["chosen"].any() and not path["chosen"].all()  # ... and the report says where the chosen answer lies on it
    assert answers[0.1].count["resolution_range"] is not None


def test_dispensable_mlps_are_not_priming():
    # MLP-dominated layers whose MLPs cost nothing zeroed (the post-LayerNorm case: 0.39%): cheap to mean-ablate, but not necessary
    dec = SyntheticDecoder({"inert": (0, 3), "bridging": (4, 7)}, 8)
    found = dec.localise()
    assert found.definition.names() == ["unassigned", "bridging"]
    row = found.tests[(found.tests.stages == "located") & (found.tests.first_layer == 0)].iloc[0]
    assert row.mlp_zero_cost == 0.0 and row.mlp_mean_cost == 0.0 and not row.priming
    # the profile-only rule of old (MLP-dominant and cheap to mean-ablate) would have called it priming
    assert localise_stages(dec.contributions(), layer_ablation_table(8, set()), bootstrap=0).definition.names()[0] == "priming"


def test_evidence_tables_and_stages_json(tmp_path):
    dec = SyntheticDecoder({"priming": (0, 1), "bridging": (2, 5), "interaction": (6, 7)}, 8)
    found = dec.localise(extra={"paper-proportional": paper_proportional_stages(8)})
    tests = found.tests
    assert set(tests.stages) == {"located", "paper-proportional"}
    assert {"threshold_necessary_ablation", "threshold_cheap_ablation", "reason", "function", "mlp_cos_resid_post", "mlp_cos_residual"} <= set(tests.columns)
    path = found.save(tmp_path / "stages.json")
    data = json.loads(path.read_text())
    assert StageDefinition.load(path).names() == ["priming", "bridging", "interaction"]
    assert data["stages"][0]["tests"]["mlp_zero_cost"] == pytest.approx(0.9) and data["naming"] == "functional"
    assert set(data["thresholds"]) == {"necessary_ablation", "cheap_ablation", "bridging_cost", "bridging_alone", "interaction_rank_share", "negative_cos"}
    assert data["count"]["n_stages"] == 3 and "finest" in data["count"]["criterion"]
    summary = found.summary()
    assert "thresholds" in summary and "zeroing them sends at least this share" in summary
    fig = plot_stage_path(found.path, 8, found.definition, tmp_path / "stage_path.png")
    assert fig.axes and (tmp_path / "stage_path.png").stat().st_size > 0


def test_functional_bootstrap_is_deterministic_for_a_seed():
    dec = SyntheticDecoder({"priming": (0, 1), "bridging": (2, 5), "interaction": (6, 7)}, 8, n_queries=12)
    contrib = dec.contributions(noise=0.6)
    one, two = (localise_stages(contrib, None, dec.span_tests, lens=dec.lens(), bootstrap=15, seed=3) for _ in range(2))
    pd.testing.assert_frame_equal(one.stability, two.stability)
    pd.testing.assert_frame_equal(one.n_stages_distribution, two.n_stages_distribution)


def test_paper_proportional_split_scales_with_depth():
    spans = lambda d: [(min(s.layers), max(s.layers)) for s in d.stages]  # noqa: E731
    assert spans(paper_proportional_stages(24)) == [(0, 6), (7, 17), (18, 23)]
    assert spans(paper_proportional_stages(8)) == [(0, 1), (2, 5), (6, 7)]
    assert spans(paper_proportional_stages(3)) == [(0, 0), (1, 1), (2, 2)]
    assert paper_proportional_stages(2) is None


# -- without functional tests: provisional names from the profile -------------------------------------


def test_profile_only_names_are_provisional():
    spans = {"priming": (0, 3), "bridging": (4, 7)}
    contrib = synthetic_contributions(spans, 8)
    found = localise_stages(contrib, layer_ablation_table(8, set()), bootstrap=0)
    assert found.definition.names() == ["priming", "bridging"] and found.naming == "profile"
    assert "provisional" in found.summary()
    # costly to mean-ablate or no ablation at all -> not priming, and never a "-dominant" or numbered name
    assert localise_stages(contrib, layer_ablation_table(8, {0, 1, 2, 3}), bootstrap=0).definition.names() == ["unassigned", "bridging"]
    assert localise_stages(contrib, None, bootstrap=0).definition.names() == ["unassigned", "bridging"]


def test_flat_profile_gives_one_stage_not_three():
    found = localise_stages(synthetic_contributions({}, 12, noise=0.05), bootstrap=20)
    assert len(found.definition.stages) == 1
    assert found.definition.layers(found.definition.names()[0]) == list(range(12))
    assert "does not show the paper's three stages" in found.summary()


def test_bootstrap_is_deterministic_for_a_seed():
    contrib = synthetic_contributions({"priming": (0, 3), "bridging": (4, 5), "interaction": (6, 7)}, 8, n_queries=8, noise=0.8)
    one = localise_stages(contrib, bootstrap=30, seed=7)
    two = localise_stages(contrib, bootstrap=30, seed=7)
    other = localise_stages(contrib, bootstrap=30, seed=8)
    pd.testing.assert_frame_equal(one.stability, two.stability)
    pd.testing.assert_frame_equal(one.n_stages_distribution, two.n_stages_distribution)
    assert not (one.stability.equals(other.stability) and one.n_stages_distribution.equals(other.n_stages_distribution))
    assert ((one.stability["frequency"] >= 0) & (one.stability["frequency_within_1"] <= 1)).all()
    assert (one.stability["frequency"] <= one.stability["frequency_within_1"]).all()


def test_incomplete_tables_are_refused():
    contrib = synthetic_contributions({}, 4)
    with pytest.raises(GenIRError, match="every layer"):
        localise_stages(contrib[contrib["layer"] != 2], bootstrap=0)
    with pytest.raises(GenIRError, match="cos_residual"):
        localise_stages(contrib[contrib["metric"] == "ratio"], bootstrap=0)
    dec = SyntheticDecoder({"bridging": (0, 1), "interaction": (2, 3)}, 4)
    short = lambda spans: {s: {k: v[:3] for k, v in t.items()} for s, t in dec.span_tests(spans).items()}  # noqa: E731
    with pytest.raises(GenIRError, match="one value per test query"):
        localise_stages(dec.contributions(), None, short, bootstrap=0)


# -- the two residual cosines -----------------------------------------------------------------------


def test_both_cosine_definitions_are_measured_and_labelled():
    gm = tiny_genir(decoder_layers=3)
    texts = toy_queries(gm, 4)
    ids = [str(i) for i in range(len(texts))]
    plain = contributions(gm, texts, ids)
    both = contributions(gm, texts, ids, paper_cosine=True)
    assert set(plain.metric) == {"ratio", "cos_residual"} and set(both.metric) == {"ratio", "cos_residual", "cos_resid_post"}
    pd.testing.assert_frame_equal(plain, both[both.metric != "cos_resid_post"].reset_index(drop=True))
    # the paper's cosine: the MLP output against the residual after the layer (reference code: cosine_similarity(comp, resid_post))
    values = run(gm, gm.batch(texts), reads=[Site("decoder", 1, "mlp"), Site("decoder", 1, "", "resid_post")]).values
    out, post = values[Site("decoder", 1, "mlp")][:, -1], values[Site("decoder", 1, "", "resid_post")][:, -1]
    expected = (out * post).sum(-1) / (out.norm(dim=-1) * post.norm(dim=-1))
    got = both[(both.metric == "cos_resid_post") & (both.layer == 1) & (both.component == "mlp")].set_index("query_id").value
    assert np.allclose(got[ids].to_numpy(), expected.numpy(), atol=1e-5)


# -- planted model through the contribution profile alone ------------------------------------------


@pytest.mark.parametrize(
    "n_layers,d_model,heads,planted",
    [(4, 24, 2, [1, 2]), (8, 40, 4, [3, 4, 5]), (24, 16, 2, [9, 10, 11, 12, 13, 14])],
)
def test_planted_bridging_layers_are_recovered(n_layers, d_model, heads, planted, tmp_path):
    gm = planted_cross_attention(tiny_genir(decoder_layers=n_layers, d_model=d_model, num_heads=heads), planted)
    texts = toy_queries(gm, 16)
    found = localise_stages(contributions(gm, texts, [str(i) for i in range(len(texts))]), bootstrap=10)
    assert found.definition.layers("bridging") == planted
    assert [n for n in found.definition.names() if n.startswith("bridging")] == ["bridging"]
    assert set(found.boundary_stability()) >= {planted[0]}
    # the definition round-trips through the format the ablation verbs read
    path = found.save(tmp_path / "stages.json")
    assert StageDefinition.load(path).check(n_layers).layers("bridging") == planted
    fig = plot_stages(found.layer_means, found.stability, found.definition, tmp_path / "stages.png")
    assert fig.axes and all((tmp_path / f"stages.{fmt}").stat().st_size > 0 for fmt in ("png", "pdf"))


def test_a_decoder_only_model_reads_the_query_with_self_attention():
    contrib = synthetic_contributions({"idle": (0, 5)}, 6)  # self-attention dominates every layer
    contrib = contrib[contrib.component != "cross_attn"]
    found = localise_stages(contrib, bootstrap=0)
    assert found.definition.names() == ["bridging"] and "provisional" in found.summary()

"""Plans, features, policy and ranking; and the identity that matters most: the pmf the
serving policy computes equals what VW computes on the reward line the learner will read."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import vowpal_wabbit_next as vw
from hypothesis import given
from hypothesis import strategies as st

from ltrr.agents.learning import DEFAULT_VW_ARGS, learn_lines
from ltrr.retrieval import metrics as m
from ltrr.retrieval.catalog import Catalog, load_jsonl
from ltrr.retrieval.plans import PlanError, default_plans, max_budgets, parse_plans
from ltrr.retrieval.policy import LoadedModel, Policy, load_model, sample
from ltrr.retrieval.ranking import rank
from ltrr.retrieval.search import Searcher
from ltrr.retrieval.strategies.base import Candidate
from ltrr.retrieval.strategies.fresh import FreshStrategy
from ltrr.retrieval.strategies.lexical import LexicalStrategy
from ltrr.retrieval.strategies.memory import MemoryStrategy
from ltrr.retrieval.strategies.popular import PopularStrategy
from ltrr.schemas.contracts import Contract
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression
from ltrr.schemas.validation import check
from ltrr.schemas.vw_args import VWArgsError, check_vw_args
from ltrr.state.q2e import Q2EMemory
from ltrr.state.store import MemoryStore

CATALOG = Path(__file__).parent.parent / "data" / "catalog.jsonl"
NOW = 1_795_000_000_000
NAMES = ["lexical", "semantic", "memory", "popular", "fresh"]


def test_default_plans_are_every_subset_up_to_three() -> None:
    plans = default_plans(NAMES)
    assert len(plans) == 5 + 10 + 10
    assert len({p.id for p in plans}) == 25
    assert all(sum(p.budgets.values()) in (99, 100) for p in plans)
    assert max_budgets(plans) == dict.fromkeys(NAMES, 100)


def test_explicit_plans_and_errors() -> None:
    plans = parse_plans("lexical:60+memory:40; semantic", NAMES)
    assert [(p.id, dict(p.budgets)) for p in plans] == [
        ("lexical+memory", {"lexical": 60, "memory": 40}),
        ("semantic", {"semantic": 100}),
    ]
    for bad in ("nosuch:10", "lexical:x", "lexical:0", "lexical;lexical", ""):
        with pytest.raises(PlanError):
            parse_plans(bad, NAMES)


def test_sampling_is_replayable_and_respects_zeros() -> None:
    pmf = [0.0, 0.5, 0.0, 0.5]
    draws = [sample(pmf, seed) for seed in range(200)]
    assert set(draws) == {1, 3}
    assert draws == [sample(pmf, seed) for seed in range(200)]


def test_cold_start_pmf() -> None:
    assert Policy().pmf({"c": {}}, [{"p": {}}] * 4)[0] == (0.25,) * 4
    pmf, version = Policy(epsilon=0.3, default_plan=2).pmf({"c": {}}, [{"p": {}}] * 4)
    assert version == 0 and pmf[2] == pytest.approx(0.7) and pmf[0] == pytest.approx(0.1)


def test_ranking_unions_with_provenance_and_boost() -> None:
    plan = parse_plans("lexical:2+popular:2", ["lexical", "popular"])[0]
    results = {
        "lexical": [Candidate("a", 10.0), Candidate("b", 5.0), Candidate("c", 4.0)],
        "popular": [Candidate("b", 0.9), Candidate("d", 0.45)],
    }
    ranked = rank(plan, results, 10)
    assert [(r.entity_id, r.strategies) for r in ranked] == [
        ("b", ("lexical", "popular")),
        ("a", ("lexical",)),
        ("d", ("popular",)),
    ]
    assert ranked[0].score == pytest.approx(1.5)
    boosted = rank(plan, results, 2, q2e={"d": 2.0}, q2e_boost=2.0)
    assert [r.entity_id for r in boosted] == ["d", "b"]


def _rank_by_definition(plan, results, k, q2e, boost):  # type: ignore[no-untyped-def]
    """The ranking rule as the module docstring states it, spelled out slowly."""
    scores: dict[str, float] = {}
    provenance: dict[str, list[str]] = {}
    for name, budget in plan.budgets.items():
        found = list(results.get(name, ()))[:budget]
        best = max((c.score for c in found), default=0.0)
        for cand in found:
            norm = cand.score / best if best > 0 else 0.0
            scores[cand.entity_id] = scores.get(cand.entity_id, 0.0) + norm
            provenance.setdefault(cand.entity_id, []).append(name)
    best_q = max(q2e.values(), default=0.0)
    if best_q > 0:
        for entity_id in scores:
            scores[entity_id] += boost * max(0.0, q2e.get(entity_id, 0.0)) / best_q
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [(e, round(s, 6), tuple(provenance[e])) for e, s in ordered]


_ids = st.sampled_from("abcdefghij")
_found = st.lists(st.builds(Candidate, _ids, st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0])))


@given(
    st.fixed_dictionaries({"lexical": _found, "popular": _found}),
    st.dictionaries(_ids, st.sampled_from([-1.0, 0.0, 0.25, 1.0])),
    st.integers(min_value=0, max_value=12),
)
def test_ranking_follows_its_rule_exactly_ties_by_entity_id(
    results: dict[str, list[Candidate]], q2e: dict[str, float], k: int
) -> None:
    """Few distinct scores, so ties everywhere: the fast ordering equals the rule."""
    plan = parse_plans("lexical:4+popular:3", ["lexical", "popular"])[0]
    ranked = rank(plan, results, k, q2e, 0.5)
    assert [(r.entity_id, r.score, r.strategies) for r in ranked] == _rank_by_definition(
        plan, results, k, q2e, 0.5
    )


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    catalog = Catalog()
    catalog.apply(load_jsonl(CATALOG)[0])
    memory = Q2EMemory(MemoryStore())
    strategies = {
        "lexical": LexicalStrategy(catalog),
        "memory": MemoryStrategy(memory),
        "popular": PopularStrategy(catalog),
        "fresh": FreshStrategy(catalog, now_ms=lambda: NOW),
    }
    return Searcher(catalog, strategies, default_plans(list(strategies)), Policy())


def test_impression_is_a_valid_contract_and_replays(searcher: Searcher) -> None:
    context = {
        "device": "mobile",
        "locale": "en US",
        "slots": {"artist": "taylor swift"},
        "user": {"plays_30d": 12, "name": "x"},
    }
    result = searcher.search("Love Story", context, 5, now_ms=NOW, seed=7)
    check(Contract.SEARCH_IMPRESSION, result.impression)
    imp = result.impression
    assert imp["pmf"][imp["chosen"]] == result.probability
    assert imp["context"]["c"]["slot_artist"] == "taylor_swift"
    assert "user_name" not in imp["context"]["c"]
    again = searcher.search("Love Story", context, 5, now_ms=NOW, seed=7)
    assert again.impression["chosen"] == imp["chosen"]  # same seed, same draw
    assert context["slots"] == {"artist": "taylor swift"}  # inputs not mutated
    assert len(result.results) <= 5


def test_serving_pmf_equals_vw_on_the_reward_line(searcher: Searcher) -> None:
    lines = []
    for i, query in enumerate(["love story", "queen", "rainy day", "podcast", "love"] * 30):
        result = searcher.search(query, {}, 5, now_ms=NOW + i, seed=i)
        plan = result.plan.id
        reward = 1.0 if ("lexical" in plan) == (query != "love") else 0.0
        lines.append(
            orjson.dumps(reward_event(SearchImpression.from_dict(result.impression), reward))
        )
    learners = learn_lines(lines, MemoryStore(), DEFAULT_VW_ARGS)
    model = load_model(1, DEFAULT_VW_ARGS, learners.model_bytes("default"), NOW)
    searcher.policy.swap(model)
    try:
        result = searcher.search("love story", {}, 5, now_ms=NOW, seed=1)
        assert result.model_version == 1
        line = orjson.dumps(reward_event(SearchImpression.from_dict(result.impression), 0.0))
        ws = model.workspace
        learned_view = dict(ws.predict_one(vw.DSJsonFormatParser(ws).parse_json(line.decode())))
        served = result.impression["pmf"]
        assert served == pytest.approx([learned_view[i] for i in range(len(served))], abs=1e-6)
        assert max(served) > 0.5  # the model learned something, not uniform
    finally:
        searcher.policy.model = None


ELIM_ARGS = ("--cb_explore_adf", "--squarecb", "--elim", "-q", "cp", "-q", "cr", "-q", "sp")


def _elim_model() -> LoadedModel:
    """A real SquareCB-with-elimination model (refused by the allow-list, so built directly):
    this Vowpal Wabbit gives some plans negative probabilities with it; before it has learned
    anything, on every request (plan 0 at -5)."""
    ws = vw.Workspace([*ELIM_ARGS, "--quiet"])
    return LoadedModel(2, ws, vw.JsonFormatParser(ws), NOW, ELIM_ARGS)


def test_a_model_without_a_distribution_falls_back_to_the_cold_start_rule(
    searcher: Searcher,
) -> None:
    """A plan with a negative probability would make the impression one the learner refuses
    (its pmf fails the contract) and orphan its actions: such a request is decided by the
    cold-start rule instead (model version 0), counted, and the impression stays valid."""
    with pytest.raises(VWArgsError, match="negative probabilities"):
        check_vw_args(ELIM_ARGS)
    searcher.policy.swap(_elim_model())
    before = m.POLICY_FALLBACKS._value.get()
    try:
        fell_back = 0
        for i, query in enumerate(["love story", "queen", "rainy day", "podcast", "love"] * 4):
            result = searcher.search(query, {}, 5, now_ms=NOW + i, seed=i)
            pmf = result.impression["pmf"]
            assert min(pmf) >= 0 and sum(pmf) == pytest.approx(1.0)
            assert check(Contract.SEARCH_IMPRESSION, result.impression) is None
            fell_back += result.model_version == 0
        assert fell_back == 20  # every request: the model scored plan 0 at -5
        assert m.POLICY_FALLBACKS._value.get() - before == fell_back
    finally:
        searcher.policy.model = None

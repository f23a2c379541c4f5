"""Plans that copy another plan for a query are not offered: a strategy that ranks nothing
(no candidates, no positive score, every score alike) adds nothing to a plan, so exploring
``semantic+popular`` where popularity is 0 everywhere costs what exploring ``semantic`` costs
and teaches nothing new (``features.void_strategies``, ``plans.offered_plans``)."""

from __future__ import annotations

import orjson
import pytest
import vowpal_wabbit_next as vw

from ltrr.agents.learning import DEFAULT_VW_ARGS, learn_lines
from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.features import void_strategies
from ltrr.retrieval.plans import offered_plans, parse_plans
from ltrr.retrieval.policy import Policy, load_model
from ltrr.retrieval.search import Searcher
from ltrr.retrieval.strategies.base import Candidate
from ltrr.retrieval.strategies.fresh import FreshStrategy
from ltrr.retrieval.strategies.lexical import LexicalStrategy
from ltrr.retrieval.strategies.popular import PopularStrategy
from ltrr.schemas.contracts import Contract
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression
from ltrr.schemas.validation import check
from ltrr.state.store import MemoryStore

NAMES = ["lexical", "semantic", "memory", "popular", "fresh"]
NOW = 1_795_000_000_000


def cands(*scores: float) -> list[Candidate]:
    return [Candidate(f"e{i}", s) for i, s in enumerate(scores)]


def test_void_strategies_are_those_that_rank_nothing() -> None:
    results = {
        "lexical": cands(3.0, 1.0),
        "semantic": cands(0.4),  # a lone hit ranks
        "memory": cands(0.7, 0.7, 0.2),  # some ties, still an order
        "popular": cands(0.0, 0.0, 0.0),  # every popularity 0
        "fresh": [],  # nothing new
        "tied": cands(0.5, 0.5, 0.5),  # as many as asked for, every score alike
        "few": cands(0.5, 0.5),  # fewer than asked for, alike: still a selection
        "negative": cands(-0.1, -0.3),
    }
    budgets = {"tied": 3, "few": 3}
    assert void_strategies(results, budgets) == {"popular", "fresh", "tied", "negative"}
    assert void_strategies({"lexical": cands(1.0)}) == frozenset()


def ids(plans: str, offered: list[bool]) -> list[str]:
    return [p.id for p, ok in zip(parse_plans(plans, NAMES), offered, strict=True) if ok]


def test_offered_plans_drop_the_copies_and_keep_the_default() -> None:
    spec = (
        "lexical;semantic;memory;popular;fresh;lexical:50+semantic:50;lexical:50+popular:50;"
        "semantic:50+fresh:50;memory:50+popular:50;popular:50+fresh:50;"
        "lexical:20+semantic:20+memory:20+popular:20+fresh:20"
    )
    plans = parse_plans(spec, NAMES)
    union = len(plans) - 1
    offered = offered_plans(plans, {"popular", "fresh"}, keep=union)
    assert ids(spec, offered) == [
        "lexical",
        "semantic",
        "memory",
        "lexical+semantic",
        "lexical+semantic+memory+popular+fresh",  # the default, and a copy of no other plan
    ]
    # Nothing void: every plan is offered.
    assert all(offered_plans(plans, set(), keep=union))
    # Everything void: every plan is offered rather than none.
    assert all(offered_plans(plans, set(NAMES)))


def test_a_copy_with_no_exact_twin_is_offered_once() -> None:
    spec = "memory:50+popular:50;memory:50+fresh:50;lexical:50+fresh:50;lexical:50+memory:50"
    plans = parse_plans(spec, NAMES)
    # No plan is memory alone: the first plan that amounts to it stays, the second goes;
    # lexical+fresh is lexical alone, which no plan offers either, so it stays.
    assert offered_plans(plans, {"popular", "fresh"}) == [True, False, True, True]


def test_cold_pmf_finds_the_default_among_the_offered_plans() -> None:
    policy = Policy(epsilon=0.2, default_plan=4)
    pmf, version = policy.pmf({"c": {}}, [{"p": {}}] * 3, offered=[0, 2, 4])
    assert version == 0 and pmf == pytest.approx((0.1, 0.1, 0.8))
    # The default not offered: uniform over the offered plans.
    pmf, _ = policy.pmf({"c": {}}, [{"p": {}}] * 2, offered=[0, 2])
    assert pmf == pytest.approx((0.5, 0.5))


@pytest.fixture()
def searcher() -> Searcher:
    """Three documents, every popularity 0 and every one added long ago: ``popular`` returns
    them all tied at 0 and ``fresh`` returns nothing, for every query."""
    catalog = Catalog()
    catalog.apply(
        Entity.from_dict(
            {
                "schema_version": 1,
                "id": f"d{i}",
                "type": "document",
                "title": title,
                "genres": [],
                "popularity": 0.0,
                "added_at_ms": 0,
            }
        )
        for i, title in enumerate(["red apples", "green apples", "blue sky"])
    )
    strategies = {
        "lexical": LexicalStrategy(catalog),
        "popular": PopularStrategy(catalog),
        "fresh": FreshStrategy(catalog, now_ms=lambda: NOW),
    }
    plans = parse_plans(
        "lexical;popular;fresh;lexical:50+popular:50;lexical:50+fresh:50;"
        "popular:50+fresh:50;lexical:34+popular:33+fresh:33",
        list(strategies),
    )
    return Searcher(catalog, strategies, plans, Policy(epsilon=0.2, default_plan=6))


def test_searcher_offers_and_logs_only_the_plans_that_differ(searcher: Searcher) -> None:
    result = searcher.search("apples", {}, 3, now_ms=NOW, seed=3, explain=True)
    imp = result.impression
    check(Contract.SEARCH_IMPRESSION, imp)
    assert [p["id"] for p in imp["plans"]] == ["lexical", "lexical+popular+fresh"]
    assert imp["pmf"] == pytest.approx([0.2, 0.8])  # the default keeps 1 - epsilon
    assert result.plan.id == imp["plans"][imp["chosen"]]["id"]
    assert result.explain is not None
    # explain still ranks every configured plan; plans not offered have probability 0
    assert len(result.explain["plans"]) == 7
    assert result.explain["pmf"] == pytest.approx([0.2, 0, 0, 0, 0, 0, 0.8])
    # with void strategies not skipped, every plan is offered
    searcher.skip_void_plans = False
    assert len(searcher.search("apples", {}, 3, now_ms=NOW, seed=3).impression["plans"]) == 7


def test_served_pmf_equals_vw_on_the_reward_line_of_an_offered_subset(
    searcher: Searcher,
) -> None:
    lines = []
    for i in range(60):
        result = searcher.search("apples", {}, 3, now_ms=NOW + i, seed=i)
        reward = 1.0 if result.plan.id == "lexical" else 0.0
        event = reward_event(SearchImpression.from_dict(result.impression), reward)
        lines.append(orjson.dumps(event))
    learners = learn_lines(lines, MemoryStore(), DEFAULT_VW_ARGS)
    model = load_model(1, DEFAULT_VW_ARGS, learners.model_bytes("default"), NOW)
    searcher.policy.swap(model)
    result = searcher.search("apples", {}, 3, now_ms=NOW, seed=1)
    line = orjson.dumps(reward_event(SearchImpression.from_dict(result.impression), 0.0))
    ws = model.workspace
    learned = dict(ws.predict_one(vw.DSJsonFormatParser(ws).parse_json(line.decode())))
    served = result.impression["pmf"]
    assert len(served) == 2
    assert served == pytest.approx([learned[i] for i in range(len(served))], abs=1e-6)
    assert served[0] > 0.9  # learned: lexical alone

"""The bandit's features (pure): context, query words, the shared strategy signals and the
per-plan namespaces, and that a decision built from them is a valid VW example."""

from __future__ import annotations

from datetime import UTC, datetime

from ltrr.retrieval.features import (
    clean,
    context_features,
    plan_features,
    strategy_features,
    strategy_signals,
)
from ltrr.retrieval.plans import PlanSpec, default_plans, max_budgets
from ltrr.retrieval.strategies.base import Candidate

NOON_MONDAY = int(datetime(2026, 11, 23, 12, 30, tzinfo=UTC).timestamp() * 1000)


def cands(*scores: float) -> list[Candidate]:
    return [Candidate(f"e{i}", s) for i, s in enumerate(scores)]


def test_clean_makes_names_vw_accepts() -> None:
    assert clean(" my key|x:y ") == "my_key_x_y"
    assert clean("_hidden") == "hidden"
    assert clean("   ") == "x"
    assert len(clean("a" * 500)) == 128


def test_context_and_query_words() -> None:
    ns = context_features(
        "Taylor Swift 1989",
        {
            "locale": "en-US",
            "device": "tv box",
            "slots": {"artist": "taylor swift"},
            "user": {"plays_30d": 12, "flag": True, "name": "x"},
        },
        NOON_MONDAY,
    )
    c, q = ns["c"], ns["q"]
    assert c["qlen"] == 3.0 and c["shape"] == "Xx-Xx-d" and c["digits"] is True
    assert c["hour"] == "h12" and c["weekday"] == "d0" and c["script"] == "latin"
    assert c["locale"] == "en-US" and c["device"] == "tv_box"
    assert c["slot_artist"] == "taylor_swift"
    assert c["user_plays_30d"] == 12.0 and "user_flag" not in c and "user_name" not in c
    assert "single_token" not in c
    assert q == {"taylor": True, "swift": True, "1989": True}
    assert context_features("love", {"hour": 25}, NOON_MONDAY)["c"]["single_token"] is True
    assert context_features("love", {"hour": 25}, NOON_MONDAY)["c"]["hour"] == "h1"
    assert "q" not in context_features("  ", {}, NOON_MONDAY)


def test_strategy_namespace_carries_every_strategy_signal() -> None:
    plans = default_plans(["lexical", "semantic", "memory"], max_size=2, total_budget=20)
    results = {
        "lexical": cands(12.0, 3.0),  # an exact title stands out
        "semantic": cands(0.6, 0.59, 0.58),  # close neighbours, no standout
        "memory": [],
    }
    s = strategy_features(strategy_signals(results), max_budgets(plans))["s"]
    assert s["lexical_n"] == 2 / 20 and s["semantic_n"] == 3 / 20 and s["memory_n"] == 0.0
    assert s["lexical_top"] == 1.0 and s["memory_top"] == 0.0
    assert 0.0 < s["semantic_top"] < 0.1
    assert s["lexical_gap"] == 0.75 and s["semantic_gap"] < 0.05 and s["memory_gap"] == 0.0
    assert strategy_features({}, {}) == {}


def test_plan_namespaces_hold_only_the_plans_strategies() -> None:
    plans = [
        PlanSpec("lexical", {"lexical": 20}),
        PlanSpec("lexical+memory", {"lexical": 10, "memory": 10}),
    ]
    results = {"lexical": cands(5.0, 5.0, 1.0), "memory": cands(2.0)}
    first, second = plan_features(plans, strategy_signals(results))
    assert first["p"] == {"lexical": True, "plan": "lexical"}
    assert set(first["r"]) == {"lexical_n", "lexical_top", "lexical_gap"}
    assert first["r"]["lexical_n"] == 3 / 20 and first["r"]["lexical_gap"] == 0.0
    assert second["p"]["plan"] == "lexical+memory" and second["r"]["memory_gap"] == 1.0
    assert second["r"]["lexical_n"] == 3 / 10 and second["r"]["memory_top"] == 0.0
    assert second["r"]["lexical_top"] == 1.0

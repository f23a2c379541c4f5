"""Query-strategy history features (pure), worked by hand on a tiny query, and their path
from Q2E memory into a logged, valid impression."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltrr.retrieval.catalog import Catalog, load_jsonl
from ltrr.retrieval.history import engaged_mass, plan_history, shared_history
from ltrr.retrieval.plans import PlanSpec, default_plans
from ltrr.retrieval.policy import Policy
from ltrr.retrieval.ranking import rank
from ltrr.retrieval.search import Searcher
from ltrr.retrieval.strategies.base import Candidate
from ltrr.retrieval.strategies.lexical import LexicalStrategy
from ltrr.retrieval.strategies.memory import MemoryStrategy
from ltrr.schemas.contracts import Contract
from ltrr.schemas.validation import check
from ltrr.state.q2e import Q2EMemory
from ltrr.state.store import MemoryStore

CATALOG = Path(__file__).parent.parent / "data" / "catalog.jsonl"
NOW = 1_700_000_000_000

#: Engaged with after this query: a (mass 2), b and c (1 each); x was shown and ignored.
REMEMBERED = {"a": 2.0, "b": 1.0, "c": 1.0, "x": 0.0}
RESULTS = {
    "lexical": [Candidate("a", 3.0), Candidate("x", 2.0), Candidate("d", 1.0)],
    "semantic": [Candidate("b", 0.9), Candidate("c", 0.8), Candidate("a", 0.1)],
    "memory": [Candidate("a", 2.0), Candidate("b", 1.0), Candidate("c", 1.0)],
}


def test_engaged_mass_keeps_only_positive_rows() -> None:
    assert engaged_mass(REMEMBERED) == {"a": 2.0, "b": 1.0, "c": 1.0}


def test_shared_history_by_hand() -> None:
    s = shared_history(REMEMBERED, RESULTS, {"lexical": 2, "semantic": 3, "memory": 1}, k=2)
    # lexical at its budget 2 holds a, x: 2 of the mass 4; its top 2 the same, x ignored.
    assert (s["lexical_hist"], s["lexical_histk"], s["lexical_bad"]) == (0.5, 0.5, 0.5)
    # semantic at 3 holds a, b, c (all of it); its top 2 b, c (2 of 4); nothing ignored.
    assert (s["semantic_hist"], s["semantic_histk"], s["semantic_bad"]) == (1.0, 0.5, 0.0)
    # memory at 1 holds a (2 of 4); its top 2 a, b (3 of 4).
    assert (s["memory_hist"], s["memory_histk"], s["memory_bad"]) == (0.5, 0.75, 0.0)
    assert s["hist"] == 1.0


def test_plan_history_by_hand() -> None:
    plans = [
        PlanSpec("lexical", {"lexical": 2}),
        PlanSpec("semantic", {"semantic": 3}),
        PlanSpec("semantic+memory", {"semantic": 1, "memory": 1}),
    ]
    shown = [[r.entity_id for r in rank(p, RESULTS, 2)] for p in plans]
    assert shown == [["a", "x"], ["b", "c"], ["a", "b"]]  # ties by id: a before b
    lexical, semantic, both = plan_history(REMEMBERED, plans, RESULTS, shown)
    # lexical: pool {a, x} = 2/4 of the mass; shows a, x (x ignored before: 1 of 2 slots).
    assert lexical == {"hist": 0.5, "hist_top": 0.5, "hist_bad": 0.5}
    # semantic: pool {b, c, a} = 4/4; shows b (1.0), c (0.8/0.9) = 2/4.
    assert semantic == {"hist": 1.0, "hist_top": 0.5, "hist_bad": 0.0}
    # semantic:1 + memory:1: pool {b, a} = 3/4, both shown = 3/4.
    assert both == {"hist": 0.75, "hist_top": 0.75, "hist_bad": 0.0}


def test_no_history_no_features() -> None:
    plans = [PlanSpec("lexical", {"lexical": 2})]
    assert shared_history({"x": 0.0}, RESULTS, {"lexical": 2}) == {}
    assert plan_history({}, plans, RESULTS, [["a"]]) == [{}]


def test_q2e_remembered_is_observed_rows_only() -> None:
    memory = Q2EMemory(MemoryStore())
    memory.index_entity({"id": "c", "type": "track", "title": "Love Song"})
    memory.record("Love", ["a", "b"], [("a", "click", NOW)], NOW)
    remembered = memory.remembered("  love ", NOW)
    assert set(remembered) == {"a", "b"}  # c is only predicted
    assert remembered["a"] == pytest.approx(1 / 2**0.5)  # one click over one impression
    assert remembered["b"] == 0.0  # shown, ignored
    assert memory.remembered("", NOW) == {}


def test_search_logs_history_features_once_the_query_has_engagement() -> None:
    catalog = Catalog()
    catalog.apply(load_jsonl(CATALOG)[0])
    memory = Q2EMemory(MemoryStore())
    strategies = {
        "lexical": LexicalStrategy(catalog),
        "memory": MemoryStrategy(memory, now_ms=lambda: NOW),
    }
    plans = default_plans(list(strategies))
    searcher = Searcher(catalog, strategies, plans, Policy(), history=True)
    before = searcher.search("queen", {}, 5, now_ms=NOW, seed=1).impression
    assert "hist" not in before["context"].get("s", {})
    assert all("hist" not in p["features"]["r"] for p in before["plans"])
    memory.record("queen", ["artist:queen"], [("artist:queen", "click", NOW)], NOW)
    result = searcher.search("Queen", {}, 5, now_ms=NOW, seed=1, explain=True)
    after = result.impression
    assert result.explain is not None  # rankings made once for the features, reused
    assert result.explain["plans"][result.plan.id] == [r.entity_id for r in result.results]
    check(Contract.SEARCH_IMPRESSION, after)
    s = after["context"]["s"]
    assert s["hist"] == 1.0 and s["lexical_hist"] == 1.0 and s["memory_hist"] == 1.0
    by_plan = {p["id"]: p["features"]["r"] for p in after["plans"]}
    assert by_plan["lexical"]["hist_top"] == 1.0 and by_plan["memory"]["hist_top"] == 1.0
    off = Searcher(catalog, strategies, plans, Policy())  # off by default
    assert "hist" not in off.search("queen", {}, 5, now_ms=NOW, seed=1).impression["context"]["s"]


def test_the_history_features_setting_reaches_the_retrieval_worker() -> None:
    from pathlib import Path

    from ltrr.retrieval.server import RetrievalWorker
    from ltrr.streams.settings import Settings

    catalog = Path(__file__).parents[1] / "data" / "catalog.jsonl"
    for on in (False, True):
        settings = Settings(
            catalog_path=str(catalog),
            strategies="popular,memory",
            history_features=on,
            snapshot_key="k",
        )
        assert RetrievalWorker(settings).searcher.history is on

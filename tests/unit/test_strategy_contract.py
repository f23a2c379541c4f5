"""Every built-in strategy keeps the contract of ``check_strategy`` (which plugin authors call
on their own), on the small music catalog, before and after catalog changes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ltrr.retrieval.catalog import Catalog, load_jsonl
from ltrr.retrieval.strategies.base import Candidate, Strategy
from ltrr.retrieval.strategies.contract import StrategyContractError, check_strategy
from ltrr.retrieval.strategies.fresh import FreshStrategy
from ltrr.retrieval.strategies.lexical import LexicalStrategy
from ltrr.retrieval.strategies.memory import MemoryStrategy
from ltrr.retrieval.strategies.popular import PopularStrategy
from ltrr.state.q2e import Q2EMemory
from ltrr.state.store import MemoryStore

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog.jsonl"
NOW_MS = 1_795_000_000_000

BUILT_IN: dict[str, Callable[[Catalog], Strategy]] = {
    "lexical": LexicalStrategy,
    "popular": PopularStrategy,
    "fresh": lambda catalog: FreshStrategy(catalog, now_ms=lambda: NOW_MS),
    "memory (empty)": lambda catalog: MemoryStrategy(Q2EMemory(MemoryStore())),
    "memory (remembered)": lambda catalog: MemoryStrategy(remembered(catalog)),
}


def remembered(catalog: Catalog) -> Q2EMemory:
    """Clicks and plays on the first entities for the contract's queries."""
    memory = Q2EMemory(MemoryStore())
    ids = [e.id for e in list(catalog)[:6]]
    for query in ("love", "love story", "\u611b"):
        actions = [(i, "click", NOW_MS) for i in ids[:3]] + [(ids[0], "play", NOW_MS)]
        memory.record(query, ids, actions, NOW_MS)
    return memory


@pytest.mark.parametrize("make", BUILT_IN.values(), ids=BUILT_IN.keys())
def test_every_built_in_strategy_keeps_the_contract(make: Callable[[Catalog], Strategy]) -> None:
    entities, rejected = load_jsonl(DATA)
    assert not rejected
    catalog = Catalog()
    catalog.apply(entities)
    strategy = make(catalog)
    check_strategy(strategy)
    catalog.apply(entities[:5], deletes=[e.id for e in entities[5:15]])
    check_strategy(strategy)


class Unordered:
    name = "unordered"

    def retrieve(self, query: str, context: object, k: int) -> list[Candidate]:
        return [Candidate("a", 1.0), Candidate("b", 2.0)][: max(k, 0)]

    def update(self, added: list[object], removed: list[str]) -> None:
        return None


def test_a_strategy_that_breaks_it_is_told_how() -> None:
    with pytest.raises(StrategyContractError, match=r"unordered on query 'love' .* best first"):
        check_strategy(Unordered())  # type: ignore[arg-type]

"""An in-process retrieval stack over a world's catalog: the same strategies, plans, policy and
Searcher that ``ltrr serve`` runs, without HTTP or Kafka. Used to log bandit data for
counterfactual-evaluation checks and to study a world quickly; Q2E engagement is recorded
directly from the simulated clicks (the worker does this from rewards in the real loop)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.plans import PlanSpec, parse_plans
from ltrr.retrieval.policy import Policy
from ltrr.retrieval.search import Searcher, SearchResult
from ltrr.retrieval.server import build_plans, build_strategy
from ltrr.state.q2e import Q2EMemory
from ltrr.state.store import MemoryStore
from ltrr.streams.settings import Settings


class LocalStack:
    """Catalog + strategies + Searcher in this process."""

    def __init__(
        self,
        entities: Iterable[Mapping[str, Any]],
        *,
        strategies: str = "lexical,semantic,memory,popular,fresh",
        cache_dir: Path | None = None,
        now_ms: int | None = None,
        policy: Policy | None = None,
        plan_max_size: int = 3,
        plans: str = "",
        history: bool = False,
        skip_void_plans: bool = True,
    ) -> None:
        """``history``: add the query-strategy history features (``retrieval/history.py``);
        ``skip_void_plans``: as ``Searcher``'s."""
        settings = Settings(
            strategies=strategies,
            plan_max_size=plan_max_size,
            plans=plans,
            vector_cache_dir=str(cache_dir) if cache_dir else "./ltrr-cache",
        )
        self.catalog = Catalog()
        self.catalog.apply(Entity.from_dict(dict(e)) for e in entities)
        self.memory = Q2EMemory(MemoryStore())
        self.memory.index_entities(e.to_dict() for e in self.catalog)
        built = {}
        for name in (n.strip() for n in strategies.split(",") if n.strip()):
            strategy = build_strategy(name, self.catalog, self.memory, settings)
            if now_ms is not None and hasattr(strategy, "now_ms"):
                strategy.now_ms = lambda: now_ms
            if now_ms is not None and hasattr(strategy, "_now_ms"):
                strategy._now_ms = lambda: now_ms
            built[strategy.name] = strategy
        self.plans = build_plans(settings, list(built))
        self.policy = policy or Policy()
        self.searcher = Searcher(
            self.catalog,
            built,
            self.plans,
            self.policy,
            history=history,
            skip_void_plans=skip_void_plans,
        )

    def extra_plans(self, specs: Sequence[str]) -> list[PlanSpec]:
        return parse_plans(";".join(specs), list(self.searcher.strategies)) if specs else []

    def add(self, entity: Mapping[str, Any]) -> None:
        self.catalog.apply([Entity.from_dict(dict(entity))])
        self.memory.index_entity(entity)

    def search(
        self,
        query: str,
        context: Mapping[str, Any],
        k: int,
        *,
        seed: int,
        now_ms: int,
        explain_plans: Sequence[PlanSpec] = (),
    ) -> SearchResult:
        return self.searcher.search(
            query, context, k, seed=seed, now_ms=now_ms, explain=True, explain_plans=explain_plans
        )

    def remember(
        self, query: str, shown: Sequence[str], actions: Sequence[tuple[str, str]], now_ms: int
    ) -> None:
        """Record engagement in Q2E as the worker would from this impression's reward."""
        self.memory.record(query, shown, [(e, t, now_ms) for e, t in actions], now_ms)

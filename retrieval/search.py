"""One search: run the strategies, build features, let the policy pick a plan, rank its union,
and produce the SearchImpression v1 that records the decision exactly as made (pure apart from
the strategies' own indexes)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ltrr.retrieval import metrics as m
from ltrr.retrieval.catalog import Catalog
from ltrr.retrieval.features import (
    context_features,
    plan_features,
    strategy_features,
    strategy_signals,
    void_strategies,
)
from ltrr.retrieval.history import plan_history, shared_history
from ltrr.retrieval.plans import PlanSpec, max_budgets, offered_plans
from ltrr.retrieval.policy import Policy
from ltrr.retrieval.ranking import Ranked, rank
from ltrr.retrieval.strategies.base import Candidate, Strategy


@dataclass(frozen=True, slots=True)
class SearchResult:
    impression_id: str
    plan: PlanSpec
    results: list[Ranked]
    model_version: int
    probability: float
    impression: dict[str, Any]
    #: What every plan would have shown (only when asked for; see ``Searcher.search``).
    explain: dict[str, Any] | None = None


class Searcher:
    def __init__(
        self,
        catalog: Catalog,
        strategies: Mapping[str, Strategy],
        plans: Sequence[PlanSpec],
        policy: Policy,
        *,
        model_name: str = "default",
        q2e_boost: float = 0.5,
        executor: Executor | None = None,
        history: bool = False,
        skip_void_plans: bool = True,
        offload_searches: bool = False,
    ) -> None:
        """``offload_searches``: ``search_async`` also runs the ``blocking`` strategies
        (lexical) and the semantic strategy's ANN search in threads, not only the query
        encoder (off by default: about a millisecond each, they cost less on the event loop
        than the hand-off to a thread and back; measured in docs/serving.md); ``executor``
        runs those threads (None: the loop's default executor); ``history`` adds the
        query-strategy history features (``retrieval/history.py``) read from the memory
        strategy's Q2E replica (off by default: the probes measured no gain yet, see that
        module); ``skip_void_plans`` offers the policy, per query, only the plans that do not
        copy another one because a strategy of theirs ranks nothing for that query
        (``plans.offered_plans``)."""
        missing = {s for p in plans for s in p.strategies} - set(strategies)
        if missing:
            raise ValueError(f"plans use strategies that are not configured: {sorted(missing)}")
        self.catalog = catalog
        self.strategies = dict(strategies)
        self.plans = list(plans)
        self.policy = policy
        self.model_name = model_name
        self.q2e_boost = q2e_boost
        self.budgets = max_budgets(self.plans)
        self.executor = executor
        self.history = history
        self.skip_void_plans = skip_void_plans
        self.offload_searches = offload_searches

    def retrieve_all(self, query: str, context: Mapping[str, Any]) -> dict[str, list[Candidate]]:
        results = {}
        for name, budget in self.budgets.items():
            started = time.perf_counter()
            results[name] = self.strategies[name].retrieve(query, context, budget)
            m.STRATEGY_LATENCY.labels(name).observe(time.perf_counter() - started)
        return results

    def search(
        self,
        query: str,
        context: Mapping[str, Any],
        k: int,
        *,
        now_ms: int | None = None,
        seed: int | None = None,
        impression_id: str | None = None,
        request_id: str | None = None,
        user_id: str | None = None,
        explain: bool = False,
        explain_plans: Sequence[PlanSpec] = (),
    ) -> SearchResult:
        """Decide, rank and log one search. With ``explain``, also rank the same retrieval
        results under every configured plan and ``explain_plans`` (nothing extra is logged).
        Every strategy runs here, one after the other (``search_async`` is the serving path)."""
        results = self.retrieve_all(query, context)
        return self._decide(
            query, context, k, results, now_ms, seed, impression_id, request_id, user_id,
            explain, explain_plans,
        )  # fmt: skip

    async def search_async(
        self,
        query: str,
        context: Mapping[str, Any],
        k: int,
        *,
        now_ms: int | None = None,
        seed: int | None = None,
        impression_id: str | None = None,
        request_id: str | None = None,
        user_id: str | None = None,
        explain: bool = False,
        explain_plans: Sequence[PlanSpec] = (),
    ) -> SearchResult:
        """``search`` with the strategies run concurrently and their CPU work off the event
        loop (``retrieve_all_async``); the same decision, ranking and impression."""
        results = await self.retrieve_all_async(query, context)
        return self._decide(
            query, context, k, results, now_ms, seed, impression_id, request_id, user_id,
            explain, explain_plans,
        )  # fmt: skip

    async def retrieve_all_async(
        self, query: str, context: Mapping[str, Any]
    ) -> dict[str, list[Candidate]]:
        """Every strategy's candidates, the strategies running concurrently: a strategy with
        ``aretrieve`` (semantic: query embedding micro-batched in the encoder's thread, then the
        ANN search) is awaited, and the others run inline meanwhile; with
        ``offload_searches`` a ``blocking`` one (lexical: tantivy releases the GIL) and the ANN
        search run in the executor instead."""
        loop = asyncio.get_running_loop()

        async def one(name: str, budget: int) -> list[Candidate]:
            strategy = self.strategies[name]
            started = time.perf_counter()
            aretrieve = getattr(strategy, "aretrieve", None)
            if aretrieve is not None:
                found: list[Candidate] = await aretrieve(
                    query, context, budget, search_in_thread=self.offload_searches
                )
            elif getattr(strategy, "blocking", False) and self.offload_searches:
                found = await loop.run_in_executor(
                    self.executor, strategy.retrieve, query, context, budget
                )
            else:
                found = strategy.retrieve(query, context, budget)
            m.STRATEGY_LATENCY.labels(name).observe(time.perf_counter() - started)
            return found

        names = sorted(self.budgets, key=self._launch_order)
        found = await asyncio.gather(*(one(name, self.budgets[name]) for name in names))
        by_name = dict(zip(names, found, strict=True))
        return {name: by_name[name] for name in self.budgets}

    def _launch_order(self, name: str) -> int:
        """Awaited strategies first, then threaded ones, inline ones last (they run while the
        others wait)."""
        strategy = self.strategies[name]
        if hasattr(strategy, "aretrieve"):
            return 0
        return 1 if getattr(strategy, "blocking", False) and self.offload_searches else 2

    def _decide(
        self,
        query: str,
        context: Mapping[str, Any],
        k: int,
        results: dict[str, list[Candidate]],
        now_ms: int | None,
        seed: int | None,
        impression_id: str | None,
        request_id: str | None,
        user_id: str | None,
        explain: bool,
        explain_plans: Sequence[PlanSpec],
    ) -> SearchResult:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        seed = uuid.uuid4().int >> 65 if seed is None else seed
        impression_id = impression_id or uuid.uuid4().hex
        started = time.perf_counter()
        q2e = None
        remembered: dict[str, float] = {}
        memory = self.strategies.get("memory")
        if memory is not None and hasattr(memory, "scores"):
            q2e = memory.scores(query, 200)
        if self.history and memory is not None and hasattr(memory, "remembered"):
            remembered = memory.remembered(query)
        signals = strategy_signals(results)
        ctx = {
            **context_features(query, context, now_ms),
            **strategy_features(signals, self.budgets),
        }
        per_plan = plan_features(self.plans, signals)
        #: Each plan's ranked results, when the history features needed them all anyway.
        every: list[list[Ranked]] | None = None
        hist = shared_history(remembered, results, self.budgets, k) if remembered else {}
        if hist:
            ctx["s"] = {**ctx.get("s", {}), **hist}
            every = [rank(p, results, k, q2e, self.q2e_boost) for p in self.plans]
            shown = [[r.entity_id for r in ranked] for ranked in every]
            extras = plan_history(remembered, self.plans, results, shown)
            for features, extra in zip(per_plan, extras, strict=True):
                features["r"].update(extra)
        offered = list(range(len(self.plans)))
        if self.skip_void_plans:
            void = void_strategies(results, self.budgets)
            if void:
                keep = offered_plans(self.plans, void, keep=self.policy.default_plan)
                offered = [i for i, ok in enumerate(keep) if ok]
        offered_features = [per_plan[i] for i in offered]
        decision = self.policy.decide(ctx, offered_features, seed, offered)
        m.DECISION_LATENCY.observe(time.perf_counter() - started)
        chosen = offered[decision.chosen]
        plan = self.plans[chosen]
        m.PLANS_CHOSEN.labels(plan.id).inc()
        ranked = every[chosen] if every is not None else rank(plan, results, k, q2e, self.q2e_boost)
        impression = {
            "schema_version": 1,
            "impression_id": impression_id,
            "request_id": request_id or impression_id,
            "timestamp_ms": now_ms,
            "query": query,
            "context": ctx,
            "plans": [
                {"id": self.plans[i].id, "budgets": dict(self.plans[i].budgets), "features": f}
                for i, f in zip(offered, offered_features, strict=True)
            ],
            "chosen": decision.chosen,
            "pmf": list(decision.pmf),
            "seed": seed,
            "model": {"name": self.model_name, "version": decision.model_version},
            "results": [
                {
                    "entity_id": r.entity_id,
                    "rank": i,
                    "score": r.score,
                    "strategies": list(r.strategies),
                }
                for i, r in enumerate(ranked)
            ],
        }
        if user_id:
            impression["user_id"] = user_id
        explained = None
        if explain:
            pmf = [0.0] * len(self.plans)
            for i, p in zip(offered, decision.pmf, strict=True):
                pmf[i] = p
            explained = self._explain(results, k, q2e, pmf, explain_plans, every)
        return SearchResult(
            impression_id,
            plan,
            ranked,
            decision.model_version,
            decision.probability,
            impression,
            explained,
        )

    def probe(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A canned decision example (context and per-plan namespaces exactly as ``search``
        builds them, for a query no strategy is asked about) that a model must score before
        it is served."""
        signals = strategy_signals({name: [] for name in self.budgets})
        ctx = {
            **context_features("ltrr probe query", {}, 0),
            **strategy_features(signals, self.budgets),
        }
        return ctx, plan_features(self.plans, signals)

    def _explain(
        self,
        results: Mapping[str, Sequence[Candidate]],
        k: int,
        q2e: Mapping[str, float] | None,
        pmf: Sequence[float],
        extra: Sequence[PlanSpec],
        every: Sequence[Sequence[Ranked]] | None = None,
    ) -> dict[str, Any]:
        """``every``: the configured plans' rankings if already made."""
        plans: dict[str, list[str]] = {}
        budgets: dict[str, dict[str, int]] = {}
        for i, plan in enumerate([*self.plans, *extra]):
            if every is not None and i < len(every):
                ranked = every[i]
            else:
                ranked = rank(plan, results, k, q2e, self.q2e_boost)
            plans[plan.id] = [r.entity_id for r in ranked]
            budgets[plan.id] = dict(plan.budgets)
        return {
            "strategies": {name: [c.entity_id for c in found] for name, found in results.items()},
            "plans": plans,
            "budgets": budgets,
            "pmf": list(pmf),
            "plan_ids": [p.id for p in self.plans],
        }

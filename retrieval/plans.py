"""Retrieval plans: the bandit's arms. A plan is a subset of strategies with a candidate budget
each; by default every subset of up to three strategies, sharing one total budget evenly, so
plans compete on *which* strategies to draw from rather than on how much to retrieve."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from ltrr.schemas.exceptions import LtrrError


class PlanError(LtrrError):
    """The plan configuration is malformed."""


@dataclass(frozen=True, slots=True)
class PlanSpec:
    id: str
    budgets: Mapping[str, int]

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(self.budgets)


def default_plans(
    strategies: Sequence[str], *, max_size: int = 3, total_budget: int = 100
) -> list[PlanSpec]:
    """Every non-empty subset of ``strategies`` of at most ``max_size``, budget split evenly."""
    if not strategies:
        raise PlanError("no strategies configured")
    if max_size < 1 or total_budget < 1:
        raise PlanError("max plan size and total budget must be >= 1")
    plans = []
    for size in range(1, min(max_size, len(strategies)) + 1):
        for combo in itertools.combinations(strategies, size):
            share = max(1, total_budget // size)
            plans.append(PlanSpec("+".join(combo), {s: share for s in combo}))
    return plans


def parse_plans(spec: str, known: Sequence[str]) -> list[PlanSpec]:
    """Explicit plans: ``lexical:60+memory:40;semantic:100`` (``;`` between plans)."""
    plans = []
    for text in filter(None, (p.strip() for p in spec.split(";"))):
        budgets: dict[str, int] = {}
        for part in text.split("+"):
            name, _, budget = part.strip().partition(":")
            if name not in known:
                raise PlanError(f"plan {text!r}: unknown strategy {name!r}; known: {known}")
            try:
                budgets[name] = int(budget) if budget else 100
            except ValueError as exc:
                raise PlanError(f"plan {text!r}: budget {budget!r} is not an integer") from exc
            if budgets[name] < 1:
                raise PlanError(f"plan {text!r}: budgets must be >= 1")
        plans.append(PlanSpec("+".join(budgets), budgets))
    if len({p.id for p in plans}) != len(plans):
        raise PlanError("plan ids must be unique")
    if not plans:
        raise PlanError("no plans in the plan specification")
    return plans


def max_budgets(plans: Sequence[PlanSpec]) -> dict[str, int]:
    """The largest budget any plan gives each strategy: how much to retrieve per strategy."""
    out: dict[str, int] = {}
    for plan in plans:
        for name, budget in plan.budgets.items():
            out[name] = max(out.get(name, 0), budget)
    return out


def offered_plans(
    plans: Sequence[PlanSpec], void: Collection[str], keep: int | None = None
) -> list[bool]:
    """Which plans to offer the policy for one query, given the strategies that rank nothing
    for it (``features.void_strategies``). A plan that uses a void strategy shows what its
    other strategies show, so it is left out when that is nothing, or when another plan
    offers exactly those other strategies (a plan without void strategies, else the first
    such plan): ``semantic+popular`` is ``semantic`` where popularity says nothing. Exploring
    such twins costs the same as exploring the plan they copy and teaches nothing new.
    ``keep`` (the default plan) is always offered; if nothing else would be, every plan is."""
    void = set(void)
    if not void:
        return [True] * len(plans)
    exact = {frozenset(p.strategies) for p in plans if not void.intersection(p.strategies)}
    offered, seen = [], set()
    for i, plan in enumerate(plans):
        names = frozenset(plan.strategies)
        rest = names - void
        if i == keep or rest == names:
            offered.append(True)
        elif not rest or rest in exact or rest in seen:
            offered.append(False)
        else:
            offered.append(True)
            seen.add(rest)
    return offered if any(offered) else [True] * len(plans)

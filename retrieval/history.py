"""Query-strategy history features (pure): how well each strategy, and each plan, has done
*for this query* before, read from the Q2E memory the retrieval worker already replicates.

``remembered`` is the query's observed Q2E rows: entity -> combined score (decayed engagement
over exposure; > 0 means people engaged with it after this query, <= 0 that it was shown and
ignored or skipped). Nothing here is new state: the same rows drive the ``memory`` strategy.

Shared namespace ``s`` (so ``-q sp`` learns per plan what history is worth):
``hist`` 1 when the query has engaged entities; ``<strategy>_hist`` the share of the query's
engagement mass that the strategy's candidates (at its largest budget) hold.

Per plan, namespace ``r``: ``hist`` the share of the engagement mass in the plan's candidates
at its budgets; ``hist_top`` the share in what the plan would show (its ranked top ``k``);
``hist_bad`` the share of that top ``k`` that was shown for this query before and ignored.
A query without history gets none of these features (all zero), so nothing changes for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ltrr.retrieval.features import Namespace
from ltrr.retrieval.plans import PlanSpec
from ltrr.retrieval.strategies.base import Candidate


def engaged_mass(remembered: Mapping[str, float]) -> dict[str, float]:
    """The positively scored rows: what people engaged with after this query."""
    return {e: s for e, s in remembered.items() if s > 0}


def _share(ids: set[str], engaged: Mapping[str, float], total: float) -> float:
    return round(sum(m for e, m in engaged.items() if e in ids) / total, 4)


def shared_history(
    remembered: Mapping[str, float],
    results: Mapping[str, Sequence[Candidate]],
    budgets: Mapping[str, int],
    k: int = 10,
) -> Namespace:
    """The ``s`` features: ``hist`` and each strategy's share of the engagement mass."""
    engaged = engaged_mass(remembered)
    total = sum(engaged.values())
    if total <= 0:
        return {}
    s: Namespace = {"hist": 1.0}
    for name, found in results.items():
        ids = {c.entity_id for c in found[: budgets.get(name, len(found))]}
        s[f"{name}_hist"] = _share(ids, engaged, total)
        top = [c.entity_id for c in found[:k]]
        s[f"{name}_histk"] = _share(set(top), engaged, total)
        ignored = sum(1 for e in top if e in remembered and remembered[e] <= 0)
        s[f"{name}_bad"] = round(ignored / max(1, k), 4)
    return s


def plan_history(
    remembered: Mapping[str, float],
    plans: Sequence[PlanSpec],
    results: Mapping[str, Sequence[Candidate]],
    shown: Sequence[Sequence[str]],
) -> list[Namespace]:
    """Per plan, the ``r`` features ``hist``, ``hist_top`` and ``hist_bad`` (empty dicts when
    the query has no engaged entities). ``shown[i]``: what plan ``i`` would show (its ranked
    top ``k``, as ``ranking.rank`` orders it), computed once by the caller."""
    engaged = engaged_mass(remembered)
    total = sum(engaged.values())
    if total <= 0:
        return [{} for _ in plans]
    out: list[Namespace] = []
    for plan, top in zip(plans, shown, strict=True):
        pool = {c.entity_id for name, b in plan.budgets.items() for c in results.get(name, ())[:b]}
        ignored = sum(1 for e in top if e in remembered and remembered[e] <= 0)
        out.append(
            {
                "hist": _share(pool, engaged, total),
                "hist_top": _share(set(top), engaged, total),
                "hist_bad": round(ignored / max(1, len(top)), 4),
            }
        )
    return out

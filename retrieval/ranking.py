"""Union and ranking of a plan's candidates (pure).

Each strategy contributes its top ``budget`` candidates. Scores are normalized per strategy by
its best score (so 1.0 is that strategy's best hit for this query, whatever its scale).
An entity's final score is the sum of its normalized scores over the strategies that found it
(agreement between strategies counts) plus ``q2e_boost`` times its Q2E score normalized by the
best Q2E score for the query. Ties break by entity id. Provenance lists the strategies that
found the entity, in plan order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ltrr.ordering import best_first
from ltrr.retrieval.plans import PlanSpec
from ltrr.retrieval.strategies.base import Candidate


@dataclass(frozen=True, slots=True)
class Ranked:
    entity_id: str
    score: float
    strategies: tuple[str, ...]


def rank(
    plan: PlanSpec,
    results: Mapping[str, Sequence[Candidate]],
    k: int,
    q2e: Mapping[str, float] | None = None,
    q2e_boost: float = 0.5,
) -> list[Ranked]:
    scores: dict[str, float] = {}
    provenance: dict[str, list[str]] = {}
    for name, budget in plan.budgets.items():
        found = results.get(name, ())[:budget]
        best = max((c.score for c in found), default=0.0)
        for entity_id, score in found:
            norm = score / best if best > 0 else 0.0
            names = provenance.get(entity_id)
            if names is None:
                scores[entity_id] = norm
                provenance[entity_id] = [name]
            else:
                scores[entity_id] += norm
                names.append(name)
    if q2e:
        best_q = max(q2e.values(), default=0.0)
        if best_q > 0:
            for entity_id, value in q2e.items():
                if value > 0 and entity_id in scores:
                    scores[entity_id] += q2e_boost * value / best_q
    return [Ranked(e, round(s, 6), tuple(provenance[e])) for e, s in best_first(scores, k)]

"""Typed, immutable views of validated events.

Build them with ``from_dict`` on an object that ``ltrr.schemas.validation.decode`` accepted; the
feature namespaces stay plain dicts because they are passed to Vowpal Wabbit as logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Namespaces = dict[str, dict[str, float | str | bool]]


@dataclass(frozen=True, slots=True)
class Plan:
    """One arm: a subset of strategies with a candidate budget each, and its logged features."""

    id: str
    budgets: dict[str, int]
    features: Namespaces


@dataclass(frozen=True, slots=True)
class ShownResult:
    entity_id: str
    rank: int
    score: float
    strategies: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SearchImpression:
    impression_id: str
    request_id: str
    timestamp_ms: int
    query: str
    context: Namespaces
    plans: tuple[Plan, ...]
    chosen: int
    pmf: tuple[float, ...]
    model_name: str
    model_version: int
    results: tuple[ShownResult, ...] = ()
    seed: int | None = None
    user_id: str | None = None
    session_id: str | None = None

    @property
    def probability(self) -> float:
        """Logged probability of the chosen plan."""
        return self.pmf[self.chosen]

    @property
    def chosen_plan(self) -> Plan:
        return self.plans[self.chosen]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchImpression:
        return cls(
            impression_id=d["impression_id"],
            request_id=d["request_id"],
            timestamp_ms=d["timestamp_ms"],
            query=d["query"],
            context=d["context"],
            plans=tuple(Plan(p["id"], p["budgets"], p["features"]) for p in d["plans"]),
            chosen=d["chosen"],
            pmf=tuple(float(x) for x in d["pmf"]),
            model_name=d["model"]["name"],
            model_version=d["model"]["version"],
            results=tuple(
                ShownResult(r["entity_id"], r["rank"], float(r["score"]), tuple(r["strategies"]))
                for r in d.get("results", ())
            ),
            seed=d.get("seed"),
            user_id=d.get("user_id"),
            session_id=d.get("session_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": 1,
            "impression_id": self.impression_id,
            "request_id": self.request_id,
            "timestamp_ms": self.timestamp_ms,
            "query": self.query,
            "context": self.context,
            "plans": [
                {"id": p.id, "budgets": p.budgets, "features": p.features} for p in self.plans
            ],
            "chosen": self.chosen,
            "pmf": list(self.pmf),
            "model": {"name": self.model_name, "version": self.model_version},
            "results": [
                {
                    "entity_id": r.entity_id,
                    "rank": r.rank,
                    "score": r.score,
                    "strategies": list(r.strategies),
                }
                for r in self.results
            ],
        }
        for name in ("seed", "user_id", "session_id"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True, slots=True)
class UserAction:
    action_id: str
    impression_id: str
    entity_id: str
    type: str
    timestamp_ms: int
    value: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserAction:
        value = d.get("value")
        return cls(
            action_id=d["action_id"],
            impression_id=d["impression_id"],
            entity_id=d["entity_id"],
            type=d["type"],
            timestamp_ms=d["timestamp_ms"],
            value=None if value is None else float(value),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": 1,
            "action_id": self.action_id,
            "impression_id": self.impression_id,
            "entity_id": self.entity_id,
            "type": self.type,
            "timestamp_ms": self.timestamp_ms,
        }
        if self.value is not None:
            out["value"] = self.value
        return out

"""Builders of valid events for the tests (one place, so every test starts from a valid one)."""

from __future__ import annotations

import itertools
import time
from typing import Any


def now_ms() -> int:
    """Event time of the builders' events: when they are built (windows run on event time
    and the worker dead-letters events far from its clock, so fixed dates would expire)."""
    return int(time.time() * 1000)


STRATEGIES = ("lexical", "semantic", "memory", "popular", "fresh")


def plans(n: int = 5) -> list[dict[str, Any]]:
    """``n`` plans over the built-in strategies, with logged per-plan features."""
    combos = [c for k in (1, 2, 3) for c in itertools.combinations(STRATEGIES, k)][:n]
    return [
        {
            "id": "+".join(combo),
            "budgets": {s: 100 // len(combo) for s in combo},
            "features": {
                "p": {s: 1 for s in combo},
                "r": {f"{s}_top": round(0.1 * (i + 1), 3) for s in combo},
            },
        }
        for i, combo in enumerate(combos)
    ]


def impression(
    impression_id: str = "imp-1", *, n_plans: int = 5, chosen: int = 1, **overrides: Any
) -> dict[str, Any]:
    pmf = [1.0 / n_plans] * n_plans
    event: dict[str, Any] = {
        "schema_version": 1,
        "impression_id": impression_id,
        "request_id": f"req-{impression_id}",
        "user_id": "u-1",
        "timestamp_ms": now_ms(),
        "query": "tayler love",
        "context": {"c": {"qlen": 2, "lang": "en", "device": "mobile", "hour": 21}},
        "plans": plans(n_plans),
        "chosen": chosen,
        "pmf": pmf,
        "seed": 42,
        "model": {"name": "default", "version": 0},
        "results": [
            {"entity_id": "track-1", "rank": 0, "score": 0.9, "strategies": ["lexical"]},
            {"entity_id": "track-2", "rank": 1, "score": 0.5, "strategies": ["lexical", "memory"]},
        ],
    }
    event.update(overrides)
    return event


def action(
    action_id: str = "act-1", impression_id: str = "imp-1", **overrides: Any
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "action_id": action_id,
        "impression_id": impression_id,
        "entity_id": "track-1",
        "type": "click",
        "value": None,
        "timestamp_ms": now_ms(),
    }
    event.update(overrides)
    return event


def without(event: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != field}

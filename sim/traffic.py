"""Synthetic impression/action traffic, with a share of deliberately broken events.

``ltrr demo`` sends the broken ones straight into the topics (``--broken-share``) to show the
real path (Kafka -> ingest -> dead-letter topic) refusing each with its reason; seeded and
reproducible.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

STRATEGIES = ("lexical", "semantic", "memory", "popular", "fresh")
QUERIES = (
    "taylor swift",
    "sad songs for rain",
    "tayler love",
    "love",
    "new releases",
    "lofi beats to study",
    "beatles",
    "workout mix",
)
BREAKAGES = (
    "not_json",
    "missing_field",
    "wrong_type",
    "unsupported_schema_version",
    "bad_key",
    "unknown_field",
)


@dataclass(frozen=True, slots=True)
class Produced:
    """One message to produce: topic suffix, key, value, and why it must end in the
    dead-letter topic (a breakage, or ``orphan_action`` for actions of a broken impression)."""

    topic: str
    key: bytes
    value: bytes
    broken: str | None = None


def _plans() -> list[dict[str, object]]:
    combos = [c for k in (1, 2) for c in itertools.combinations(STRATEGIES, k)]
    return [
        {
            "id": "+".join(c),
            "budgets": {s: 100 // len(c) for s in c},
            "features": {"p": {s: 1 for s in c}},
        }
        for c in combos
    ]


def traffic(
    n: int, *, seed: int = 7, broken_share: float = 0.05, start_ms: int | None = None
) -> Iterator[Produced]:
    """``n`` impressions, each followed by 0-2 actions; about ``broken_share`` of them broken.
    Event time starts at ``start_ms`` (default: now; the worker refuses events far from its
    clock)."""
    rng = random.Random(seed)
    if start_ms is None:
        start_ms = int(time.time() * 1000)
    plans = _plans()
    for i in range(n):
        iid = f"imp-{seed}-{i}"
        query = rng.choice(QUERIES)
        chosen = rng.randrange(len(plans))
        event: dict[str, object] = {
            "schema_version": 1,
            "impression_id": iid,
            "request_id": f"req-{i}",
            "timestamp_ms": start_ms + i * 100,
            "query": query,
            "context": {"c": {"qlen": len(query.split()), "hour": (i // 60) % 24}},
            "plans": plans,
            "chosen": chosen,
            "pmf": [1 / len(plans)] * len(plans),
            "seed": seed,
            "model": {"name": "default", "version": 0},
            "results": [
                {
                    "entity_id": f"e{rng.randrange(1000)}",
                    "rank": 0,
                    "score": 1.0,
                    "strategies": str(plans[chosen]["id"]).split("+"),
                }
            ],
        }
        breakage = rng.choice(BREAKAGES) if rng.random() < broken_share else None
        yield _impression(iid, event, breakage)
        # Actions of a rejected impression are valid events that can never join: orphans.
        orphan = "orphan_action" if breakage else None
        for j in range(rng.choice((0, 0, 1, 2))):
            action = {
                "schema_version": 1,
                "action_id": f"{iid}-a{j}",
                "impression_id": iid,
                "entity_id": "e1",
                "type": rng.choice(("click", "play", "skip")),
                "timestamp_ms": start_ms + i * 100 + 50,
            }
            yield Produced("actions", iid.encode(), orjson.dumps(action), orphan)


def _impression(iid: str, event: dict[str, object], breakage: str | None) -> Produced:
    key = iid.encode()
    if breakage == "not_json":
        return Produced("impressions", key, orjson.dumps(event)[:-7], breakage)
    if breakage == "missing_field":
        event = {k: v for k, v in event.items() if k != "query"}
    elif breakage == "wrong_type":
        event = {**event, "timestamp_ms": "yesterday"}
    elif breakage == "unsupported_schema_version":
        event = {**event, "schema_version": 2}
    elif breakage == "bad_key":
        key = b"not-" + key
    elif breakage == "unknown_field":
        event = {**event, "colour": "red"}
    return Produced("impressions", key, orjson.dumps(event), breakage)

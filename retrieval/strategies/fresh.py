"""Recently added entities: new releases get exposure before anyone has engaged with them,
which no engagement-based strategy can give them.

Scoring, for an entity added ``age`` ago (0 <= age <= horizon; older ones and ones dated in
the future are never returned):

    recency = 0.5 ** (age / half_life)             (1 when just added, halves every half_life)
    score   = recency * (1 + overlap_weight * overlap)

``overlap`` is the share of the query's non-stopword terms found among the entity's title,
artist and genre terms (0..1): a cheap lexical nudge, so "synthwave" prefers the new synthwave
single among new releases. With no query terms the order is simply newest first. To stay
cheap, at most ``max_scan`` of the newest entities within the horizon are scored per request.
Entities are kept in a list sorted by (-added_at_ms, id), maintained incrementally.
"""

from __future__ import annotations

import heapq
import threading
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping
from typing import Any

from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.strategies.base import Candidate
from ltrr.retrieval.strategies.tokens import STOPWORDS, terms

DAY_MS = 86_400_000


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, now."""
    return time.time_ns() // 1_000_000


class FreshStrategy:
    """Newest entities within ``horizon_days``, scored by age decay and query-term overlap."""

    name = "fresh"

    def __init__(
        self,
        catalog: Catalog,
        *,
        now_ms: Callable[[], int] = wall_clock_ms,
        horizon_days: float = 30,
        half_life_days: float = 7,
        overlap_weight: float = 1.0,
        max_scan: int = 2000,
    ) -> None:
        if horizon_days <= 0 or half_life_days <= 0:
            raise ValueError("horizon_days and half_life_days must be > 0")
        self._now_ms = now_ms
        self.horizon_ms = int(horizon_days * DAY_MS)
        self.half_life_ms = half_life_days * DAY_MS
        self.overlap_weight = overlap_weight
        self.max_scan = max_scan
        self._lock = threading.Lock()
        self._order: list[tuple[int, str]] = []  # (-added_at_ms, id), newest first
        self._meta: dict[str, tuple[int, frozenset[str]]] = {}  # id -> (added_at_ms, terms)
        for entity in catalog:
            self._meta[entity.id] = (entity.added_at_ms, _entity_terms(entity))
        self._order = sorted((-added, entity_id) for entity_id, (added, _) in self._meta.items())
        catalog.subscribe(self.update)

    def update(self, added: list[Entity], removed: list[str]) -> None:
        """Re-position replaced entities, insert new ones, drop deleted ones."""
        with self._lock:
            for entity in added:
                self._discard(entity.id)
                self._meta[entity.id] = (entity.added_at_ms, _entity_terms(entity))
                insort(self._order, (-entity.added_at_ms, entity.id))
            for entity_id in removed:
                self._discard(entity_id)

    def _discard(self, entity_id: str) -> None:
        previous = self._meta.pop(entity_id, None)
        if previous is not None:
            key = (-previous[0], entity_id)
            i = bisect_left(self._order, key)
            if i < len(self._order) and self._order[i] == key:
                del self._order[i]

    def retrieve(self, query: str, context: Mapping[str, Any], k: int) -> list[Candidate]:
        """Up to ``k`` entities added within the horizon, best first (see module docstring)."""
        if k <= 0:
            return []
        now = self._now_ms()
        cutoff = now - self.horizon_ms
        wanted = [t for t in dict.fromkeys(terms(query)) if t not in STOPWORDS]
        limit = k if not wanted else max(k, self.max_scan)
        with self._lock:
            start = bisect_left(self._order, (-now, ""))  # skip entities dated in the future
            window = self._order[start : start + limit]
            scored = []
            for negative_added, entity_id in window:
                added = -negative_added
                if added < cutoff:
                    break
                score = 0.5 ** ((now - added) / self.half_life_ms)
                if wanted:
                    overlap = len(self._meta[entity_id][1].intersection(wanted)) / len(wanted)
                    score *= 1.0 + self.overlap_weight * overlap
                scored.append((score, added, entity_id))
        best = heapq.nlargest(k, scored) if wanted else scored[:k]
        return [Candidate(entity_id, score) for score, _, entity_id in best]


def _entity_terms(entity: Entity) -> frozenset[str]:
    parts = [entity.title, entity.artist or "", *entity.genres]
    return frozenset(terms(" ".join(parts), limit=256))

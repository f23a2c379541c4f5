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

import threading
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.strategies.base import Candidate
from ltrr.retrieval.strategies.tokens import STOPWORDS, terms

DAY_MS = 86_400_000
#: Per-term match masks kept for the current window (one float per windowed entity each).
_MAX_CACHED_TERMS = 4096


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
        #: id -> entity; its terms are tokenized on first use (only entities in a scanned
        #: window ever need them, so a start never tokenizes the whole catalog).
        self._entities: dict[str, Entity] = {}
        self._terms: dict[str, frozenset[str]] = {}
        self._version = 0  # bumped by every update: the cached window is stale
        self._cached: _Window | None = None
        for entity in catalog:
            self._entities[entity.id] = entity
        self._order = sorted((-e.added_at_ms, e.id) for e in self._entities.values())
        catalog.subscribe(self.update)

    def update(self, added: list[Entity], removed: list[str]) -> None:
        """Re-position replaced entities, insert new ones, drop deleted ones."""
        with self._lock:
            self._version += 1
            for entity in added:
                self._discard(entity.id)
                self._entities[entity.id] = entity
                insort(self._order, (-entity.added_at_ms, entity.id))
            for entity_id in removed:
                self._discard(entity_id)

    def _discard(self, entity_id: str) -> None:
        previous = self._entities.pop(entity_id, None)
        self._terms.pop(entity_id, None)
        if previous is not None:
            key = (-previous.added_at_ms, entity_id)
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
            if not wanted:
                newest = self._order[start : start + k]
                return [
                    Candidate(entity_id, 0.5 ** ((now + negative_added) / self.half_life_ms))
                    for negative_added, entity_id in newest
                    if -negative_added >= cutoff
                ]
            window = self._window(start, limit)
            matches = [window.matches(term, self._entity_terms) for term in wanted]
        # Within the window, newest first: the ones still inside the horizon are a prefix.
        inside = int(np.searchsorted(-window.added, -cutoff, side="right"))
        added = window.added[:inside]
        score = np.power(0.5, (now - added) / self.half_life_ms)
        overlap = np.sum(matches, axis=0)[:inside] / len(wanted)
        score *= 1.0 + self.overlap_weight * overlap
        # Best score first; ties: newer first, then the larger id (heapq.nlargest's order on
        # (score, added, id), kept from the scalar version of this loop).
        best = np.lexsort((-np.arange(inside), -added, -score))[:k]
        ids, scores, new = window.ids, score[best].tolist(), tuple.__new__
        return [new(Candidate, (ids[i], s)) for i, s in zip(best.tolist(), scores, strict=True)]

    def _entity_terms(self, entity_id: str) -> frozenset[str]:
        found = self._terms.get(entity_id)
        if found is None:
            found = self._terms[entity_id] = _entity_terms(self._entities[entity_id])
        return found

    def _window(self, start: int, limit: int) -> _Window:
        """The cached ``limit`` newest entities from ``start`` (rebuilt after an update)."""
        key = (self._version, start, limit)
        if self._cached is None or self._cached.key != key:
            part = self._order[start : start + limit]
            self._cached = _Window(key, part)
        return self._cached


class _Window:
    """A slice of the newest-first order as arrays, with per-term match masks built on first
    use: what ``retrieve`` scores, reused by every request until the catalog changes."""

    def __init__(self, key: tuple[int, int, int], part: list[tuple[int, str]]) -> None:
        self.key = key
        self.ids = [entity_id for _, entity_id in part]
        self.added = np.fromiter((-negative for negative, _ in part), np.int64, len(part))
        self._masks: dict[str, np.ndarray] = {}

    def matches(self, term: str, terms_of: Callable[[str], frozenset[str]]) -> np.ndarray:
        mask = self._masks.get(term)
        if mask is None:
            if len(self._masks) >= _MAX_CACHED_TERMS:
                self._masks.clear()
            mask = np.fromiter((term in terms_of(i) for i in self.ids), np.float64, len(self.ids))
            self._masks[term] = mask
        return mask


def _entity_terms(entity: Entity) -> frozenset[str]:
    parts = [entity.title, entity.artist or "", *entity.genres]
    return frozenset(terms(" ".join(parts), limit=256))

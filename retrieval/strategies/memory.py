"""The ``memory`` strategy: what people engaged with after the same (normalized) query.

Reads the Q2E memory — observed engagement, or cold-start predictions from catalog metadata
until engagement exists — from a local replica of the learning worker's Q2E changelog."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from ltrr.retrieval.catalog import Entity
from ltrr.retrieval.strategies.base import Candidate
from ltrr.state.q2e import Q2EMemory, Q2EScore

#: A query's scores are reused while the memory's store is unchanged and for at most this long
#: (observed scores decay by a millionth per second at the default 7-day half-life).
_REUSE_MS = 1000
_REUSE_QUERIES = 64
#: Scores computed per query: enough for the ranking boost (``Searcher`` asks for 200), so the
#: search's candidates and its boost come from one computation.
_REUSE_K = 200


class MemoryStrategy:
    name = "memory"

    def __init__(
        self, memory: Q2EMemory, *, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    ) -> None:
        self.memory = memory
        self.now_ms = now_ms
        #: query -> (store version, time, k, scores): one search asks twice (its candidates,
        #: then the ranking boost), and searches interleave on the event loop.
        self._recent: OrderedDict[str, tuple[int, int, int, list[Q2EScore]]] = OrderedDict()

    def retrieve(self, query: str, context: Mapping[str, Any], k: int) -> list[Candidate]:
        if k <= 0:
            return []
        new = tuple.__new__
        return [new(Candidate, (e, s)) for e, s, _ in self._scores(query, k) if s > 0]

    def scores(self, query: str, k: int) -> dict[str, float]:
        """Q2E score by entity (for the ranking boost)."""
        return {s.entity_id: s.score for s in self._scores(query, k)}

    def _scores(self, query: str, k: int) -> list[Q2EScore]:
        """The memory's top ``k`` for ``query``, reused from a call moments ago on the same
        store contents (a replica's ``MemoryStore`` counts its writes; other stores: never
        reused). The top ``k`` of a longer list is the same list's first ``k``."""
        now = self.now_ms()
        version = getattr(self.memory.store, "version", None)
        if version is None:
            return self.memory.scores(query, now, k)
        recent = self._recent.get(query)
        if recent is not None:
            seen, at, depth, found = recent
            if seen == version and 0 <= now - at <= _REUSE_MS and depth >= k:
                return found[:k]
        depth = max(k, _REUSE_K)
        found = self.memory.scores(query, now, depth)
        self._recent[query] = (version, now, depth, found)
        self._recent.move_to_end(query)
        while len(self._recent) > _REUSE_QUERIES:
            self._recent.popitem(last=False)
        return found[:k]

    def remembered(self, query: str) -> dict[str, float]:
        """The query's observed rows, entity -> combined score (for the history features)."""
        return self.memory.remembered(query, self.now_ms())

    def update(self, added: list[Entity], removed: list[str]) -> None:
        return None  # the learning worker indexes the catalog into the replicated memory

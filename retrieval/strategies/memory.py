"""The ``memory`` strategy: what people engaged with after the same (normalized) query.

Reads the Q2E memory — observed engagement, or cold-start predictions from catalog metadata
until engagement exists — from a local replica of the learning worker's Q2E changelog."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ltrr.retrieval.catalog import Entity
from ltrr.retrieval.strategies.base import Candidate
from ltrr.state.q2e import Q2EMemory


class MemoryStrategy:
    name = "memory"

    def __init__(
        self, memory: Q2EMemory, *, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    ) -> None:
        self.memory = memory
        self.now_ms = now_ms

    def retrieve(self, query: str, context: Mapping[str, Any], k: int) -> list[Candidate]:
        if k <= 0:
            return []
        return [
            Candidate(s.entity_id, s.score)
            for s in self.memory.scores(query, self.now_ms(), k)
            if s.score > 0
        ]

    def scores(self, query: str, k: int) -> dict[str, float]:
        """Q2E score by entity (for the ranking boost)."""
        return {s.entity_id: s.score for s in self.memory.scores(query, self.now_ms(), k)}

    def remembered(self, query: str) -> dict[str, float]:
        """The query's observed rows, entity -> combined score (for the history features)."""
        return self.memory.remembered(query, self.now_ms())

    def update(self, added: list[Entity], removed: list[str]) -> None:
        return None  # the learning worker indexes the catalog into the replicated memory

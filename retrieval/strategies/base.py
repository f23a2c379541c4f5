"""The one small interface every retrieval strategy implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from ltrr.retrieval.catalog import Catalog, Entity


class Candidate(NamedTuple):
    """An entity a strategy retrieved, with the strategy's own score (higher is better;
    scales differ between strategies, ranking normalizes them). A named tuple: every search
    makes hundreds of them, and a tuple is the cheapest immutable record to build; the
    strategies build theirs with ``tuple.__new__(Candidate, (entity_id, score))``, half the
    cost of the named tuple's own constructor (a Python-level call)."""

    entity_id: str
    score: float


class Strategy(Protocol):
    """``name`` is what plans, provenance and metrics call it. A strategy that persists state
    may also define ``flush()``: the retrieval worker calls it once at shutdown.

    The serving path (``Searcher.search_async``) never lets a strategy block the event loop
    for long: a strategy may define ``async aretrieve(query, context, k)`` (awaited; semantic
    batches its query embeddings that way), or set ``blocking = True`` so ``retrieve`` runs in
    a thread (worth it when its work releases the GIL, as tantivy does); any other strategy
    is called inline and must stay cheap (well under a millisecond)."""

    name: str

    def retrieve(self, query: str, context: Mapping[str, Any], k: int) -> list[Candidate]:
        """Up to ``k`` candidates for ``query``, best first. Must not mutate its inputs."""
        ...

    def update(self, added: list[Entity], removed: list[str]) -> None:
        """Index catalog changes (new, replaced and deleted entities) incrementally."""
        ...


class StrategyFactory(Protocol):
    def __call__(self, catalog: Catalog, **options: Any) -> Strategy: ...

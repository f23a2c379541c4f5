"""Most popular entities, whatever the query: the safe answer for ambiguous queries ("love")
and a floor of candidates people are likely to want.

Kept incrementally in sorted lists (one over all entities, one per entity type) ordered by
(-popularity, id), so a request is a slice: O(k), no sort per request. An upsert or delete is
a binary search plus a list insert/delete (a memmove; microseconds at 100k entities).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from bisect import bisect_left, insort
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.strategies.base import Candidate

_Key = tuple[float, str]  # (-popularity, id): ascending order = most popular first, ties by id


class PopularStrategy:
    """Top-k by popularity. ``context["type"]`` (a type name, or a collection of them)
    restricts the candidates to those entity types; the query text is ignored."""

    name = "popular"

    def __init__(self, catalog: Catalog) -> None:
        self._lock = threading.Lock()
        self._key_of: dict[str, tuple[str, _Key]] = {}  # id -> (type, sort key)
        self._all: list[_Key] = []
        self._by_type: dict[str, list[_Key]] = {}
        self._bulk_load(catalog)
        catalog.subscribe(self.update)

    def _bulk_load(self, entities: Iterable[Entity]) -> None:
        for entity in entities:
            key = (-entity.popularity, entity.id)
            self._key_of[entity.id] = (entity.type, key)
            self._by_type.setdefault(entity.type, []).append(key)
        self._all = sorted(key for _, key in self._key_of.values())
        for keys in self._by_type.values():
            keys.sort()

    def update(self, added: list[Entity], removed: list[str]) -> None:
        """Move replaced entities to their new position, insert new ones, drop deleted ones."""
        with self._lock:
            for entity in added:
                self._discard(entity.id)
                key = (-entity.popularity, entity.id)
                self._key_of[entity.id] = (entity.type, key)
                insort(self._all, key)
                insort(self._by_type.setdefault(entity.type, []), key)
            for entity_id in removed:
                self._discard(entity_id)

    def _discard(self, entity_id: str) -> None:
        previous = self._key_of.pop(entity_id, None)
        if previous is None:
            return
        type_, key = previous
        for keys in (self._all, self._by_type[type_]):
            i = bisect_left(keys, key)
            if i < len(keys) and keys[i] == key:
                del keys[i]

    def retrieve(self, query: str, context: Mapping[str, Any], k: int) -> list[Candidate]:
        """Up to ``k`` entities, most popular first; the score is the popularity."""
        if k <= 0:
            return []
        wanted = context.get("type")
        with self._lock:
            if wanted is None:
                keys = self._all[:k]
            elif isinstance(wanted, Collection) and not isinstance(wanted, str):
                lists = [self._by_type.get(t, [])[:k] for t in {str(t) for t in wanted}]
                keys = list(itertools.islice(heapq.merge(*lists), k))
            else:
                keys = self._by_type.get(str(wanted), [])[:k]
        new = tuple.__new__
        return [new(Candidate, (entity_id, -negative)) for negative, entity_id in keys]

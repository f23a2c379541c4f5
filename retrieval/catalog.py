"""The catalog the retrieval worker searches: entities from a JSONL file, kept current from the
compacted catalog topic. Strategies subscribe to changes so new entities become retrievable
without a restart."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ltrr.schemas.contracts import Contract
from ltrr.schemas.validation import Rejection, decode

ENTITY_TYPES = ("track", "artist", "album", "playlist", "podcast", "station", "document")


@dataclass(frozen=True, slots=True)
class Entity:
    """One searchable entity (CatalogEntity v1)."""

    id: str
    type: str
    title: str
    artist: str | None = None
    genres: tuple[str, ...] = ()
    popularity: float = 0.0
    added_at_ms: int = 0
    text: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entity:
        return cls(
            id=d["id"],
            type=d["type"],
            title=d["title"],
            artist=d.get("artist"),
            genres=tuple(d.get("genres") or ()),
            popularity=float(d.get("popularity", 0.0)),
            added_at_ms=int(d.get("added_at_ms", 0)),
            text=d.get("text"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "artist": self.artist,
            "genres": list(self.genres),
            "popularity": self.popularity,
            "added_at_ms": self.added_at_ms,
            "text": self.text,
        }


#: Called with the entities added or replaced, and the ids deleted.
Listener = Callable[[list[Entity], list[str]], None]


class Catalog:
    """Entities by id, with listeners notified of every batch of changes."""

    def __init__(self) -> None:
        self._entities: dict[str, Entity] = {}
        self._listeners: list[Listener] = []
        #: Bumped on every change; part of cache keys (e.g. cached item vectors).
        self.version = 0

    def __len__(self) -> int:
        return len(self._entities)

    def __iter__(self) -> Iterator[Entity]:
        return iter(self._entities.values())

    def get(self, entity_id: str) -> Entity | None:
        return self._entities.get(entity_id)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def apply(self, upserts: Iterable[Entity] = (), deletes: Iterable[str] = ()) -> None:
        added = list(upserts)
        removed = [d for d in deletes if d in self._entities]
        for entity in added:
            self._entities[entity.id] = entity
        for entity_id in removed:
            del self._entities[entity_id]
        if added or removed:
            self.version += 1
            for listener in self._listeners:
                listener(added, removed)


def load_jsonl(path: Path) -> tuple[list[Entity], list[tuple[int, Rejection]]]:
    """Entities of a JSONL file (one CatalogEntity v1 per line) and the rejected lines."""
    entities, rejected = [], []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            obj = orjson.loads(line) if line.lstrip().startswith(b"{") else None
            if isinstance(obj, dict):
                obj.setdefault("schema_version", 1)
                line = orjson.dumps(obj)
            result = decode(Contract.CATALOG_ENTITY, line.strip())
            if isinstance(result, Rejection):
                rejected.append((number, result))
            else:
                entities.append(Entity.from_dict(result))
    return entities, rejected

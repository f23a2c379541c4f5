"""One small key-value interface with two backends: memory (tests, fallbacks) and RocksDB.

Writes go in batches that apply atomically, so a value and the offset it corresponds to are
stored together or not at all (a crash between the two must not lose or double-count).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol, cast

from sortedcontainers import SortedDict

from ltrr.state.exceptions import StateError

#: A batch of writes: key -> new value, or None to delete the key.
Batch = Mapping[bytes, bytes | None]


class Store(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def write(self, batch: Batch) -> None:
        """Apply every put and delete in ``batch`` atomically: a batch with a key or value
        that is not bytes raises and changes nothing."""
        ...

    def scan(
        self, prefix: bytes, start: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items whose key starts with ``prefix``, in bytewise key order, from ``start`` (a
        key at or after ``prefix``) when given: lets a reader skip what it knows was deleted;
        at most ``limit`` of them when given (the scan costs what it returns). A scan sees the
        store as it was when it began; writes during it are safe."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A sorted dict behind the ``Store`` interface: a prefix scan costs what it returns (plus
    a log-time seek), not the size of the store. The retrieval worker's Q2E replica is one, and
    every search scans it several times."""

    def __init__(self) -> None:
        self._data: SortedDict = SortedDict()
        #: Batches written so far: a reader may keep what it derived while this is unchanged.
        self.version = 0
        #: Watched key prefix -> batches written that touched it (see ``watch``).
        self._watched: dict[bytes, int] = {}

    def watch(self, prefix: bytes) -> None:
        """Count the batches that write a key under ``prefix`` (``written``): a reader can keep
        what it derived from those keys alone while other keys change."""
        self._watched.setdefault(prefix, 0)

    def written(self, prefix: bytes) -> int | None:
        """Batches that touched watched ``prefix`` so far (None: not watched)."""
        return self._watched.get(prefix)

    def get(self, key: bytes) -> bytes | None:
        return cast(bytes | None, self._data.get(key))

    def write(self, batch: Batch) -> None:
        for key, value in batch.items():  # all checked first: a bad batch changes nothing
            if not isinstance(key, bytes) or not isinstance(value, bytes | None):
                raise TypeError(f"store keys and values are bytes, got {key!r}: {value!r}")
        self.version += 1
        for prefix in self._watched:
            if any(key.startswith(prefix) for key in batch):
                self._watched[prefix] += 1
        for key, value in batch.items():
            if value is None:
                self._data.pop(key, None)
            else:
                self._data[key] = value

    def scan(
        self, prefix: bytes, start: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        low = max(prefix, start) if start is not None else prefix
        # A copy: the scan sees the store as it began (as a RocksDB iterator does), and the
        # caller may write while iterating (the join deletes what it expires).
        items: list[tuple[bytes, bytes]] = []
        data = self._data
        for key in data.irange(minimum=low):
            if not key.startswith(prefix) or len(items) == limit:
                break
            items.append((key, data[key]))
        yield from items

    def close(self) -> None:
        return None


class RocksStore:
    """A RocksDB database (rocksdict) in raw bytes mode; batches are RocksDB ``WriteBatch``es."""

    def __init__(self, path: str | Path) -> None:
        from rocksdict import Options, Rdict

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = Rdict(str(self.path), options=Options(raw_mode=True))
        except Exception as exc:  # rocksdict raises plain Exception subclasses
            raise StateError(
                f"cannot open RocksDB at {self.path}: {exc}. Is another worker using this "
                f"directory? Give every worker its own --data-dir."
            ) from exc

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def write(self, batch: Batch) -> None:
        from rocksdict import WriteBatch

        wb = WriteBatch(raw_mode=True)
        for key, value in batch.items():
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        self._db.write(wb)

    def scan(
        self, prefix: bytes, start: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        it = self._db.iter()
        it.seek(max(prefix, start) if start is not None else prefix)
        n = 0
        while it.valid() and n != limit:
            key = bytes(it.key())
            if not key.startswith(prefix):
                break
            yield key, bytes(it.value())
            n += 1
            it.next()

    def close(self) -> None:
        self._db.close()

"""Writes staged in memory, then stored with the offsets they cover in one atomic write.

``StagedStore`` is a ``Store`` over another: ``write`` stages a batch (reads see it at once),
and ``commit(offsets)`` writes everything staged plus the consumed offsets in ONE batch of the
inner store — quix-streams' ``write(cache, changelog_offset)`` — so a whole poll of updates
costs one RocksDB write, and a crash keeps either all of them with their offsets or none.
``commit`` returns the staged rows (without the offsets) for the changelog. Offsets are kept
under ``offset/<partition>`` and cached: the stream reads them without a store get.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ltrr.state.store import Batch, Store

__all__ = ["StagedStore"]

_OFFSET = b"offset/"


class StagedStore:
    """A ``Store`` whose writes wait in memory for ``commit(offsets)``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._staged: dict[bytes, bytes | None] = {}
        self._offsets: dict[int, int | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._staged:
            return self._staged[key]
        return self.inner.get(key)

    def write(self, batch: Batch) -> None:
        """Stage ``batch`` (checked first: a batch with a key or value that is not bytes
        raises and stages nothing)."""
        for key, value in batch.items():
            if not isinstance(key, bytes) or not isinstance(value, bytes | None):
                raise TypeError(f"store keys and values are bytes, got {key!r}: {value!r}")
        self._staged.update(batch)

    def scan(
        self, prefix: bytes, start: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        low = max(prefix, start) if start is not None else prefix
        staged = [(k, v) for k, v in self._staged.items() if k.startswith(prefix) and k >= low]
        # Staged deletes may hide up to len(staged) of the inner store's first items.
        inner = None if limit is None else limit + len(staged)
        merged: dict[bytes, bytes | None] = dict(self.inner.scan(prefix, start, inner))
        merged.update(staged)
        # A sorted copy: the scan sees the store as it began, as the inner store's does.
        items = sorted((k, v) for k, v in merged.items() if v is not None)
        yield from items if limit is None else items[:limit]

    def staged_rows(self) -> list[tuple[bytes, bytes | None]]:
        """The rows the next ``commit`` writes and returns."""
        return list(self._staged.items())

    @property
    def staged(self) -> int:
        """Rows staged and not yet committed."""
        return len(self._staged)

    def offset(self, partition: int) -> int | None:
        """The next input offset of ``partition`` the committed state does not cover (None
        if none was committed)."""
        if partition not in self._offsets:
            raw = self.inner.get(_OFFSET + str(partition).encode())
            self._offsets[partition] = None if raw is None else int(raw)
        return self._offsets[partition]

    def commit(
        self, offsets: Mapping[int, int] | None = None, local: Batch | None = None
    ) -> list[tuple[bytes, bytes | None]]:
        """Write the staged rows, ``offsets`` (partition → next offset) and ``local`` rows
        (kept here, not returned for the changelog) in one atomic batch; return the staged
        rows. Nothing to write writes nothing."""
        rows = list(self._staged.items())
        batch = {**(local or {}), **self._staged}
        for partition, offset in (offsets or {}).items():
            batch[_OFFSET + str(partition).encode()] = str(offset).encode()
        if batch:
            self.inner.write(batch)
        self._staged = {}
        self._offsets.update(offsets or {})
        return rows

    def close(self) -> None:
        self.inner.close()

"""Rows a store committed that its changelog has not acknowledged yet (pure apart from the store).

A consumer that keeps its state in a local store and replicates the committed rows to a
changelog (Q2E memory: the learning worker folds rewards in, retrieval workers follow the
changelog) commits the rows with the input offsets they cover, then hands them to the producer.
If the producer refuses (not started yet at boot, stopping) or a send is never acknowledged,
and the worker goes on or restarts, the offsets say "folded in" and the rows are never sent
again: the replicas keep stale values for those keys until they happen to be written again.

``Unreplicated`` closes that gap: each commit also writes a mark ``unreplicated/<key>`` per
row, in the same atomic batch (``mark``); a batch whose every send was acknowledged clears its
marks (``acked``: the deletes go with the next commit), one that failed gives its keys back
(``failed``), and the next send carries the current value of every key given back or still
marked from before a restart (``take_resend``) ahead of its own rows. The changelog keeps the
last value per key, so a key sent twice is harmless; a key sent never is not.
"""

from __future__ import annotations

from collections.abc import Iterable

from ltrr.state.store import Batch, Store

__all__ = ["PREFIX", "Unreplicated"]

PREFIX = b"unreplicated/"
Row = tuple[bytes, bytes | None]


class Unreplicated:
    """Marks of committed rows whose changelog send is not acknowledged yet."""

    def __init__(self, store: Store) -> None:
        self.store = store
        #: key -> the ticket of the newest batch that wrote it and is not acknowledged yet.
        self._marked: dict[bytes, int] = {}
        #: Keys to send again with their current value: from failed batches, and every mark
        #: left by the process before this one (it may have died before the send).
        self._resend: set[bytes] = {key[len(PREFIX) :] for key, _ in store.scan(PREFIX)}
        #: Mark deletes for the next commit (keys acknowledged since).
        self._clears: dict[bytes, bytes | None] = {}
        self._ticket = 0

    def __len__(self) -> int:
        """Keys committed and not acknowledged by the changelog (sent or not)."""
        return len(self._marked.keys() | self._resend)

    def take_resend(self) -> list[Row]:
        """The current value (None: deleted) of every key given back or left marked by an
        earlier process, to be sent first and marked again with ``mark``."""
        keys, self._resend = sorted(self._resend), set()
        return [(key, self.store.get(key)) for key in keys]

    def outgoing(self, staged: Iterable[Row]) -> list[Row]:
        """The rows of the next send: those given back (``take_resend``) first, then
        ``staged``; a key in both goes once, with its staged value."""
        return list({**dict(self.take_resend()), **dict(staged)}.items())

    def mark(self, rows: Iterable[Row]) -> tuple[int, Batch]:
        """A ticket for a batch about to be sent, and the writes to commit with its rows:
        a mark per row, plus the clears of earlier acknowledged batches."""
        self._ticket += 1
        writes: dict[bytes, bytes | None] = {**self._clears}
        self._clears = {}
        for key, _ in rows:
            self._marked[key] = self._ticket
            writes[PREFIX + key] = b""
        return self._ticket, writes

    def acked(self, ticket: int, keys: Iterable[bytes]) -> None:
        """Every row of batch ``ticket`` reached the changelog: clear the marks that no newer
        batch renewed (with the next commit)."""
        for key in keys:
            if self._marked.get(key) == ticket:
                del self._marked[key]
                self._clears[PREFIX + key] = None

    def failed(self, ticket: int, keys: Iterable[bytes]) -> None:
        """Batch ``ticket`` was refused or not acknowledged: its keys that no newer batch
        renewed go out again, with their value at that time."""
        for key in keys:
            if self._marked.get(key) == ticket:
                self._resend.add(key)

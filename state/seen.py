"""The last N ids a consumer folded in, kept in its own store: drops a second copy (pure).

At-least-once delivery can put one message on a topic twice (the join resends an outbox entry
whose "sent" mark a crash lost). A consumer whose state counts things, like Q2E memory, must
fold each message in once: it keeps the ids (e.g. a digest of the message) of the last
``capacity`` messages under ``seen/<id>`` = sequence number, and writes them in the same
atomic batch as the state they guard (``take_writes``), so a crash keeps both or neither.
Copies arrive close together (a resend follows its original within a crash and a restart),
so a bounded window is enough; the oldest ids are forgotten first.
"""

from __future__ import annotations

from collections import deque

from ltrr.state.store import Batch, Store

__all__ = ["Seen"]

PREFIX = b"seen/"


class Seen:
    """A bounded, persisted set of recent ids."""

    def __init__(self, store: Store, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        loaded = sorted(
            (int(seq), key[len(PREFIX) :]) for key, seq in store.scan(PREFIX) if seq.isdigit()
        )
        self._order: deque[tuple[int, bytes]] = deque(loaded)
        self._ids = {ident for _, ident in loaded}
        self._seq = loaded[-1][0] + 1 if loaded else 0
        self._writes: dict[bytes, bytes | None] = {}

    def __contains__(self, ident: bytes) -> bool:
        return ident in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ident: bytes) -> None:
        """Remember ``ident`` (forgetting the oldest beyond ``capacity``)."""
        if ident in self._ids:
            return
        self._ids.add(ident)
        self._order.append((self._seq, ident))
        self._writes[PREFIX + ident] = str(self._seq).encode()
        self._seq += 1
        while len(self._order) > self.capacity:
            _, old = self._order.popleft()
            self._ids.discard(old)
            self._writes[PREFIX + old] = None

    def take_writes(self) -> Batch:
        """The puts and deletes since the last call, for the caller's atomic write."""
        writes, self._writes = self._writes, {}
        return writes

"""Event-time watermarks of the join partitions (pure: no Kafka, no clock).

The join's windows close on event time. For each join partition p (impressions and actions of
one impression share the partition number) the watermark is the event time up to which both
streams of p are believed complete:

  watermark(s, p) = max(latest event timestamp read from stream s, partition p,
                        last time s/p was read to its end - max_delay)
  watermark(p)    = min over the two streams

The first term moves with the events themselves, so a backlog is joined at the pace it is
read, whatever the clock says. The second lets time pass on a quiet partition: once
everything in the log has been read, any event still to come was produced later, and its
timestamp is at most ``max_delay`` older than that moment (``event_delay_s``: how late a
producer may deliver an event). "Read to its end" is measured against the broker's
high-water mark and the offsets the join has *processed* (not merely fetched); "last time"
is when the high-water mark was asked for, not when the answer came back (an event produced
in between is not below it).
"""

from __future__ import annotations

from collections.abc import Iterable

STREAMS = ("impressions", "actions")


class Watermarks:
    def __init__(self, max_delay_ms: int) -> None:
        self.max_delay_ms = max_delay_ms
        self._latest: dict[tuple[str, int], int] = {}
        self._offset: dict[tuple[str, int], int] = {}
        self._caught_up: dict[tuple[str, int], int] = {}

    def observe(self, stream: str, partition: int, offset: int, timestamp_ms: int) -> None:
        """The join processed ``offset`` of ``stream``/``partition``, an event at
        ``timestamp_ms``."""
        key = (stream, partition)
        if timestamp_ms > self._latest.get(key, -1):
            self._latest[key] = timestamp_ms
        if offset > self._offset.get(key, -1):
            self._offset[key] = offset

    def log_end(
        self, stream: str, partition: int, highwater: int, committed: int | None, now_ms: int
    ) -> bool:
        """The broker's high-water mark of ``stream``/``partition`` was ``highwater`` at
        ``now_ms`` (when it was asked for: every event produced before then is below it);
        ``committed`` is the group's committed offset of it (where this worker started
        reading it). Returns whether the join had processed everything below it.

        Fetched is not processed: after an assignment the consumer may have fetched a
        partition to its end while the join still waits to restore its state, so only offsets
        the join processed (or the committed offset, before it processed any) count."""
        key = (stream, partition)
        processed = self._offset.get(key)
        if processed is not None:
            done = processed + 1 >= highwater
        else:
            done = highwater == 0 or (committed is not None and committed >= highwater)
        if done:
            self._caught_up[key] = max(now_ms, self._caught_up.get(key, now_ms))
        return done

    def stream(self, stream: str, partition: int) -> int | None:
        key = (stream, partition)
        latest = self._latest.get(key)
        caught = self._caught_up.get(key)
        bound = None if caught is None else caught - self.max_delay_ms
        known = [v for v in (latest, bound) if v is not None]
        return max(known) if known else None

    def needs_log_ends(self, partitions: Iterable[int], now_ms: int) -> bool:
        """Whether asking the broker where ``partitions`` end could move a watermark: only if
        some stream of them has read no event, or none newer than ``now_ms - max_delay``. A
        log end learned now gives at most ``now_ms - max_delay``, which a newer event already
        passes, so on busy partitions the question (a round trip through the consumer's
        thread, which fetches nothing meanwhile) is skipped."""
        floor = now_ms - self.max_delay_ms
        return any(self._latest.get((s, p), floor - 1) < floor for p in partitions for s in STREAMS)

    def current(self, partitions: Iterable[int]) -> dict[int, int]:
        """Watermark of each of ``partitions`` whose two streams have one."""
        out = {}
        for p in partitions:
            marks = [self.stream(s, p) for s in STREAMS]
            if all(m is not None for m in marks):
                out[p] = min(m for m in marks if m is not None)
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions this worker no longer owns: their watermarks start anew if they return."""
        for p in partitions:
            for s in STREAMS:
                for table in (self._latest, self._offset, self._caught_up):
                    table.pop((s, p), None)

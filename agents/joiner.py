"""The impression/action join as a pure state machine over a ``Store`` (no Kafka, no clock).

Windows run on **event time**: an impression opens a reward window ``[t, t + window)`` at its
own ``timestamp_ms``; actions join by impression_id when their timestamp falls in it. Time
moves by *watermarks*, one per join partition (impressions and actions of one impression
share a partition number), passed to ``expire``: a window closes when its partition's
watermark reaches its end, and an action that came before its impression (buffered as an
orphan) is dead-lettered only when the watermark has passed the action's own timestamp by the
window. So a backlog, a lagging impressions stream or a paused worker never turns clicks into
orphans: nothing closes until the events it waits for could have been read. An action
after its window (event time), or for a closed window, is late: it produces a late reward
for the Q2E memory, never for the bandit. Duplicates (same action_id) count once.

Everything the join emits goes first into a persistent *outbox* in the same atomic write as
the state change that caused it; the agent sends outbox entries and deletes them after the
broker acknowledged them. A crash therefore loses nothing; it may resend an entry, which the
learner deduplicates by EventId. A window that cannot be closed (its reward cannot be built)
is dead-lettered with the impression's bytes; the others close as usual.

State is kept per join partition p, under ``j/<p>/`` (p in 5 digits), so that it can move
with its partition: every write is also recorded as a *change* (key, value or None) that the
worker sends to partition p of the join changelog topic; a worker that is assigned p replays
that changelog (``restore``) before it touches p. ``meta/changelog`` (local only) is the next
changelog offset already replayed.

Store layout under ``j/<p>/`` (keys are bytes):
  ``imp/<id>``             open or closed impression: the event, its actions, deadlines
  ``orph/<id>``            actions waiting for their impression
  ``due/<ms>/<k>/<id>``    deadline index: event-time ms (16 digits), k = i (window close),
                           o (orphan expiry), g (forget)
  ``out/<seq>``            outbox entries; ``meta/seq`` the next sequence number
  ``meta/changelog``       the next changelog offset replayed into this store (not replicated)
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from ltrr.agents.reward import RewardConfig, compute_reward
from ltrr.schemas.dead_letter import dead_letter
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression, UserAction
from ltrr.schemas.validation import Rejection
from ltrr.state.store import Store

#: Most deadlines one ``expire`` call handles in one atomic write (bounds memory per tick).
EXPIRE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class JoinConfig:
    """``window_ms``: how long (event time) an impression collects actions and an orphan
    waits past its own timestamp; ``late_horizon_ms``: how long past its window a closed
    impression is remembered for late actions."""

    window_ms: int = 600_000
    late_horizon_ms: int = 86_400_000


@dataclass(frozen=True, slots=True)
class Source:
    """Where a consumed message came from (kept for dead letters)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    raw: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": _b64(self.key),
            "raw": _b64(self.raw),
        }


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An outbox entry: send ``value`` with ``key`` to the logical topic ``topic``."""

    seq_key: bytes
    topic: str  # "rewards" or "dlq"
    key: bytes
    value: bytes
    kind: str  # reward | late_reward | orphan_action | join_failed
    reason: str = ""  # the dead-letter reason of a "dlq" entry
    plan: str | None = None  # a reward's chosen plan and value, for metrics (no re-parse)
    reward: float | None = None


@dataclass(frozen=True, slots=True)
class Effect:
    """What one input did, for metrics: a short verdict."""

    verdict: str  # opened | joined | duplicate | late | buffered | closed | ...


def _base(partition: int) -> str:
    return f"j/{partition:05d}/"


def _k(partition: int, *parts: str) -> bytes:
    return (_base(partition) + "/".join(parts)).encode()


def _due(partition: int, ms: int, kind: str, iid: str) -> bytes:
    return _k(partition, "due", f"{max(0, ms):016d}", kind, iid)


#: Local-only keys: never sent to the changelog.
_LOCAL = b"meta/changelog"


@dataclass
class _Partition:
    """What the joiner keeps in memory about one partition's stored state."""

    seq: int
    out_from: bytes
    pending: int
    #: No ``due/`` key below this one exists: ``expire`` scans from here, not over the
    #: tombstones of deadlines already handled; a deadline written below it moves it down.
    due_from: bytes = b""


class Joiner:
    """Join state for the partitions this worker owns, persisted in ``store``."""

    def __init__(self, store: Store, join: JoinConfig, reward: RewardConfig) -> None:
        self.store = store
        self.join = join
        self.reward = reward
        self._parts: dict[int, _Partition] = {}
        #: Writes not yet handed to the changelog, per partition, in order.
        self._changes: dict[int, list[tuple[bytes, bytes | None]]] = {}
        #: Inside ``batch()``: the writes not yet in the store, per partition (None: outside).
        self._overlay: dict[int, dict[bytes, bytes | None]] | None = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Apply the inputs handled inside as one atomic store write, with one changelog row
        per key written (its last value): a poll of events costs one write, not one per event.
        Reads inside see the writes before them. The block must not await: nothing else may
        touch the join meanwhile."""
        if self._overlay is not None:  # nested: the outer block writes
            yield
            return
        self._overlay = {}
        try:
            yield
        finally:
            overlay, self._overlay = self._overlay, None
            merged: dict[bytes, bytes | None] = {}
            for rows in overlay.values():
                merged.update(rows)
            if merged:
                self.store.write(merged)
            for p, rows in overlay.items():
                self._changes.setdefault(p, []).extend(rows.items())

    def _get(self, p: int, key: bytes) -> bytes | None:
        if self._overlay is not None:
            rows = self._overlay.get(p)
            if rows is not None and key in rows:
                return rows[key]
        return self.store.get(key)

    def _part(self, partition: int) -> _Partition:
        """The partition's counters, read from the store the first time it is touched."""
        part = self._parts.get(partition)
        if part is None:
            raw_seq = self.store.get(_k(partition, "meta", "seq"))
            seq = int(raw_seq) if raw_seq else 0
            # The lowest and highest outbox keys that exist: scans start at the lowest, not at
            # the tombstones of entries already sent; new entries go above the highest. A
            # store ahead of its changelog (a stop before the last rows were sent) may get an
            # older meta/seq back from the replay: a pending entry must not be overwritten.
            first = last = None
            for key, _ in self.store.scan(_k(partition, "out/")):
                first = first or key
                last = key
            if last is not None:
                seq = max(seq, int(last.rsplit(b"/", 1)[1]) + 1)
            out_from = first if first else _k(partition, "out", f"{seq:020d}")
            # Counted once here, then kept by _write: a scrape must not scan the state.
            pending = sum(1 for _ in self.store.scan(_k(partition, "due/")))
            part = self._parts[partition] = _Partition(
                seq, out_from, pending, _k(partition, "due/")
            )
        return part

    # -- inputs ---------------------------------------------------------------------------

    def on_impression(self, impression: dict[str, Any], source: Source) -> Effect:
        iid = impression["impression_id"]
        p = source.partition
        if self._get(p, _k(p, "imp", iid)) is not None:
            return Effect("duplicate_impression")
        start = impression["timestamp_ms"]
        deadline = start + self.join.window_ms
        batch: dict[bytes, bytes | None] = {}
        actions: list[dict[str, Any]] = []
        late: list[dict[str, Any]] = []
        orphan_raw = self._get(p, _k(p, "orph", iid))
        if orphan_raw is not None:
            orphan = orjson.loads(orphan_raw)
            for entry in orphan["entries"]:
                act = entry["action"]
                (late if act["timestamp_ms"] >= deadline else actions).append(act)
            batch[_k(p, "orph", iid)] = None
            batch[_due(p, orphan["deadline"], "o", iid)] = None
        record = {
            "impression": impression,
            "partition": p,
            "offset": source.offset,
            "actions": actions,
            "closed": False,
            "deadline": deadline,
            "late_ids": [a["action_id"] for a in late],
        }
        batch[_due(p, deadline, "i", iid)] = b""
        for act in late:  # early in arrival, but after the window in event time
            self._late_reward(p, record, act, batch)
        batch[_k(p, "imp", iid)] = orjson.dumps(record)
        self._write(p, batch)
        return Effect("opened_with_early_actions" if actions or late else "opened")

    def on_action(self, action: dict[str, Any], source: Source) -> Effect:
        iid = action["impression_id"]
        p = source.partition
        raw = self._get(p, _k(p, "imp", iid))
        if raw is None:
            return self._buffer_orphan(action, source)
        record = orjson.loads(raw)
        seen = {a["action_id"] for a in record["actions"]} | set(record["late_ids"])
        if action["action_id"] in seen:
            return Effect("duplicate")
        if not record["closed"] and action["timestamp_ms"] < record["deadline"]:
            record["actions"].append(action)
            self._write(p, {_k(p, "imp", iid): orjson.dumps(record)})
            return Effect("joined")
        record["late_ids"].append(action["action_id"])
        batch: dict[bytes, bytes | None] = {}
        self._late_reward(p, record, action, batch)
        batch[_k(p, "imp", iid)] = orjson.dumps(record)
        self._write(p, batch)
        return Effect("late")

    def _late_reward(
        self,
        p: int,
        record: dict[str, Any],
        action: dict[str, Any],
        batch: dict[bytes, bytes | None],
    ) -> None:
        impression = SearchImpression.from_dict(record["impression"])
        acted = [UserAction.from_dict(action)]
        outcome = compute_reward(acted, self.reward)
        event = reward_event(impression, outcome.reward, acted, late=True)
        self._outbox(
            p, batch, "rewards", impression.model_name.encode(), orjson.dumps(event), "late_reward"
        )

    def _buffer_orphan(self, action: dict[str, Any], source: Source) -> Effect:
        iid = action["impression_id"]
        p = source.partition
        raw = self._get(p, _k(p, "orph", iid))
        batch: dict[bytes, bytes | None] = {}
        if raw is None:
            orphan: dict[str, Any] = {
                "deadline": action["timestamp_ms"] + self.join.window_ms,
                "entries": [],
            }
            batch[_due(p, orphan["deadline"], "o", iid)] = b""
        else:
            orphan = orjson.loads(raw)
            if any(e["action"]["action_id"] == action["action_id"] for e in orphan["entries"]):
                return Effect("duplicate")
        orphan["entries"].append({"action": action, "source": source.as_dict()})
        batch[_k(p, "orph", iid)] = orjson.dumps(orphan)
        self._write(p, batch)
        return Effect("buffered")

    # -- time -----------------------------------------------------------------------------

    def expire(
        self, watermarks: Mapping[int, int], now_ms: int, limit: int = EXPIRE_BATCH
    ) -> list[Effect]:
        """Close the windows and orphan buffers of each partition whose deadline its
        watermark (event time) has reached; at most ``limit`` deadlines in one atomic write
        (call again while it returns ``limit`` effects or more)."""
        effects: list[Effect] = []
        handled = 0
        for p, watermark in sorted(watermarks.items()):
            batch: dict[bytes, bytes | None] = {}
            part = self._part(p)
            resume = None  # the first deadline not handled, if any
            last = None
            for key, _ in self.store.scan(_k(p, "due/"), start=part.due_from):
                _, _, _, ms, kind, iid = key.decode().split("/", 5)
                if int(ms) > watermark or handled >= limit:
                    resume = key
                    break
                handled += 1
                last = key
                batch[key] = None
                if kind == "i":
                    effects.append(self._close(p, iid, now_ms, batch))
                elif kind == "o":
                    effects.extend(self._expire_orphans(p, iid, now_ms, batch))
                else:
                    batch[_k(p, "imp", iid)] = None
                    effects.append(Effect("forgotten"))
            if resume is not None:
                part.due_from = resume
            elif last is not None:
                part.due_from = last + b"\x00"
            if batch:
                self._write(p, batch)  # may move due_from down again (a new deadline)
        return effects

    def _close(self, p: int, iid: str, now_ms: int, batch: dict[bytes, bytes | None]) -> Effect:
        raw = self._get(p, _k(p, "imp", iid))
        if raw is None:
            return Effect("missing")
        record = orjson.loads(raw)
        try:
            impression = SearchImpression.from_dict(record["impression"])
            actions = [UserAction.from_dict(a) for a in record["actions"]]
            outcome = compute_reward(actions, self.reward)
            event = reward_event(
                impression, outcome.reward, actions, default_reward=outcome.default
            )
            value = orjson.dumps(event)
        except Exception as exc:  # one window that cannot close must not stop the others
            return self._fail_window(p, iid, record, exc, now_ms, batch)
        record["closed"] = True
        forget_at = record["deadline"] + self.join.late_horizon_ms
        batch[_k(p, "imp", iid)] = orjson.dumps(record)
        batch[_due(p, forget_at, "g", iid)] = b""
        self._outbox(
            p,
            batch,
            "rewards",
            impression.model_name.encode(),
            value,
            "reward",
            (impression.chosen_plan.id, float(outcome.reward)),
        )
        return Effect("closed_default" if outcome.default else "closed")

    def _fail_window(
        self,
        p: int,
        iid: str,
        record: dict[str, Any],
        exc: Exception,
        now_ms: int,
        batch: dict[bytes, bytes | None],
    ) -> Effect:
        """Dead-letter an impression whose reward cannot be built, and forget it."""
        letter = dead_letter(
            Rejection(
                "invalid_value",
                f"the reward of impression {iid} cannot be built: {type(exc).__name__}: {exc}",
            ),
            orjson.dumps(record["impression"]),
            topic="impressions",
            partition=p,
            offset=record.get("offset", -1),
            timestamp_ms=None,
            key=iid.encode(),
            now_ms=now_ms,
        )
        batch[_k(p, "imp", iid)] = None
        self._outbox(p, batch, "dlq", iid.encode(), orjson.dumps(letter), "join_failed")
        return Effect("failed")

    def _expire_orphans(
        self, p: int, iid: str, now_ms: int, batch: dict[bytes, bytes | None]
    ) -> list[Effect]:
        raw = self._get(p, _k(p, "orph", iid))
        if raw is None:
            return []
        batch[_k(p, "orph", iid)] = None
        effects = []
        for entry in orjson.loads(raw)["entries"]:
            src = entry["source"]
            letter = dead_letter(
                Rejection(
                    "orphan_action",
                    f"no impression {iid} arrived on its partition within the reward window "
                    f"({self.join.window_ms} ms, event time) of this action",
                    "impression_id",
                ),
                _unb64(src["raw"]),
                topic=src["topic"],
                partition=src["partition"],
                offset=src["offset"],
                timestamp_ms=src["timestamp_ms"],
                key=_unb64(src["key"]) if src["key"] is not None else None,
                now_ms=now_ms,
            )
            self._outbox(p, batch, "dlq", iid.encode(), orjson.dumps(letter), "orphan_action")
            effects.append(Effect("orphan"))
        return effects

    # -- outbox ---------------------------------------------------------------------------

    def _outbox(
        self,
        p: int,
        batch: dict[bytes, bytes | None],
        topic: str,
        key: bytes,
        value: bytes,
        kind: str,
        reward: tuple[str, float] | None = None,
    ) -> None:
        part = self._part(p)
        entry: dict[str, Any] = {
            "topic": topic,
            "key": _b64(key),
            "value": _b64(value),
            "kind": kind,
        }
        if reward is not None:
            entry["plan"], entry["reward"] = reward
        batch[_k(p, "out", f"{part.seq:020d}")] = orjson.dumps(entry)
        part.seq += 1
        batch[_k(p, "meta", "seq")] = str(part.seq).encode()

    def outbox(self, partition: int, limit: int | None = None) -> Iterator[Outgoing]:
        """Pending outgoing messages of ``partition``, oldest first (at most ``limit``)."""
        start = self._part(partition).out_from
        for n, (key, raw) in enumerate(self.store.scan(_k(partition, "out/"), start=start)):
            if limit is not None and n >= limit:
                return
            entry = orjson.loads(raw)
            kind = entry["kind"]
            yield Outgoing(
                key,
                entry["topic"],
                _unb64(entry["key"]),
                _unb64(entry["value"]),
                kind,
                "invalid_value" if kind == "join_failed" else kind,
                entry.get("plan"),
                entry.get("reward"),
            )

    def sent(self, partition: int, entries: Outgoing | list[Outgoing], *, log: bool = True) -> None:
        """The broker acknowledged ``entries`` of ``partition`` (oldest first): forget them.
        ``log=False``: their deletions reached the changelog already (in the transaction that
        sent them), so they are not handed to ``take_changes`` again."""
        done = [entries] if isinstance(entries, Outgoing) else entries
        if not done:
            return
        self._write(partition, dict.fromkeys((e.seq_key for e in done), None), log=log)
        part = self._part(partition)
        last = max(e.seq_key for e in done)
        if last >= part.out_from:
            part.out_from = last + b"\x00"

    # -- changelog ------------------------------------------------------------------------

    def take_changes(self) -> dict[int, list[tuple[bytes, bytes | None]]]:
        """Writes since the last call, per partition, in order: for the join changelog."""
        changes, self._changes = self._changes, {}
        return changes

    def return_changes(self, changes: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
        """Give back rows ``take_changes`` gave that could not be handed to the producer: the
        next ``take_changes`` returns them first, before any newer write of their partition
        (so the changelog still ends with each key's latest value)."""
        for partition, rows in changes.items():
            if rows:
                self._changes[partition] = [*rows, *self._changes.get(partition, [])]

    def changelog_position(self, partition: int) -> int:
        """The next changelog offset of ``partition`` already replayed into this store."""
        raw = self.store.get(_k(partition, "meta", "changelog"))
        return int(raw) if raw else 0

    def restore(
        self, partition: int, rows: Iterable[tuple[bytes, bytes | None]], next_offset: int
    ) -> int:
        """Apply changelog ``rows`` (key, value or None) of ``partition`` and remember
        ``next_offset`` in the same atomic write; returns how many rows applied. Rows of other
        partitions or of local-only keys are ignored."""
        prefix = _base(partition).encode()
        batch: dict[bytes, bytes | None] = {
            key: value for key, value in rows if key.startswith(prefix) and not key.endswith(_LOCAL)
        }
        batch[_k(partition, "meta", "changelog")] = str(next_offset).encode()
        self.store.write(batch)
        self._parts.pop(partition, None)  # counters are re-read from the restored state
        return len(batch) - 1

    def open_windows(self) -> int:
        """Number of pending deadlines (windows, orphan buffers, late horizons) of the
        partitions touched since start."""
        return sum(part.pending for part in self._parts.values())

    def _write(self, p: int, batch: dict[bytes, bytes | None], *, log: bool = True) -> None:
        """Write ``batch`` (keys of partition ``p``) atomically, record it for the changelog,
        then count the deadlines it adds and removes.

        A deadline key is written once when it is created and deleted once when it is due,
        so the count stays equal to the number of ``due/`` keys in the store.
        """
        part = self._part(p)  # read before the write, so the batch is counted once
        if self._overlay is not None and log:
            self._overlay.setdefault(p, {}).update(batch)  # written when the batch ends
        else:
            self.store.write(batch)
            if log:
                self._changes.setdefault(p, []).extend(batch.items())
        due = _k(p, "due/")
        for key, value in batch.items():
            if key.startswith(due):
                part.pending += 1 if value is not None else -1
                if value is not None and key < part.due_from:
                    part.due_from = key


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)

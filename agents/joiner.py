"""The impression/action join as a pure state machine over a ``Store`` (no Kafka, no clock).

Per impression a reward window opens when the impression arrives (processing time ``now_ms``,
passed in). Actions join by impression_id; they may come before their impression (buffered
as orphans until the window passes), twice (deduplicated by action_id) or after the window
closed (late: they produce a late reward for the Q2E memory, never for the bandit). When a
window closes the reward is computed once.

Everything the join emits goes first into a persistent *outbox* in the same atomic write as
the state change that caused it; the agent sends outbox entries and deletes each after the
broker acknowledged it. A crash therefore loses nothing; it may resend an entry, which the
learner deduplicates by EventId.

Store layout (keys are bytes):
  ``imp/<id>``           open or closed impression: the event, its actions, deadlines
  ``orph/<id>``          actions waiting for their impression
  ``due/<ms>/<k>/<id>``  deadline index, k = i (window close), o (orphan expiry), g (forget)
  ``out/<seq>``          outbox entries; ``meta/seq`` the next sequence number
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ltrr.agents.reward import RewardConfig, compute_reward
from ltrr.schemas.dead_letter import dead_letter
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression, UserAction
from ltrr.schemas.validation import Rejection
from ltrr.state.store import Store


@dataclass(frozen=True, slots=True)
class JoinConfig:
    """``window_ms``: how long an impression collects actions (and orphans wait);
    ``late_horizon_ms``: how long a closed impression is remembered for late actions."""

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


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An outbox entry: send ``value`` with ``key`` to the logical topic ``topic``."""

    seq_key: bytes
    topic: str  # "rewards" or "dlq"
    key: bytes
    value: bytes
    kind: str  # reward | late_reward | orphan_action


@dataclass(frozen=True, slots=True)
class Effect:
    """What one input did, for metrics: a short verdict."""

    verdict: str  # opened | joined | duplicate | late | buffered | closed | ...


def _k(*parts: str) -> bytes:
    return "/".join(parts).encode()


def _due(ms: int, kind: str, iid: str) -> bytes:
    return f"due/{ms:016d}/{kind}/{iid}".encode()


class Joiner:
    """Join state for the partitions this worker owns, persisted in ``store``."""

    def __init__(self, store: Store, join: JoinConfig, reward: RewardConfig) -> None:
        self.store = store
        self.join = join
        self.reward = reward
        raw_seq = store.get(b"meta/seq")
        self._seq = int(raw_seq) if raw_seq else 0
        # Counted once here, then kept by _write: a scrape must not scan the state.
        self._pending = sum(1 for _ in store.scan(b"due/"))

    # -- inputs ---------------------------------------------------------------------------

    def on_impression(self, impression: dict[str, Any], now_ms: int) -> Effect:
        iid = impression["impression_id"]
        if self.store.get(_k("imp", iid)) is not None:
            return Effect("duplicate_impression")
        batch: dict[bytes, bytes | None] = {}
        actions: list[dict[str, Any]] = []
        orphan_raw = self.store.get(_k("orph", iid))
        if orphan_raw is not None:
            orphan = orjson.loads(orphan_raw)
            actions = [entry["action"] for entry in orphan["entries"]]
            batch[_k("orph", iid)] = None
            batch[_due(orphan["deadline"], "o", iid)] = None
        deadline = now_ms + self.join.window_ms
        record = {
            "impression": impression,
            "actions": actions,
            "closed": False,
            "deadline": deadline,
            "late_ids": [],
        }
        batch[_k("imp", iid)] = orjson.dumps(record)
        batch[_due(deadline, "i", iid)] = b""
        self._write(batch)
        return Effect("opened_with_early_actions" if actions else "opened")

    def on_action(self, action: dict[str, Any], source: Source, now_ms: int) -> Effect:
        iid = action["impression_id"]
        raw = self.store.get(_k("imp", iid))
        if raw is None:
            return self._buffer_orphan(action, source, now_ms)
        record = orjson.loads(raw)
        seen = {a["action_id"] for a in record["actions"]} | set(record["late_ids"])
        if action["action_id"] in seen:
            return Effect("duplicate")
        if not record["closed"]:
            record["actions"].append(action)
            self.store.write({_k("imp", iid): orjson.dumps(record)})
            return Effect("joined")
        record["late_ids"].append(action["action_id"])
        impression = SearchImpression.from_dict(record["impression"])
        acted = [UserAction.from_dict(action)]
        outcome = compute_reward(acted, self.reward)
        event = reward_event(impression, outcome.reward, acted, late=True)
        batch: dict[bytes, bytes | None] = {_k("imp", iid): orjson.dumps(record)}
        self._outbox(
            batch, "rewards", impression.model_name.encode(), orjson.dumps(event), "late_reward"
        )
        self._write(batch)
        return Effect("late")

    def _buffer_orphan(self, action: dict[str, Any], source: Source, now_ms: int) -> Effect:
        iid = action["impression_id"]
        raw = self.store.get(_k("orph", iid))
        batch: dict[bytes, bytes | None] = {}
        if raw is None:
            orphan: dict[str, Any] = {"deadline": now_ms + self.join.window_ms, "entries": []}
            batch[_due(orphan["deadline"], "o", iid)] = b""
        else:
            orphan = orjson.loads(raw)
            if any(e["action"]["action_id"] == action["action_id"] for e in orphan["entries"]):
                return Effect("duplicate")
        orphan["entries"].append(
            {
                "action": action,
                "source": {
                    "topic": source.topic,
                    "partition": source.partition,
                    "offset": source.offset,
                    "timestamp_ms": source.timestamp_ms,
                    "key": _b64(source.key),
                    "raw": _b64(source.raw),
                },
            }
        )
        batch[_k("orph", iid)] = orjson.dumps(orphan)
        self._write(batch)
        return Effect("buffered")

    # -- time -----------------------------------------------------------------------------

    def expire(self, now_ms: int) -> list[Effect]:
        """Close every window and orphan buffer whose deadline passed, in one atomic write."""
        batch: dict[bytes, bytes | None] = {}
        effects: list[Effect] = []
        for key, _ in self.store.scan(b"due/"):
            _, ms, kind, iid = key.decode().split("/", 3)
            if int(ms) > now_ms:
                break
            batch[key] = None
            if kind == "i":
                effects.append(self._close(iid, now_ms, batch))
            elif kind == "o":
                effects.extend(self._expire_orphans(iid, now_ms, batch))
            else:
                batch[_k("imp", iid)] = None
                effects.append(Effect("forgotten"))
        if batch:
            self._write(batch)
        return effects

    def _close(self, iid: str, now_ms: int, batch: dict[bytes, bytes | None]) -> Effect:
        raw = self.store.get(_k("imp", iid))
        if raw is None:
            return Effect("missing")
        record = orjson.loads(raw)
        impression = SearchImpression.from_dict(record["impression"])
        actions = [UserAction.from_dict(a) for a in record["actions"]]
        outcome = compute_reward(actions, self.reward)
        event = reward_event(impression, outcome.reward, actions, default_reward=outcome.default)
        record["closed"] = True
        forget_at = now_ms + self.join.late_horizon_ms
        batch[_k("imp", iid)] = orjson.dumps(record)
        batch[_due(forget_at, "g", iid)] = b""
        self._outbox(
            batch, "rewards", impression.model_name.encode(), orjson.dumps(event), "reward"
        )
        return Effect("closed_default" if outcome.default else "closed")

    def _expire_orphans(
        self, iid: str, now_ms: int, batch: dict[bytes, bytes | None]
    ) -> list[Effect]:
        raw = self.store.get(_k("orph", iid))
        if raw is None:
            return []
        batch[_k("orph", iid)] = None
        effects = []
        for entry in orjson.loads(raw)["entries"]:
            src = entry["source"]
            letter = dead_letter(
                Rejection(
                    "orphan_action",
                    f"no impression {iid} arrived within the reward window "
                    f"({self.join.window_ms} ms) of this action",
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
            self._outbox(batch, "dlq", iid.encode(), orjson.dumps(letter), "orphan_action")
            effects.append(Effect("orphan"))
        return effects

    # -- outbox ---------------------------------------------------------------------------

    def _outbox(
        self, batch: dict[bytes, bytes | None], topic: str, key: bytes, value: bytes, kind: str
    ) -> None:
        entry = {"topic": topic, "key": _b64(key), "value": _b64(value), "kind": kind}
        batch[f"out/{self._seq:020d}".encode()] = orjson.dumps(entry)
        self._seq += 1
        batch[b"meta/seq"] = str(self._seq).encode()

    def outbox(self) -> Iterator[Outgoing]:
        """Pending outgoing messages, oldest first."""
        for key, raw in self.store.scan(b"out/"):
            entry = orjson.loads(raw)
            yield Outgoing(
                key, entry["topic"], _unb64(entry["key"]), _unb64(entry["value"]), entry["kind"]
            )

    def sent(self, entry: Outgoing) -> None:
        """The broker acknowledged ``entry``: forget it."""
        self.store.write({entry.seq_key: None})

    def open_windows(self) -> int:
        """Number of pending deadlines (windows, orphan buffers, late horizons)."""
        return self._pending

    def _write(self, batch: dict[bytes, bytes | None]) -> None:
        """Write ``batch`` atomically, then count the deadlines it adds and removes.

        A deadline key is written once when it is created and deleted once when it is due,
        so the count stays equal to the number of ``due/`` keys in the store.
        """
        self.store.write(batch)
        for key, value in batch.items():
            if key.startswith(b"due/"):
                self._pending += 1 if value is not None else -1


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)

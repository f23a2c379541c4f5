"""When and what to publish as model snapshots; versions are reserved before publishing.

The publisher persists ``snap/<model>`` (last version, its chunk count, examples at that time,
and the SHA-256 of its model bytes) in the learner's store. A version is reserved — written —
before its messages are sent, so a crash mid-publish leaves a gap in versions, never two
different models with one version.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from ltrr.agents.learning import Learners
from ltrr.schemas.snapshot import encode_snapshot

Message = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    every_examples: int = 1000
    interval_s: float = 30.0
    key_id: str = "k1"
    key: bytes = b""  # required: encode_snapshot refuses to sign with an empty key
    max_message_bytes: int = 8 * 1024 * 1024


def state_key(model: str) -> bytes:
    """Store key of the publisher's state of ``model``."""
    return f"snap/{model}".encode()


class SnapshotPublisher:
    """Decides which models are due and encodes their signed snapshot messages."""

    def __init__(self, learners: Learners, policy: SnapshotPolicy, rewards_topic: str) -> None:
        self.learners = learners
        self.policy = policy
        self.rewards_topic = rewards_topic
        self._last_publish: dict[str, float] = {}

    def state(self, model: str) -> dict[str, Any]:
        """``version``, ``chunks``, ``examples`` (and ``epoch``, ``sha256``) of the last
        version of ``model`` reserved here, published or adopted; version 0 when there is
        none."""
        raw = self.learners.store.get(state_key(model))
        return orjson.loads(raw) if raw else {"version": 0, "chunks": 0, "examples": 0}

    def due(self, now: float | None = None, *, force: bool = False) -> list[str]:
        """Models with something new, and enough of it (or enough time) to publish."""
        now = time.monotonic() if now is None else now
        out = []
        for name in sorted(self.learners.models):
            new = self.learners.examples(name) - self.state(name)["examples"]
            if new <= 0:
                continue
            waited = now - self._last_publish.get(name, 0.0)
            if force or new >= self.policy.every_examples or waited >= self.policy.interval_s:
                out.append(name)
        return out

    def encode(self, model: str, now_ms: int) -> tuple[int, list[Message], int]:
        """Reserve the next version of ``model`` (in the epoch of the last one) and encode it:
        (version, messages, bytes)."""
        state = self.state(model)
        epoch = int(state.get("epoch", 0))
        version = state["version"] + 1
        model_bytes = self.learners.model_bytes(model)
        offsets = [
            {"topic": self.rewards_topic, "partition": p, "offset": o}
            for p, o in sorted(self.learners.offsets.items())
        ]
        messages = encode_snapshot(
            model=model,
            version=version,
            vw_args=list(self.learners.vw_args),
            model_bytes=model_bytes,
            examples_learned=self.learners.examples(model),
            offsets=offsets,
            created_ms=now_ms,
            key_id=self.policy.key_id,
            key=self.policy.key,
            max_message_bytes=self.policy.max_message_bytes,
            previous_chunks=state["chunks"],
            previous_version=state["version"] or None,
            epoch=epoch,
        )
        chunks = sum(1 for key, value in messages if value is not None and key != model.encode())
        self.learners.store.write(
            {
                state_key(model): orjson.dumps(
                    {
                        "epoch": epoch,
                        "version": version,
                        "chunks": chunks,
                        "examples": self.learners.examples(model),
                        "sha256": hashlib.sha256(model_bytes).hexdigest(),
                    }
                )
            }
        )
        self._last_publish[model] = time.monotonic()
        return version, messages, len(model_bytes)

"""DeadLetter v1 envelopes: the rejected message's bytes, where it came from, and why."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from ltrr.schemas.validation import Rejection

REASON_HEADER = "ltrr-dlq-reason"


def dead_letter(
    rejection: Rejection,
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    now_ms: int,
    max_original_bytes: int | None = None,
) -> dict[str, Any]:
    """The DeadLetter v1 object for a message refused with ``rejection``.

    The original bytes are kept whole unless they exceed ``max_original_bytes`` (a message
    too big for the dead-letter topic itself); then the head is kept, ``original_truncated``
    is set and ``original_size``/``original_sha256`` still identify the whole message.
    """
    body = raw or b""
    truncated = max_original_bytes is not None and len(body) > max_original_bytes
    kept = body[:max_original_bytes] if truncated else body
    return {
        "schema_version": 1,
        "reason": rejection.reason,
        "field": rejection.field,
        "detail": rejection.detail,
        "source": {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "timestamp_ms": timestamp_ms,
            "key_b64": None if key is None else base64.b64encode(key).decode("ascii"),
        },
        "original_b64": base64.b64encode(kept).decode("ascii"),
        "original_size": len(body),
        "original_sha256": hashlib.sha256(body).hexdigest(),
        "original_truncated": truncated,
        "rejected_ms": now_ms,
    }


def original_bytes(letter: dict[str, Any]) -> bytes:
    """The rejected message's value, recovered from its envelope."""
    return base64.b64decode(letter["original_b64"])

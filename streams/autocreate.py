"""No Kafka client of ltrr creates a topic by asking for its metadata.

A consumer or producer that asks a broker about a missing topic makes the broker create it
(when the broker allows it) with the broker's default partition count, usually 1; a worker
that then joins impressions and actions on topics with different partition counts is silently
wrong. ltrr creates its topics itself (``ltrr topics create``, the worker at start).
kafka-python clients take ``allow_auto_create_topics=False``; aiokafka (under Faust and the
retrieval worker) has no such option and always asks for creation, so its metadata request
is made to say no by default.
"""

from __future__ import annotations

from typing import Any

_PATCHED = "_ltrr_no_auto_create"


def disable_aiokafka_auto_create() -> None:
    """Make aiokafka's metadata requests refuse topic auto-creation (idempotent)."""
    try:
        from aiokafka.protocol import metadata
    except ImportError:  # pragma: no cover - aiokafka comes with faust-streaming
        return
    cls: Any = metadata.MetadataRequest
    if getattr(cls, _PATCHED, False):
        return
    original = cls.__init__

    def __init__(
        self: Any, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None
    ) -> None:
        original(
            self, topics, False if allow_auto_topic_creation is None else allow_auto_topic_creation
        )

    cls.__init__ = __init__
    setattr(cls, _PATCHED, True)

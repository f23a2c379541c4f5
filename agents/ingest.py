"""Ingest agents: validate every impression and action; route bad input to the dead-letter topic.

Accepted events (validated JSON objects) are handed, with their Kafka message, to the
``on_impression`` / ``on_action`` callbacks (the join); the stream never stops on bad input.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust

from ltrr.agents.dead_letters import send_dead_letter
from ltrr.agents.metrics import EVENT_BYTES, EVENTS_CONSUMED
from ltrr.schemas.contracts import Contract
from ltrr.schemas.validation import Rejection, decode
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics

#: Called with the validated event and the Kafka message it came in.
Handler = Callable[[dict[str, Any], Any], Awaitable[None]]


async def _noop(event: dict[str, Any], message: Any) -> None:
    return None


def register_ingest(
    app: faust.App,
    topics: Topics,
    settings: Settings,
    *,
    on_impression: Handler = _noop,
    on_action: Handler = _noop,
) -> None:
    """Declare the two ingest agents on ``app``."""
    dlq = app.topic(topics.dlq.name, partitions=topics.dlq.partitions)

    async def consume(stream: Any, contract: Contract, logical: str, handle: Handler) -> None:
        async for event in stream.events():
            message = event.message
            raw = message.value
            EVENT_BYTES.labels(logical).observe(len(raw or b""))
            result = decode(
                contract,
                raw,
                key=message.key,
                key_field="impression_id",
                max_bytes=settings.max_event_bytes,
            )
            if isinstance(result, Rejection):
                EVENTS_CONSUMED.labels(logical, "rejected").inc()
                await send_dead_letter(
                    dlq, logical, message, result, max_message_bytes=settings.max_message_bytes
                )
                continue
            EVENTS_CONSUMED.labels(logical, "accepted").inc()
            await handle(result, message)

    impressions = app.topic(topics.impressions.name, partitions=topics.impressions.partitions)
    actions = app.topic(topics.actions.name, partitions=topics.actions.partitions)

    @app.agent(impressions, name="ltrr.ingest.impressions")
    async def ingest_impressions(stream: Any) -> None:
        await consume(
            stream,
            Contract.SEARCH_IMPRESSION,
            "impressions",
            on_impression,
        )

    @app.agent(actions, name="ltrr.ingest.actions")
    async def ingest_actions(stream: Any) -> None:
        await consume(stream, Contract.USER_ACTION, "actions", on_action)

"""Ingest agents: validate every impression and action; route bad input to the dead-letter topic.

Events are taken a poll at a time (up to ``BATCH_MAX`` within ``BATCH_WITHIN_S``): each is
validated once, here at the edge; the accepted ones (validated JSON objects, with their Kafka
message) are handed together to the ``on_impressions`` / ``on_actions`` callbacks (the join),
then the whole poll is acknowledged. The stream never stops on bad input.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from ltrr.agents.dead_letters import send_dead_letter
from ltrr.agents.metrics import EVENT_BYTES, EVENTS_CONSUMED
from ltrr.schemas.contracts import Contract
from ltrr.schemas.validation import Rejection, decode
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics

#: Called with the validated events of one poll, each with the Kafka message it came in.
Handler = Callable[[list[tuple[dict[str, Any], Any]]], Awaitable[None]]

#: At most this many events per poll, waiting at most ``BATCH_WITHIN_S`` for them.
BATCH_MAX = 1000
BATCH_WITHIN_S = 0.05


async def _noop(events: list[tuple[dict[str, Any], Any]]) -> None:
    return None


def check_event_time(
    event: dict[str, Any], now_ms: int, *, max_skew_ms: int, max_age_ms: int
) -> Rejection | None:
    """Refuse an event whose ``timestamp_ms`` is too far from the worker's clock: windows run
    on event time, so one event from the year 10000 would hold its partition's time hostage."""
    ts = event["timestamp_ms"]
    if ts > now_ms + max_skew_ms:
        return Rejection(
            "invalid_value",
            f"timestamp_ms {ts} is {(ts - now_ms) / 1000:.0f} s ahead of the worker's clock "
            f"(at most {max_skew_ms / 1000:.0f} s allowed: max_clock_skew_s)",
            "timestamp_ms",
        )
    if ts < now_ms - max_age_ms:
        return Rejection(
            "invalid_value",
            f"timestamp_ms {ts} is {(now_ms - ts) / 1000:.0f} s old (at most "
            f"{max_age_ms / 1000:.0f} s allowed: max_event_age_s)",
            "timestamp_ms",
        )
    return None


def check_probability(event: dict[str, Any], floor: float) -> Rejection | None:
    """Refuse an impression whose chosen plan was logged with a probability below ``floor``."""
    p = event["pmf"][event["chosen"]]
    if p < floor:
        return Rejection(
            "invalid_value",
            f"the chosen plan's probability {p!r} is below min_probability {floor!r}: its "
            "importance weight would swamp the model",
            f"pmf[{event['chosen']}]",
        )
    return None


def register_ingest(
    app: faust.App,
    topics: Topics,
    settings: Settings,
    *,
    on_impressions: Handler = _noop,
    on_actions: Handler = _noop,
) -> None:
    """Declare the two ingest agents on ``app``."""
    dlq = app.topic(topics.dlq.name, partitions=topics.dlq.partitions)

    async def consume(stream: Any, contract: Contract, logical: str, handle: Handler) -> None:
        sizes = EVENT_BYTES.labels(logical)
        accepted = EVENTS_CONSUMED.labels(logical, "accepted")
        rejected = EVENTS_CONSUMED.labels(logical, "rejected")
        max_skew_ms = int(settings.max_clock_skew_s * 1000)
        max_age_ms = int(settings.max_event_age_s * 1000)
        async for events in stream.noack().noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
            now = int(time.time() * 1000)
            good: list[tuple[dict[str, Any], Any]] = []
            for event in events:
                message = event.message
                raw = message.value
                sizes.observe(len(raw or b""))
                result = decode(
                    contract,
                    raw,
                    key=message.key,
                    key_field="impression_id",
                    max_bytes=settings.max_event_bytes,
                )
                if not isinstance(result, Rejection):
                    result = (
                        check_event_time(
                            result, now, max_skew_ms=max_skew_ms, max_age_ms=max_age_ms
                        )
                        or result
                    )
                if not isinstance(result, Rejection) and contract is Contract.SEARCH_IMPRESSION:
                    result = check_probability(result, settings.min_probability) or result
                if isinstance(result, Rejection):
                    rejected.inc()
                    await send_dead_letter(
                        dlq, logical, message, result, max_message_bytes=settings.max_message_bytes
                    )
                    continue
                accepted.inc()
                good.append((result, message))
            if good:
                await handle(good)
            for event in events:
                event.ack()

    impressions = app.topic(topics.impressions.name, partitions=topics.impressions.partitions)
    actions = app.topic(topics.actions.name, partitions=topics.actions.partitions)

    @app.agent(impressions, name="ltrr.ingest.impressions")
    async def ingest_impressions(stream: Any) -> None:
        await consume(
            stream,
            Contract.SEARCH_IMPRESSION,
            "impressions",
            on_impressions,
        )

    @app.agent(actions, name="ltrr.ingest.actions")
    async def ingest_actions(stream: Any) -> None:
        await consume(stream, Contract.USER_ACTION, "actions", on_actions)

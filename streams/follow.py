"""Following a whole topic without a consumer group: every partition from the beginning, then
new messages as they come. Retrieval workers follow the catalog, Q2E and snapshots topics this
way; learning workers follow the snapshots topic (to adopt rollbacks and takeovers)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer

from ltrr.streams.logs import ThrottledLog

log = logging.getLogger(__name__)

#: Applies a fetched batch of records; may be a coroutine function (awaited before the next
#: batch) when part of its work runs off the event loop.
Handler = Callable[[list[Any]], Awaitable[None] | None]


async def _follow_once(
    bootstrap: str,
    topic: str,
    handle: Handler,
    ready: asyncio.Event,
    max_bytes: int,
    client_kwargs: Mapping[str, Any],
    on_caught_up: Callable[[], None] | None = None,
) -> None:
    """Apply every message of every partition of ``topic``, a fetched batch per partition at a
    time (so a catalog replay is one index commit per batch, not per entity); set ``ready``
    (and call ``on_caught_up``) once caught up."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        max_partition_fetch_bytes=max_bytes,
        fetch_max_bytes=max_bytes,
        # A topic created moments before may be unknown to the broker's first metadata
        # answer; refresh often so the subscription is assigned in seconds, not after the
        # default five minutes.
        metadata_max_age_ms=5000,
        **client_kwargs,
    )
    await consumer.start()
    try:
        # Without a group, a subscription is assigned every partition of the topic (and
        # makes the client fetch the topic's metadata, which Apache Kafka only returns for
        # topics asked for by name).
        consumer.subscribe([topic])
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        caught_up = False
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                result = handle(records)
                if inspect.isawaitable(result):
                    await result
            if not caught_up:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    caught_up = True
                    ready.set()
                    if on_caught_up is not None:
                        on_caught_up()
    finally:
        await consumer.stop()


async def read_partition(
    bootstrap: str,
    topic: str,
    partition: int,
    start: int,
    handle: Handler,
    max_bytes: int,
    client_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Apply the records of one partition from offset ``start`` up to its end (as the broker
    reported it when reading began) with ``handle``, a fetched batch at a time; return the
    offset after the last record applied."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        max_partition_fetch_bytes=max_bytes,
        fetch_max_bytes=max_bytes,
        **(client_kwargs or {}),
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        first = (await consumer.beginning_offsets([tp]))[tp]
        if start > end:  # the topic was recreated: everything in it is new
            start = first
        position = max(start, first)
        if position >= end:
            return position
        consumer.seek(tp, position)
        while position < end:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
            records = [r for r in batches.get(tp, []) if r.offset < end]
            if records:
                result = handle(records)
                if inspect.isawaitable(result):
                    await result
                position = records[-1].offset + 1
            else:
                position = max(position, await consumer.position(tp))
        return position
    finally:
        await consumer.stop()


async def follow(
    bootstrap: str,
    topic: str,
    handle: Handler,
    ready: asyncio.Event,
    max_bytes: int,
    client_kwargs: Mapping[str, Any] | None = None,
    *,
    on_error: Callable[[], None] | None = None,
    on_caught_up: Callable[[], None] | None = None,
) -> None:
    """Apply every message of ``topic`` with ``handle`` (a fetched batch per partition at a
    time) forever; set ``ready`` once caught up with the end offsets seen at start. Restarts
    from the beginning after broker errors (``on_error`` is called each time) instead of dying;
    ``on_caught_up`` is called each time a (re)start has caught up again.
    """
    throttled = ThrottledLog(log, 60.0)
    while True:
        try:
            await _follow_once(
                bootstrap, topic, handle, ready, max_bytes, client_kwargs or {}, on_caught_up
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_error is not None:
                on_error()
            throttled.report(f"consumer of {topic} failed; restarting in 2 s", exc)
            await asyncio.sleep(2.0)

"""Reading topics without a consumer group (nothing is committed; any number of readers).

``follow``: every partition from the beginning, then new messages as they come; retrieval
workers follow the catalog, Q2E and snapshots topics this way, learning workers the snapshots
topic (to adopt rollbacks and takeovers). ``read_to_end`` / ``read_records``: a whole topic
up to its end (``ltrr eval``, ``ltrr model``). ``read_partition``: one partition from an
offset up to its end (the learner's replay).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer

from ltrr.streams.exceptions import BrokerError
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
    consumer = _consumer(bootstrap, max_bytes, client_kwargs)
    try:
        await consumer.start()  # inside: a failed start is stopped too
        tps, ends = await _subscribe(consumer, topic)
        caught_up = False
        while True:
            await _apply(consumer, handle)
            if not caught_up and await _caught_up(consumer, tps, ends):
                caught_up = True
                ready.set()
                if on_caught_up is not None:
                    on_caught_up()
    finally:
        await consumer.stop()


def _consumer(bootstrap: str, max_bytes: int, client_kwargs: Mapping[str, Any]) -> Any:
    """A consumer without a group that starts at the beginning of what it reads."""
    return AIOKafkaConsumer(
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


async def _subscribe(consumer: Any, topic: str) -> tuple[list[Any], dict[Any, int]]:
    """Every partition of ``topic`` from its beginning, and each one's end offset now.

    Without a group, a subscription is assigned every partition of the topic (and makes the
    client fetch the topic's metadata, which Apache Kafka only returns for topics asked for
    by name).
    """
    consumer.subscribe([topic])
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
    tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
    await consumer.seek_to_beginning(*tps)
    return tps, await consumer.end_offsets(tps)


async def _apply(consumer: Any, handle: Handler) -> None:
    batches = await consumer.getmany(timeout_ms=500, max_records=1000)
    for records in batches.values():
        result = handle(records)
        if inspect.isawaitable(result):
            await result


async def _caught_up(
    consumer: Any, tps: list[Any], ends: Mapping[Any, int], *, fetched: bool = False
) -> bool:
    """Every partition read up to the end offset listed at the start; with ``fetched``, also
    fetched at least once and read past the high watermark of its last fetch: the embedded
    tansu broker lists an end offset short of the last record (the last batch's base offset)
    while its fetch responses carry the right watermark."""
    for tp in tps:
        end = ends[tp]
        if fetched:
            highwater = consumer.highwater(tp)
            if highwater is None:
                return False
            end = max(end, highwater)
        if await consumer.position(tp) < end:
            return False
    return True


async def read_to_end(
    bootstrap: str,
    topic: str,
    handle: Handler,
    max_bytes: int,
    client_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Apply every record of ``topic`` with ``handle`` (a fetched batch per partition at a
    time, each partition in offset order) from the beginning up to its end."""
    consumer = _consumer(bootstrap, max_bytes, client_kwargs or {})
    try:
        await consumer.start()  # inside: a failed start is stopped too
        tps, ends = await _subscribe(consumer, topic)
        while not await _caught_up(consumer, tps, ends, fetched=True):
            await _apply(consumer, handle)
    finally:
        await consumer.stop()


def read_records(
    bootstrap: str,
    topic: str,
    *,
    timeout_s: float = 60.0,
    max_bytes: int = 8 * 1024 * 1024,
    security: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Every record of ``topic`` up to its end, partition by partition in offset order, for
    callers without an event loop; ``BrokerError`` if that takes longer than ``timeout_s``.
    ``security``: ``streams.security.aiokafka_kwargs(settings)`` (SASL/TLS)."""
    from aiokafka.errors import KafkaError

    records: list[Any] = []
    reading = read_to_end(bootstrap, topic, records.extend, max_bytes, security)
    try:
        asyncio.run(asyncio.wait_for(reading, timeout_s))
    except TimeoutError as exc:
        raise BrokerError(
            f"reading {topic} from {bootstrap} to its end took longer than {timeout_s:g} s "
            f"({len(records)} records read; does the topic exist? check --broker and "
            "--topic-prefix)"
        ) from exc
    except KafkaError as exc:
        raise BrokerError(f"reading {topic} from {bootstrap} failed: {exc}") from exc
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def read_partition(
    bootstrap: str,
    topic: str,
    partition: int,
    start: int,
    handle: Handler,
    max_bytes: int,
    client_kwargs: Mapping[str, Any] | None = None,
    *,
    read_committed: bool = False,
) -> int:
    """Apply the records of one partition from offset ``start`` up to its end (as the broker
    reported it when reading began) with ``handle``, a fetched batch at a time; return the
    offset after the last record applied. ``read_committed``: only records of committed
    transactions, up to the last stable offset."""
    from aiokafka import TopicPartition

    kwargs = dict(client_kwargs or {})
    if read_committed:
        kwargs["isolation_level"] = "read_committed"
    consumer = _consumer(bootstrap, max_bytes, kwargs)
    try:
        await consumer.start()  # inside: a failed start is stopped too
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

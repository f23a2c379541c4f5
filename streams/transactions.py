"""Kafka transactions for ``processing_guarantee = exactly_once``: one transactional producer
per join partition a worker owns.

The join's outbox (rewards and the dead letters it decides: orphans, failed windows) is sent
together with the changelog rows that mark those entries sent, in one transaction. Either the
broker shows both to ``read_committed`` readers (the learner, Q2E, a restoring worker) or
neither, so a crash between "sent" and "marked sent" leaves no second copy on the rewards
topic. The producer's transactional id names the partition (``<app id>.join.<partition>``):
a worker that takes a partition over starts its producer first, which aborts whatever the
previous owner left open and fences it (its next commit raises ``ProducerFenced``), so a
worker that lost a partition can never emit for it again.

Needs a broker with transactions (Apache Kafka); ``check_transactions`` says so at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from ltrr.streams.exceptions import BrokerError

log = logging.getLogger(__name__)

#: Seconds a transaction may stay open before the broker aborts it (a dead owner's
#: transaction blocks ``read_committed`` readers of its partitions at most this long).
TRANSACTION_TIMEOUT_S = 60.0


class Row(NamedTuple):
    """One message of a transaction."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] | None = None


class Fenced(Exception):
    """Another worker owns the partition now: this one must not emit for it again."""


def transactional_id(app_id: str, partition: int) -> str:
    return f"{app_id}.join.{partition}"


class PartitionTransactions:
    """The transactional producers of the join partitions this worker owns."""

    def __init__(
        self,
        bootstrap: str,
        app_id: str,
        client_kwargs: Mapping[str, Any],
        *,
        max_request_size: int,
        linger_ms: int = 5,
    ) -> None:
        self.bootstrap, self.app_id = bootstrap, app_id
        self.client_kwargs = dict(client_kwargs)
        self.max_request_size, self.linger_ms = max_request_size, linger_ms
        self._owned: set[int] = set()
        self._producers: dict[int, AIOKafkaProducer] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    async def own(self, partition: int) -> None:
        """Own ``partition`` and start its producer, which aborts the previous owner's open
        transaction and fences it. Call before reading the partition's changelog
        (``read_committed`` reads stop at an open transaction)."""
        self._owned.add(partition)
        lock = self._locks.setdefault(partition, asyncio.Lock())
        async with lock:
            if partition not in self._producers:
                await self._start(partition)

    async def _start(self, partition: int) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            transactional_id=transactional_id(self.app_id, partition),
            transaction_timeout_ms=int(TRANSACTION_TIMEOUT_S * 1000),
            max_request_size=self.max_request_size,
            linger_ms=self.linger_ms,
            **self.client_kwargs,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producers[partition] = producer
        return producer

    async def _stop(self, partition: int) -> None:
        producer = self._producers.pop(partition, None)
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # a fenced producer may fail to stop cleanly
                log.debug("stopping the producer of join partition %d: %s", partition, exc)

    async def release(self, partition: int) -> None:
        """Stop the producer of a partition this worker no longer owns."""
        self._owned.discard(partition)
        await self._stop(partition)

    async def send(self, partition: int, rows: Sequence[Row]) -> None:
        """Send ``rows`` in one transaction of ``partition``'s producer and commit it; raises
        ``Fenced`` (after releasing the partition) if another worker owns it now. Any other
        failure (a broker outage, a timeout) aborts what can be aborted, drops the producer
        and re-raises: the next call starts a new one, which aborts whatever is left open."""
        if partition not in self._owned:
            raise Fenced(f"join partition {partition} is not owned by this worker")
        async with self._locks[partition]:
            try:
                producer = self._producers.get(partition) or await self._start(partition)
                await producer.begin_transaction()
                futures = [
                    await producer.send(
                        row.topic,
                        row.value,
                        key=row.key,
                        partition=row.partition,
                        headers=list(row.headers) if row.headers else None,
                    )
                    for row in rows
                ]
                await asyncio.gather(*futures)
                await producer.commit_transaction()
            except ProducerFenced as exc:
                self._owned.discard(partition)
                await self._stop(partition)
                raise Fenced(f"join partition {partition} was taken over: {exc}") from None
            except BaseException:
                producer = self._producers.get(partition)
                if producer is not None:
                    await _abort(producer)
                await self._stop(partition)
                raise

    async def close(self) -> None:
        for partition in list(self._owned):
            await self.release(partition)


async def _abort(producer: AIOKafkaProducer) -> None:
    try:
        await producer.abort_transaction()
    except Exception as exc:  # fenced or disconnected: the broker aborts it on timeout
        log.debug("aborting a transaction failed: %s", exc)


async def check_transactions(
    bootstrap: str, app_id: str, client_kwargs: Mapping[str, Any], timeout_s: float = 30.0
) -> None:
    """Raise ``BrokerError`` with what to do if the broker cannot run transactions."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"{app_id}.check", **client_kwargs
    )
    sender = logging.getLogger("aiokafka.producer.sender")  # says the same without advice
    level = sender.level
    sender.setLevel(logging.CRITICAL)
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
        await asyncio.wait_for(producer.begin_transaction(), timeout_s)
        await asyncio.wait_for(producer.commit_transaction(), timeout_s)
    except Exception as exc:
        raise BrokerError(
            f"processing_guarantee exactly_once needs a broker with Kafka transactions "
            f"(Apache Kafka); {bootstrap} refused one ({type(exc).__name__}: {exc}). "
            "Use processing_guarantee at_least_once on this broker."
        ) from None
    finally:
        with contextlib.suppress(Exception):  # stopping a half-started producer
            await producer.stop()
        sender.setLevel(level)

"""No ltrr client creates a topic by asking for it: a topic auto-created by a metadata request
gets 1 partition, and a worker joining on it would be silently wrong."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaAdminClient

import ltrr.streams  # noqa: F401  (turns auto-creation off in aiokafka clients)


def test_aiokafka_clients_do_not_create_missing_topics(bootstrap: str, prefix: str) -> None:
    missing = prefix + "never-created"

    async def touch() -> None:
        consumer = AIOKafkaConsumer(missing, bootstrap_servers=bootstrap)
        with contextlib.suppress(Exception):  # the broker may answer "unknown topic"
            await asyncio.wait_for(consumer.start(), 5)
            await asyncio.sleep(2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        await producer.start()
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.send_and_wait(missing, b"x"), 5)
        finally:
            await asyncio.wait_for(producer.stop(), 10)

    asyncio.run(touch())
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert missing not in admin.list_topics()
    finally:
        admin.close()

"""The impression logger on a real broker: its producer thread delivers every impression while
the serving loop is busy (a blocked loop cannot starve it), and nothing is lost."""

from __future__ import annotations

import asyncio
import time

import orjson

from ltrr.retrieval.impressions import ImpressionLogger
from ltrr.streams.admin import create_topics
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from tests.integration.loop_helpers import read_topic


async def test_impressions_reach_kafka_while_the_loop_is_blocked(
    bootstrap: str, prefix: str
) -> None:
    topics = Topics.from_settings(Settings(broker=bootstrap, topic_prefix=prefix, partitions=2))
    create_topics(bootstrap, [topics.impressions])
    logger = ImpressionLogger(bootstrap, topics.impressions.name, capacity=10_000)
    await logger.start()
    n = 3000

    async def search(i: int) -> None:
        await asyncio.sleep(0)
        logger.log(f"i{i}".encode(), orjson.dumps({"impression_id": f"i{i}", "pad": "x" * 500}))

    await asyncio.gather(*(search(i) for i in range(n)))
    # Hold the serving loop (as CPU-bound searches would) until the logger has delivered
    # everything or 60 s have passed: the old loop-bound logger could send nothing meanwhile.
    deadline = time.monotonic() + 60
    while logger.sent < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert logger.sent == n, f"only {logger.sent} of {n} sent while the loop was blocked"
    assert logger.buffered == 0 and logger.dropped == 0
    await logger.stop()
    keys = {r.key for r in read_topic(bootstrap, topics.impressions.name)}
    assert keys == {f"i{i}".encode() for i in range(n)}

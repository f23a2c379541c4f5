"""POST /actions produces through one producer, also when the first actions arrive together
(each used to start its own producer; all but the last were dropped unclosed, and asyncio
logged "Unclosed AIOKafkaProducer" and "Task was destroyed but it is pending")."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import orjson

from ltrr.retrieval.server import RetrievalWorker
from ltrr.streams.admin import create_topics
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from tests.events import action
from tests.integration.loop_helpers import read_topic

CATALOG = Path(__file__).parents[1] / "data" / "catalog.jsonl"


def test_concurrent_first_actions_share_one_producer(bootstrap: str, prefix: str) -> None:
    settings = Settings(
        broker=bootstrap,
        topic_prefix=prefix,
        partitions=2,
        catalog_path=str(CATALOG),
        strategies="popular,fresh",
        snapshot_key="k",
    )
    create_topics(bootstrap, Topics.from_settings(settings).all())
    worker = RetrievalWorker(settings)
    events = [action(f"a-{i}", f"imp-{i}") for i in range(20)]
    complaints: list[str] = []

    async def main() -> None:
        # What asyncio would log as ERROR: an unclosed producer, a pending task destroyed.
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: complaints.append(context["message"])
        )
        try:
            sends = (
                worker.send_action(e["impression_id"].encode(), orjson.dumps(e)) for e in events
            )
            await asyncio.gather(*sends)
            gc.collect()  # a producer nobody holds any more is reported now
            await asyncio.sleep(0)
        finally:
            await worker.close()

    asyncio.run(main())
    assert complaints == []
    got = read_topic(bootstrap, prefix + "actions")
    assert sorted(orjson.loads(r.value)["action_id"] for r in got) == sorted(
        e["action_id"] for e in events
    )

"""``processing_guarantee = exactly_once`` on Apache Kafka: a worker is killed for good with
windows open and transactions in flight, and its partitions move to the survivor. A reader of
committed data (as ltrr's learner reads) sees exactly one reward per impression, with no
second copy at all (at_least_once allows identical copies), and the model equals
``ltrr learn-offline`` on those committed rewards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from ltrr.streams.admin import create_topics
from ltrr.streams.topics import TopicSpec
from ltrr.streams.transactions import Fenced, PartitionTransactions, Row
from ltrr.testing.kafka import ApacheKafka
from tests.chaos.test_partitions_move import FLAGS, PARTITIONS, Traffic, _check, _topics
from tests.integration.loop_helpers import (
    model_matches_offline,
    read_topic,
    rewards,
)
from tests.integration.processes import metric, worker

EXACTLY_ONCE = ("--processing-guarantee", "exactly_once")


@pytest.fixture
def kafka(broker_kind: str, bootstrap: str, tmp_path: Path) -> Iterator[str]:
    """Apache Kafka: the session's broker when it is Kafka, else one of this test's own
    (tansu has no transactions)."""
    if broker_kind == "kafka":
        yield bootstrap
        return
    broker = ApacheKafka(workdir=tmp_path / "kafka")
    try:
        yield broker.start()
    finally:
        broker.stop()


def _log_end(bootstrap: str, topic: str) -> int:
    """Sum of the end offsets of ``topic``'s partitions (records and transaction markers)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def test_killed_worker_leaves_no_second_copy(kafka: str, prefix: str, tmp_path: Path) -> None:
    _topics(kafka, prefix)
    group = ("--app-id", f"ltrr-eos-{prefix.rstrip('.')}")
    a = worker(kafka, prefix, tmp_path / "a", *FLAGS, *EXACTLY_ONCE, *group, partitions=PARTITIONS)
    b = worker(kafka, prefix, tmp_path / "b", *FLAGS, *EXACTLY_ONCE, *group, partitions=PARTITIONS)
    a.start()
    b.start()
    try:
        with Traffic(kafka, prefix, seed=7, rate=25, ids="eos") as traffic:
            time.sleep(12)
            b.kill()  # SIGKILL mid-stream, never restarted
            time.sleep(12)
        committed = lambda: rewards(kafka, prefix + "rewards", read_committed=True)  # noqa: E731
        counts = _check(kafka, prefix, traffic, committed)
        assert counts["duplicate_copies"] == 0, counts
        assert metric(a, "ltrr_orphan_actions_total") == 0
        _, report = model_matches_offline(
            kafka, prefix, len(traffic.impressions), tmp_path, read_committed=True
        )
        assert report.get("duplicate", 0) == 0, report
        everything = len(rewards(kafka, prefix + "rewards"))  # aborted copies included
        # Every commit leaves a marker in the log: the rewards went out in transactions.
        assert _log_end(kafka, prefix + "rewards") > everything
        print("exactly_once, kill -9 for good:", counts, "records incl. aborted:", everything)
    finally:
        a.stop()
        b.stop()


def test_a_worker_that_lost_its_partition_is_fenced(kafka: str, prefix: str) -> None:
    """Two owners of one join partition in turn: the first one's next commit fails with
    Fenced and what it left open is never visible; the new owner's transactions are."""
    topic = prefix + "fenced"
    create_topics(kafka, [TopicSpec(topic, 1)])

    async def scenario() -> None:
        old = PartitionTransactions(kafka, prefix + "app", {}, max_request_size=1 << 20)
        new = PartitionTransactions(kafka, prefix + "app", {}, max_request_size=1 << 20)
        try:
            await old.own(0)
            await old.send(0, [Row(topic, b"k", b"old-committed", 0)])
            await new.own(0)  # a rebalance gave partition 0 to another worker
            with pytest.raises(Fenced):
                await old.send(0, [Row(topic, b"k", b"zombie", 0)])
            assert not old.owns(0)
            await new.send(0, [Row(topic, b"k", b"new-committed", 0)])
        finally:
            await old.close()
            await new.close()

    asyncio.run(scenario())
    values = [r.value for r in read_topic(kafka, topic, read_committed=True)]
    assert values == [b"old-committed", b"new-committed"]

"""End-to-end check of the Apache Kafka test harness (ltrr.testing.kafka).

Starts a real single-node KRaft broker from Maven jars, creates a compacted
topic, round-trips small and 6 MB messages with kafka-python, and checks that
stop() leaves no broker process behind.  Needs Java 17+ and Maven (first run
downloads ~45 MB of jars into $LTRR_CACHE_DIR or ~/.cache/ltrr).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from ltrr.testing.kafka import ApacheKafka

BIG = 6 * 1024 * 1024

pytestmark = pytest.mark.integration


def _process_gone(pid: int) -> bool:
    """True when no process with ``pid`` exists any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_apache_kafka_round_trip_and_stop() -> None:
    kafka = ApacheKafka()
    bootstrap = kafka.start()
    pid, workdir = kafka.pid, kafka.workdir
    assert pid is not None and workdir is not None
    try:
        topic = f"harness-{uuid.uuid4().hex[:8]}"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics(
                {
                    topic: {
                        "num_partitions": 1,
                        "replication_factor": 1,
                        "configs": {"cleanup.policy": "compact"},
                    }
                },
                wait_for_metadata=True,
            )
            configs = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, {"cleanup.policy": None})]
            )
            assert configs["topic"][topic]["cleanup.policy"]["value"] == "compact"
        finally:
            admin.close()

        big_value = os.urandom(BIG)
        sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(3)]
        sent.append((b"big", big_value))
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            max_request_size=8 * 1024 * 1024,
            acks="all",
        )
        try:
            for key, value in sent:
                producer.send(topic, key=key, value=value).get(timeout=30)
            producer.flush()
        finally:
            producer.close()

        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=f"harness-{uuid.uuid4().hex[:8]}",
            max_partition_fetch_bytes=10 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        received: list[tuple[bytes, bytes]] = []
        try:
            deadline = time.monotonic() + 60
            while len(received) < len(sent) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=1000).values():
                    received.extend((r.key, r.value) for r in records)
        finally:
            consumer.close()
        assert [k for k, _ in received] == [k for k, _ in sent]
        assert received[:3] == sent[:3]
        assert len(received[3][1]) == BIG and received[3][1] == big_value
    finally:
        kafka.stop()

    assert _process_gone(pid)
    assert not workdir.exists()
    kafka.stop()  # idempotent

"""A model larger than the broker's message limit still propagates: chunked snapshot messages
go through a real broker topic limited to 1 MiB per message and reassemble, verified."""

from __future__ import annotations

import os
import time

from kafka import KafkaProducer

from ltrr.schemas.snapshot import encode_snapshot
from ltrr.streams.admin import create_topics
from ltrr.streams.topics import TopicSpec
from tests.integration.loop_helpers import latest_snapshot

MIB = 1024 * 1024
KEY = b"transport-key"


def test_snapshot_over_2mb_crosses_a_1mb_topic(bootstrap: str, prefix: str) -> None:
    topic = prefix + "snapshots"
    create_topics(bootstrap, [TopicSpec(topic, 1, compacted=True, max_message_bytes=MIB)])
    model = os.urandom(2 * MIB + 12345)
    messages = encode_snapshot(
        model="default",
        version=1,
        vw_args=["--cb_explore_adf"],
        model_bytes=model,
        examples_learned=10,
        offsets=[],
        created_ms=int(time.time() * 1000),
        key_id="k1",
        key=KEY,
        max_message_bytes=MIB,
    )
    assert len(messages) == 4  # three chunks, then the header
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=MIB)
    for key, value in messages:
        producer.send(topic, key=key, value=value).get(timeout=30)
    producer.close()
    loaded = latest_snapshot(bootstrap, topic, KEY)
    assert loaded is not None
    assert loaded.model_bytes == model
    assert loaded.header["chunks"]["count"] == 3

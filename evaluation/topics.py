"""Read a whole Kafka topic, from the beginning to its end (where it is when reading catches up).

No consumer group: nothing is committed, and several evaluations can read the same topic.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ltrr.evaluation.exceptions import EvaluationError


def read_records(
    bootstrap: str,
    topic: str,
    *,
    timeout_s: float = 60.0,
    max_bytes: int = 8 * 1024 * 1024,
    security: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Every record of ``topic`` up to its current end, partition by partition, in offset
    order. Raises ``EvaluationError`` if the broker or the topic cannot be reached in time.

    ``security``: extra kafka-python client arguments (SASL/TLS), passed as they are.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,
            fetch_max_bytes=max_bytes,
            max_partition_fetch_bytes=max_bytes,
            **(security or {}),
        )
    except KafkaError as exc:
        raise EvaluationError(f"cannot connect to the broker at {bootstrap}: {exc}") from exc
    try:
        # Subscribing (rather than assigning) makes the client ask for this topic's metadata
        # by name; without a group every partition is assigned.
        consumer.subscribe([topic])
        records: dict[tuple[int, int], Any] = {}
        while not consumer.assignment():
            _collect(consumer, records)
            if time.monotonic() > deadline:
                raise EvaluationError(
                    f"topic {topic} has no partitions on {bootstrap} after {timeout_s:g} s "
                    "(does it exist? check --broker and --topic-prefix)"
                )
        partitions = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        ends = consumer.end_offsets(partitions)
        while not all(_caught_up(consumer, tp, ends[tp]) for tp in partitions):
            _collect(consumer, records)
            if time.monotonic() > deadline:
                raise EvaluationError(
                    f"reading {topic} to its end took longer than {timeout_s:g} s "
                    f"({len(records)} records read)"
                )
    except KafkaError as exc:
        raise EvaluationError(f"reading {topic} from {bootstrap} failed: {exc}") from exc
    finally:
        consumer.close()
    return [record for _, record in sorted(records.items())]


def _caught_up(consumer: Any, tp: Any, end: int) -> bool:
    """Past the end offset listed at the start and the high watermark of the last fetch.

    Both: the embedded tansu broker (0.6.0) lists end offsets short of the last record (the
    last batch's base offset) while its fetch responses carry the right high watermark.
    """
    highwater = consumer.highwater(tp)
    position = consumer.position(tp)
    return highwater is not None and position >= max(end, highwater)


def _collect(consumer: Any, records: dict[tuple[int, int], Any]) -> None:
    for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
        for record in batch:
            records[(record.partition, record.offset)] = record

"""Prometheus collectors of the learning-loop worker (module level, fixed small label sets)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_CONSUMED = Counter(
    "ltrr_events_consumed_total",
    "Events read from an input topic, by logical topic and outcome (accepted or rejected).",
    ["topic", "outcome"],
)
DLQ_EVENTS = Counter(
    "ltrr_dlq_events_total",
    "Messages sent to the dead-letter topic, by logical source topic and reason.",
    ["topic", "reason"],
)
EVENT_BYTES = Histogram(
    "ltrr_event_size_bytes",
    "Size of consumed event values, bytes.",
    ["topic"],
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304),
)

"""Prometheus collectors of the learning-loop worker (module level, fixed small label sets)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: ``labels()`` takes a lock and builds a key
    on every call, which per event cost several percent of a catch-up. Only for collectors
    whose series are never removed (label sets here are fixed and small)."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


EVENTS_CONSUMED = Counter(
    "ltrr_events_consumed_total",
    "Events read from an input topic, by logical topic and outcome (accepted or rejected).",
    ["topic", "outcome"],
)
DLQ_EVENTS = Counter(
    "ltrr_dlq_events_total",
    "Messages sent to the dead-letter topic, by source topic (its full name) and reason.",
    ["topic", "reason"],
)
EVENT_BYTES = Histogram(
    "ltrr_event_size_bytes",
    "Size of consumed event values, bytes.",
    ["topic"],
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304),
)

JOIN_EVENTS = Counter(
    "ltrr_join_events_total",
    "Join outcomes: opened, joined, duplicate, buffered (action before impression), late, "
    "closed, closed_default, orphan, forgotten; not_owned: an event of a partition that moved to "
    "another worker while its poll waited (left to the new owner, which reads it again).",
    ["outcome"],
)
REWARDS = Counter("ltrr_rewards_total", "Rewards emitted by the join, by chosen plan.", ["plan"])
REWARD_SUM = Gauge(
    "ltrr_reward_sum",
    "Sum of emitted rewards by chosen plan (unitless; rewards may be negative, so a gauge).",
    ["plan"],
)
LOOP_ERRORS = Counter(
    "ltrr_loop_errors_total",
    "Unexpected errors in a periodic task, which retries on its next tick.",
    ["task"],
)
CONSUMER_LAG = Gauge(
    "ltrr_consumer_lag_messages",
    "Messages in an assigned partition the worker's consumer has not read yet: the broker's "
    "high-water mark minus the consumer position. Only partitions assigned to this worker.",
    ["topic", "partition"],
)
LATE_ACTIONS = Counter(
    "ltrr_late_actions_total", "Actions that arrived after their reward window closed."
)
ORPHAN_ACTIONS = Counter(
    "ltrr_orphan_actions_total", "Actions whose impression never arrived within the window."
)
OUTBOX_PENDING = Gauge(
    "ltrr_join_outbox_pending", "Rewards and dead letters waiting for the broker's ack."
)
JOIN_WATERMARK_DELAY = Gauge(
    "ltrr_join_watermark_delay_seconds",
    "Wall-clock time minus the oldest event-time watermark of the join partitions this worker "
    "owns: how far behind the join closes windows.",
)
JOIN_RESTORES = Counter(
    "ltrr_join_restores_total",
    "Join partitions whose state this worker restored from the join changelog on assignment.",
)
JOIN_RESTORE_ROWS = Counter(
    "ltrr_join_restore_rows_total", "Join changelog rows replayed into the local state."
)
JOIN_STATE = Gauge(
    "ltrr_join_state_entries", "Pending deadlines in the join state (windows, orphans, late)."
)
LEARNER_EXAMPLES = Counter(
    "ltrr_learner_examples_total",
    "Rewards seen by the learner by model and verdict (learned, late, duplicate, replayed, "
    "invalid).",
    ["model", "verdict"],
)
LEARNER_LOSS = Gauge(
    "ltrr_learner_average_loss",
    "Progressive-validation average cost (IPS) of the learned policy; lower is better.",
    ["model"],
)
SNAPSHOTS_FOLLOWED = Counter(
    "ltrr_learner_snapshots_total",
    "Snapshots the learner read from the snapshots topic, by what it did: own | older | "
    "pending (newer, held until the model's next reward) | adopted | refused.",
    ["verdict"],
)
MODEL_VERSION = Gauge("ltrr_model_version", "Latest published snapshot version.", ["model"])
SNAPSHOT_BYTES = Gauge("ltrr_snapshot_bytes", "Size of the latest snapshot model.", ["model"])
SNAPSHOT_PUBLISH = Histogram(
    "ltrr_snapshot_publish_seconds",
    "Time to encode, sign and publish a snapshot.",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LEARNER_LOG_RESETS = Counter(
    "ltrr_learner_log_resets_total",
    "Rewards partitions found recreated (log end below the learner's position); the learner "
    "relearns from the new log.",
)
CHECKPOINTS = Counter("ltrr_learner_checkpoints_total", "Learner checkpoints written.")
Q2E_RECORDS = Counter(
    "ltrr_q2e_records_total",
    "Rewards folded into the Q2E memory, by kind (on_time, late; duplicate: a resent copy; "
    "invalid: a line the learner dead-letters, not folded in).",
    ["kind"],
)
Q2E_UNREPLICATED = Gauge(
    "ltrr_q2e_unreplicated_rows",
    "Q2E rows committed locally that the Q2E changelog (what retrieval workers replicate) has "
    "not acknowledged yet; they are sent again until it does. Growing: the producer is failing.",
)
CATALOG_EVENTS = Counter(
    "ltrr_catalog_events_total",
    "Catalog messages by outcome: indexed (cold-start Q2E), rejected, deleted.",
    ["outcome"],
)

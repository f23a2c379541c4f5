"""Every Kafka topic ltrr uses, declared once: name, partitions, cleanup policy, retention."""

from __future__ import annotations

from dataclasses import dataclass

from ltrr.streams.settings import Settings

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as ltrr creates it. ``retention_ms`` None means the broker default."""

    name: str
    partitions: int
    compacted: bool = False
    retention_ms: int | None = None
    max_message_bytes: int | None = None

    def configs(self) -> dict[str, str]:
        """Topic-level configs for ``CreateTopics``."""
        out = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            out["retention.ms"] = str(self.retention_ms)
        if self.max_message_bytes is not None:
            out["max.message.bytes"] = str(self.max_message_bytes)
        return out


@dataclass(frozen=True, slots=True)
class Topics:
    """The declared topics, named with the configured prefix."""

    impressions: TopicSpec
    actions: TopicSpec
    rewards: TopicSpec
    snapshots: TopicSpec
    catalog: TopicSpec
    dlq: TopicSpec
    q2e: TopicSpec
    join_changelog: TopicSpec

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        p, n = settings.topic_prefix, settings.partitions
        events = settings.retention_hours * HOUR_MS
        big = settings.max_message_bytes
        return cls(
            # impressions and actions are keyed by impression_id with the same partition
            # count: the join reads both partitions i together, no repartition.
            impressions=TopicSpec(f"{p}impressions", n, retention_ms=events),
            actions=TopicSpec(f"{p}actions", n, retention_ms=events),
            # rewards are keyed by model: one partition keeps one model's rewards in order.
            rewards=TopicSpec(f"{p}rewards", n, retention_ms=events),
            # snapshots and catalog keep the newest value per key forever.
            snapshots=TopicSpec(f"{p}snapshots", 1, compacted=True, max_message_bytes=big),
            catalog=TopicSpec(f"{p}catalog", n, compacted=True),
            # Q2E memory changelog: store key -> row; retrieval workers replicate it.
            q2e=TopicSpec(f"{p}q2e", n, compacted=True),
            dlq=TopicSpec(
                f"{p}dlq",
                1,
                retention_ms=settings.dlq_retention_hours * HOUR_MS,
                max_message_bytes=big,
            ),
            # Join state changelog: partition i holds every write to join partition i (store
            # key -> value), so the state follows its partition to whichever worker owns it.
            join_changelog=TopicSpec(
                f"{p}join-changelog", n, compacted=True, max_message_bytes=big
            ),
        )

    def all(self) -> tuple[TopicSpec, ...]:
        return (
            self.impressions,
            self.actions,
            self.rewards,
            self.snapshots,
            self.catalog,
            self.dlq,
            self.q2e,
            self.join_changelog,
        )

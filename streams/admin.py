"""Create and inspect ltrr's topics on any Kafka-protocol broker (kafka-python admin client)."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streams.exceptions import BrokerError
from streams.topics import TopicSpec


def admin_client(bootstrap: str, *, timeout_s: float = 15.0) -> KafkaAdminClient:
    """An admin client, or a ``BrokerError`` that says which address did not answer."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            client_id="ltrr-admin",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise BrokerError(
            f"no Kafka broker answers at {bootstrap}; start one (`ltrr broker`) or set "
            f"LTRR_BROKER / --broker to a reachable bootstrap address"
        ) from exc


def create_topics(
    bootstrap: str, specs: Iterable[TopicSpec], *, replication_factor: int = 1
) -> dict[str, str]:
    """Create each topic that does not exist yet; returns name -> ``created`` | ``exists``."""
    client = admin_client(bootstrap)
    try:
        existing = set(client.list_topics())
        outcome: dict[str, str] = {}
        for spec in specs:
            if spec.name in existing:
                outcome[spec.name] = "exists"
                continue
            topic = NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs=spec.configs(),
            )
            try:
                client.create_topics([topic], timeout_ms=30_000)
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:
                outcome[spec.name] = "exists"
            except KafkaError as exc:
                raise BrokerError(f"could not create topic {spec.name}: {exc}") from exc
        return outcome
    finally:
        client.close()


def list_topics(bootstrap: str) -> list[str]:
    client = admin_client(bootstrap)
    try:
        return sorted(client.list_topics())
    finally:
        client.close()

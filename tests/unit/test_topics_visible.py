"""``create_topics`` returns once the broker's metadata lists what it created: Apache Kafka
(KRaft) answers CreateTopics from the controller, and the next metadata read may lag behind
it for a moment (a clean-clone CI run saw a created topic missing from the list). The lag
cannot be provoked on demand on a real broker, so a client that lists late stands in."""

from __future__ import annotations

import logging

import pytest
from kafka.errors import KafkaError

from ltrr.streams.admin import _wait_visible


class LateLister:
    """Lists ``names`` from its ``ready_at``-th metadata read on; fails the first read."""

    def __init__(self, names: list[str], ready_at: int) -> None:
        self.names, self.ready_at, self.calls = names, ready_at, 0

    def list_topics(self) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise KafkaError("metadata not ready")
        return self.names if self.calls >= self.ready_at else self.names[:1]


def test_created_topics_are_waited_for_until_listed() -> None:
    client = LateLister(["t.a", "t.b"], ready_at=3)
    _wait_visible(client, ["t.a", "t.b"], timeout_s=10)
    assert client.calls == 3


def test_topics_never_listed_are_reported_not_waited_for_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = LateLister(["t.a", "t.b"], ready_at=10**9)
    with caplog.at_level(logging.WARNING, logger="ltrr.streams.admin"):
        _wait_visible(client, ["t.a", "t.b"], timeout_s=0.5)
    assert "not listed by the broker" in caplog.text and "t.b" in caplog.text
    assert "t.a," not in caplog.text  # only what is missing is named

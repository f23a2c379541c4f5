"""The impression logger's bounded buffer without a broker: overflow drops the oldest waiting
impression and counts it; ``buffered`` is what the metric reports."""

from __future__ import annotations

import socket

from prometheus_client import REGISTRY

from ltrr.retrieval.impressions import ImpressionLogger


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_overflow_drops_oldest_and_counts() -> None:
    before = REGISTRY.get_sample_value("ltrr_impressions_logged_total", {"outcome": "dropped"})
    logger = ImpressionLogger(f"127.0.0.1:{_closed_port()}", "t", capacity=5)
    await logger.start()
    for i in range(8):
        logger.log(f"k{i}".encode(), b"{}")
    assert logger.buffered == 5 and logger.dropped == 3
    assert [k for k, _ in logger.buffer] == [f"k{i}".encode() for i in range(3, 8)]
    assert REGISTRY.get_sample_value("ltrr_impressions_buffered") == 5
    after = REGISTRY.get_sample_value("ltrr_impressions_logged_total", {"outcome": "dropped"})
    assert after - (before or 0) == 3
    await logger.stop(timeout_s=0.1)  # unsent at shutdown: counted as dropped too
    assert logger.dropped == 8 and logger.buffered == 0

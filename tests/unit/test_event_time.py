"""Event-time watermarks, the ingest's clock and probability checks, and throttled logs."""

from __future__ import annotations

import logging

import pytest

from ltrr.agents.ingest import check_event_time, check_probability
from ltrr.agents.watermarks import Watermarks
from ltrr.streams.logs import ConsoleFilter, ThrottledLog, hold_client_logs
from tests.events import impression

NOW = 1_795_000_000_000


def test_watermark_follows_the_events_read_not_the_clock() -> None:
    w = Watermarks(max_delay_ms=5_000)
    assert w.current([0]) == {}  # nothing known: nothing may close
    w.observe("impressions", 0, offset=0, timestamp_ms=NOW - 60_000)
    assert w.current([0]) == {}  # the actions stream of partition 0 is still unknown
    w.observe("actions", 0, offset=0, timestamp_ms=NOW - 50_000)
    assert w.current([0]) == {0: NOW - 60_000}  # the slower stream holds it back
    # A backlog: the log goes on far beyond what was processed; the clock does not count.
    assert not w.log_end("impressions", 0, highwater=1000, committed=1000, now_ms=NOW)
    assert w.current([0]) == {0: NOW - 60_000}


def test_a_quiet_partition_read_to_its_end_follows_the_clock_minus_the_delay() -> None:
    w = Watermarks(max_delay_ms=5_000)
    w.observe("impressions", 0, offset=9, timestamp_ms=NOW - 60_000)
    assert w.log_end("impressions", 0, highwater=10, committed=3, now_ms=NOW)
    # an empty, never-read actions partition
    assert w.log_end("actions", 0, highwater=0, committed=None, now_ms=NOW)
    assert w.current([0]) == {0: NOW - 5_000}
    # Fetched is not processed: nothing processed yet, committed below the end
    assert not w.log_end("actions", 1, highwater=5, committed=2, now_ms=NOW)
    assert w.log_end("actions", 1, highwater=5, committed=5, now_ms=NOW)
    w.observe("impressions", 1, offset=0, timestamp_ms=NOW)
    assert w.current([0, 1]) == {0: NOW - 5_000, 1: NOW - 5_000}
    w.forget([0])
    assert w.current([0]) == {}


def test_watermarks_never_move_back() -> None:
    w = Watermarks(max_delay_ms=1_000)
    for s in ("impressions", "actions"):
        w.observe(s, 0, offset=5, timestamp_ms=NOW)
        w.observe(s, 0, offset=6, timestamp_ms=NOW - 30_000)  # out of order within the log
    assert w.current([0]) == {0: NOW}
    w.log_end("impressions", 0, highwater=7, committed=None, now_ms=NOW - 100_000)
    assert w.current([0]) == {0: NOW}


def test_the_broker_is_asked_where_logs_end_only_when_the_answer_could_move_a_watermark() -> None:
    w = Watermarks(max_delay_ms=5_000)
    assert w.needs_log_ends([0], NOW)  # nothing read yet
    w.observe("impressions", 0, offset=0, timestamp_ms=NOW - 1_000)
    assert w.needs_log_ends([0], NOW)  # the actions stream has read nothing
    w.observe("actions", 0, offset=0, timestamp_ms=NOW - 4_000)
    assert not w.needs_log_ends([0], NOW)  # both streams newer than now - delay: busy
    assert not w.needs_log_ends([], NOW)
    # What a log end could give (now - delay) does not pass what was read: asking is useless.
    before = w.current([0])
    w.log_end("impressions", 0, highwater=1, committed=None, now_ms=NOW)
    w.log_end("actions", 0, highwater=1, committed=None, now_ms=NOW)
    assert w.current([0]) == before
    # Quiet for longer than the delay: the answer moves the watermark on, so ask.
    later = NOW + 10_000
    assert w.needs_log_ends([0], later)
    w.log_end("impressions", 0, highwater=1, committed=None, now_ms=later)
    w.log_end("actions", 0, highwater=1, committed=None, now_ms=later)
    assert w.current([0]) == {0: later - 5_000}
    # One quiet partition among busy ones is enough to ask.
    for s in ("impressions", "actions"):
        w.observe(s, 1, offset=0, timestamp_ms=later)
    assert w.needs_log_ends([0, 1], later + 1_000)
    assert not w.needs_log_ends([1], later + 1_000)


@pytest.mark.parametrize(
    ("ts", "field_ok"),
    [
        (NOW, True),
        (NOW + 3_599_000, True),
        (NOW + 3_601_000, False),
        (253402300800000, False),
        (NOW - 29 * 86_400_000, True),
        (NOW - 31 * 86_400_000, False),
        (0, False),
    ],
)
def test_event_time_outside_the_allowed_skew_is_refused(ts: int, field_ok: bool) -> None:
    rejection = check_event_time(
        {"timestamp_ms": ts}, NOW, max_skew_ms=3_600_000, max_age_ms=30 * 86_400_000
    )
    if field_ok:
        assert rejection is None
    else:
        assert rejection is not None
        assert (rejection.reason, rejection.field) == ("invalid_value", "timestamp_ms")


def test_impressions_logged_with_a_tiny_probability_are_refused() -> None:
    event = impression(n_plans=2, chosen=1, pmf=[1 - 1e-300, 1e-300])
    rejection = check_probability(event, 1e-4)
    assert rejection is not None and rejection.field == "pmf[1]"
    assert check_probability(impression(), 1e-4) is None


def test_repeated_errors_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttled = ThrottledLog(logging.getLogger("ltrr.test"), interval_s=3600)
    with caplog.at_level(logging.ERROR, logger="ltrr.test"):
        logged = [throttled.report("tick failed", RuntimeError("down")) for _ in range(1000)]
    assert logged.count(True) == 1 and len(caplog.records) == 1
    assert "RuntimeError: down" in caplog.records[0].getMessage()
    throttled.interval_s = 0
    with caplog.at_level(logging.ERROR, logger="ltrr.test"):
        throttled.report("tick failed", RuntimeError("down"))
    assert "(1000 times" in caplog.records[-1].getMessage()


def test_client_library_floods_are_cut_to_one_line_per_interval() -> None:
    seen: list[str] = []

    class Console(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    console = ConsoleFilter(interval_s=3600)
    handler = Console()
    handler.addFilter(console)
    client, own = logging.getLogger("aiokafka.conn"), logging.getLogger("ltrr.test")
    for logger in (client, own):
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        for port in range(5000):
            client.error("Unable connect to node with id %s: %s", 111, port)
        client.info("connected")  # below WARNING: only with --verbose
        own.info("ltrr's own line")
        with hold_client_logs():  # e.g. the admin client's bootstrap: held off the console
            client.critical("bootstrap failed")
        assert seen == ["Unable connect to node with id 111: 0", "ltrr's own line"]
        console.repeat.interval_s = 0
        client.error("Unable connect to node with id %s: %s", 111, 1)
        assert "(4999 more like this" in seen[-1]
        console.verbose = True
        client.debug("everything")
        assert seen[-1] == "everything"
    finally:
        for logger in (client, own):
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)

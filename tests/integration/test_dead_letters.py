"""Every broken event reaches the dead-letter topic with its reason; every valid one is
accepted; nothing is missing or duplicated, and the worker keeps consuming."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer

from ltrr.schemas.contracts import Contract
from ltrr.schemas.dead_letter import REASON_HEADER, original_bytes
from ltrr.schemas.validation import check
from tests.events import action, impression, without
from tests.integration.processes import metric, wait_until, worker

MAX_EVENT_BYTES = 4096


def _broken(i: int) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic suffix, key, value, expected reason) for every kind of bad input."""
    iid = f"bad-{i}"
    k = iid.encode()
    imp = impression(iid)
    wrong_type = impression(iid, query=42)
    missing = without(impression(iid), "plans")
    return [
        ("impressions", k, b"{this is not json", "not_json"),
        ("impressions", k, b"\xff\xfe\xfd", "not_json"),
        ("actions", k, b"[1, 2, 3]", "not_object"),
        (
            "impressions",
            k,
            orjson.dumps({**imp, "schema_version": 2}),
            "unsupported_schema_version",
        ),
        ("impressions", k, orjson.dumps(missing), "missing_field"),
        ("actions", k, orjson.dumps(without(action(f"a{i}", iid), "entity_id")), "missing_field"),
        ("impressions", k, orjson.dumps(wrong_type), "wrong_type"),
        ("actions", k, orjson.dumps(action(f"a{i}", iid, timestamp_ms="now")), "wrong_type"),
        ("actions", k, orjson.dumps(action(f"a{i}", iid, colour="red")), "unknown_field"),
        ("impressions", k, orjson.dumps({**imp, "pmf": [0.9] * 5}), "invalid_value"),
        ("impressions", k, orjson.dumps(impression(iid, query="x" * MAX_EVENT_BYTES)), "oversized"),
        ("actions", b"someone-else", orjson.dumps(action(f"a{i}", iid)), "bad_key"),
        ("actions", k, None, "not_json"),
        # Valid by the schema, poison for an event-time join: the year 10000 (refused by the
        # schema), far in the future, long past; a chosen plan logged with p = 1e-300.
        (
            "impressions",
            k,
            orjson.dumps(impression(iid, timestamp_ms=253402300800000)),
            "invalid_value",
        ),
        ("impressions", k, orjson.dumps(impression(iid, timestamp_ms=10**15)), "invalid_value"),
        ("actions", k, orjson.dumps(action(f"a{i}", iid, timestamp_ms=10**13)), "invalid_value"),
        ("actions", k, orjson.dumps(action(f"a{i}", iid, timestamp_ms=1000)), "invalid_value"),
        (
            "impressions",
            k,
            orjson.dumps(impression(iid, n_plans=2, chosen=1, pmf=[1 - 1e-300, 1e-300])),
            "invalid_value",
        ),
    ]


def test_ltrr_topics_create_is_idempotent(bootstrap: str, prefix: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "ltrr.cli",
        "topics",
        "create",
        "--broker",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--partitions",
        "3",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    assert first.stdout.count("\tcreated\t") == 8
    assert second.stdout.count("\texists\t") == 8
    listed = subprocess.run(
        [sys.executable, "-m", "ltrr.cli", "topics", "list", "--broker", bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    for name in ("impressions", "actions", "rewards", "snapshots", "catalog", "dlq", "q2e"):
        assert prefix + name in listed


def test_bad_input_goes_to_the_dlq_and_the_stream_keeps_flowing(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    with worker(
        bootstrap, prefix, tmp_path / "state", "--max-event-bytes", str(MAX_EVENT_BYTES)
    ) as w:
        valid_impressions = valid_actions = 0
        expected: list[tuple[str, bytes]] = []
        for i in range(3):
            # Valid events before, between and after each batch of broken ones.
            for j in range(5):
                iid = f"ok-{i}-{j}"
                producer.send(
                    prefix + "impressions", key=iid.encode(), value=orjson.dumps(impression(iid))
                )
                producer.send(
                    prefix + "actions",
                    key=iid.encode(),
                    value=orjson.dumps(action(f"act-{i}-{j}", iid)),
                )
                valid_impressions += 1
                valid_actions += 1
            for topic, key, value, reason in _broken(i):
                producer.send(prefix + topic, key=key, value=value)
                expected.append((reason, value or b""))
        producer.flush()

        def accepted(topic: str) -> float:
            return metric(w, "ltrr_events_consumed_total", topic=topic, outcome="accepted")

        wait_until(
            lambda: (
                accepted("impressions") == valid_impressions
                and accepted("actions") == valid_actions
                and metric(w, "ltrr_dlq_events_total") == len(expected)
            ),
            60,
            "all events to be accepted or dead-lettered",
        )

        letters = _read_all(bootstrap, prefix + "dlq", len(expected))
        got = sorted((letter["reason"], original_bytes(letter)) for letter, _ in letters)
        assert got == sorted(expected)
        for letter, headers in letters:
            check(Contract.DEAD_LETTER, letter)
            assert headers[REASON_HEADER] == letter["reason"].encode()
            assert letter["detail"]
            assert letter["source"]["topic"] in (prefix + "impressions", prefix + "actions")
        by_reason = {letter["reason"]: letter for letter, _ in letters}
        assert by_reason["missing_field"]["field"] in ("plans", "entity_id")
        assert by_reason["bad_key"]["field"] == "impression_id"

        # Nothing more arrives later (no duplicates), and the worker still consumes.
        producer.send(
            prefix + "impressions", key=b"late-ok", value=orjson.dumps(impression("late-ok"))
        ).get(timeout=30)
        wait_until(
            lambda: accepted("impressions") == valid_impressions + 1,
            30,
            "the worker to keep consuming after bad input",
        )
        time.sleep(1.0)
        assert metric(w, "ltrr_dlq_events_total") == len(expected)
        assert metric(w, "ltrr_events_consumed_total", outcome="rejected") == len(expected)
        assert len(_read_all(bootstrap, prefix + "dlq", len(expected))) == len(expected)
        assert w.alive
    producer.close()


def _read_all(bootstrap: str, topic: str, at_least: int) -> list[tuple[dict, dict[str, bytes]]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    out: list[tuple[dict, dict[str, bytes]]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for record in consumer:
            out.append((orjson.loads(record.value), dict(record.headers)))
        if len(out) >= at_least:
            break
    consumer.close()
    return out

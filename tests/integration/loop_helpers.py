"""Produce scripted traffic and read back rewards, dead letters and snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer

from ltrr.schemas.snapshot import Loaded, SnapshotAssembler
from tests.conftest import TEST_SNAPSHOT_KEY


def read_topic(
    bootstrap: str, topic: str, *, idle_ms: int = 2000, read_committed: bool = False
) -> list[Any]:
    """Every record of ``topic`` from the beginning, in partition-then-offset order
    (``read_committed``: only those of committed transactions, as ltrr's learner reads)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=idle_ms,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    records = list(consumer)
    consumer.close()
    return sorted(records, key=lambda r: (r.partition, r.offset))


def rewards(bootstrap: str, topic: str, *, read_committed: bool = False) -> list[dict[str, Any]]:
    return [
        orjson.loads(r.value) for r in read_topic(bootstrap, topic, read_committed=read_committed)
    ]


def latest_snapshot(bootstrap: str, topic: str, key: bytes) -> Loaded | None:
    assembler = SnapshotAssembler({"k1": key})
    loaded = None
    for record in read_topic(bootstrap, topic):
        result = assembler.feed(record.key, record.value)
        if isinstance(result, Loaded):
            loaded = result
    return loaded


def wait_for(fetch: Any, done: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {value!r}")
        time.sleep(0.5)
        value = fetch()
    return value


def learn_offline_against(
    bootstrap: str,
    rewards_topic: str,
    model_bytes: bytes,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    *,
    read_committed: bool = False,
) -> tuple[dict[str, Any], int]:
    """Dump the rewards topic and run ``ltrr learn-offline --compare`` on it against
    ``model_bytes`` (``env``: ``LTRR_*`` settings it shares with the worker): (its JSON
    report, its exit status)."""
    dump = tmp_path / "rewards.json"
    records = read_topic(bootstrap, rewards_topic, read_committed=read_committed)
    dump.write_bytes(b"".join(r.value + b"\n" for r in records))
    model = tmp_path / "snapshot.vw"
    model.write_bytes(model_bytes)
    result = subprocess.run(
        [sys.executable, "-m", "ltrr.cli", "learn-offline", str(dump), "--compare", str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return orjson.loads(result.stdout), result.returncode


def model_matches_offline(
    bootstrap: str,
    prefix: str,
    examples: int,
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    read_committed: bool = False,
) -> tuple[Loaded, dict[str, Any]]:
    """Wait for a snapshot covering exactly ``examples`` examples, then check that
    ``ltrr learn-offline`` on the rewards topic learns as many and the same bytes; returns the
    snapshot and learn-offline's report."""
    snapshot = wait_for(
        lambda: latest_snapshot(bootstrap, prefix + "snapshots", TEST_SNAPSHOT_KEY.encode()),
        lambda s: s is not None and s.header["examples_learned"] == examples,
        120,
        f"a snapshot covering exactly {examples} examples",
    )
    report, returncode = learn_offline_against(
        bootstrap,
        prefix + "rewards",
        snapshot.model_bytes,
        tmp_path,
        env,
        read_committed=read_committed,
    )
    assert report["learned"] == examples, report
    assert report["identical_to"]["identical"] is True, report
    assert returncode == 0
    return snapshot, report

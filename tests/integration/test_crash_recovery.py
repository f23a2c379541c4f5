"""kill -9 the worker mid-stream, twice, and restart it: no reward is lost, none is learned
twice, and the final model is byte-identical to ``ltrr learn-offline`` on the full rewards log."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from tests.events import action, impression
from tests.integration.loop_helpers import (
    latest_snapshot,
    learn_offline_against,
    rewards,
    wait_for,
)
from tests.integration.processes import worker

N = 300
KEY = b"ltrr-test-key"
FLAGS = (
    "--reward-window-s",
    "1",
    "--join-tick-s",
    "0.1",
    "--checkpoint-every",
    "25",
    "--checkpoint-interval-s",
    "0.3",
    "--snapshot-interval-s",
    "1",
)


@pytest.mark.parametrize("stop", ["kill", "term"])
def test_kill_9_loses_nothing_and_learns_nothing_twice(
    bootstrap: str, prefix: str, tmp_path: Path, stop: str
) -> None:
    """``kill``: SIGKILL mid-stream. ``term``: SIGTERM mid-stream, which must stop the worker
    by itself (not by the SIGKILL fallback) with the same guarantees."""
    seed = int(os.environ.get("LTRR_CRASH_SEED", "0")) or random.randrange(1, 10**6)
    rng = random.Random(seed)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    w = worker(bootstrap, prefix, tmp_path / "state", *FLAGS)

    def produce(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            iid = f"imp-{i}"
            imp = impression(
                iid, chosen=rng.randrange(5), context={"c": {"k": rng.choice("abc"), "i": i % 11}}
            )
            producer.send(prefix + "impressions", key=iid.encode(), value=orjson.dumps(imp))
            if rng.random() < 0.6:
                act = action(f"{iid}-a", iid, type=rng.choice(["click", "like", "skip"]))
                producer.send(prefix + "actions", key=iid.encode(), value=orjson.dumps(act))
            if i % 20 == 0:
                time.sleep(0.02)
        producer.flush()

    def interrupt() -> None:
        if stop == "kill":
            w.kill()  # kill -9 while joining, learning and checkpointing
        else:
            w.stop(timeout_s=25)
            assert w.returncode is not None and w.returncode >= 0, (
                f"SIGTERM did not stop the worker (exit {w.returncode}); see {w.log_path}"
            )

    w.start()
    try:
        produce(0, 100)
        time.sleep(rng.uniform(0.2, 2.0))
        interrupt()
        produce(100, 200)  # produced while the worker is down
        w.start()
        produce(200, 300)
        time.sleep(rng.uniform(0.5, 2.5))
        interrupt()
        w.start()
        got = wait_for(
            lambda: rewards(bootstrap, prefix + "rewards"),
            lambda rs: len({r["EventId"] for r in rs}) >= N,
            120,
            f"rewards for all {N} impressions (seed {seed})",
        )
        ids = [r["EventId"] for r in got]
        assert set(ids) == {f"imp-{i}" for i in range(N)}, f"seed {seed}"
        snapshot = wait_for(
            lambda: latest_snapshot(bootstrap, prefix + "snapshots", KEY),
            lambda s: s is not None and s.header["examples_learned"] == N,
            120,
            f"a snapshot covering exactly {N} examples (seed {seed})",
        )
        assert w.alive
    finally:
        w.stop()
        producer.close()

    report, returncode = learn_offline_against(
        bootstrap, prefix + "rewards", snapshot.model_bytes, tmp_path
    )
    assert report["learned"] == N, f"seed {seed}: {report}"
    assert report["identical_to"]["identical"] is True, f"seed {seed}: {report}"
    assert returncode == 0
    # Resent rewards (crash between send and outbox delete) are duplicates, never new learning.
    assert report.get("duplicate", 0) == len(ids) - N

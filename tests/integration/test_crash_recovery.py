"""kill -9 the worker mid-stream, twice, and restart it: no reward is lost, none is learned
twice, the final model is byte-identical to ``ltrr learn-offline`` on the full rewards log, and
the Q2E memory counts every impression and every joined action exactly once."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from ltrr.agents.loop import _timestamp_ms
from ltrr.state.q2e import Q2EMemory
from ltrr.state.store import MemoryStore
from tests.events import action, impression
from tests.integration.loop_helpers import (
    latest_snapshot,
    learn_offline_against,
    rewards,
    wait_for,
)
from tests.integration.processes import worker
from tests.integration.test_q2e_memory import q2e

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

    late: list[dict[str, object]] = []  # actions held back past their reward window
    action_ids: set[str] = set()

    def produce(lo: int, hi: int) -> None:
        for act in late:  # a batch later: a second or more after their impressions
            act["timestamp_ms"] = int(time.time() * 1000)
            key = str(act["impression_id"]).encode()
            producer.send(prefix + "actions", key=key, value=orjson.dumps(act))
            action_ids.add(str(act["action_id"]))
        late.clear()
        for i in range(lo, hi):
            iid = f"imp-{i}"
            imp = impression(
                iid, chosen=rng.randrange(5), context={"c": {"k": rng.choice("abc"), "i": i % 11}}
            )
            producer.send(prefix + "impressions", key=iid.encode(), value=orjson.dumps(imp))
            if rng.random() < 0.6:
                act = action(f"{iid}-a", iid, type=rng.choice(["click", "like", "skip"]))
                producer.send(prefix + "actions", key=iid.encode(), value=orjson.dumps(act))
                action_ids.add(str(act["action_id"]))
            if i % 10 == 3:
                late.append(action(f"{iid}-late", iid, type="like", entity_id="track-2"))
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
        time.sleep(1.5)
        produce(N, N)  # the last held-back actions
        n_actions = len(action_ids)
        got = wait_for(
            lambda: rewards(bootstrap, prefix + "rewards"),
            lambda rs: (
                len({r["EventId"] for r in rs}) >= N
                and len({a["action_id"] for r in rs for a in r["ltrr"]["actions"]}) >= n_actions
            ),
            120,
            f"rewards for all {N} impressions and {n_actions} actions (seed {seed})",
        )
        ids = [r["EventId"] for r in got if not r.get("_skipLearn")]
        assert set(ids) == {f"imp-{i}" for i in range(N)}, f"seed {seed}"
        snapshot = wait_for(
            lambda: latest_snapshot(bootstrap, prefix + "snapshots", KEY),
            lambda s: s is not None and s.header["examples_learned"] == N,
            120,
            f"a snapshot covering exactly {N} examples (seed {seed})",
        )
        # Q2E: each impression once, each joined action once, whatever the crashes resent or
        # closed again (computed from first principles, not by the agent's own dedup).
        expected = expected_q2e_scores(got)
        wait_for(
            lambda: {s["entity_id"]: s["score"] for s in q2e(w.url, "tayler love")},
            lambda seen: (
                seen.keys() == expected.keys()
                and all(abs(seen[e] - v) <= 1e-4 * v for e, v in expected.items())
            ),
            60,
            f"Q2E scores {expected} (seed {seed})",
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


def expected_q2e_scores(lines: list[dict[str, object]]) -> dict[str, float]:
    """The memory's scores if every impression of ``lines`` (a rewards log, with whatever
    copies it holds) counted once and every action joined to it, on time or late, once."""
    memory = Q2EMemory(MemoryStore())
    impressions: dict[str, dict[str, object]] = {}
    actions: dict[str, dict[str, object]] = {}
    for line in lines:
        part = line["ltrr"]
        assert isinstance(part, dict)
        impressions.setdefault(str(line["EventId"]), line)
        for a in part["actions"]:
            actions.setdefault(a["action_id"], a)
    query = "tayler love"
    for line in impressions.values():
        part = line["ltrr"]
        assert isinstance(part, dict) and part["query"] == query
        memory.record(query, part["shown"], [], _timestamp_ms(str(line["Timestamp"])))
    for a in actions.values():
        ts = int(str(a["timestamp_ms"]))
        memory.record(query, [], [(str(a["entity_id"]), str(a["type"]), ts)], ts)
    return {s.entity_id: s.score for s in memory.scores(query, int(time.time() * 1000), 5)}

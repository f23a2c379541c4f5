"""Join state follows its partition: workers join and leave the group mid-stream, one is
killed for good, and still every impression gets exactly one on-time reward carrying what its
actions imply, no click becomes an orphan, and the learner learns each reward once.

Traffic is produced live (event time = now) at a steady pace while the group changes, with a
reward window longer than a rebalance, so windows are open while their partitions move.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from ltrr.agents.reward import RewardConfig, compute_reward
from ltrr.schemas.records import UserAction
from ltrr.streams.admin import create_topics
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from tests.events import action, impression, now_ms
from tests.integration.loop_helpers import rewards, wait_for
from tests.integration.processes import metric, worker

PARTITIONS = 4
FLAGS = (
    "--reward-window-s",
    "8",
    "--join-tick-s",
    "0.2",
    "--checkpoint-interval-s",
    "0.5",
    "--snapshot-interval-s",
    "1",
    "--play-min-seconds",
    "10",
)


class Traffic:
    """Impressions with 0-2 actions each, produced at ``rate`` per second in a thread;
    actions follow their impression by up to 3 s of event time (and of production).
    ``impression_delay_s``: each impression reaches Kafka that long after its own timestamp
    (a lagging impression logger), so its actions arrive first."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        seed: int,
        rate: float,
        *,
        ids: str = "imp",
        impression_delay_s: float = 0.0,
    ) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        self.prefix, self.rate, self.ids = prefix, rate, ids
        self.impression_delay_s = impression_delay_s
        self.rng = random.Random(seed)
        self.impressions: list[str] = []
        self.actions: dict[str, list[dict[str, Any]]] = {}
        #: action_id -> wall-clock ms it was handed to the producer (a failure says how late)
        self.sent_at: dict[str, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.pending: list[tuple[float, str, dict[str, Any]]] = []

    def _send(self, topic: str, event: dict[str, Any]) -> None:
        key = event["impression_id"].encode()
        self.producer.send(self.prefix + topic, key=key, value=orjson.dumps(event))
        if topic == "actions":
            self.sent_at[event["action_id"]] = now_ms()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            iid = f"{self.ids}-{i}"
            now = time.monotonic()
            self.pending.append(
                (
                    now + self.impression_delay_s,
                    "impressions",
                    impression(iid, chosen=self.rng.randrange(5)),
                )
            )
            self.impressions.append(iid)
            acts = []
            for j in range(self.rng.choice([0, 1, 1, 2])):
                kind = self.rng.choice(["click", "like", "play"])
                delay = self.rng.uniform(0.1, 3.0)
                act = action(
                    f"{iid}-a{j}",
                    iid,
                    type=kind,
                    timestamp_ms=now_ms() + int(delay * 1000),
                    value=60.0 if kind == "play" else None,
                )
                acts.append(act)
                self.pending.append((now + delay, "actions", act))
            self.actions[iid] = acts
            self._send_due(time.monotonic())
            i += 1
            time.sleep(1 / self.rate)
        self._send_due(float("inf"))  # the last ones, at once (actions before impressions)
        self.producer.flush()

    def _send_due(self, now: float) -> None:
        due = sorted((e for e in self.pending if e[0] <= now), key=lambda e: e[0])
        self.pending = [e for e in self.pending if e[0] > now]
        for _, topic, event in due:
            self._send(topic, event)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.producer.close()


class Combined:
    """Several Traffic runs checked as one (their ids must differ)."""

    def __init__(self, *runs: Traffic) -> None:
        self.impressions = [iid for run in runs for iid in run.impressions]
        self.actions = {k: v for run in runs for k, v in run.actions.items()}
        self.sent_at = {k: v for run in runs for k, v in run.sent_at.items()}


def _check(
    bootstrap: str,
    prefix: str,
    traffic: Traffic | Combined,
    fetch: Callable[[], list[dict[str, Any]]] | None = None,
) -> dict[str, int]:
    """Exactly one on-time reward per impression, carrying what its actions imply; duplicates
    (an outbox resent after a crash or a move) only as identical copies. ``fetch`` reads the
    rewards the join produced (default: every line of the rewards topic)."""
    n = len(traffic.impressions)
    got = wait_for(
        fetch or (lambda: rewards(bootstrap, prefix + "rewards")),
        lambda rs: len({r["EventId"] for r in rs if not r["ltrr"]["late"]}) >= n,
        120,
        f"{n} on-time rewards",
    )
    on_time: dict[str, list[dict[str, Any]]] = {}
    for r in got:
        if not r["ltrr"]["late"]:
            on_time.setdefault(r["EventId"], []).append(r)
    assert sorted(on_time) == sorted(traffic.impressions)
    late = [r for r in got if r["ltrr"]["late"]]
    cfg = RewardConfig(play_min_seconds=10)
    for iid, copies in on_time.items():
        expected = compute_reward(
            [UserAction.from_dict(a) for a in traffic.actions[iid]], cfg
        ).reward
        rewards_seen = {c["ltrr"]["reward"] for c in copies}
        # On a mismatch, say whether the missing actions came late (a late reward: the window
        # closed before they were read) or never (no late reward), and how long after its
        # timestamp the test handed each action to its producer.
        assert rewards_seen == {expected}, (
            iid,
            rewards_seen,
            expected,
            [
                (a["action_id"], a["type"], a["timestamp_ms"], traffic.sent_at.get(a["action_id"]))
                for a in traffic.actions[iid]
            ],
            {"on_time_actions": [[a["action_id"] for a in c["ltrr"]["actions"]] for c in copies]},
            {
                "late": [
                    [a["action_id"] for a in r["ltrr"]["actions"]]
                    for r in late
                    if r["EventId"] == iid
                ]
            },
        )
    assert late == [], late[:3]
    return {"impressions": n, "duplicate_copies": len(got) - n}


def _topics(bootstrap: str, prefix: str) -> None:
    settings = Settings(broker=bootstrap, topic_prefix=prefix, partitions=PARTITIONS)
    create_topics(bootstrap, Topics.from_settings(settings).all())


def test_scale_out_and_in_mid_stream(bootstrap: str, prefix: str, tmp_path: Path) -> None:
    _topics(bootstrap, prefix)
    group = ("--app-id", f"ltrr-chaos-{prefix.rstrip('.')}")
    a = worker(bootstrap, prefix, tmp_path / "a", *FLAGS, *group, partitions=PARTITIONS).start()
    try:
        with Traffic(bootstrap, prefix, seed=1, rate=25) as traffic:
            time.sleep(6)
            b = worker(bootstrap, prefix, tmp_path / "b", *FLAGS, *group, partitions=PARTITIONS)
            c = worker(bootstrap, prefix, tmp_path / "c", *FLAGS, *group, partitions=PARTITIONS)
            b.start(wait=False)  # 4 partitions, 3 members: one may get nothing at first
            c.start(wait=False)
            time.sleep(15)  # 1 -> 3 workers, windows open while partitions move
            assert b.alive and c.alive
            b.stop()
            c.stop()  # 3 -> 1 (clean leave)
            time.sleep(6)
        counts = _check(bootstrap, prefix, traffic)
        orphans = metric(a, "ltrr_orphan_actions_total")
        assert orphans == 0
        assert metric(a, "ltrr_join_restores_total") >= PARTITIONS
        print("scale 1->3->1:", counts)
    finally:
        a.stop()


def test_a_worker_killed_for_good_loses_nothing(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    _topics(bootstrap, prefix)
    group = ("--app-id", f"ltrr-chaos-{prefix.rstrip('.')}")
    a = worker(bootstrap, prefix, tmp_path / "a", *FLAGS, *group, partitions=PARTITIONS)
    b = worker(bootstrap, prefix, tmp_path / "b", *FLAGS, *group, partitions=PARTITIONS)
    a.start()
    b.start()
    try:
        with Traffic(bootstrap, prefix, seed=2, rate=25) as traffic:
            time.sleep(10)
            b.kill()  # SIGKILL, never restarted: its data dir is gone for good
            time.sleep(12)
        counts = _check(bootstrap, prefix, traffic)
        assert metric(a, "ltrr_orphan_actions_total") == 0
        print("kill -9 for good:", counts)
    finally:
        a.stop()
        b.stop()

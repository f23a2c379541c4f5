"""End to end through a real broker: N impressions with duplicate, out-of-order, late and
orphan actions give exactly N rewards with the expected values, the orphan is dead-lettered,
and the model learned through Kafka is byte-identical to ``ltrr learn-offline`` on the
rewards topic."""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

from ltrr.agents.reward import RewardConfig, compute_reward
from ltrr.schemas.dead_letter import original_bytes
from ltrr.schemas.records import UserAction
from ltrr.streams.scrape import scrape, total
from tests.events import action, impression, now_ms
from tests.integration.loop_helpers import (
    latest_snapshot,
    learn_offline_against,
    read_topic,
    rewards,
    wait_for,
)
from tests.integration.processes import FAST_LOOP_FLAGS, worker

LAG = "ltrr_consumer_lag_messages"

N = 40
KEY = b"ltrr-test-key"


def script(seed: int = 5) -> tuple[list[dict], dict[str, list[dict]], list[dict]]:
    """Impressions, the actions each should end up with, and early (out-of-order) actions."""
    rng = random.Random(seed)
    impressions, actions, early = [], {}, []
    for i in range(N):
        iid = f"imp-{i}"
        kind = rng.choice(["exact", "mood", "typo"])
        chosen = rng.randrange(5)
        impressions.append(
            impression(iid, chosen=chosen, context={"c": {"kind": kind, "i": i % 7}})
        )
        acts = []
        for j in range(rng.choice([0, 1, 1, 2])):
            kind_ = rng.choice(["click", "play", "like", "skip"])
            acts.append(
                action(
                    f"{iid}-a{j}",
                    iid,
                    type=kind_,
                    entity_id="track-1",
                    value=rng.choice([5.0, 60.0]) if kind_ == "play" else None,
                    timestamp_ms=now_ms() + j,
                )
            )
        actions[iid] = acts
        if acts and i % 5 == 0:
            early.append(acts[0])
    return impressions, actions, early


def test_rewards_dlq_and_model_equality(bootstrap: str, prefix: str, tmp_path: Path) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)

    def send(topic: str, event: dict) -> None:
        producer.send(
            prefix + topic, key=event["impression_id"].encode(), value=orjson.dumps(event)
        )

    with worker(bootstrap, prefix, tmp_path / "state", *FAST_LOOP_FLAGS) as w:
        impressions, actions, early = script()  # event time: now, as the worker runs
        for act in early:  # actions before their impression
            send("actions", act)
        orphan = action("orphan-1", "never-shown")
        send("actions", orphan)
        producer.flush()
        time.sleep(1.0)
        for imp in impressions:
            send("impressions", imp)
        producer.flush()
        time.sleep(0.5)
        for acts in actions.values():
            for act in acts:
                if act not in early:
                    send("actions", act)
            if acts:
                send("actions", acts[0])  # a duplicate of every first action
        producer.flush()

        got = wait_for(
            lambda: rewards(bootstrap, prefix + "rewards"),
            lambda rs: len(rs) >= N,
            60,
            f"{N} rewards",
        )
        # A late action, after the window of imp-1 closed.
        late = action("late-1", "imp-1", type="like")
        send("actions", late)
        producer.flush()
        got = wait_for(
            lambda: rewards(bootstrap, prefix + "rewards"),
            lambda rs: len(rs) >= N + 1,
            30,
            "the late reward",
        )

        on_time = [r for r in got if not r["ltrr"]["late"]]
        late_rewards = [r for r in got if r["ltrr"]["late"]]
        assert sorted(r["EventId"] for r in on_time) == sorted(
            i["impression_id"] for i in impressions
        )
        cfg = RewardConfig(play_min_seconds=10)
        for r in on_time:
            expected = compute_reward([UserAction.from_dict(a) for a in actions[r["EventId"]]], cfg)
            assert r["ltrr"]["reward"] == expected.reward, r["EventId"]
            assert r["ltrr"]["default_reward"] == expected.default
            assert len(r["ltrr"]["actions"]) == len(actions[r["EventId"]])  # deduplicated
        assert [(r["EventId"], r["_skipLearn"]) for r in late_rewards] == [("imp-1", True)]

        letters = wait_for(
            lambda: [orjson.loads(r.value) for r in read_topic(bootstrap, prefix + "dlq")],
            lambda ls: len(ls) >= 1,
            30,
            "the orphan dead letter",
        )
        assert [letter["reason"] for letter in letters] == ["orphan_action"]
        assert orjson.loads(original_bytes(letters[0])) == orphan

        snapshot = wait_for(
            lambda: latest_snapshot(bootstrap, prefix + "snapshots", KEY),
            lambda s: s is not None and s.header["examples_learned"] == N,
            60,
            f"a snapshot covering {N} examples",
        )
        # Every impression was consumed: the lag gauge of both impressions partitions is 0.
        lags = wait_for(
            lambda: {
                labels["partition"]: value
                for name, labels, value in scrape(w.url)
                if name == LAG and labels["topic"] == prefix + "impressions"
            },
            lambda found: set(found) == {"0", "1"} and not any(found.values()),
            30,
            "the impressions consumer lag of both partitions to reach 0",
        )
        assert lags == {"0": 0.0, "1": 0.0}
        assert total(scrape(w.url), "ltrr_loop_errors_total", task="lag") == 0
        assert w.alive

    report, returncode = learn_offline_against(
        bootstrap, prefix + "rewards", snapshot.model_bytes, tmp_path
    )
    assert report["identical_to"]["identical"] is True, report
    assert report["learned"] == N and report["late"] == 1
    assert returncode == 0
    producer.close()

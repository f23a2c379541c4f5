"""Operating models on a real broker with a real worker: ``ltrr model export`` keeps a model,
``ltrr model publish`` rolls back to it and the learner goes on learning from it (byte for
byte), ``ltrr model reset`` starts over; a worker that lost its state (or took a model over
in a rebalance) continues the published model and its versions instead of starting again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from ltrr.agents.learning import DEFAULT_VW_ARGS, Learners
from ltrr.schemas.snapshot import Loaded
from ltrr.state.store import MemoryStore
from tests.integration.loop_helpers import (
    latest_snapshot,
    learn_offline_against,
    read_topic,
    wait_for,
)
from tests.integration.processes import FAST_LOOP_FLAGS, metric, worker
from tests.unit.test_learning import reward_lines

KEY = b"ltrr-test-key"


def produce(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for line in lines:
        producer.send(topic, key=b"default", value=line)
    producer.flush()
    producer.close()


def snapshot_with(bootstrap: str, prefix: str, examples: int, min_version: int = 1) -> Loaded:
    """Wait for the newest snapshot to have learned ``examples`` (at ``min_version`` or later)."""

    def done(s: Loaded | None) -> bool:
        return (
            s is not None
            and s.header["examples_learned"] == examples
            and s.header["version"] >= min_version
        )

    found: Loaded = wait_for(
        lambda: latest_snapshot(bootstrap, prefix + "snapshots", KEY),
        done,
        90,
        f"a snapshot of {examples} examples (v{min_version}+)",
    )
    return found


def offered(w: Any, count: int) -> None:
    """Wait until the worker has read ``count`` published snapshots it holds for adoption."""
    wait_for(
        lambda: metric(w, "ltrr_learner_snapshots_total", verdict="pending"),
        lambda n: n >= count,
        60,
        f"the worker to read published snapshot #{count}",
    )


def model_cli(bootstrap: str, prefix: str, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LTRR_")}
    env["LTRR_SNAPSHOT_KEY"] = KEY.decode()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ltrr.cli",
            "model",
            *args,
            "--broker",
            bootstrap,
            "--topic-prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


def test_export_rollback_and_reset(bootstrap: str, prefix: str, tmp_path: Path) -> None:
    rewards = prefix + "rewards"
    first, second, third = reward_lines(100, seed=11), reward_lines(80, seed=12), reward_lines(30)
    with worker(bootstrap, prefix, tmp_path / "state", *FAST_LOOP_FLAGS) as w:
        produce(bootstrap, rewards, first)
        good = snapshot_with(bootstrap, prefix, 100)
        exported = model_cli(bootstrap, prefix, "export", "-o", str(tmp_path / "good.vw"))
        assert (tmp_path / "good.vw").read_bytes() == good.model_bytes
        assert exported["version"] == good.header["version"]
        sidecar = orjson.loads((tmp_path / "good.vw.json").read_bytes())
        assert sidecar["examples_learned"] == 100

        produce(bootstrap, rewards, second)
        drifted = snapshot_with(bootstrap, prefix, 180)
        assert drifted.model_bytes != good.model_bytes

        # Roll back: the good model becomes the next version; retrieval workers load it.
        rolled = model_cli(bootstrap, prefix, "publish", str(tmp_path / "good.vw"))
        assert rolled["version"] == drifted.header["version"] + 1
        assert rolled["replaces_version"] == drifted.header["version"]
        served = latest_snapshot(bootstrap, prefix + "snapshots", KEY)
        assert served is not None and served.header["version"] == rolled["version"]
        assert served.model_bytes == good.model_bytes

        # The learner adopts it at the next reward after reading it, and learns on from it.
        # (Rewards learned before the worker has read the published snapshot are learned into
        # the replaced model: wait for the offer, as the README says.)
        offered(w, 1)
        produce(bootstrap, rewards, third)
        after = snapshot_with(bootstrap, prefix, 130, min_version=rolled["version"] + 1)
        assert metric(w, "ltrr_learner_snapshots_total", verdict="adopted") == 1
        expected = Learners(MemoryStore(), DEFAULT_VW_ARGS)
        expected.adopt("default", good.model_bytes, 100, {})
        for line in third:
            expected.learn(line)
        assert after.model_bytes == expected.model_bytes("default")

        listed = model_cli(bootstrap, prefix, "list", "--json")
        [row] = listed["models"]
        assert (row["model"], row["version"]) == ("default", after.header["version"])

        # Reset: an untrained model as the next version; learning restarts from zero.
        reset = model_cli(bootstrap, prefix, "reset")
        assert reset["version"] > after.header["version"] and reset["examples_learned"] == 0
        offered(w, 2)
        produce(bootstrap, rewards, reward_lines(10, seed=13))
        restarted = snapshot_with(bootstrap, prefix, 10, min_version=reset["version"] + 1)
        fresh = Learners(MemoryStore(), DEFAULT_VW_ARGS)
        for line in reward_lines(10, seed=13):
            fresh.learn(line)
        assert restarted.model_bytes == fresh.model_bytes("default")
        assert metric(w, "ltrr_learner_snapshots_total", verdict="adopted") == 2

        # A new epoch: version 1 of epoch 1 is newer than every version of epoch 0; the
        # learner adopts it and counts on within epoch 1.
        bumped = model_cli(bootstrap, prefix, "publish", "--new-epoch", str(tmp_path / "good.vw"))
        assert (bumped["epoch"], bumped["version"]) == (1, 1)
        served = latest_snapshot(bootstrap, prefix + "snapshots", KEY)
        assert served is not None and served.header["epoch"] == 1
        assert served.model_bytes == good.model_bytes
        offered(w, 3)
        produce(bootstrap, rewards, reward_lines(10, seed=14))
        onward = wait_for(
            lambda: latest_snapshot(bootstrap, prefix + "snapshots", KEY),
            lambda s: s is not None and s.header["examples_learned"] == 110,
            90,
            "the learner's first snapshot in epoch 1",
        )
        assert (onward.header["epoch"], onward.header["version"]) == (1, 2)


def test_a_worker_without_state_continues_the_published_model(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    rewards = prefix + "rewards"
    with worker(bootstrap, prefix, tmp_path / "lost", *FAST_LOOP_FLAGS):
        produce(bootstrap, rewards, reward_lines(120, seed=21))
        before = snapshot_with(bootstrap, prefix, 120)
    # Same consumer group, empty state directory: a lost disk, or a rebalance that moved the
    # model to a worker that never learned it.
    with worker(bootstrap, prefix, tmp_path / "new", *FAST_LOOP_FLAGS) as w:
        produce(bootstrap, rewards, reward_lines(60, seed=22))
        after = snapshot_with(bootstrap, prefix, 180, min_version=before.header["version"] + 1)
        assert metric(w, "ltrr_learner_snapshots_total", verdict="adopted") == 1
    # Exactly the model of one learner that never stopped: nothing lost, nothing twice.
    report, status = learn_offline_against(bootstrap, rewards, after.model_bytes, tmp_path)
    assert status == 0, report
    assert report["learned"] == 180


def test_a_reward_under_another_kafka_key_is_dead_lettered_not_learned(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    """Rewards are keyed by model so that one worker learns each model; valid reward lines
    written under another key, or none, would reach a partition a second worker may own. The
    learner dead-letters them (``bad_key``) and learns the rest as if they were not there."""
    rewards = prefix + "rewards"
    good, stray = reward_lines(20, seed=21), reward_lines(3, seed=22)
    with worker(bootstrap, prefix, tmp_path / "state", *FAST_LOOP_FLAGS) as w:
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        producer.send(rewards, key=b"other-model", value=stray[0])
        producer.send(rewards, key=b"", value=stray[1])
        producer.send(rewards, value=stray[2])  # no key
        producer.flush()
        producer.close()
        produce(bootstrap, rewards, good)
        learned = snapshot_with(bootstrap, prefix, 20)
        letters = wait_for(
            lambda: [orjson.loads(r.value) for r in read_topic(bootstrap, prefix + "dlq")],
            lambda found: len(found) >= 3,
            60,
            "three dead letters",
        )
        assert (
            sorted((x["reason"], x["field"], x["source"]["topic"]) for x in letters)
            == [("bad_key", "ltrr.model", rewards)] * 3
        )
        assert metric(w, "ltrr_learner_examples_total", verdict="invalid") == 3
        expected = Learners(MemoryStore(), DEFAULT_VW_ARGS)
        for line in good:
            expected.learn(line)
        assert learned.model_bytes == expected.model_bytes("default")

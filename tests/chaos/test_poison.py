"""Poison mixed into live traffic: malformed and valid-looking-but-hostile impressions and
actions, impressions of 100 models nobody configured, and reward lines written straight into
the rewards topic (probability 1e-30, cost 1e308, an unknown model, an index out of range,
random bytes). Every valid impression still gets exactly one on-time reward carrying what its
actions imply; every poison event is dead-lettered exactly once with its reason; the model
learns only the valid traffic, byte-identical to ``ltrr learn-offline`` on the rewards topic
with the same settings.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import orjson
from kafka import KafkaConsumer, KafkaProducer

from ltrr.schemas.dead_letter import original_bytes
from tests.chaos.test_partitions_move import FLAGS, PARTITIONS, Traffic, _check, _topics
from tests.events import action, impression
from tests.integration.loop_helpers import (
    model_matches_offline,
    read_topic,
    wait_for,
)
from tests.integration.processes import metric, worker
from tests.integration.test_dead_letters import MAX_EVENT_BYTES, _broken

#: Impressions logged under models the worker was not configured for.
FOREIGN_MODELS = 100


def _join_rewards(bootstrap: str, prefix: str) -> list[dict[str, Any]]:
    """The rewards the join produced: JSON objects whose EventId is not an injected one."""
    out = []
    for record in read_topic(bootstrap, prefix + "rewards"):
        try:
            reward = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(reward, dict) and not str(reward.get("EventId", "")).startswith("inj-"):
            out.append(reward)
    return out


def _first_reward(bootstrap: str, topic: str, model: str) -> dict[str, Any]:
    """The first reward of ``model`` on ``topic``, read while the topic keeps growing."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=60_000,
    )
    try:
        for record in consumer:
            reward = orjson.loads(record.value)
            if reward["ltrr"]["model"] == model:
                return cast(dict[str, Any], reward)
    finally:
        consumer.close()
    raise AssertionError(f"no reward of {model!r} on {topic} within 60 s")


def _injected(template: dict[str, Any]) -> list[tuple[bytes, str]]:
    """Reward lines a hostile or broken writer puts on the rewards topic, each with the reason
    the learner must dead-letter it for; built from a real reward so only one thing is wrong."""

    def line(i: int, **changes: Any) -> dict[str, Any]:
        reward = orjson.loads(orjson.dumps(template))
        reward["EventId"] = f"inj-{i}"
        for path, value in changes.items():
            target = reward
            *parents, leaf = path.split("__")
            for parent in parents:
                target = target[parent]
            if value is None:
                del target[leaf]
            else:
                target[leaf] = value
        return reward

    rng = random.Random(11)
    cases = [
        (line(0, _label_probability=1e-30), "invalid_value"),
        (line(1, _label_cost=1e308), "invalid_value"),
        (line(2, ltrr__model="evil"), "unknown_model"),
        (line(3, _labelIndex=99), "invalid_value"),
        (line(4, _label_cost=None), "missing_field"),
        (line(5, _label_probability="high"), "wrong_type"),
    ]
    out = [(orjson.dumps(reward), reason) for reward, reason in cases]
    out.append((bytes(rng.randrange(256) for _ in range(64)), "not_json"))
    out.append((b"[1, 2, 3]", "not_object"))
    return out


def test_poison_in_live_traffic(bootstrap: str, prefix: str, tmp_path: Path) -> None:
    _topics(bootstrap, prefix)
    settings = {"LTRR_MODELS": "default"}
    w = worker(
        bootstrap,
        prefix,
        tmp_path / "w",
        *FLAGS,
        "--models",
        settings["LTRR_MODELS"],
        "--max-event-bytes",
        str(MAX_EVENT_BYTES),
        partitions=PARTITIONS,
    ).start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    expected: Counter[tuple[str, str]] = Counter()  # (source topic suffix, reason)
    ingest_poison: list[tuple[str, bytes]] = []
    try:
        with Traffic(bootstrap, prefix, seed=6, rate=25, ids="valid") as traffic:
            for i in range(3):
                for topic, key, value, reason in _broken(i):
                    producer.send(prefix + topic, key=key, value=value)
                    expected[(topic, reason)] += 1
                    ingest_poison.append((reason, value or b""))
                time.sleep(1)
            foreign = []
            for i in range(FOREIGN_MODELS):
                iid = f"foreign-{i}"
                event = impression(iid, model={"name": f"model-{i}", "version": 0})
                producer.send(prefix + "impressions", key=iid.encode(), value=orjson.dumps(event))
                producer.send(
                    prefix + "actions",
                    key=iid.encode(),
                    value=orjson.dumps(action(f"{iid}-a", iid)),
                )
                foreign.append(iid)
            expected[("rewards", "unknown_model")] += FOREIGN_MODELS
            producer.flush()
            template_reward = _first_reward(bootstrap, prefix + "rewards", "default")
            for value, reason in _injected(template_reward):
                producer.send(prefix + "rewards", key=b"default", value=value)
                expected[("rewards", reason)] += 1
            producer.flush()
            time.sleep(8)

        # The join: exactly one on-time reward per valid impression (its own traffic and the
        # foreign models' impressions, which are valid events), each with the right value.
        valid = len(traffic.impressions)
        joined = _Both(traffic, foreign)
        counts = _check(bootstrap, prefix, joined, lambda: _join_rewards(bootstrap, prefix))
        assert metric(w, "ltrr_orphan_actions_total") == 0

        # Every poison event dead-lettered once, with its reason, from the topic it came in on.
        total = sum(expected.values())
        letters = wait_for(
            lambda: [orjson.loads(r.value) for r in read_topic(bootstrap, prefix + "dlq")],
            lambda ls: len(ls) >= total,
            90,
            f"{total} dead letters",
        )
        time.sleep(2)
        letters = [orjson.loads(r.value) for r in read_topic(bootstrap, prefix + "dlq")]
        got = Counter(
            (letter["source"]["topic"].removeprefix(prefix), letter["reason"]) for letter in letters
        )
        assert got == expected
        ingest_letters = sorted(
            (letter["reason"], original_bytes(letter))
            for letter in letters
            if letter["source"]["topic"] != prefix + "rewards"
        )
        assert ingest_letters == sorted(ingest_poison)

        # The learner learned exactly the valid traffic of the configured model, once each,
        # and the model equals learn-offline's on the same topic with the same settings.
        snapshot, report = model_matches_offline(bootstrap, prefix, valid, tmp_path, env=settings)
        assert snapshot.header["model"] == "default"
        assert list(report["models"]) == ["default"], report
        assert w.alive
        print("poison:", counts, "dead letters:", dict(got))
    finally:
        producer.close()
        w.stop()


class _Both:
    """The valid traffic plus the foreign models' impressions (one click each)."""

    def __init__(self, traffic: Traffic, foreign: list[str]) -> None:
        self.impressions = [*traffic.impressions, *foreign]
        self.sent_at = traffic.sent_at
        self.actions = {
            **traffic.actions,
            **{iid: [action(f"{iid}-a", iid)] for iid in foreign},
        }

"""The learning loop's readiness checks, on a real LearningLoop (no broker needed to build
one): /readyz names the learner when rewards wait while checkpoints keep failing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ltrr.agents.loop import STUCK_AFTER_S, LearningLoop
from ltrr.streams.app import create_app
from ltrr.streams.health import Health
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from tests.conftest import TEST_SNAPSHOT_KEY


class Event:
    acked = False

    def ack(self) -> None:
        self.acked = True


def build(tmp_path: Path) -> tuple[LearningLoop, Health]:
    settings = Settings(data_dir=str(tmp_path), snapshot_key=TEST_SNAPSHOT_KEY)
    health = Health()
    loop = LearningLoop(create_app(settings), Topics.from_settings(settings), settings, health)
    return loop, health


def test_failing_checkpoints_with_rewards_waiting_make_the_worker_not_ready(
    tmp_path: Path,
) -> None:
    loop, health = build(tmp_path)
    event = Event()
    loop.gate.hold(event, learned=True)

    def broken() -> None:
        raise OSError("disk full")

    loop.parts.learners.checkpoint = broken  # type: ignore[method-assign]
    asyncio.run(loop.checkpoint_tick())  # fails, counted, retried on the next tick
    assert "learner" not in health.problems()  # not for long yet
    loop.checkpoint_ok_at = time.monotonic() - STUCK_AFTER_S - 1  # ... failing ever since
    asyncio.run(loop.checkpoint_tick())
    problem = health.problems()["learner"]
    assert "1 rewards waiting" in problem and "checkpoint" in problem
    assert not event.acked

    del loop.parts.learners.checkpoint  # the disk has room again
    asyncio.run(loop.checkpoint_tick())
    assert "learner" not in health.problems()
    assert event.acked
    loop.parts.close()


def test_an_idle_learner_is_ready_when_a_reward_arrives(tmp_path: Path) -> None:
    loop, health = build(tmp_path)
    loop.checkpoint_ok_at = time.monotonic() - 10 * STUCK_AFTER_S  # idle for a long time
    asyncio.run(loop.checkpoint_tick())  # nothing waits: as current as a checkpoint makes it
    loop.gate.hold(Event(), learned=True)  # a reward arrives just now
    assert "learner" not in health.problems()
    loop.parts.close()

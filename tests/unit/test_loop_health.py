"""The learning loop's readiness and ownership checks, on a real LearningLoop (no broker
needed to build one): /readyz names the learner when rewards wait while checkpoints keep
failing; a poll joined after a rebalance leaves a partition that moved away to its owner."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import NotReady

from ltrr.agents import metrics as m
from ltrr.agents.loop import STUCK_AFTER_S, LearningLoop
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression, UserAction
from ltrr.streams.app import create_app
from ltrr.streams.health import Health
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from tests.conftest import TEST_SNAPSHOT_KEY
from tests.events import impression


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


class Message:
    """The fields of a Faust message the join reads."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.tp = (topic, partition)
        self.timestamp, self.key, self.value = None, b"k", b"{}"


def test_a_poll_never_takes_back_a_partition_that_moved_to_another_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll taken before a rebalance and joined after it: the events of the partition that
    moved away are left to its new owner; the partition this worker still owns is joined."""
    loop, _ = build(tmp_path)
    sent: list[tuple[str, int | None]] = []

    async def produce(topic: str, rows: Any, partition: int | None = None, **_: Any) -> list[Any]:
        sent.extend((topic, partition) for _ in rows)
        return []

    monkeypatch.setattr(loop, "produce", produce)
    topic = loop.topics.impressions.name
    kept = asyncio.Event()
    kept.set()
    loop.owned[0] = kept  # partition 0 stays here; partition 1 went to another worker
    monkeypatch.setattr(loop.app.consumer, "assignment", lambda: {(topic, 0)})
    events = [(impression(f"imp-{p}-{i}"), Message(topic, p, i)) for p in (0, 1) for i in range(3)]
    before = m.child(m.JOIN_EVENTS, "not_owned")._value.get()

    asyncio.run(loop.join_poll("impressions", events))

    assert set(loop.owned) == {0}  # not taken back
    assert m.child(m.JOIN_EVENTS, "not_owned")._value.get() - before == 3
    changelog = loop.topics.join_changelog.name
    assert sent and all(t == changelog and p == 0 for t, p in sent)
    assert loop.parts.joiner.store.get(b"j/00000/imp/imp-0-0") is not None
    assert loop.parts.joiner.store.get(b"j/00001/imp/imp-1-0") is None
    loop.parts.close()


class Reward(Event):
    def __init__(self, value: bytes, offset: int, key: bytes | None = b"default") -> None:
        self.message = Message("rewards", 0, offset)
        self.message.value, self.message.key = value, key


def test_q2e_folds_in_only_the_reward_lines_the_learner_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines written into the rewards topic by someone else (a probability of 1e-30, a cost of
    1e308) would steer the memory as much as the bandit: Q2E skips what the learner refuses."""
    loop, _ = build(tmp_path)

    async def produce(*_: Any, **__: Any) -> list[Any]:
        return []

    monkeypatch.setattr(loop, "produce", produce)

    def line(query: str, **label: float) -> bytes:
        imp = SearchImpression.from_dict(impression(f"imp-{query}-{label}", query=query))
        event = reward_event(imp, 1.0, [])
        event.update({f"_label_{k}": v for k, v in label.items()})
        return orjson.dumps(event)

    events = [
        Reward(line("tayler love"), 0),
        Reward(line("evil one", probability=1e-30), 1),
        Reward(line("evil two", cost=1e308), 2),
        Reward(b"\x00 not json", 3),
        Reward(line("evil keyless"), 4, key=None),
        Reward(line("evil rekeyed"), 5, key=b"other-model"),
    ]
    counts = {k: m.child(m.Q2E_RECORDS, k)._value.get() for k in ("on_time", "invalid")}

    asyncio.run(loop.remember_batch(events))

    now = int(time.time() * 1000)
    memory = loop.parts.memory
    assert memory.remembered("tayler love", now)  # shown: remembered (exposure)
    assert not memory.remembered("evil one", now)
    assert not memory.remembered("evil two", now)
    assert not memory.remembered("evil keyless", now)
    assert not memory.remembered("evil rekeyed", now)
    assert m.child(m.Q2E_RECORDS, "on_time")._value.get() - counts["on_time"] == 1
    assert m.child(m.Q2E_RECORDS, "invalid")._value.get() - counts["invalid"] == 5
    assert all(e.acked for e in events)
    loop.parts.close()


def test_q2e_counts_an_impression_closed_twice_once_and_each_late_reward_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart that replays the join's changelog can close a window again, perhaps with an
    action fewer (different bytes): the learner drops the second reward by EventId, and so
    does the memory; a late reward of the same impression still counts its action (not the
    impression again: it was counted when the window closed), a copy of it not."""
    loop, _ = build(tmp_path)

    async def produce(*_: Any, **__: Any) -> list[Any]:
        return []

    monkeypatch.setattr(loop, "produce", produce)
    imp = SearchImpression.from_dict(impression("imp-twice", query="velora nights"))
    at = imp.timestamp_ms

    def click(entity: str, n: int) -> UserAction:
        return UserAction(f"a{n}", "imp-twice", entity, "click", at + n)

    first = orjson.dumps(reward_event(imp, 0.5, [click("track-1", 1), click("track-2", 2)]))
    again = orjson.dumps(reward_event(imp, 0.5, [click("track-1", 1)]))  # one action fewer
    late = orjson.dumps(reward_event(imp, 0.5, [click("track-2", 3)], late=True))
    assert first != again
    before = {k: m.child(m.Q2E_RECORDS, k)._value.get() for k in ("on_time", "late", "duplicate")}

    asyncio.run(loop.remember_batch([Reward(first, 0), Reward(again, 1)]))
    asyncio.run(loop.remember_batch([Reward(late, 2), Reward(late, 3)]))

    memory = loop.parts.memory
    one = memory.observed("velora nights", "track-1", at)
    two = memory.observed("velora nights", "track-2", at + 3)
    assert one is not None and two is not None
    assert one.impressions == pytest.approx(1.0) and one.actions["click"] == pytest.approx(1.0)
    assert two.actions["click"] == pytest.approx(2.0, rel=1e-6)  # on time + the late one
    assert two.impressions == pytest.approx(1.0, rel=1e-6)
    counts = {k: m.child(m.Q2E_RECORDS, k)._value.get() - v for k, v in before.items()}
    assert counts == {"on_time": 1, "late": 1, "duplicate": 2}
    loop.parts.close()


def test_a_slow_log_end_answer_does_not_move_the_watermark_on_by_its_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partition 0 read to its end: its event time may follow the clock ``event_delay_s``
    behind, from when the broker was asked where the log ends. An answer that takes 9 s on a
    starved machine says nothing about events produced during those 9 s, so the watermark is
    the time asked minus the delay, not the time answered minus the delay."""
    loop, _ = build(tmp_path)
    clock = {"ms": 1_700_000_000_000}
    monkeypatch.setattr("ltrr.agents.loop.now_ms", lambda: clock["ms"])
    asked = clock["ms"]

    async def slow_log_ends(*_: Any, **__: Any) -> dict[tuple[str, int], tuple[int, int]]:
        clock["ms"] += 9_000  # the answer comes back 9 s later
        return {
            (loop.topics.impressions.name, 0): (5, 5),
            (loop.topics.actions.name, 0): (5, 5),
        }

    monkeypatch.setattr("ltrr.agents.loop.log_ends", slow_log_ends)
    done = asyncio.Event()
    done.set()
    loop.owned[0] = done
    for stream in ("impressions", "actions"):  # offsets 0-4 joined, all long ago
        for offset in range(5):
            loop.marks.observe(stream, 0, offset, asked - 600_000)

    watermarks = asyncio.run(loop.advance_watermarks())

    assert watermarks == {0: asked - int(loop.settings.event_delay_s * 1000)}
    loop.parts.close()


def test_q2e_rows_the_changelog_never_got_reach_it_later_also_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retrieval workers replicate the Q2E memory from its changelog. A batch the producer
    refused (not started yet at boot) and a batch whose sends were never acknowledged before
    the worker died were committed locally with their offsets, so the rewards are never folded
    in again: their rows must still reach the changelog, or the replicas stay stale."""
    replica: dict[bytes, bytes | None] = {}
    mode = {"now": "refuse"}

    async def produce(topic: str, rows: Any, partition: int | None = None, **_: Any) -> list[Any]:
        if mode["now"] == "refuse":
            raise NotReady("Producer service not yet started")
        acks: list[Any] = []
        for key, value in rows:
            ack = asyncio.get_running_loop().create_future()
            if mode["now"] == "lose":
                ack.set_exception(KafkaTimeoutError("not acknowledged"))
            else:
                replica[key] = value
                ack.set_result(None)
            acks.append(ack)
        return acks

    def line(query: str) -> bytes:
        return orjson.dumps(reward_event(SearchImpression.from_dict(impression(
            f"imp-{query}", query=query)), 1.0, []))  # fmt: skip

    def in_store(loop: LearningLoop) -> dict[bytes, bytes]:
        return dict(loop.parts.memory_store.scan(b"q2"))

    def replicated(store: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
        return {k: v for k, v in store.items() if v is not None}

    loop, _ = build(tmp_path)
    monkeypatch.setattr(loop, "produce", produce)
    asyncio.run(loop.remember_batch([Reward(line("tayler love"), 0)]))  # refused
    mode["now"] = "send"
    asyncio.run(loop.remember_batch([Reward(line("velora nights"), 1)]))
    assert replicated(replica) == in_store(loop)  # the refused rows went out first

    async def lost() -> None:
        mode["now"] = "lose"
        await loop.remember_batch([Reward(line("evening rain"), 2)])
        await asyncio.sleep(0.01)  # the acknowledgements fail

    asyncio.run(lost())
    assert replicated(replica) != in_store(loop)
    assert loop.q2e_unreplicated.take_resend()  # given back ... but the worker dies now
    loop.parts.close()

    loop, _ = build(tmp_path)  # the restart: the marks tell what never got through
    monkeypatch.setattr(loop, "produce", produce)
    mode["now"] = "send"

    async def tick() -> None:
        await loop.q2e_tick()  # no reward needed to carry them
        await asyncio.sleep(0.01)  # acknowledged

    asyncio.run(tick())
    assert replicated(replica) == in_store(loop)
    assert len(loop.q2e_unreplicated) == 0
    loop.parts.close()


def test_the_q2e_tick_moves_an_older_workers_postings_and_replicates_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop, _ = build(tmp_path)
    sent: dict[bytes, bytes | None] = {}

    async def produce(topic: str, rows: Any, partition: int | None = None, **_: Any) -> list[Any]:
        sent.update(rows)
        return []

    monkeypatch.setattr(loop, "produce", produce)
    store = loop.parts.memory_store
    store.write(
        {b"q2p/love\x00t1": b"[1.0, 0.5]", b"q2d/t1": b'{"type": "track", "tokens": ["love"]}'}
    )
    store.commit()
    asyncio.run(loop.q2e_tick())
    assert sent[b"q2p/love\x00t1"] is None  # the replicas drop the old row ...
    assert [k for k in sent if k.startswith(b"q2s/love\x00")]  # ... and get the ordered one
    assert not loop.postings_migrated  # one more tick finds nothing left
    asyncio.run(loop.q2e_tick())
    assert loop.postings_migrated
    loop.parts.close()


def test_a_join_tick_before_the_producer_started_is_no_error_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first ticks of a boot can run before Faust's producer has started (NotReady): the
    worker must not log an error with a traceback for it, and the window it closed must still
    reach the rewards topic (and the join changelog) on a later tick."""
    loop, _ = build(tmp_path)
    sent: list[str] = []
    ready = {"producer": True}

    async def produce(topic: str, rows: Any, partition: int | None = None, **_: Any) -> list[Any]:
        if not ready["producer"]:
            raise NotReady("Producer service not yet started")
        sent.extend(topic for _ in rows)
        return []

    async def log_ends(*_: Any, **__: Any) -> dict[tuple[str, int], tuple[int, int]]:
        return {(loop.topics.impressions.name, 0): (1, 1), (loop.topics.actions.name, 0): (0, 0)}

    monkeypatch.setattr(loop, "produce", produce)
    monkeypatch.setattr("ltrr.agents.loop.log_ends", log_ends)
    topic = loop.topics.impressions.name
    owned = asyncio.Event()
    owned.set()
    loop.owned[0] = owned
    monkeypatch.setattr(loop.app.consumer, "assignment", lambda: {(topic, 0)})
    long_ago = int(time.time() * 1000) - 3_600_000
    asyncio.run(loop.join_poll("impressions", [(impression("imp-boot", timestamp_ms=long_ago),
                                                Message(topic, 0, 0))]))  # fmt: skip
    rewards, changelog = loop.rewards.get_topic_name(), loop.topics.join_changelog.name
    assert rewards not in sent
    errors_before = m.LOOP_ERRORS.labels("join")._value.get()
    ok_before = loop.join_ok_at

    ready["producer"] = False  # booting: the tick closes the window, the producer refuses
    with caplog.at_level("DEBUG", logger="ltrr"):
        asyncio.run(loop.join_tick())
    assert rewards not in sent
    assert m.LOOP_ERRORS.labels("join")._value.get() == errors_before
    assert not [r for r in caplog.records if r.levelno >= 30]  # no warning, no error
    assert loop.join_ok_at == ok_before  # not a completed tick: /readyz would tell if it lasts

    ready["producer"] = True
    sent.clear()
    asyncio.run(loop.join_tick())
    assert sent.count(rewards) == 1 and changelog in sent
    loop.parts.close()

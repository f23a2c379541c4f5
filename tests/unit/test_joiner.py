"""The join state machine: each impression yields exactly one reward; early, duplicate, late
and orphan actions are handled; the outbox survives a reopen. Runs on both store backends."""

from __future__ import annotations

from pathlib import Path

import orjson

from ltrr.agents.joiner import JoinConfig, Joiner, Outgoing, Source
from ltrr.agents.reward import RewardConfig
from ltrr.schemas.contracts import Contract
from ltrr.schemas.dead_letter import original_bytes
from ltrr.schemas.validation import check
from ltrr.state.store import RocksStore, Store
from tests.events import action, impression

WINDOW = 1000


def joiner(store: Store) -> Joiner:
    return Joiner(
        store,
        JoinConfig(window_ms=WINDOW, late_horizon_ms=10 * WINDOW),
        RewardConfig(default_reward=-0.05),
    )


def src(act: dict, offset: int = 0) -> Source:
    raw = orjson.dumps(act)
    return Source("ltrr.actions", 0, offset, 5, act["impression_id"].encode(), raw)


def drain(j: Joiner) -> list[Outgoing]:
    out = list(j.outbox())
    for entry in out:
        j.sent(entry)
    return out


def rewards(out: list[Outgoing]) -> dict[str, dict]:
    events = [orjson.loads(o.value) for o in out if o.topic == "rewards"]
    for event in events:
        check(Contract.REWARD, event)
    return {e["EventId"]: e for e in events}


def test_window_closes_once_with_the_aggregated_reward(store: Store) -> None:
    j = joiner(store)
    assert j.on_impression(impression("i1"), 0).verdict == "opened"
    assert (
        j.on_action(action("a1", "i1", type="click"), src(action("a1", "i1")), 10).verdict
        == "joined"
    )
    assert (
        j.on_action(action("a2", "i1", type="like"), src(action("a2", "i1")), 20).verdict
        == "joined"
    )
    assert j.expire(WINDOW - 1) == []
    assert [e.verdict for e in j.expire(WINDOW)] == ["closed"]
    assert j.expire(WINDOW * 2) == []
    out = drain(j)
    assert [o.kind for o in out] == ["reward"]
    event = rewards(out)["i1"]
    assert event["ltrr"]["reward"] == 1.0 and event["_label_cost"] == -1.0
    assert [a["action_id"] for a in event["ltrr"]["actions"]] == ["a1", "a2"]
    assert out[0].key == b"default"


def test_no_action_gives_the_default_reward(store: Store) -> None:
    j = joiner(store)
    j.on_impression(impression("i1"), 0)
    assert [e.verdict for e in j.expire(WINDOW)] == ["closed_default"]
    event = rewards(drain(j))["i1"]
    assert event["ltrr"]["default_reward"] is True and event["ltrr"]["reward"] == -0.05


def test_duplicates_are_counted_once(store: Store) -> None:
    j = joiner(store)
    j.on_impression(impression("i1"), 0)
    assert j.on_impression(impression("i1"), 5).verdict == "duplicate_impression"
    a = action("a1", "i1", type="click")
    j.on_action(a, src(a), 10)
    assert j.on_action(a, src(a, 1), 11).verdict == "duplicate"
    j.expire(WINDOW)
    assert len(rewards(drain(j))["i1"]["ltrr"]["actions"]) == 1


def test_action_before_its_impression_is_joined(store: Store) -> None:
    j = joiner(store)
    a = action("a1", "i1", type="like")
    assert j.on_action(a, src(a), 0).verdict == "buffered"
    assert j.on_action(a, src(a), 1).verdict == "duplicate"
    assert j.on_impression(impression("i1"), 500).verdict == "opened_with_early_actions"
    # The orphan deadline (t=1000) must not dead-letter the joined action.
    assert [e.verdict for e in j.expire(WINDOW)] == []
    assert [e.verdict for e in j.expire(500 + WINDOW)] == ["closed"]
    out = drain(j)
    assert [o.kind for o in out] == ["reward"]
    assert rewards(out)["i1"]["ltrr"]["reward"] == 1.0


def test_orphan_action_expires_to_the_dlq_with_its_bytes(store: Store) -> None:
    j = joiner(store)
    a = action("a1", "ghost")
    source = src(a, offset=7)
    j.on_action(a, source, 0)
    assert [e.verdict for e in j.expire(WINDOW)] == ["orphan"]
    out = drain(j)
    assert [(o.topic, o.kind) for o in out] == [("dlq", "orphan_action")]
    letter = orjson.loads(out[0].value)
    check(Contract.DEAD_LETTER, letter)
    assert letter["reason"] == "orphan_action"
    assert original_bytes(letter) == source.raw
    assert letter["source"]["offset"] == 7


def test_late_action_feeds_memory_not_the_bandit(store: Store) -> None:
    j = joiner(store)
    j.on_impression(impression("i1"), 0)
    j.expire(WINDOW)
    a = action("late-1", "i1", type="play", value=100)
    assert j.on_action(a, src(a), WINDOW + 5).verdict == "late"
    assert j.on_action(a, src(a), WINDOW + 6).verdict == "duplicate"
    out = drain(j)
    assert [o.kind for o in out] == ["reward", "late_reward"]
    late = orjson.loads(out[1].value)
    check(Contract.REWARD, late)
    assert late["_skipLearn"] is True and late["ltrr"]["late"] is True
    assert late["ltrr"]["reward"] == 1.0


def test_closed_impressions_are_forgotten_after_the_late_horizon(store: Store) -> None:
    j = joiner(store)
    j.on_impression(impression("i1"), 0)
    j.expire(WINDOW)
    assert [e.verdict for e in j.expire(WINDOW + 10 * WINDOW)] == ["forgotten"]
    assert j.open_windows() == 0
    a = action("a9", "i1")
    assert j.on_action(a, src(a), 20 * WINDOW).verdict == "buffered"


def test_outbox_and_state_survive_a_reopen(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "join")
    j = joiner(first)
    j.on_impression(impression("i1"), 0)
    j.on_impression(impression("i2"), 0)
    j.expire(WINDOW)
    unsent = list(j.outbox())
    j.sent(unsent[0])
    first.close()
    again = RocksStore(tmp_path / "join")
    j2 = joiner(again)
    left = drain(j2)
    assert [o.seq_key for o in left] == [unsent[1].seq_key]
    j2.on_impression(impression("i3"), 0)
    j2.expire(WINDOW)
    newer = drain(j2)
    assert newer[0].seq_key > unsent[1].seq_key  # sequence continues after a reopen
    again.close()


def test_pending_deadline_count_matches_the_store_through_any_sequence(tmp_path: Path) -> None:
    """open_windows() is a maintained count (scrapes must not scan RocksDB): after every
    step of a random mix of impressions, early/late/duplicate actions and expiries it equals
    the number of deadline keys, and a reopened joiner starts from the same number."""
    import random

    rng = random.Random(7)
    store = RocksStore(tmp_path / "join")
    j = joiner(store)
    now = 0
    for step in range(600):
        now += rng.randrange(0, 300)
        iid = f"i{rng.randrange(60)}"
        roll = rng.random()
        if roll < 0.35:
            j.on_impression(impression(iid), now)
        elif roll < 0.85:
            a = action(f"a{rng.randrange(400)}", iid)
            j.on_action(a, src(a, step), now)
        else:
            j.expire(now)
        assert j.open_windows() == sum(1 for _ in store.scan(b"due/")), step
    assert j.open_windows() > 0
    held = j.open_windows()
    store.close()
    again = RocksStore(tmp_path / "join")
    assert joiner(again).open_windows() == held
    j2 = joiner(again)
    j2.expire(now + 100 * WINDOW)  # closes windows, expires orphans
    j2.expire(now + 200 * WINDOW)  # forgets closed windows after the late horizon
    assert j2.open_windows() == 0 == sum(1 for _ in again.scan(b"due/"))
    again.close()

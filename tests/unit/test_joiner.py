"""The join state machine on event time: each impression yields exactly one reward; early,
duplicate, late and orphan actions are handled by their own timestamps and the partition's
watermark; a window that cannot close is dead-lettered without stopping the others; the
outbox survives a reopen. Runs on both store backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ltrr.agents.joiner import JoinConfig, Joiner, Outgoing, Source
from ltrr.agents.reward import RewardConfig
from ltrr.schemas.contracts import Contract
from ltrr.schemas.dead_letter import original_bytes
from ltrr.schemas.validation import check
from ltrr.state.store import RocksStore, Store
from tests.events import action, impression

WINDOW = 1000
T0 = 1_795_000_000_000


def joiner(store: Store) -> Joiner:
    return Joiner(
        store,
        JoinConfig(window_ms=WINDOW, late_horizon_ms=10 * WINDOW),
        RewardConfig(default_reward=-0.05),
    )


def imp(iid: str, t: int = 0, **kw: Any) -> dict[str, Any]:
    return impression(iid, timestamp_ms=T0 + t, **kw)


def act(aid: str, iid: str, t: int = 0, **kw: Any) -> dict[str, Any]:
    return action(aid, iid, timestamp_ms=T0 + t, **kw)


def isrc(partition: int = 0, offset: int = 0) -> Source:
    return Source("ltrr.impressions", partition, offset, None, None, b"{}")


def src(a: dict, offset: int = 0, partition: int = 0) -> Source:
    raw = orjson.dumps(a)
    return Source("ltrr.actions", partition, offset, 5, a["impression_id"].encode(), raw)


def expire(j: Joiner, t: int, partition: int = 0) -> list[str]:
    """Move partition ``partition``'s watermark to T0 + t; the verdicts of what closed."""
    return [e.verdict for e in j.expire({partition: T0 + t}, T0 + t)]


def drain(j: Joiner, partition: int = 0) -> list[Outgoing]:
    out = list(j.outbox(partition))
    j.sent(partition, out)
    return out


def due_keys(store: Store) -> int:
    return sum(1 for key, _ in store.scan(b"j/") if b"/due/" in key)


def rewards(out: list[Outgoing]) -> dict[str, dict]:
    events = [orjson.loads(o.value) for o in out if o.topic == "rewards"]
    for event in events:
        check(Contract.REWARD, event)
    return {e["EventId"]: e for e in events}


def test_window_closes_once_with_the_aggregated_reward(store: Store) -> None:
    j = joiner(store)
    assert j.on_impression(imp("i1"), isrc()).verdict == "opened"
    a1, a2 = act("a1", "i1", 10, type="click"), act("a2", "i1", 20, type="like")
    assert j.on_action(a1, src(a1)).verdict == "joined"
    assert j.on_action(a2, src(a2)).verdict == "joined"
    assert expire(j, WINDOW - 1) == []
    assert expire(j, WINDOW) == ["closed"]
    assert expire(j, WINDOW * 2) == []
    out = drain(j)
    assert [o.kind for o in out] == ["reward"]
    event = rewards(out)["i1"]
    assert event["ltrr"]["reward"] == 1.0 and event["_label_cost"] == -1.0
    assert [a["action_id"] for a in event["ltrr"]["actions"]] == ["a1", "a2"]
    assert out[0].key == b"default"


def test_no_action_gives_the_default_reward(store: Store) -> None:
    j = joiner(store)
    j.on_impression(imp("i1"), isrc())
    assert expire(j, WINDOW) == ["closed_default"]
    event = rewards(drain(j))["i1"]
    assert event["ltrr"]["default_reward"] is True and event["ltrr"]["reward"] == -0.05


def test_duplicates_are_counted_once(store: Store) -> None:
    j = joiner(store)
    j.on_impression(imp("i1"), isrc())
    assert j.on_impression(imp("i1", 5), isrc()).verdict == "duplicate_impression"
    a = act("a1", "i1", 10, type="click")
    j.on_action(a, src(a))
    assert j.on_action(a, src(a, 1)).verdict == "duplicate"
    expire(j, WINDOW)
    assert len(rewards(drain(j))["i1"]["ltrr"]["actions"]) == 1


def test_action_before_its_impression_is_joined(store: Store) -> None:
    j = joiner(store)
    a = act("a1", "i1", 600, type="like")
    assert j.on_action(a, src(a)).verdict == "buffered"
    assert j.on_action(a, src(a)).verdict == "duplicate"
    assert expire(j, 600 + WINDOW - 1) == []  # the orphan waits for its partition's time
    assert j.on_impression(imp("i1", 500), isrc()).verdict == "opened_with_early_actions"
    assert expire(j, 500 + WINDOW) == ["closed"]
    out = drain(j)
    assert [o.kind for o in out] == ["reward"]
    assert rewards(out)["i1"]["ltrr"]["reward"] == 1.0


def test_impressions_lagging_far_behind_their_actions_lose_no_click(store: Store) -> None:
    """A backlog or a slow impression logger: actions are read long (in processing time)
    before their impressions. Nothing is orphaned while the partition's event time has not
    passed the actions by the window, however long that takes on the clock."""
    j = joiner(store)
    clicks = [act(f"a{i}", f"i{i}", 10 * i + 5, type="click") for i in range(50)]
    for a in clicks:
        assert j.on_action(a, src(a)).verdict == "buffered"
    for i in range(50):
        assert expire(j, 10 * i) == []  # impressions read so far: up to t = 10 i
        j.on_impression(imp(f"i{i}", 10 * i), isrc(offset=i))
    expire(j, 10 * 49 + WINDOW)
    got = rewards(drain(j))
    assert len(got) == 50 and all(e["ltrr"]["reward"] == 0.5 for e in got.values())


def test_orphan_action_expires_to_the_dlq_with_its_bytes(store: Store) -> None:
    j = joiner(store)
    a = act("a1", "ghost", 100)
    source = src(a, offset=7)
    j.on_action(a, source)
    assert expire(j, 100 + WINDOW - 1) == []
    assert expire(j, 100 + WINDOW) == ["orphan"]
    out = drain(j)
    assert [(o.topic, o.kind, o.reason) for o in out] == [("dlq", "orphan_action", "orphan_action")]
    letter = orjson.loads(out[0].value)
    check(Contract.DEAD_LETTER, letter)
    assert letter["reason"] == "orphan_action"
    assert original_bytes(letter) == source.raw
    assert letter["source"]["offset"] == 7


def test_late_action_feeds_memory_not_the_bandit(store: Store) -> None:
    j = joiner(store)
    j.on_impression(imp("i1"), isrc())
    expire(j, WINDOW)
    a = act("late-1", "i1", WINDOW + 5, type="play", value=100)
    assert j.on_action(a, src(a)).verdict == "late"
    assert j.on_action(a, src(a)).verdict == "duplicate"
    out = drain(j)
    assert [o.kind for o in out] == ["reward", "late_reward"]
    late = orjson.loads(out[1].value)
    check(Contract.REWARD, late)
    assert late["_skipLearn"] is True and late["ltrr"]["late"] is True
    assert late["ltrr"]["reward"] == 1.0


def test_an_action_after_its_window_in_event_time_is_late_while_the_window_is_open(
    store: Store,
) -> None:
    """Which actions count does not depend on when the join read them."""
    j = joiner(store)
    j.on_impression(imp("i1"), isrc())
    a = act("a1", "i1", WINDOW + 1, type="click")
    assert j.on_action(a, src(a)).verdict == "late"
    early = act("a0", "i2", WINDOW + 1, type="click")  # early in arrival, late in time
    j.on_action(early, src(early))
    assert j.on_impression(imp("i2"), isrc()).verdict == "opened_with_early_actions"
    assert expire(j, WINDOW) == ["closed_default", "closed_default"]
    out = drain(j)
    assert sorted(o.kind for o in out) == ["late_reward", "late_reward", "reward", "reward"]


def test_windows_close_only_on_partitions_given_a_watermark(store: Store) -> None:
    """A worker closes windows only for the partitions it owns (it passes their
    watermarks): a partition moved to another worker is no longer emitted for here."""
    j = joiner(store)
    j.on_impression(imp("i0"), isrc(partition=0))
    j.on_impression(imp("i3"), isrc(partition=3))
    assert [e.verdict for e in j.expire({3: T0 + 10 * WINDOW}, T0)] == ["closed_default"]
    assert list(rewards(drain(j, 3))) == ["i3"]
    assert drain(j, 0) == []
    assert expire(j, WINDOW, partition=0) == ["closed_default"]


def test_a_window_that_cannot_close_is_dead_lettered_and_the_others_close(store: Store) -> None:
    j = joiner(store)
    # Year 10000: the reward's DSJSON timestamp cannot be written (ingest refuses such
    # events; the join must still not be stopped by one that got in).
    year_10000 = 253402300800000
    j.on_impression(impression("bad", timestamp_ms=year_10000), isrc(offset=3))
    j.on_impression(imp("good"), isrc())
    assert sorted(expire(j, year_10000 - T0 + WINDOW)) == ["closed_default", "failed"]
    out = drain(j)
    assert list(rewards(out)) == ["good"]
    (letter_entry,) = [o for o in out if o.topic == "dlq"]
    assert letter_entry.reason == "invalid_value"
    letter = orjson.loads(letter_entry.value)
    check(Contract.DEAD_LETTER, letter)
    assert orjson.loads(original_bytes(letter))["impression_id"] == "bad"
    assert letter["source"]["offset"] == 3
    assert store.get(b"j/00000/imp/bad") is None


def test_expire_handles_a_bounded_number_of_deadlines_per_call(store: Store) -> None:
    j = joiner(store)
    for i in range(25):
        j.on_impression(imp(f"i{i}"), isrc(offset=i))
    sizes = []
    while effects := j.expire({0: T0 + WINDOW}, T0, limit=10):
        sizes.append(len(effects))
    assert sizes == [10, 10, 5]
    assert len(rewards(drain(j))) == 25


def test_closed_impressions_are_forgotten_after_the_late_horizon(store: Store) -> None:
    j = joiner(store)
    j.on_impression(imp("i1"), isrc())
    expire(j, WINDOW)
    assert expire(j, WINDOW + 10 * WINDOW) == ["forgotten"]
    assert j.open_windows() == 0
    a = act("a9", "i1", 20 * WINDOW)
    assert j.on_action(a, src(a)).verdict == "buffered"


def test_outbox_and_state_survive_a_reopen(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "join")
    j = joiner(first)
    j.on_impression(imp("i1"), isrc())
    j.on_impression(imp("i2"), isrc())
    expire(j, WINDOW)
    unsent = list(j.outbox(0))
    j.sent(0, unsent[0])
    assert [o.seq_key for o in j.outbox(0)] == [unsent[1].seq_key]
    first.close()
    again = RocksStore(tmp_path / "join")
    j2 = joiner(again)
    left = drain(j2)
    assert [o.seq_key for o in left] == [unsent[1].seq_key]
    j2.on_impression(imp("i3"), isrc())
    expire(j2, WINDOW)
    newer = drain(j2)
    assert newer[0].seq_key > unsent[1].seq_key  # sequence continues after a reopen
    assert list(j2.outbox(0)) == []
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
            j.on_impression(imp(iid, now - rng.randrange(0, 500)), isrc(offset=step))
        elif roll < 0.85:
            a = act(f"a{rng.randrange(400)}", iid, now)
            j.on_action(a, src(a, step))
        else:
            expire(j, now)
        assert j.open_windows() == due_keys(store), step
    assert j.open_windows() > 0
    held = j.open_windows()
    store.close()
    again = RocksStore(tmp_path / "join")
    j2 = joiner(again)
    list(j2.outbox(0))  # touch partition 0: its count is read from the store
    assert j2.open_windows() == held
    expire(j2, now + 100 * WINDOW)  # closes windows, expires orphans
    expire(j2, now + 200 * WINDOW)  # forgets closed windows after the late horizon
    assert j2.open_windows() == 0 == due_keys(again)
    again.close()


def test_changes_the_producer_refused_are_sent_again_before_newer_ones(tmp_path: Path) -> None:
    """A changelog send that fails (the producer not started yet at boot) gives its rows back:
    the next batch carries them first, then the newer writes, so a replay of the changelog
    rebuilds the same state as the store (the action joined before the failure included)."""
    store = RocksStore(tmp_path / "a")
    a = joiner(store)
    a.on_impression(imp("i1", 500), isrc(partition=1))
    click = act("a1", "i1", 510, type="click")
    a.on_action(click, src(click, partition=1))
    refused = a.take_changes()
    assert a.take_changes() == {}
    a.return_changes(refused)
    like = act("a2", "i1", 520, type="like")
    a.on_action(like, src(like, partition=1))  # a newer write to the same window
    again = a.take_changes()
    assert again[1][: len(refused[1])] == refused[1]  # the refused rows first, in order
    replica = joiner(RocksStore(tmp_path / "b"))
    replica.restore(1, again[1], next_offset=len(again[1]))
    for j in (a, replica):  # both close the window with both actions
        [effect] = j.expire({1: T0 + 10 * WINDOW}, T0)
        assert effect.verdict == "closed"
        [out] = j.outbox(1)
        actions = orjson.loads(out.value)["ltrr"]["actions"]
        assert sorted(x["action_id"] for x in actions) == ["a1", "a2"]
    a.return_changes({})  # nothing to give back: a no-op
    store.close()


def test_state_follows_its_partition_through_the_changelog(tmp_path: Path) -> None:
    """Worker A's writes of partition 1, replayed on worker B (the partition moved), give B
    the same open windows, early actions, dedup memory and unsent outbox: B closes them with
    the reward A would have emitted; A's other partitions stay out of B's store."""
    a_store, b_store = RocksStore(tmp_path / "a"), RocksStore(tmp_path / "b")
    a, b = joiner(a_store), joiner(b_store)
    a.on_impression(imp("i1", 500), isrc(partition=1))
    click = act("a1", "i1", 510, type="click")
    a.on_action(click, src(click, partition=1))
    early = act("a2", "i2", 520, type="like")
    a.on_action(early, src(early, partition=1))  # its impression comes after the move
    a.on_impression(imp("i0"), isrc(partition=0))
    a.on_impression(imp("done"), isrc(partition=1))
    assert [e.verdict for e in a.expire({1: T0 + WINDOW}, T0)] == ["closed_default"]
    changelog = a.take_changes()
    assert set(changelog) == {0, 1} and a.take_changes() == {}
    # B is assigned partition 1: it replays the changelog (twice: replay is idempotent).
    for _ in range(2):
        b.restore(1, changelog[1], next_offset=len(changelog[1]))
    assert b.changelog_position(1) == len(changelog[1])
    assert b.on_action(click, src(click, partition=1)).verdict == "duplicate"
    assert b.on_impression(imp("i2", 515), isrc(partition=1)).verdict == (
        "opened_with_early_actions"
    )
    assert sorted(e.verdict for e in b.expire({1: T0 + 515 + WINDOW}, T0)) == [
        "closed",
        "closed",
    ]
    out = drain(b, 1)  # A's unsent reward of "done" moved too
    got = rewards(out)
    assert sorted(got) == ["done", "i1", "i2"]
    assert got["i1"]["ltrr"]["reward"] == 0.5 and got["i2"]["ltrr"]["reward"] == 1.0
    assert drain(b, 0) == []  # partition 0 was not given to B
    assert b.open_windows() == due_keys(b_store)
    a_store.close()
    b_store.close()


def test_expire_scans_past_handled_deadlines_and_sees_new_ones_below(store: Store) -> None:
    starts: list[bytes | None] = []

    class Recording:
        """The store, remembering where each deadline scan starts."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def scan(self, prefix: bytes, start: bytes | None = None) -> Any:
            if b"/due/" in prefix:
                starts.append(start)
            return store.scan(prefix, start)

    j = joiner(Recording())  # type: ignore[arg-type]
    for i in range(5):
        j.on_impression(imp(f"i{i}", t=i), isrc(offset=i))
    assert expire(j, WINDOW + 2) == ["closed_default"] * 3
    # The next scan starts at the first deadline not handled, not over the deleted ones.
    expire(j, WINDOW + 2)
    assert starts[-1] is not None and b"/i/i3" in starts[-1]
    # An impression whose window ends before that point (it came late) still closes.
    j.on_impression(imp("old", t=-WINDOW // 2), isrc(offset=9))
    assert expire(j, WINDOW + 2) == ["closed_default"]
    assert expire(j, WINDOW + 10) == ["closed_default"] * 2
    assert set(rewards(drain(j))) >= {"old", "i0", "i4"}


def test_reward_entries_carry_their_plan_and_value_for_metrics(store: Store) -> None:
    j = joiner(store)
    j.on_impression(imp("i1", chosen=2), isrc())
    a = act("a1", "i1", 10, type="click")
    j.on_action(a, src(a))
    expire(j, WINDOW)
    (entry,) = drain(j)
    part = orjson.loads(entry.value)["ltrr"]
    assert (entry.plan, entry.reward) == (part["plan_id"], part["reward"])


def test_a_restart_on_a_store_ahead_of_its_changelog_overwrites_no_pending_entry(
    tmp_path: Path,
) -> None:
    """A worker stopped after writes whose changelog rows never left it restarts on its own
    store and replays the changelog over it, which reverts ``meta/seq``: an outbox entry
    still pending must not be overwritten by the next one (its reward would be lost)."""
    store = RocksStore(tmp_path / "join")
    j = joiner(store)
    j.on_impression(imp("a"), isrc(0, 0))
    assert expire(j, WINDOW) == ["closed_default"]
    logged = j.take_changes()[0]  # these rows reached the changelog
    assert [o.kind for o in drain(j)] == ["reward"]  # a's reward sent ...
    j.on_impression(imp("b", WINDOW + 1), isrc(0, 1))
    assert expire(j, 2 * WINDOW + 1) == ["closed_default"]  # ... b's closed, not sent
    j.take_changes()  # the stop: these rows never reach the changelog
    restarted = joiner(store)
    restarted.restore(0, logged, len(logged))
    restarted.on_impression(imp("c", 2 * WINDOW + 2), isrc(0, 2))
    assert expire(restarted, 3 * WINDOW + 2) == ["closed_default"]
    sent = [orjson.loads(o.value)["EventId"] for o in drain(restarted)]
    assert {"b", "c"} <= set(sent)  # a may come again: resent copies are deduplicated


class CountingStore:
    """A store that counts its atomic writes (wraps a real one)."""

    def __init__(self, inner: Store) -> None:
        self.inner, self.writes = inner, 0

    def write(self, batch: dict[bytes, bytes | None]) -> None:
        self.writes += 1
        self.inner.write(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def play(j: Joiner) -> list[str]:
    """One poll's worth of inputs on two partitions: early actions, impressions, joins,
    duplicates and a late action, each reading what the ones before it wrote."""
    early = act("a0", "i2", 5)
    verdicts = [j.on_action(early, src(early, 0, partition=1)).verdict]
    for n, (iid, p) in enumerate([("i1", 0), ("i2", 1), ("i3", 0)]):
        verdicts.append(j.on_impression(imp(iid, n), isrc(p, n)).verdict)
    verdicts.append(j.on_impression(imp("i1"), isrc(0, 9)).verdict)
    for n, (aid, iid, t, p) in enumerate(
        [("a1", "i1", 10, 0), ("a2", "i2", 20, 1), ("a1", "i1", 11, 0), ("a3", "i3", 5000, 0)]
    ):
        a = act(aid, iid, t)
        verdicts.append(j.on_action(a, src(a, n, partition=p)).verdict)
    return verdicts


def test_a_batch_is_one_write_with_the_same_state_and_changelog(tmp_path: Path) -> None:
    """Inputs inside ``batch()`` see each other's writes, reach the store in one atomic
    write, and leave the same state, windows and changelog as the same inputs one by one."""
    one_by_one, batched = (
        joiner(RocksStore(tmp_path / "a")),
        CountingStore(RocksStore(tmp_path / "b")),
    )
    jb = joiner(batched)  # type: ignore[arg-type]
    expected = play(one_by_one)
    with jb.batch():
        got = play(jb)
        assert batched.writes == 0  # nothing reaches the store before the batch ends
        assert jb.take_changes() == {}
    assert got == expected
    assert "opened_with_early_actions" in got and "duplicate" in got and "late" in got
    assert batched.writes == 1
    assert list(batched.scan(b"j/")) == list(one_by_one.store.scan(b"j/"))
    assert jb.open_windows() == one_by_one.open_windows() == due_keys(one_by_one.store)
    # The changelog carries each key's last value once; replayed, it gives the same state.
    changes_a, changes_b = one_by_one.take_changes(), jb.take_changes()
    for p in (0, 1):
        keys = [k for k, _ in changes_b[p]]
        assert len(keys) == len(set(keys)) < len(changes_a[p])
        assert dict(changes_b[p]) == dict(changes_a[p])
    replica = joiner(RocksStore(tmp_path / "c"))
    for p in (0, 1):
        replica.restore(p, changes_b[p], 1)
    assert [kv for kv in replica.store.scan(b"j/") if b"/meta/changelog" not in kv[0]] == list(
        one_by_one.store.scan(b"j/")
    )
    # Windows close the same way from both.
    assert expire(jb, 3 * WINDOW, 0) == expire(one_by_one, 3 * WINDOW, 0)
    assert [o.value for o in drain(jb)] == [o.value for o in drain(one_by_one)]

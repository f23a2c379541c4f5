"""Q2E memory over both state backends: normalization, decay, scoring, eviction, cold start."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ltrr.ordering import best_first
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression
from ltrr.state.q2e import (
    Q2EConfig,
    Q2EMemory,
    Q2EScore,
    decode_feedback,
    normalize_query,
)
from ltrr.state.store import Batch, MemoryStore, RocksStore, Store
from tests.events import impression

HOUR = 3600 * 1000
DAY = 24 * HOUR
T0 = 1_700_000_000_000


class CountingStore:
    """Wraps a store and records every batch written."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.batches: list[Batch] = []

    def get(self, key: bytes) -> bytes | None:
        return self.inner.get(key)

    def write(self, batch: Batch) -> None:
        self.batches.append(dict(batch))
        self.inner.write(batch)

    def scan(
        self, prefix: bytes, start: bytes | None = None, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        return self.inner.scan(prefix, start, limit)

    def close(self) -> None:
        self.inner.close()


def entity(eid: str, title: str, etype: str = "track", artist: str = "", **kw: object) -> dict:
    return {"id": eid, "type": etype, "title": title, "artist": artist, "genres": [], **kw}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Taylor   SWIFT ", "taylor swift"),
        ("\uff34\uff41\uff59\uff4c\uff4f\uff52", "taylor"),
        ("Beyonce\u0301", "beyoncé"),
        ("Beyoncé", "beyoncé"),
        ("AC/DC", "ac dc"),
        ("taylor\tswift\n\r love", "taylor swift love"),
        ("Don't Stop Believin'", "dont stop believin"),
        ("Guns N\u2019 Roses", "guns n roses"),
        ("Jay-Z", "jay z"),
        ("Ke$ha + P!nk", "ke$ha + p nk"),
        ("STRASSE Straße", "strasse strasse"),
        ("zero\u200bwidth soft\u00adhyphen\x00", "zerowidth softhyphen"),
        ("?!...", ""),
    ],
)
def test_normalize_query_examples(raw: str, expected: str) -> None:
    assert normalize_query(raw) == expected


@given(st.text())
def test_normalize_query_is_idempotent(text: str) -> None:
    once = normalize_query(text)
    assert normalize_query(once) == once
    assert "\x00" not in once and once == once.strip() and "  " not in once


def test_decay_halves_after_one_half_life(store: Store) -> None:
    cfg = Q2EConfig(half_life_ms=DAY)
    mem = Q2EMemory(store, cfg)
    mem.record("love", ["a"], [("a", "click", T0)], T0)
    assert mem.scores("love", T0)[0].score == pytest.approx(1 / math.sqrt(2))
    later = mem.scores("love", T0 + DAY)[0].score
    assert later == pytest.approx(0.5 / math.sqrt(1.5), rel=1e-9)
    seen = mem.observed("love", "a", T0 + DAY)
    assert seen is not None
    assert seen.impressions == pytest.approx(0.5) and seen.actions["click"] == pytest.approx(0.5)
    # a click alone (no impression) halves exactly
    mem.record("rain", [], [("b", "play", T0)], T0)
    assert mem.scores("rain", T0 + 2 * DAY)[0].score == pytest.approx(2.0 * 0.25)


def test_late_events_give_the_same_counts_in_any_order(store: Store) -> None:
    mem = Q2EMemory(store, Q2EConfig(half_life_ms=DAY))
    mem.record("late", ["a"], [], T0 + DAY)
    mem.record("late", [], [("a", "click", T0)], T0)  # arrives after a newer impression
    mem.record("ordered", [], [("a", "click", T0)], T0)
    mem.record("ordered", ["a"], [], T0 + DAY)
    now = T0 + 3 * DAY
    assert mem.scores("late", now)[0].score == pytest.approx(mem.scores("ordered", now)[0].score)
    assert mem.scores("late", now)[0].score == pytest.approx(0.125 / math.sqrt(1.25))


def test_skip_lowers_the_score(store: Store) -> None:
    mem = Q2EMemory(store)
    mem.record("q", ["a", "b"], [("a", "play", T0), ("b", "play", T0), ("b", "skip", T0)], T0)
    scores = {s.entity_id: s.score for s in mem.scores("q", T0)}
    assert scores["b"] < scores["a"]
    mem.record("only skips", ["c"], [("c", "skip", T0)], T0)
    assert mem.scores("only skips", T0)[0].score < 0


def test_impressions_without_actions_rank_below_clicks(store: Store) -> None:
    mem = Q2EMemory(store)
    for i in range(5):
        mem.record("love", ["ignored", "clicked"], [("clicked", "click", T0 + i)], T0 + i)
        mem.record("love", ["ignored"], [], T0 + i)
    ranked = mem.scores("love", T0 + 10)
    assert [s.entity_id for s in ranked] == ["clicked", "ignored"]
    assert ranked[1].score == 0.0 and ranked[1].source == "observed"


def test_eviction_keeps_at_most_max_entities(store: Store) -> None:
    mem = Q2EMemory(store, Q2EConfig(max_entities=3))
    mem.record("q", ["keep1", "keep2", "keep3"], [("keep1", "purchase", T0)], T0)
    mem.record("q", [], [("keep2", "click", T0), ("keep3", "like", T0)], T0)
    for i in range(4):
        mem.record("q", [f"noise{i}"], [], T0 + i)
        assert len(list(store.scan(b"q2e/q\x00"))) == 3
    assert sorted(s.entity_id for s in mem.scores("q", T0 + 10)) == ["keep1", "keep2", "keep3"]
    mem.record("q", ["x", "y", "z", "w"], [(e, "purchase", T0) for e in "xyzw"], T0 + 20)
    assert len(mem.scores("q", T0 + 20)) == 3
    assert store.get(b"q2n/q") == b"3"


def test_cold_start_predicted_then_observed(store: Store) -> None:
    mem = Q2EMemory(store)
    mem.index_entities(
        [
            entity("ar1", "Taylor Swift", "artist", popularity=0.9, genres=["Pop"]),
            entity("tr1", "Love Story", "track", "Taylor Swift", popularity=0.8),
            entity("tr2", "Rain", "track", "Someone Else", genres=["pop"], popularity=0.1),
        ]
    )
    first = mem.scores("Taylor", T0)
    assert [(s.entity_id, s.source) for s in first] == [("ar1", "predicted"), ("tr1", "predicted")]
    assert first[0].score == pytest.approx(0.1 * 1.0 * 0.95)  # title match
    assert first[1].score == pytest.approx(0.1 * 0.8 * 0.9)  # artist match
    assert {s.entity_id for s in mem.scores("pop", T0)} == {"ar1", "tr2"}
    mem.record("taylor", ["ar1"], [("ar1", "click", T0)], T0)
    after = mem.scores("TAYLOR ", T0)
    assert (after[0].entity_id, after[0].source) == ("ar1", "observed")
    assert after[0].score > first[0].score
    assert [s.source for s in after] == ["observed", "predicted"]


def test_predictions_read_only_each_tokens_best_postings(store: Store) -> None:
    """A common token (a genre word) can predict tens of thousands of entities; every search
    read them all (200 ms at 100,000 entities). Postings are ordered best first, and a query
    reads ``per_token`` of them per token."""
    mem = Q2EMemory(store)
    mem.index_entities(
        entity(f"t{i}", f"love song {i}", popularity=i / 100) for i in range(100)
    )  # fmt: skip
    mem.index_entity(entity("t7", "love song 7", popularity=1.0))  # re-indexed: moves up
    best = mem.predicted("love", per_token=3)
    assert sorted(best, key=lambda e: -best[e]) == ["t7", "t99", "t98"]
    assert best["t98"] == pytest.approx(0.1 * 1.0 * (0.5 + 0.5 * 0.98))
    assert len(mem.predicted("love")) == 100  # under the default bound: all of them
    # a query of two tokens sums each token's best: an entity with both ranks first ...
    assert max(mem.predicted("love 42").items(), key=lambda kv: kv[1])[0] == "t42"
    # ... unless it is beyond the bound of one of them: then that token adds nothing for it
    assert mem.predicted("love 42", per_token=3)["t42"] == pytest.approx(0.1 * 0.71 / 2)
    postings = [k for k, _ in store.scan(b"q2s/love\x00")]
    assert len(postings) == 100  # the old posting of t7 was deleted
    assert [s.entity_id for s in mem.scores("love", T0, k=2)] == ["t7", "t99"]
    # a catalog change reaches the next prediction (a memory may keep parsed postings)
    mem.index_entity(entity("t100", "love", popularity=1.0))  # ties t7; "t100" < "t7"
    assert list(mem.predicted("love", per_token=1)) == ["t100"]
    mem.index_entity(entity("t100", "love", popularity=0.0))
    assert list(mem.predicted("love", per_token=1)) == ["t7"]


def test_reindexing_removes_the_unordered_postings_of_older_workers(store: Store) -> None:
    store.write(
        {
            b"q2p/love\x00old": b"[1.0, 0.5]",
            b"q2d/old": b'{"type": "track", "tokens": ["love"]}',
        }
    )
    mem = Q2EMemory(store)
    mem.index_entity(entity("old", "love", popularity=0.5))
    assert list(store.scan(b"q2p/")) == []
    assert mem.predicted("love") == {"old": pytest.approx(0.1 * 0.75)}


def test_observed_engagement_overrides_predicted_popularity(store: Store) -> None:
    mem = Q2EMemory(store)
    mem.index_entity(entity("popular", "Taylor Swift", "artist", popularity=1.0))
    mem.index_entity(entity("niche", "Taylor Swift Tribute", "playlist", popularity=0.05))
    assert [s.entity_id for s in mem.scores("taylor swift", T0)] == ["popular", "niche"]
    for i in range(3):
        mem.record("taylor swift", ["niche"], [("niche", "click", T0 + i)], T0 + i)
    ranked = mem.scores("taylor swift", T0 + 10)
    assert [(s.entity_id, s.source) for s in ranked] == [
        ("niche", "observed"),
        ("popular", "predicted"),
    ]
    # shown and ignored: the observation replaces the prediction, ranking it lower
    mem.record("taylor swift", ["popular"], [], T0 + 11)
    assert mem.scores("taylor swift", T0 + 12)[1] == ("popular", 0.0, "observed")


def test_reindexing_removes_stale_tokens(store: Store) -> None:
    mem = Q2EMemory(store)
    mem.index_entity(entity("t", "Old Name", popularity=0.5))
    mem.index_entity(entity("t", "New Name", popularity=0.5))
    assert mem.scores("old", T0) == []
    assert [s.entity_id for s in mem.scores("new", T0)] == ["t"]
    with pytest.raises(ValueError, match="popularity"):
        mem.index_entity(entity("bad", "X", popularity=2))
    with pytest.raises(ValueError, match="type"):
        mem.index_entity(entity("bad", "X", "song"))


def test_record_is_one_atomic_batch(store: Store) -> None:
    counting = CountingStore(store)
    mem = Q2EMemory(counting, Q2EConfig(max_entities=2))
    mem.record("q", ["a", "b", "c"], [("a", "click", T0), ("b", "play", T0)], T0)
    assert len(counting.batches) == 1
    assert sum(v is None for v in counting.batches[0].values()) == 1  # c evicted, same batch
    mem.record("q", ["d"], [("d", "purchase", T0)], T0 + 1)
    assert len(counting.batches) == 2
    mem.record("!!!", ["a"], [], T0)  # normalizes to nothing: no write
    mem.record("q", [], [], T0)
    assert len(counting.batches) == 2


def test_rocks_store_keeps_the_memory_on_reopen(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "db")
    mem = Q2EMemory(first)
    mem.index_entity(entity("ar1", "Taylor Swift", "artist", popularity=0.9))
    mem.record("tayler", ["tr9"], [("tr9", "play", T0)], T0)
    before = mem.scores("tayler", T0) + mem.scores("taylor", T0)
    first.close()
    again = RocksStore(tmp_path / "db")
    reopened = Q2EMemory(again)
    assert reopened.scores("tayler", T0) + reopened.scores("taylor", T0) == before
    again.close()


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="half_life_ms"):
        Q2EConfig(half_life_ms=0)
    with pytest.raises(ValueError, match="max_entities"):
        Q2EConfig(max_entities=0)


def _reward_line() -> dict[str, object]:
    imp = SearchImpression.from_dict(impression("imp-fb", chosen=1))
    event = orjson.loads(orjson.dumps(reward_event(imp, 0.5, late=True)))
    event["ltrr"]["shown"] = ["e1", "e2"]
    event["ltrr"]["actions"] = [{"entity_id": "e2", "type": "click", "timestamp_ms": T0}]
    return event


def test_feedback_is_decoded_from_a_reward_line_without_its_features() -> None:
    """The memory's decoder reads what the orjson path read (query, shown, actions, late,
    Timestamp) and refuses what the memory could not fold in."""
    event = _reward_line()
    feedback = decode_feedback(orjson.dumps(event))
    part = event["ltrr"]
    assert isinstance(part, dict)
    assert (feedback.ltrr.query, feedback.ltrr.shown, feedback.ltrr.late) == (
        part["query"],
        ["e1", "e2"],
        True,
    )
    assert feedback.actions() == [("e2", "click", T0)]
    assert feedback.Timestamp == event["Timestamp"]
    for change in (
        {"shown": ["e1", 7]},
        {"actions": [{"entity_id": "e2", "type": "click"}]},
        {"query": None},
        {"late": "no"},
    ):
        broken = _reward_line()
        broken["ltrr"].update(change)  # type: ignore[attr-defined]
        with pytest.raises(msgspec.ValidationError):
            decode_feedback(orjson.dumps(broken))
    with pytest.raises(msgspec.DecodeError):
        decode_feedback(b'{"Timestamp": "x", "ltrr": ')
    huge = _reward_line()
    huge["ltrr"]["actions"][0]["timestamp_ms"] = 123456789  # type: ignore[index]
    raw = orjson.dumps(huge).replace(b":123456789", b":1e400")  # JSON for infinity
    with pytest.raises(msgspec.ValidationError):  # out of range: refused, never int(inf)
        decode_feedback(raw)


def test_a_search_computes_its_memory_scores_once_and_never_serves_them_stale() -> None:
    """The memory strategy's candidates and the ranking boost of one search come from one
    computation; a replicated write (or a second of time) makes the next call compute again."""
    from ltrr.retrieval.strategies.memory import MemoryStrategy

    store = MemoryStore()
    memory = Q2EMemory(store)
    memory.index_entities([entity(f"t{i}", "love song", popularity=i / 10) for i in range(5)])
    clock = {"now": T0}
    strategy = MemoryStrategy(memory, now_ms=lambda: clock["now"])
    computed: list[int] = []
    real = memory.scores

    def counted(query: str, now_ms: int, k: int = 50) -> list[Q2EScore]:
        computed.append(k)
        return real(query, now_ms, k)

    memory.scores = counted  # type: ignore[method-assign]
    candidates = strategy.retrieve("love", {}, 3)
    boost = strategy.scores("love", 200)
    assert len(computed) == 1
    assert [c.entity_id for c in candidates] == ["t4", "t3", "t2"]
    assert list(boost)[:3] == ["t4", "t3", "t2"] and len(boost) == 5

    memory.record("love", ["t0"], [("t0", "purchase", T0)], T0)  # the replica moves on
    assert strategy.retrieve("love", {}, 1)[0].entity_id == "t0"
    assert len(computed) == 2
    clock["now"] += 5_000  # later: computed again even without a write
    strategy.retrieve("love", {}, 1)
    assert len(computed) == 3


def test_an_older_workers_postings_move_to_the_ordered_layout(store: Store) -> None:
    """An upgraded learning worker moves the unordered postings it wrote before, in chunks,
    so entities the catalog topic never delivers again keep their cold-start predictions."""
    store.write(
        {
            b"q2p/love\x00a": b"[1.0, 0.5]",
            b"q2p/song\x00a": b"[1.0, 0.5]",
            b"q2p/love\x00b": b"[0.5, 1.0]",
            b"q2p/love\x00bad": b"not json",
            b"q2d/a": b'{"type": "track", "tokens": ["love", "song"]}',
            b"q2d/b": b'{"type": "artist", "tokens": ["love"]}',
        }
    )
    mem = Q2EMemory(store)
    assert mem.predicted("love") == {}  # the ordered layout is all a query reads
    assert mem.migrate_postings(limit=3) == 3
    assert mem.migrate_postings(limit=3) == 1
    assert mem.migrate_postings(limit=3) == 0
    assert list(store.scan(b"q2p/")) == []
    assert mem.predicted("love") == {"a": pytest.approx(0.075), "b": pytest.approx(0.05)}
    mem.index_entity(entity("a", "song", popularity=0.5))  # re-indexed: "love" goes away
    assert set(mem.predicted("love")) == {"b"}
    assert orjson.loads(store.get(b"q2d/b") or b"{}")["type"] == "artist"


@given(
    st.dictionaries(
        st.text(alphabet="abcde", min_size=1, max_size=4),
        st.sampled_from([0.0, 0.25, 0.5, 1.0, -0.5, 0.1 + 0.2, 0.3]),
        max_size=40,
    ),
    st.integers(min_value=-1, max_value=50),
)
def test_best_first_orders_by_score_then_entity_id_like_a_full_sort(
    scores: dict[str, float], k: int
) -> None:
    """Scores with many ties (predictions share ranks): best first, ties by entity id, the
    first ``k``: exactly what sorting every pair by (-score, id) gives."""
    expected = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[: max(k, 0)]
    assert best_first(scores, k) == expected

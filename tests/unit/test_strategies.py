"""Lexical, popular and fresh retrieval strategies on the small music catalog in
tests/data/catalog.jsonl (fixed "now" = 1795000000000 ms for freshness)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ltrr.retrieval.catalog import ENTITY_TYPES, Catalog, Entity, load_jsonl
from ltrr.retrieval.strategies.base import Strategy
from ltrr.retrieval.strategies.fresh import DAY_MS, FreshStrategy
from ltrr.retrieval.strategies.lexical import LexicalStrategy
from ltrr.retrieval.strategies.popular import PopularStrategy

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog.jsonl"
NOW_MS = 1_795_000_000_000


def _now() -> int:
    return NOW_MS


@pytest.fixture(scope="module")
def entities() -> list[Entity]:
    loaded, rejected = load_jsonl(DATA)
    assert not rejected
    return loaded


@pytest.fixture
def catalog(entities: list[Entity]) -> Catalog:
    cat = Catalog()
    cat.apply(entities)
    return cat


@pytest.fixture(scope="module")
def lexical(entities: list[Entity]) -> LexicalStrategy:
    """Shared read-only index (tests that change the catalog build their own)."""
    cat = Catalog()
    cat.apply(entities)
    return LexicalStrategy(cat)


def ids(candidates: list) -> list[str]:
    return [c.entity_id for c in candidates]


def test_catalog_file_is_realistic(entities: list[Entity]) -> None:
    assert 60 <= len(entities) <= 120
    assert {e.type for e in entities} == set(ENTITY_TYPES) - {"document"}
    assert len({e.id for e in entities}) == len(entities)
    assert sum("love" in e.title.lower() for e in entities) >= 5


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("love story", "track:taylor-swift:love-story"),
        ("Love Story", "track:taylor-swift:love-story"),
        ("bohemian rhapsody", "track:queen:bohemian-rhapsody"),
        ("beyonce", "artist:beyonce"),  # accents folded
        ("rainy day", "playlist:rainy-day-melancholy"),
    ],
)
def test_exact_title_first(lexical: LexicalStrategy, query: str, expected: str) -> None:
    assert ids(lexical.retrieve(query, {}, 10))[0] == expected


def test_artist_query_finds_artist_and_tracks(lexical: LexicalStrategy) -> None:
    top = ids(lexical.retrieve("queen", {}, 10))
    assert top[0] == "artist:queen"
    assert {"track:queen:bohemian-rhapsody", "track:queen:dont-stop-me-now"} <= set(top)


def test_scores_descend(lexical: LexicalStrategy) -> None:
    scores = [c.score for c in lexical.retrieve("love", {}, 20)]
    assert len(scores) >= 5
    assert scores == sorted(scores, reverse=True)


HOSTILE = ['"', "AND OR", "title:(x", "\\", "😀🔥", "x" * 500, "love " * 100, "", "   ",
           "NOT", "-", "+love", "love^2", "[a TO b]", "text:*", "'; DROP TABLE", "\x00\x01",
           "a/b", "(((", "love~2", "IN [a b]", "_", "\uff2c\uff4f\uff56\uff45"]  # fmt: skip


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_raise(lexical: LexicalStrategy, query: str) -> None:
    result = lexical.retrieve(query, {}, 5)
    assert len(result) <= 5


@given(st.text(max_size=200))
def test_any_text_never_raises(lexical: LexicalStrategy, query: str) -> None:
    assert len(lexical.retrieve(query, {}, 3)) <= 3


def test_full_width_query_matches(lexical: LexicalStrategy) -> None:
    full_width = "".join(chr(ord(c) + 0xFEE0) if c != " " else c for c in "Love Story")
    assert ids(lexical.retrieve(full_width, {}, 1)) == ["track:taylor-swift:love-story"]


def test_fallback_query_when_parser_refuses(
    lexical: LexicalStrategy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-built term query ranks like the parsed one."""
    expected = ids(lexical.retrieve("love story", {}, 5))
    monkeypatch.setattr(lexical, "_query", lexical._fallback_query)
    assert ids(lexical.retrieve("love story", {}, 5)) == expected


def test_non_latin_scripts() -> None:
    cat = Catalog()
    cat.apply([_entity("hi", "नमस्ते दुनिया"), _entity("ja", "東京 ナイト"), _entity("x", "Other")])
    strategy = LexicalStrategy(cat)
    assert ids(strategy.retrieve("नमस्ते", {}, 5)) == ["hi"]
    assert ids(strategy.retrieve("ナイト", {}, 5)) == ["ja"]


def _entity(id_: str, title: str, **fields: object) -> Entity:
    return Entity.from_dict({"id": id_, "type": "track", "title": title, **fields})


@pytest.mark.parametrize("on_disk", [False, True])
def test_applied_entity_found_at_once_and_deleted_one_gone(
    catalog: Catalog, tmp_path: Path, on_disk: bool
) -> None:
    strategy = LexicalStrategy(catalog, index_dir=tmp_path / "idx" if on_disk else None)
    assert strategy.retrieve("zanzibar quokka", {}, 5) == []
    catalog.apply([_entity("track:new", "Zanzibar Quokka Dance", popularity=0.1)])
    assert ids(strategy.retrieve("zanzibar quokka", {}, 5)) == ["track:new"]
    catalog.apply([_entity("track:new", "Renamed Entirely")])  # a replacement, not a duplicate
    assert strategy.retrieve("zanzibar", {}, 5) == []
    assert ids(strategy.retrieve("renamed entirely", {}, 5)) == ["track:new"]
    catalog.apply(deletes=["track:new", "track:taylor-swift:love-story"])
    assert strategy.retrieve("renamed", {}, 5) == []
    assert "track:taylor-swift:love-story" not in ids(strategy.retrieve("love story", {}, 50))
    assert len(strategy) == len(catalog)


def test_same_id_upserted_and_deleted_in_one_batch() -> None:
    cat = Catalog()
    strategy = LexicalStrategy(cat)
    strategy.update([_entity("a", "Alpha"), _entity("a", "Alpha Beta")], [])
    assert ids(strategy.retrieve("alpha", {}, 5)) == ["a"]
    assert strategy.retrieve("gamma", {}, 5) == []
    strategy.update([_entity("b", "Alpha")], ["b"])  # catalog order: upserts, then deletes
    assert ids(strategy.retrieve("alpha", {}, 5)) == ["a"]


def test_popularity_prior_reorders_ties() -> None:
    twins = [
        _entity("low", "Same Song", popularity=0.1),
        _entity("high", "Same Song", popularity=0.9),
    ]
    cat = Catalog()
    cat.apply(twins)
    ranked = LexicalStrategy(cat).retrieve("same song", {}, 2)
    assert ids(ranked) == ["high", "low"]
    assert ranked[0].score / ranked[1].score == pytest.approx((1 + 0.5 * 0.9) / (1 + 0.5 * 0.1))
    flat = LexicalStrategy(cat, popularity_weight=0.0).retrieve("same song", {}, 2)
    assert flat[0].score == pytest.approx(flat[1].score)


def test_popular_by_popularity_and_type_filter(catalog: Catalog, entities: list[Entity]) -> None:
    strategy = PopularStrategy(catalog)
    top = strategy.retrieve("ignored query", {}, 5)
    expected = sorted(entities, key=lambda e: (-e.popularity, e.id))[:5]
    assert ids(top) == [e.id for e in expected]
    assert [c.score for c in top] == [e.popularity for e in expected]
    playlists = strategy.retrieve("", {"type": "playlist"}, 100)
    assert {catalog.get(i).type for i in ids(playlists)} == {"playlist"}  # type: ignore[union-attr]
    assert len(playlists) == sum(e.type == "playlist" for e in entities)
    mixed = strategy.retrieve("", {"type": ["podcast", "station"]}, 4)
    assert [c.score for c in mixed] == sorted((c.score for c in mixed), reverse=True)
    assert {catalog.get(i).type for i in ids(mixed)} <= {"podcast", "station"}  # type: ignore[union-attr]
    assert strategy.retrieve("", {"type": "nope"}, 5) == []


def test_popular_is_incremental(catalog: Catalog) -> None:
    strategy = PopularStrategy(catalog)
    catalog.apply([_entity("track:hit", "Overnight Hit", popularity=1.0)])
    assert ids(strategy.retrieve("", {}, 1)) == ["track:hit"]
    catalog.apply([_entity("track:hit", "Overnight Hit", popularity=0.0)])  # moved, not copied
    assert ids(strategy.retrieve("", {}, 1000)).count("track:hit") == 1
    assert ids(strategy.retrieve("", {}, 1000))[-1] == "track:hit"
    catalog.apply(deletes=["track:hit"])
    assert "track:hit" not in ids(strategy.retrieve("", {"type": "track"}, 1000))


def test_fresh_newest_first_within_horizon(catalog: Catalog, entities: list[Entity]) -> None:
    strategy = FreshStrategy(catalog, now_ms=_now, horizon_days=30)
    result = strategy.retrieve("", {}, 100)
    added = [catalog.get(i).added_at_ms for i in ids(result)]  # type: ignore[union-attr]
    assert added == sorted(added, reverse=True)
    within = {e.id for e in entities if NOW_MS - 30 * DAY_MS <= e.added_at_ms <= NOW_MS}
    assert set(ids(result)) == within and len(within) >= 5
    assert "track:the-hollow-pines:echoes-of-autumn" not in ids(result)  # 45 days old
    assert all(0 < c.score <= 1 for c in result)
    assert [c.score for c in result] == sorted((c.score for c in result), reverse=True)


def test_fresh_overlap_boost_and_updates(catalog: Catalog) -> None:
    strategy = FreshStrategy(catalog, now_ms=_now)
    assert ids(strategy.retrieve("folk", {}, 1)) == ["album:the-hollow-pines:paper-lanterns"]
    catalog.apply([_entity("t:future", "Tomorrow", added_at_ms=NOW_MS + DAY_MS),
                   _entity("t:now", "Just Now", added_at_ms=NOW_MS)])  # fmt: skip
    assert ids(strategy.retrieve("", {}, 1)) == ["t:now"]
    assert "t:future" not in ids(strategy.retrieve("", {}, 100))
    catalog.apply(deletes=["t:now"])
    assert "t:now" not in ids(strategy.retrieve("", {}, 100))


@pytest.mark.parametrize("make", [LexicalStrategy, PopularStrategy, FreshStrategy])
def test_k_bounds_and_no_mutation(catalog: Catalog, make: type) -> None:
    strategy: Strategy = make(catalog, now_ms=_now) if make is FreshStrategy else make(catalog)
    context = {"type": ["track", "playlist"], "user": {"id": "u1"}}
    snapshot = copy.deepcopy(context)
    before = list(catalog)
    assert strategy.retrieve("love", context, 0) == []
    assert strategy.retrieve("love", context, -3) == []
    for k in (1, 2, 3, 1000):
        result = strategy.retrieve("love", context, k)
        assert len(result) <= k
        assert len(set(ids(result))) == len(result)
    assert context == snapshot
    assert list(catalog) == before
    assert strategy.name in {"lexical", "popular", "fresh"}


def test_entities_are_unchanged_by_indexing(entities: list[Entity]) -> None:
    copies = [replace(e) for e in entities]
    cat = Catalog()
    cat.apply(entities)
    for strategy in (LexicalStrategy(cat), PopularStrategy(cat), FreshStrategy(cat, now_ms=_now)):
        strategy.retrieve("love story", {}, 10)
    assert entities == copies

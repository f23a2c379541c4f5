"""The retrieval worker's Q2E replica: only Q2E rows reach the store ``/search`` reads; anything
else written to the changelog topic is counted and skipped."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from ltrr.retrieval import metrics as m
from ltrr.retrieval.replica import q2e_handler
from ltrr.state.q2e import Q2EMemory, check_row
from ltrr.state.store import MemoryStore


def record(key: bytes | None, value: bytes | None) -> Any:
    return SimpleNamespace(key=key, value=value)


def real_rows() -> list[tuple[bytes, bytes | None]]:
    """Rows exactly as the learning worker writes them."""
    source = MemoryStore()
    memory = Q2EMemory(source)
    memory.index_entities([{"id": "t1", "type": "track", "title": "love song", "popularity": 0.5}])
    memory.record(
        "love song", ["t1", "t2"], [("t1", "click", 1_700_000_000_000)], 1_700_000_000_000
    )
    return list(source.scan(b""))


def test_the_learning_workers_rows_all_pass() -> None:
    rows = real_rows()
    assert {k[:4] for k, _ in rows} == {b"q2e/", b"q2n/", b"q2s/", b"q2d/"}
    assert [check_row(k, v) for k, v in rows] == [None] * len(rows)


def test_a_keyless_or_foreign_record_never_breaks_search() -> None:
    """One keyless record on the Q2E topic used to make every /search a 500."""
    store = MemoryStore()
    handle = q2e_handler(store)
    before = m.Q2E_REPLICA_REJECTED._value.get()
    junk = [
        record(None, b"{}"),
        record(b"", b"x"),
        record(b"q2e/love song", b"{}"),
        record(b"q2e/love song\x00t9", b"not json"),
        record(b"q2e/love song\x00t9", b'{"t": "x", "i": 1, "a": {}}'),
        record(b"q2p/love\x00t9", b"[1]"),
        record(b"q2d/t9", b'{"type": 1}'),
        record(b"q2s/love\x00t9", b"[1, 1]"),  # no rank
        record(b"q2s/love\x00zzzzzzzzt9", b"[1, 1]"),
        record(b"q2d/t9", b'{"type": "track", "tokens": [], "ranks": {"love": 1}}'),
        record(b"q2n/love song", b"-3"),
        record(b"q2e/love song\x00\xff\xfe", b'{"t": 1, "i": 1, "a": {}}'),
        record(b"zzz/anything", b"1"),
    ]
    handle([*junk, *(record(k, v) for k, v in real_rows())])
    assert m.Q2E_REPLICA_REJECTED._value.get() == before + len(junk)
    scores = Q2EMemory(store).scores("love song", 1_700_000_000_000)
    assert [s.entity_id for s in scores][:1] == ["t1"]


@given(key=st.one_of(st.none(), st.binary(max_size=60)), value=st.one_of(st.none(), st.binary()))
def test_any_record_that_passes_can_be_read(key: bytes | None, value: bytes | None) -> None:
    store = MemoryStore()
    q2e_handler(store)([record(key, value)])
    memory = Q2EMemory(store)
    for query in ("love song", "", "a"):
        memory.scores(query, 1_700_000_000_000)


@given(
    prefix=st.sampled_from([b"q2e/", b"q2p/", b"q2s/", b"q2d/", b"q2n/"]),
    query=st.text(min_size=1, max_size=10),
    value=st.one_of(
        st.none(),
        st.binary(max_size=40),
        st.recursive(
            st.none()
            | st.booleans()
            | st.floats()
            | st.integers(-(2**63), 2**63 - 1)
            | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
            max_leaves=6,
        ).map(orjson.dumps),
    ),
)
def test_rows_with_real_prefixes_and_any_value_never_break_search(
    prefix: bytes, query: str, value: bytes | None
) -> None:
    store = MemoryStore()
    key = prefix + query.encode() + (b"" if prefix in (b"q2d/", b"q2n/") else b"\x00e1")
    q2e_handler(store)([record(key, value)])
    Q2EMemory(store).scores(query, 1_700_000_000_000)


async def test_a_failing_consumer_is_reported_until_it_catches_up_again() -> None:
    """Readiness must not stay green while a replica consumer cannot read its topic."""
    import asyncio

    from ltrr.retrieval.replica import run_consumer

    failing: set[str] = set()
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_consumer("127.0.0.1:1", "ltrr.q2e", lambda records: None, ready, 1 << 20, {}, failing)
    )
    try:
        for _ in range(100):
            if failing:
                break
            await asyncio.sleep(0.1)
        assert failing == {"ltrr.q2e"} and not ready.is_set()
    finally:
        task.cancel()

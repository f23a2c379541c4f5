"""Seen: a bounded, persisted window of recent ids (second copies are dropped)."""

from __future__ import annotations

import pytest

from ltrr.state.seen import Seen
from ltrr.state.store import MemoryStore


def test_a_second_copy_is_recognised_also_after_a_restart() -> None:
    store = MemoryStore()
    seen = Seen(store, capacity=3)
    seen.add(b"a")
    seen.add(b"b")
    assert b"a" in seen and b"c" not in seen
    store.write(seen.take_writes())
    again = Seen(store, capacity=3)  # a restart reads the window back
    assert b"a" in again and b"b" in again and len(again) == 2


def test_the_oldest_ids_are_forgotten_beyond_capacity_and_deleted_from_the_store() -> None:
    store = MemoryStore()
    seen = Seen(store, capacity=2)
    for ident in (b"a", b"b", b"c"):
        seen.add(ident)
    assert b"a" not in seen and b"b" in seen and b"c" in seen
    writes = seen.take_writes()
    assert writes[b"seen/a"] is None  # put then deleted within one batch
    store.write(writes)
    seen.add(b"d")
    store.write(seen.take_writes())
    assert sorted(k for k, _ in store.scan(b"seen/")) == [b"seen/c", b"seen/d"]
    assert b"c" in Seen(store, capacity=2) and b"b" not in Seen(store, capacity=2)


def test_adding_twice_writes_once() -> None:
    seen = Seen(MemoryStore())
    seen.add(b"x")
    seen.take_writes()
    seen.add(b"x")
    assert seen.take_writes() == {}


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Seen(MemoryStore(), capacity=0)

"""The same contract for both state backends."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from ltrr.state.exceptions import StateError
from ltrr.state.staged import StagedStore
from ltrr.state.store import MemoryStore, RocksStore, Store


@pytest.fixture(params=["memory", "rocksdb", "staged"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every ``Store``: both backends, and staged writes over RocksDB (read before commit)."""
    s: Store
    if request.param == "memory":
        s = MemoryStore()
    elif request.param == "rocksdb":
        s = RocksStore(tmp_path / "db")
    else:
        s = StagedStore(RocksStore(tmp_path / "db"))
        s.inner.write({b"d/9": b"committed before"})  # a scan merges inner and staged rows
        s.write({b"d/9": None})
    yield s
    s.close()


def test_batch_puts_and_deletes(store: Store) -> None:
    store.write({b"a/1": b"x", b"a/2": b"y", b"b/1": b"z"})
    store.write({b"a/1": None, b"a/3": b"w"})
    assert store.get(b"a/1") is None
    assert store.get(b"b/1") == b"z"
    assert list(store.scan(b"a/")) == [(b"a/2", b"y"), (b"a/3", b"w")]
    assert list(store.scan(b"c/")) == []


def test_a_bad_batch_changes_nothing(store: Store) -> None:
    store.write({b"kept": b"1"})
    for bad in ({b"x": b"1", "text key": b"2"}, {b"x": b"1", b"y": "text value"}):
        with pytest.raises((TypeError, ValueError, KeyError)):
            store.write(bad)  # type: ignore[arg-type]
    assert store.get(b"x") is None
    assert list(store.scan(b"")) == [(b"kept", b"1")]


def test_binary_keys_in_bytewise_order(store: Store) -> None:
    keys = [b"k\x00", b"k\x00\x00", b"k\x01", b"k\x7f", b"k\x80", b"k\xff", b"k\xff\xff"]
    store.write({key: key[1:] for key in reversed(keys)})
    store.write({b"j\xff": b"before", b"l": b"after", b"\xff\x00": b"last"})
    assert [k for k, _ in store.scan(b"k")] == keys
    assert store.get(b"k\xff") == b"\xff"
    assert [k for k, _ in store.scan(b"k", start=b"k\x7f")] == keys[3:]
    assert [k for k, _ in store.scan(b"k", start=b"a")] == keys  # start before the prefix
    assert list(store.scan(b"\xff")) == [(b"\xff\x00", b"last")]


def test_a_limited_scan_returns_the_first_items_in_key_order(store: Store) -> None:
    store.write({b"s/%02d" % i: b"%d" % i for i in reversed(range(20))})
    assert [k for k, _ in store.scan(b"s/", limit=3)] == [b"s/00", b"s/01", b"s/02"]
    assert [k for k, _ in store.scan(b"s/", start=b"s/18", limit=5)] == [b"s/18", b"s/19"]
    assert list(store.scan(b"s/", limit=0)) == []
    if isinstance(store, StagedStore):  # staged deletes and puts count before the limit
        store.write({b"s/00": None, b"s/01": None, b"s/015": b"new"})
        assert [k for k, _ in store.scan(b"s/", limit=3)] == [b"s/015", b"s/02", b"s/03"]


def test_scan_while_writing_sees_the_store_as_it_began(store: Store) -> None:
    """The join deletes what it expires while scanning its deadlines."""
    store.write({b"d/1": b"a", b"d/2": b"b", b"d/3": b"c"})
    seen = []
    for key, value in store.scan(b"d/"):
        seen.append((key, value))
        store.write({b"d/2": None, b"d/25": b"new", b"d/3": b"changed"})
        store.write({key: None})
    assert seen == [(b"d/1", b"a"), (b"d/2", b"b"), (b"d/3", b"c")]
    assert list(store.scan(b"d/")) == [(b"d/25", b"new")]


def test_rocks_store_survives_reopen(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "db")
    first.write({b"model": b"bytes", b"offset": b"42"})
    first.close()
    again = RocksStore(tmp_path / "db")
    assert (again.get(b"model"), again.get(b"offset")) == (b"bytes", b"42")
    again.close()


def test_second_opener_gets_an_actionable_error(tmp_path: Path) -> None:
    first = RocksStore(tmp_path / "db")
    try:
        with pytest.raises(StateError, match="--data-dir"):
            RocksStore(tmp_path / "db")
    finally:
        first.close()


def test_staged_writes_reach_the_inner_store_with_their_offsets_in_one_write() -> None:
    writes: list[dict[bytes, bytes | None]] = []

    class Recording(MemoryStore):
        def write(self, batch: Mapping[bytes, bytes | None]) -> None:
            writes.append(dict(batch))
            super().write(batch)

    inner = Recording()
    inner.write({b"q/old": b"1", b"offset/0": b"7"})
    writes.clear()
    staged = StagedStore(inner)
    assert staged.offset(0) == 7 and staged.offset(1) is None
    staged.write({b"q/a": b"1"})
    staged.write({b"q/a": b"2", b"q/old": None})
    assert staged.get(b"q/a") == b"2" and staged.get(b"q/old") is None
    assert list(staged.scan(b"q/")) == [(b"q/a", b"2")]
    assert inner.get(b"q/a") is None and writes == []  # nothing stored before the commit
    rows = staged.commit({0: 9, 1: 3})
    assert rows == [(b"q/a", b"2"), (b"q/old", None)]  # the changelog gets no offsets
    assert writes == [{b"q/a": b"2", b"q/old": None, b"offset/0": b"9", b"offset/1": b"3"}]
    assert (staged.offset(0), staged.offset(1), staged.staged) == (9, 3, 0)
    assert staged.commit() == [] and len(writes) == 1  # nothing staged: no write


def test_a_failed_commit_keeps_what_was_staged() -> None:
    class Failing(MemoryStore):
        def write(self, batch: Mapping[bytes, bytes | None]) -> None:
            raise OSError("disk full")

    staged = StagedStore(Failing())
    staged.write({b"k": b"v"})
    with pytest.raises(OSError):
        staged.commit({0: 5})
    assert staged.staged == 1 and staged.get(b"k") == b"v" and staged.offset(0) is None

"""The same contract for both state backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltrr.state.exceptions import StateError
from ltrr.state.store import RocksStore, Store


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

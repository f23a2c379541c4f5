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

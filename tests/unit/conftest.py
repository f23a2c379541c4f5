"""Unit-test fixtures shared across modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ltrr.state.store import MemoryStore, RocksStore, Store


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each state backend in turn: tests using it run on memory and on RocksDB."""
    s: Store = MemoryStore() if request.param == "memory" else RocksStore(tmp_path / "db")
    yield s
    s.close()

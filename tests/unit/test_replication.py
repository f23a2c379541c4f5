"""Unreplicated: committed rows stay marked until their changelog acknowledges them, on a real
RocksDB store, so a refused send or a crash before the send never leaves a replica stale."""

from __future__ import annotations

from pathlib import Path

from ltrr.state.replication import PREFIX, Unreplicated
from ltrr.state.staged import StagedStore
from ltrr.state.store import RocksStore


def commit(store: StagedStore, outbox: Unreplicated, **rows: bytes | None) -> tuple[int, list]:
    """Stage ``rows``, commit them with their marks; the ticket and what would be sent."""
    store.write({k.encode(): v for k, v in rows.items()})
    sent = outbox.outgoing(store.staged_rows())
    ticket, marks = outbox.mark(sent)
    store.commit({0: 1}, local=marks)
    return ticket, sent


def marked(store: StagedStore) -> list[bytes]:
    return [key[len(PREFIX) :] for key, _ in store.scan(PREFIX)]


def test_rows_stay_marked_until_acknowledged_and_a_refused_batch_goes_out_again(
    tmp_path: Path,
) -> None:
    store = StagedStore(RocksStore(tmp_path / "q2e"))
    outbox = Unreplicated(store)
    first, sent = commit(store, outbox, a=b"1", b=b"1")
    assert sent == [(b"a", b"1"), (b"b", b"1")]
    assert marked(store) == [b"a", b"b"] and len(outbox) == 2  # in the same write as the rows
    outbox.failed(first, [b"a", b"b"])  # the producer refused: not handed over

    second, sent = commit(store, outbox, b=b"2", c=b"1")
    # Given back first, with their current values (b once); then the new rows.
    assert sent == [(b"a", b"1"), (b"b", b"2"), (b"c", b"1")]
    outbox.acked(second, [key for key, _ in sent])
    assert len(outbox) == 0
    assert marked(store) == [b"a", b"b", b"c"]  # cleared with the next commit, not before
    commit(store, outbox)
    assert marked(store) == []
    store.close()


def test_an_old_batch_acknowledged_late_does_not_clear_a_newer_unsent_write(
    tmp_path: Path,
) -> None:
    store = StagedStore(RocksStore(tmp_path / "q2e"))
    outbox = Unreplicated(store)
    first, _ = commit(store, outbox, a=b"1")
    second, _ = commit(store, outbox, a=b"2")
    outbox.acked(first, [b"a"])  # the older value arrived; the newer one is still in flight
    assert len(outbox) == 1
    outbox.failed(second, [b"a"])
    _, sent = commit(store, outbox)
    assert sent == [(b"a", b"2")]  # the newest value, not the acknowledged one
    outbox.failed(first, [b"a"])  # a stale failure changes nothing
    assert outbox.take_resend() == []
    store.close()


def test_rows_a_crash_left_unacknowledged_are_sent_after_the_restart_deletes_included(
    tmp_path: Path,
) -> None:
    store = StagedStore(RocksStore(tmp_path / "q2e"))
    outbox = Unreplicated(store)
    commit(store, outbox, a=b"1", gone=b"1")
    commit(store, outbox, gone=None)  # deleted: the replica must delete it too
    store.close()  # the process dies before any acknowledgement

    store = StagedStore(RocksStore(tmp_path / "q2e"))
    again = Unreplicated(store)
    assert len(again) == 2
    ticket, sent = commit(store, again)
    assert sent == [(b"a", b"1"), (b"gone", None)]
    again.acked(ticket, [b"a", b"gone"])
    commit(store, again)
    store.close()
    store = StagedStore(RocksStore(tmp_path / "q2e"))
    assert len(Unreplicated(store)) == 0
    store.close()

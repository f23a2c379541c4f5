"""The learner's ack gate: nothing is released before a checkpoint covers it."""

from __future__ import annotations

import pytest

from ltrr.agents.checkpoint_gate import CheckpointGate


def test_due_after_every_learned_example_not_every_item() -> None:
    gate: CheckpointGate[str] = CheckpointGate(every=2)
    gate.hold("late", learned=False)
    gate.hold("a", learned=True)
    assert not gate.due and gate.held == 2 and gate.learned == 1
    gate.hold("b", learned=True)
    assert gate.due


def test_checkpoint_releases_what_it_covers_in_order_after_saving() -> None:
    gate: CheckpointGate[int] = CheckpointGate(every=10)
    for i in range(3):
        gate.hold(i, learned=True)
    saved: list[int] = []

    def save() -> None:
        saved.append(gate.held)  # the save runs while everything is still held

    assert gate.checkpoint(save) == [0, 1, 2]
    assert saved == [3]
    assert (gate.held, gate.learned, gate.due) == (0, 0, False)
    assert gate.checkpoint(lambda: None) == []


def test_a_failed_save_releases_nothing() -> None:
    gate: CheckpointGate[str] = CheckpointGate(every=1)
    gate.hold("x", learned=True)

    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        gate.checkpoint(fail)
    assert gate.held == 1 and gate.due
    assert gate.checkpoint(lambda: None) == ["x"]


def test_every_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CheckpointGate(every=0)

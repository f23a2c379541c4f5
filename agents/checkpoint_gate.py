"""The learner's ack gate: a reward is acknowledged only once a checkpoint covers it (pure).

The learner reads rewards without acking them. Each one it has handled (learned, skipped or
dead-lettered) is held here; a checkpoint is due every ``every`` learned examples (the
checkpoint timer forces one otherwise). ``checkpoint(save)`` runs ``save`` — the atomic write
of models, offsets and EventIds — and only when it returns hands back what it now covers, for
the caller to ack. A crash before that replays the held rewards; the learner's offset and
EventId dedup skips what the checkpoint had already learned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["CheckpointGate"]

T = TypeVar("T")


class CheckpointGate(Generic[T]):
    """Holds handled-but-unacked items until a checkpoint covers them."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self._held: list[T] = []
        self._learned = 0

    def hold(self, item: T, learned: bool) -> None:
        """``item`` was handled; ``learned`` says whether it changed a model."""
        self._held.append(item)
        self._learned += learned

    @property
    def held(self) -> int:
        """Items handled and not yet covered by a checkpoint."""
        return len(self._held)

    @property
    def learned(self) -> int:
        """Examples learned since the last checkpoint."""
        return self._learned

    @property
    def due(self) -> bool:
        """Whether enough examples were learned for a checkpoint."""
        return self._learned >= self.every

    def checkpoint(self, save: Callable[[], object]) -> list[T]:
        """Run ``save``; if it returns, everything held is covered: return it (oldest first)
        to be acked and start counting again. If ``save`` raises, nothing is released."""
        save()
        released, self._held = self._held, []
        self._learned = 0
        return released

"""Micro-batching of query embeddings: concurrent requests' texts go through the encoder in
one forward pass instead of one each.

Why: encoding one short query with MiniLM costs about as much as encoding a dozen in one batch
(the per-call overhead dominates), so under load batching multiplies the semantic strategy's
throughput. A text waits at most ``max_wait_s`` for companions when the encoder is idle; while
a batch is being encoded, new texts gather and go in the next batch as soon as it finishes.
Encoding runs in a thread of its own, never on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["MicroBatcher"]

Encoder = Callable[[list[str]], np.ndarray]


class MicroBatcher:
    """Batches ``embed`` calls made on one event loop into calls of ``encode`` (texts ->
    one row per text). ``max_batch`` bounds a forward pass; ``max_wait_s`` bounds how long an
    idle encoder waits for a batch to fill."""

    def __init__(self, encode: Encoder, *, max_wait_s: float = 0.002, max_batch: int = 64) -> None:
        if max_wait_s < 0 or max_batch < 1:
            raise ValueError("max_wait_s must be >= 0 and max_batch >= 1")
        self.encode = encode
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        #: Forward passes run and texts encoded (a text asked twice in one batch counts once).
        self.batches = 0
        self.texts = 0
        self._pending: list[tuple[str, asyncio.Future[np.ndarray]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ltrr-encoder")

    async def embed(self, text: str) -> np.ndarray:
        """The vector of ``text``, encoded in a batch with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((text, future))
        if self._running:
            pass  # the batch in progress starts the next one when it finishes
        elif len(self._pending) >= self.max_batch or self.max_wait_s == 0:
            self._start(loop)
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._start, loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running or not self._pending:
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        texts = list(dict.fromkeys(text for text, _ in batch))
        self._running = True
        self.batches += 1
        self.texts += len(texts)
        done = loop.run_in_executor(self._pool, self.encode, texts)
        done.add_done_callback(lambda f: self._finish(loop, batch, texts, f))

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: Sequence[tuple[str, asyncio.Future[np.ndarray]]],
        texts: list[str],
        done: asyncio.Future[Any],
    ) -> None:
        self._running = False
        error = done.exception()
        rows = {} if error is not None else dict(zip(texts, done.result(), strict=True))
        for text, future in batch:
            if future.done():  # the request was cancelled meanwhile
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(rows[text])
        if self._pending:  # they waited through a whole encode already: go at once
            self._start(loop)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

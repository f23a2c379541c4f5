"""Asynchronous impression logging: requests enqueue, a background task produces.

Never blocks a request: the buffer is bounded; when the broker is down and the buffer is
full, the oldest impression is dropped and counted (``ltrr_impressions_logged_total{outcome=
"dropped"}``)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from ltrr.retrieval import metrics as m

log = logging.getLogger(__name__)


class ImpressionLogger:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        capacity: int = 10_000,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        #: Extra AIOKafkaProducer arguments: ``streams.security.aiokafka_kwargs(settings)``.
        self.client_kwargs = dict(client_kwargs or {})
        self.topic = topic
        self.buffer: deque[tuple[bytes, bytes]] = deque()
        self.capacity = capacity
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None

    def log(self, key: bytes, value: bytes) -> None:
        if len(self.buffer) >= self.capacity:
            self.buffer.popleft()
            m.IMPRESSIONS.labels("dropped").inc()
        self.buffer.append((key, value))
        m.IMPRESSION_BUFFER.set(len(self.buffer))
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ltrr-impression-logger")

    async def _producer_ready(self) -> AIOKafkaProducer:
        while self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, linger_ms=5, acks="all", **self.client_kwargs
            )
            try:
                await producer.start()
                self._producer = producer
            except Exception:
                log.warning("impression producer cannot reach %s; retrying", self.bootstrap)
                await producer.stop()
                await asyncio.sleep(1.0)
        return self._producer

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            producer = await self._producer_ready()
            while self.buffer:
                batch = [self.buffer[i] for i in range(min(500, len(self.buffer)))]
                try:
                    futures = [await producer.send(self.topic, value=v, key=k) for k, v in batch]
                    await asyncio.gather(*futures)
                except Exception:
                    # Kept in the buffer and resent: the join ignores a repeated impression.
                    m.IMPRESSIONS.labels("failed").inc(len(batch))
                    log.warning("impression send failed; will retry", exc_info=True)
                    await asyncio.sleep(1.0)
                    continue
                for _ in batch:
                    if self.buffer:
                        self.buffer.popleft()
                m.IMPRESSIONS.labels("sent").inc(len(batch))
                m.IMPRESSION_BUFFER.set(len(self.buffer))

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until the buffer is empty (shutdown and tests)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.buffer and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.flush(5.0)
        if self._task is not None:
            self._task.cancel()
        if self._producer is not None:
            await self._producer.stop()

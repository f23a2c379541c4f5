"""Impression logging on its own thread: requests enqueue, a dedicated producer sends.

Why a thread: an impression that reaches Kafka late turns its clicks into orphans, so the
search path must not be able to starve the logger. The producer (aiokafka, batching with a
small linger) runs on an event loop of its own in the ``ltrr-impressions`` thread; a request
only appends to a bounded in-memory buffer, which costs microseconds and never waits.

Accounting (Prometheus):

- ``ltrr_impressions_buffered``: impressions accepted and not yet acknowledged by the broker
  (waiting in the buffer plus in flight). Under load it stays near one producer round trip of
  traffic; it grows only while the broker is slow or unreachable.
- ``ltrr_impressions_logged_total{outcome}``: ``sent`` (acknowledged), ``failed`` (a send
  that failed and was put back to be retried: the join ignores a repeated impression) and
  ``dropped``. Loss happens in one documented way only: when ``capacity`` impressions are
  buffered (the broker has been unreachable for a while), the oldest waiting one is dropped
  and counted as ``dropped``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from ltrr.retrieval import metrics as m

__all__ = ["ImpressionLogger"]

log = logging.getLogger(__name__)

#: Most impressions handed to the producer before their acknowledgements are awaited.
_BATCH = 2000


class ImpressionLogger:
    """A bounded buffer of ``(key, value)`` impressions drained by a producer thread.

    ``log`` may be called from any thread; ``start``/``flush``/``stop`` are coroutines for the
    serving loop (they do not block it). ``linger_ms`` is the producer's batching delay."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        capacity: int = 10_000,
        client_kwargs: Mapping[str, Any] | None = None,
        linger_ms: int = 5,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.bootstrap = bootstrap
        #: Extra AIOKafkaProducer arguments: ``streams.security.aiokafka_kwargs(settings)``.
        self.client_kwargs = dict(client_kwargs or {})
        self.topic = topic
        self.capacity = capacity
        self.linger_ms = linger_ms
        self.buffer: deque[tuple[bytes, bytes]] = deque()
        #: Impressions handed to the producer and not yet acknowledged.
        self.in_flight = 0
        self.sent = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._idle = True  # the sender waits for work (only then is it woken)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stopping = False

    @property
    def buffered(self) -> int:
        """Accepted and not yet acknowledged by the broker."""
        return len(self.buffer) + self.in_flight

    def log(self, key: bytes, value: bytes) -> None:
        """Enqueue one impression (never blocks on the broker)."""
        with self._lock:
            if self.buffered >= self.capacity:
                if self.buffer:
                    self.buffer.popleft()
                    self.buffer.append((key, value))
                # else: everything buffered is in flight; the new impression is the one lost
                self.dropped += 1
                m.IMPRESSIONS.labels("dropped").inc()
            else:
                self.buffer.append((key, value))
            self._gauge()
            wake = self._idle
            self._idle = False
        if wake and self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _gauge(self) -> None:
        m.IMPRESSIONS_BUFFERED.set(self.buffered)
        m.IMPRESSION_BUFFER.set(self.buffered)

    async def start(self) -> None:
        """Start the producer thread (it connects, and reconnects, by itself)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name="ltrr-impressions", daemon=True)
        self._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, self._started.wait)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._wake = asyncio.Event()
        self._started.set()
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    async def _producer_ready(self) -> AIOKafkaProducer | None:
        while not self._stopping:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                linger_ms=self.linger_ms,
                acks="all",
                max_batch_size=256 * 1024,
                **self.client_kwargs,
            )
            try:
                await producer.start()
                return producer
            except Exception:
                log.warning("impression producer cannot reach %s; retrying", self.bootstrap)
                await producer.stop()
                await asyncio.sleep(1.0)
        return None

    async def _run(self) -> None:
        assert self._wake is not None
        producer = await self._producer_ready()
        if producer is None:
            return
        try:
            while True:
                with self._lock:
                    if not self.buffer:
                        if self._stopping:
                            return
                        self._idle = True
                        self._wake.clear()
                if self._idle:
                    await self._wake.wait()
                    continue
                await self._send_batch(producer)
        finally:
            await producer.stop()

    async def _send_batch(self, producer: AIOKafkaProducer) -> None:
        with self._lock:
            batch = [self.buffer.popleft() for _ in range(min(_BATCH, len(self.buffer)))]
            self.in_flight += len(batch)
        results: list[Any] = []
        try:
            futures = [await producer.send(self.topic, value=v, key=k) for k, v in batch]
            results = await asyncio.gather(*futures, return_exceptions=True)
        except Exception as exc:
            results = [exc] * len(batch)
        failed = [item for item, r in zip(batch, results, strict=False) if isinstance(r, Exception)]
        failed += batch[len(results) :]
        with self._lock:
            self.in_flight -= len(batch)
            ok = len(batch) - len(failed)
            self.sent += ok
            if failed:
                # Put back in front (the join ignores a repeated impression), within capacity.
                room = self.capacity - self.buffered
                keep = failed[-room:] if room > 0 else []
                self.buffer.extendleft(reversed(keep))
                lost = len(failed) - len(keep)
                if lost:
                    self.dropped += lost
                    m.IMPRESSIONS.labels("dropped").inc(lost)
            self._gauge()
        if ok:
            m.IMPRESSIONS.labels("sent").inc(ok)
        if failed:
            m.IMPRESSIONS.labels("failed").inc(len(failed))
            log.warning("%d impression sends failed; will retry", len(failed))
            await asyncio.sleep(1.0)

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every accepted impression is acknowledged (shutdown and tests)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.buffered and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is buffered (up to ``timeout_s``), then stop the producer thread."""
        await self.flush(timeout_s)
        self._stopping = True
        if self._loop is not None and self._wake is not None:
            with self._lock:
                # What could not be sent in time is not waited for: counted as dropped.
                lost = len(self.buffer)
                self.buffer.clear()
                if lost:
                    self.dropped += lost
                    m.IMPRESSIONS.labels("dropped").inc(lost)
                    log.warning("%d impressions not sent before shutdown", lost)
                self._gauge()
            self._loop.call_soon_threadsafe(self._wake.set)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)

"""Background consumers of the retrieval worker: the Q2E changelog replica, the catalog topic
and the snapshots topic. Each reads its topic from the beginning without a consumer group
(every retrieval worker needs all of it) and applies messages off the request path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer

from retrieval import metrics as m
from retrieval.catalog import Catalog
from retrieval.policy import Policy, PolicyError, load_model
from schemas.snapshot import Loaded, Rejected, SnapshotAssembler
from schemas.validation import Rejection
from state.store import Store

log = logging.getLogger(__name__)


async def _consume(
    bootstrap: str,
    topic: str,
    handle: Callable[[Any], None],
    ready: asyncio.Event,
    max_bytes: int,
    client_kwargs: Mapping[str, Any],
) -> None:
    """Apply every message of every partition of ``topic``; set ``ready`` once caught up."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        max_partition_fetch_bytes=max_bytes,
        fetch_max_bytes=max_bytes,
        # A topic created moments before may be unknown to the broker's first metadata
        # answer; refresh often so the subscription is assigned in seconds, not after the
        # default five minutes.
        metadata_max_age_ms=5000,
        **client_kwargs,
    )
    await consumer.start()
    try:
        # Without a group, a subscription is assigned every partition of the topic (and
        # makes the client fetch the topic's metadata, which Apache Kafka only returns for
        # topics asked for by name).
        consumer.subscribe([topic])
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200)
        tps = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                for record in records:
                    handle(record)
            if not ready.is_set():
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    ready.set()
    finally:
        await consumer.stop()


def q2e_handler(store: Store) -> Callable[[Any], None]:
    def handle(record: Any) -> None:
        store.write({record.key: record.value})
        m.Q2E_REPLICA_UPDATES.inc()

    return handle


def catalog_handler(catalog: Catalog) -> Callable[[Any], None]:
    def handle(record: Any) -> None:
        result = catalog.apply_message(record.key, record.value)
        outcome = (
            "rejected"
            if isinstance(result, Rejection)
            else ("deleted" if result is None else "applied")
        )
        m.CATALOG_UPDATES.labels(outcome).inc()

    return handle


class SnapshotLoader:
    """Verifies and hot-swaps models; refuses stale, unsigned or corrupt snapshots."""

    def __init__(self, policy: Policy, keys: dict[str, bytes], model: str) -> None:
        self.policy = policy
        self.assembler = SnapshotAssembler(keys, model)
        self.model = model

    def handle(self, record: Any) -> None:
        result = self.assembler.feed(record.key, record.value)
        if isinstance(result, Rejected):
            m.SNAPSHOTS_REJECTED.labels(result.reason).inc()
            log.warning("snapshot refused (%s): %s", result.reason, result.detail)
        elif isinstance(result, Loaded):
            self._load(result)

    def _load(self, loaded: Loaded) -> None:
        header = loaded.header
        started = time.perf_counter()
        try:
            model = load_model(
                header["version"], header["vw_args"], loaded.model_bytes, header["created_ms"]
            )
        except PolicyError as exc:
            m.SNAPSHOTS_REJECTED.labels("unloadable").inc()
            log.warning("%s", exc)
            return
        current = self.policy.model
        if current is not None and current.version >= model.version:
            m.SNAPSHOTS_REJECTED.labels("stale_version").inc()
            return
        self.policy.swap(model)
        m.MODEL_VERSION.set(model.version)
        m.MODEL_CREATED.set(model.created_ms / 1000)
        m.SNAPSHOT_LOAD.observe(time.perf_counter() - started)
        log.info("serving model %s v%d", self.model, model.version)


async def run_consumer(
    bootstrap: str,
    topic: str,
    handle: Callable[[Any], None],
    ready: asyncio.Event,
    max_bytes: int,
    client_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """``_consume`` that restarts after broker errors instead of dying.

    ``client_kwargs``: extra AIOKafkaConsumer arguments (``streams.security.aiokafka_kwargs``).
    """
    while True:
        try:
            await _consume(bootstrap, topic, handle, ready, max_bytes, client_kwargs or {})
        except asyncio.CancelledError:
            raise
        except Exception:
            m.CONSUMER_ERRORS.labels(topic).inc()
            log.exception("consumer of %s failed; restarting in 2 s", topic)
            await asyncio.sleep(2.0)

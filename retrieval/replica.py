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
from retrieval.catalog import Catalog, Entity
from retrieval.policy import Policy, PolicyError, load_model
from schemas.contracts import Contract
from schemas.snapshot import Loaded, Rejected, SnapshotAssembler
from schemas.validation import Rejection, decode
from state.store import Store

log = logging.getLogger(__name__)


async def _consume(
    bootstrap: str,
    topic: str,
    handle: Callable[[list[Any]], None],
    ready: asyncio.Event,
    max_bytes: int,
    client_kwargs: Mapping[str, Any],
) -> None:
    """Apply every message of every partition of ``topic``, a fetched batch per partition at a
    time (so a catalog replay is one index commit per batch, not per entity); set ``ready``
    once caught up."""
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
                handle(records)
            if not ready.is_set():
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    ready.set()
    finally:
        await consumer.stop()


def q2e_handler(store: Store) -> Callable[[list[Any]], None]:
    def handle(records: list[Any]) -> None:
        store.write({record.key: record.value for record in records})  # the last one wins
        m.Q2E_REPLICA_UPDATES.inc(len(records))

    return handle


def catalog_handler(catalog: Catalog) -> Callable[[list[Any]], None]:
    """Apply a batch of catalog messages as one catalog change (in order: the last message for
    an id wins, a tombstone deletes)."""

    def handle(records: list[Any]) -> None:
        upserts: dict[str, Entity] = {}
        deletes: dict[str, None] = {}
        for record in records:
            if record.value is None:
                if record.key is not None:
                    entity_id = record.key.decode("utf-8", "replace")
                    upserts.pop(entity_id, None)
                    deletes[entity_id] = None
                m.CATALOG_UPDATES.labels("deleted").inc()
                continue
            result = decode(Contract.CATALOG_ENTITY, record.value, key=record.key, key_field="id")
            if isinstance(result, Rejection):
                m.CATALOG_UPDATES.labels("rejected").inc()
                continue
            entity = Entity.from_dict(result)
            deletes.pop(entity.id, None)
            upserts[entity.id] = entity
            m.CATALOG_UPDATES.labels("applied").inc()
        catalog.apply(upserts.values(), deletes)

    return handle


class SnapshotLoader:
    """Verifies and hot-swaps models; refuses stale, unsigned or corrupt snapshots."""

    def __init__(self, policy: Policy, keys: dict[str, bytes], model: str) -> None:
        self.policy = policy
        self.assembler = SnapshotAssembler(keys, model)
        self.model = model

    def handle(self, records: list[Any]) -> None:
        for record in records:
            self._feed(record)

    def _feed(self, record: Any) -> None:
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
    handle: Callable[[list[Any]], None],
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

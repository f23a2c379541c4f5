"""Background consumers of the retrieval worker: the Q2E changelog replica, the catalog topic
and the snapshots topic. Each reads its topic from the beginning without a consumer group
(every retrieval worker needs all of it) and applies messages off the request path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ltrr.retrieval import metrics as m
from ltrr.retrieval.catalog import Catalog, Entity
from ltrr.retrieval.policy import Policy, PolicyError, load_model
from ltrr.schemas.contracts import Contract
from ltrr.schemas.snapshot import Loaded, Rejected, SnapshotAssembler
from ltrr.schemas.validation import Rejection, decode
from ltrr.state.store import Store
from ltrr.streams.follow import Handler, follow

log = logging.getLogger(__name__)


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

    async def handle(self, records: list[Any]) -> None:
        for record in records:
            result = self.assembler.feed(record.key, record.value)
            if isinstance(result, Rejected):
                m.SNAPSHOTS_REJECTED.labels(result.reason).inc()
                log.warning("snapshot refused (%s): %s", result.reason, result.detail)
            elif isinstance(result, Loaded):
                await self._load(result)

    async def _load(self, loaded: Loaded) -> None:
        header = loaded.header
        started = time.perf_counter()
        try:
            # Deserializing a big model takes a while: in a thread, so searches go on being
            # answered (by the current model) meanwhile; the swap itself is on the loop.
            model = await asyncio.to_thread(
                load_model,
                header["version"],
                header["vw_args"],
                loaded.model_bytes,
                header["created_ms"],
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
    handle: Handler,
    ready: asyncio.Event,
    max_bytes: int,
    client_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """``ltrr.streams.follow.follow``, counting its restarts in
    ``ltrr_retrieval_consumer_errors_total``.

    ``client_kwargs``: extra AIOKafkaConsumer arguments (``ltrr.streams.security.aiokafka_kwargs``).
    """
    await follow(
        bootstrap,
        topic,
        handle,
        ready,
        max_bytes,
        client_kwargs,
        on_error=lambda: m.CONSUMER_ERRORS.labels(topic).inc(),
    )

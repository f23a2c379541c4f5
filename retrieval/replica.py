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
from ltrr.retrieval.policy import Policy, PolicyError, Probe, load_model
from ltrr.schemas.contracts import Contract
from ltrr.schemas.snapshot import (
    DEFAULT_MAX_MODEL_BYTES,
    Loaded,
    Rejected,
    SnapshotAssembler,
    Stamp,
    stamp_of,
)
from ltrr.schemas.validation import Rejection, decode
from ltrr.state.q2e import check_row
from ltrr.state.store import Store
from ltrr.streams.follow import Handler, follow
from ltrr.streams.logs import ThrottledLog

log = logging.getLogger(__name__)


def q2e_handler(store: Store) -> Callable[[list[Any]], None]:
    """Apply a batch of Q2E changelog rows (the last one per key wins). A record that is not
    a Q2E row (no key, unknown prefix, undecodable value) is counted as rejected, logged once
    a minute with a count, and skipped: it never reaches the store ``/search`` reads."""
    throttled = ThrottledLog(log, 60.0, logging.WARNING)

    def handle(records: list[Any]) -> None:
        batch: dict[bytes, bytes | None] = {}
        for record in records:
            why = check_row(record.key, record.value)
            if why is not None:
                m.Q2E_REPLICA_REJECTED.inc()
                throttled.report("Q2E replica record skipped", detail=why)
                continue
            batch[record.key] = record.value
        store.write(batch)
        m.Q2E_REPLICA_UPDATES.inc(len(batch))

    return handle


def catalog_handler(catalog: Catalog) -> Callable[[list[Any]], None]:
    """Apply a batch of catalog messages as one catalog change (in order: the last message for
    an id wins, a tombstone deletes)."""

    throttled = ThrottledLog(log, 60.0, logging.WARNING)

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
                throttled.report(
                    "catalog record skipped", detail=f"{result.reason}: {result.detail}"
                )
                continue
            entity = Entity.from_dict(result)
            deletes.pop(entity.id, None)
            upserts[entity.id] = entity
            m.CATALOG_UPDATES.labels("applied").inc()
        catalog.apply(upserts.values(), deletes)

    return handle


class SnapshotLoader:
    """Verifies, checks and hot-swaps models; refuses stale, unsigned, corrupt or unfit
    snapshots. A version counts as served only once its model loaded and passed the checks
    of ``load_model`` (on ``probe``, when given), so a snapshot that fails them does not
    block an older valid one that comes later."""

    def __init__(
        self,
        policy: Policy,
        keys: dict[str, bytes],
        model: str,
        *,
        probe: Probe | None = None,
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    ) -> None:
        self.policy = policy
        self.assembler = SnapshotAssembler(
            keys, model, max_model_bytes=max_model_bytes, commit=False
        )
        self.model = model
        self.probe = probe
        self.serving: Stamp = (0, 0)
        self._log = ThrottledLog(log, 60.0, logging.WARNING)

    async def handle(self, records: list[Any]) -> None:
        for record in records:
            result = self.assembler.feed(record.key, record.value)
            if isinstance(result, Rejected):
                m.SNAPSHOTS_REJECTED.labels(result.reason).inc()
                self._log.report(f"snapshot refused ({result.reason})", detail=result.detail)
            elif isinstance(result, Loaded):
                await self._load(result)

    async def _load(self, loaded: Loaded) -> None:
        header = loaded.header
        stamp = stamp_of(header)
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
                self.probe,
            )
        except PolicyError as exc:
            m.SNAPSHOTS_REJECTED.labels("unloadable").inc()
            self._log.report("snapshot refused (unloadable)", detail=str(exc))
            return
        if stamp <= self.serving:
            m.SNAPSHOTS_REJECTED.labels("stale_version").inc()
            return
        self.policy.swap(model)
        self.serving = stamp
        self.assembler.commit(self.model, stamp)
        m.MODEL_VERSION.set(model.version)
        m.MODEL_CREATED.set(model.created_ms / 1000)
        m.SNAPSHOT_LOAD.observe(time.perf_counter() - started)
        epoch = f" (epoch {stamp[0]})" if stamp[0] else ""
        log.info("serving model %s v%d%s", self.model, model.version, epoch)


async def run_consumer(
    bootstrap: str,
    topic: str,
    handle: Handler,
    ready: asyncio.Event,
    max_bytes: int,
    client_kwargs: Mapping[str, Any] | None = None,
    failing: set[str] | None = None,
) -> None:
    """``ltrr.streams.follow.follow``, counting its restarts in
    ``ltrr_retrieval_consumer_errors_total``; ``topic`` is in ``failing`` from a failure until
    a restart has caught up again (readiness reports it).

    ``client_kwargs``: extra AIOKafkaConsumer arguments (``ltrr.streams.security.aiokafka_kwargs``).
    """
    failing = set() if failing is None else failing

    def on_error() -> None:
        m.CONSUMER_ERRORS.labels(topic).inc()
        failing.add(topic)

    await follow(
        bootstrap,
        topic,
        handle,
        ready,
        max_bytes,
        client_kwargs,
        on_error=on_error,
        on_caught_up=lambda: failing.discard(topic),
    )

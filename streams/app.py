"""The Faust application factory: one place that turns ``Settings`` into a configured app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from ltrr.schemas import codec
from ltrr.streams.security import faust_app_kwargs
from ltrr.streams.settings import Settings

#: How long the producer waits to fill a batch, and the largest batch (bytes, per partition).
PRODUCER_LINGER_S = 0.005
PRODUCER_BATCH_BYTES = 512 * 1024


def create_app(settings: Settings, *, app_id: str | None = None) -> faust.App:
    """A Faust app wired to the broker (with SASL/TLS credentials when the settings ask for
    them), RocksDB state under ``data_dir`` and the web server.

    Topics carry raw bytes: agents decode and validate themselves so that a bad message becomes
    a dead letter instead of a crashed stream.
    """
    codec.register()
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id or settings.app_id,
        broker=settings.broker_url,
        datadir=str(data_dir),
        store="rocksdb://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=settings.max_message_bytes,
        # Batch what the agents send (changelog rows, rewards, dead letters): without a linger
        # every send became a produce request of its own, and the worker spent a quarter of
        # its time in socket writes during a catch-up.
        producer_linger=PRODUCER_LINGER_S,
        producer_max_batch_size=min(PRODUCER_BATCH_BYTES, settings.max_message_bytes),
        consumer_max_fetch_size=settings.max_message_bytes,
        # A restarted worker rejoins within the rebalance timeout; the broker may hold a join
        # open that long waiting for old members, so keep it short enough for quick restarts.
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_tables_enabled=False,
        web_in_thread=False,
        # On SIGTERM do not wait for unacknowledged events: the learner acks only what a
        # checkpoint covers, and after a stop the rest is re-delivered and learned once (the
        # checkpoint holds the model, offsets and seen EventIds together), as after a crash.
        stream_wait_empty=False,
        **faust_app_kwargs(settings),
    )
    if settings.processing_guarantee == "exactly_once":
        read_committed(app)
    return app


class _ReadCommittedThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by start(), which comes later
        return consumer


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)


class _ReadCommittedTransport(faust_aiokafka.Transport):
    Consumer = _ReadCommittedConsumer


def read_committed(app: faust.App) -> None:
    """Make ``app``'s consumer read committed data only (Kafka's ``read_committed``), without
    Faust's own exactly-once mode (which would route every send of ltrr's agents through
    per-partition transactions of its own): the join's transactions are ltrr's
    (``streams/transactions.py``), and the learner and Q2E must never see an aborted copy."""
    app._new_transport = lambda: _ReadCommittedTransport(  # type: ignore[method-assign]
        app.conf.broker_consumer, app
    )

"""The learning loop wired onto Faust: join, reward, learn, snapshot, remember (Q2E).

Agents stay thin: they hand events to the pure state machines (``Joiner``, ``Learners``,
``Q2EMemory``), send what those produce, and count. State lives in RocksDB under the worker's
data directory, one database per concern.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import faust
import msgspec
import orjson
from faust.exceptions import NotReady

from ltrr.agents import metrics as m
from ltrr.agents.adoption import Adopter
from ltrr.agents.checkpoint_gate import CheckpointGate
from ltrr.agents.dead_letters import send_dead_letter
from ltrr.agents.ingest import register_ingest
from ltrr.agents.joiner import EXPIRE_BATCH, JoinConfig, Joiner, Source
from ltrr.agents.learning import Guard, Learners
from ltrr.agents.reward import RewardConfig
from ltrr.agents.snapshots import SnapshotPolicy, SnapshotPublisher
from ltrr.agents.watermarks import Watermarks
from ltrr.schemas.contracts import Contract
from ltrr.schemas.dead_letter import REASON_HEADER
from ltrr.schemas.snapshot import Loaded, Rejected, SnapshotAssembler
from ltrr.schemas.validation import Rejection, decode
from ltrr.state.q2e import Feedback, Q2EConfig, Q2EMemory, decode_feedback, normalize_query
from ltrr.state.replication import Unreplicated
from ltrr.state.seen import Seen
from ltrr.state.staged import StagedStore
from ltrr.state.store import Batch, RocksStore, Store
from ltrr.streams.follow import follow, read_partition
from ltrr.streams.health import Health
from ltrr.streams.logs import ThrottledLog
from ltrr.streams.security import aiokafka_kwargs
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from ltrr.streams.transactions import Fenced, PartitionTransactions, Row

log = logging.getLogger(__name__)
#: Repeated errors of a periodic task are logged once per interval, with a count.
errors = ThrottledLog(log, interval_s=30.0)
#: How often Q2E rows a failed send gave back go out again when no reward comes to carry them.
Q2E_TICK_S = 5.0

#: Seconds between two measurements of the consumer lag (``ltrr_consumer_lag_messages``).
LAG_INTERVAL_S = 5.0
#: Outbox entries sent before their acks are awaited together.
OUTBOX_CHUNK = 500
#: Seconds without a completed join tick (or checkpoint) after which /readyz fails.
STUCK_AFTER_S = 30.0
#: Seconds the learner waits, at start, to have read the snapshots topic to its end (so it can
#: adopt a newer model before learning); it learns anyway after that, and adopts later.
SNAPSHOTS_CATCH_UP_S = 60.0
#: The learner and the Q2E agent take up to this many rewards at a time (one store write,
#: one changelog batch and one checkpoint decision per batch) ...
BATCH_MAX = 1000
#: ... waiting at most this many seconds for a batch to fill.
BATCH_WITHIN_S = 0.1


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class LoopParts:
    """The worker's state machines and their stores."""

    joiner: Joiner
    learners: Learners
    publisher: SnapshotPublisher
    adopter: Adopter
    memory: Q2EMemory
    memory_store: StagedStore
    stores: tuple[Store, ...]

    def close(self) -> None:
        for store in self.stores:
            store.close()


def reward_config(settings: Settings) -> RewardConfig:
    return RewardConfig(
        weights=RewardConfig.parse_weights(settings.reward_weights),
        aggregation=settings.reward_aggregation,
        default_reward=settings.default_reward,
        play_min_seconds=settings.play_min_seconds or None,
        clip_min=settings.reward_clip_min,
        clip_max=settings.reward_clip_max,
    )


def learner_guard(settings: Settings) -> Guard:
    """The learner's cheap invariants, from the same settings the join computes rewards with."""
    return Guard(
        models=settings.model_allow_list(),
        max_models=settings.max_models,
        min_probability=settings.min_probability,
        cost_range=reward_config(settings).reward_range(),
    )


def build_parts(settings: Settings, topics: Topics) -> LoopParts:
    root = Path(settings.data_dir)
    join_store, learner_store = RocksStore(root / "join"), RocksStore(root / "learner")
    memory_store = StagedStore(RocksStore(root / "q2e"))
    joiner = Joiner(
        join_store,
        JoinConfig(
            window_ms=int(settings.reward_window_s * 1000),
            late_horizon_ms=int(settings.late_horizon_s * 1000),
        ),
        reward_config(settings),
    )
    learners = Learners(learner_store, settings.model_vw_args(), guard=learner_guard(settings))
    publisher = SnapshotPublisher(
        learners,
        SnapshotPolicy(
            every_examples=settings.snapshot_every,
            interval_s=settings.snapshot_interval_s,
            key_id=settings.snapshot_key_id,
            key=settings.snapshot_key.encode(),
            max_message_bytes=settings.max_message_bytes,
        ),
        topics.rewards.name,
    )
    memory = Q2EMemory(
        memory_store, Q2EConfig(half_life_ms=int(settings.q2e_half_life_hours * 3_600_000))
    )
    return LoopParts(
        joiner,
        learners,
        publisher,
        Adopter(learners, publisher),
        memory,
        memory_store,
        (join_store, learner_store, memory_store),
    )


async def log_ends(
    consumer: Any, timeout_s: float, topics: set[str] | None = None, *, positions: bool = True
) -> dict[tuple[str, int], tuple[int, int | None]]:
    """(high-water mark, consumer position) of every partition assigned to ``consumer`` (of
    ``topics`` only, when given): the offset the next produced message gets, asked from the
    broker, and the offset of the next message the consumer fetches (None if unknown, or not
    asked: ``positions=False`` saves a round trip through the consumer's thread per
    partition)."""
    assigned = sorted(tp for tp in consumer.assignment() if topics is None or tp.topic in topics)
    if not assigned:
        return {}

    async def measure() -> dict[tuple[str, int], tuple[int, int | None]]:
        highwaters = await consumer.highwaters(*assigned)
        if positions:
            where = await asyncio.gather(*(consumer.position(tp) for tp in assigned))
        else:
            where = [None] * len(assigned)
        out = {}
        for tp, at in zip(assigned, where, strict=True):
            highwater = highwaters.get(tp)
            if highwater is not None:
                out[(tp.topic, tp.partition)] = (
                    int(highwater),
                    None if at is None else int(at),
                )
        return out

    return await asyncio.wait_for(measure(), timeout_s)


async def consumer_lag(consumer: Any, timeout_s: float) -> dict[tuple[str, int], int]:
    """Lag of every partition assigned to ``consumer``: the broker's high-water mark minus
    the consumer position. Partitions without a position yet are left out."""
    ends = await log_ends(consumer, timeout_s)
    return {
        tp: max(0, highwater - position)
        for tp, (highwater, position) in ends.items()
        if position is not None
    }


def publish_lag(
    lags: dict[tuple[str, int], int], shown: set[tuple[str, int]]
) -> set[tuple[str, int]]:
    """Set ``ltrr_consumer_lag_messages`` from ``lags`` and remove the series of partitions
    shown before but no longer assigned (a rebalance moved them). Returns what is shown now."""
    for topic, partition in shown - lags.keys():
        m.CONSUMER_LAG.remove(topic, str(partition))
    for (topic, partition), lag in lags.items():
        m.CONSUMER_LAG.labels(topic, str(partition)).set(lag)
    return set(lags)


class LearningLoop:
    """Every agent and timer of the learning loop, one method each, over one worker's state.

    The methods are registered on a Faust app by ``register_learning_loop``; the state they
    share (join partitions owned, the learner's ack gate, the lag series shown) lives here.
    """

    def __init__(
        self, app: faust.App, topics: Topics, settings: Settings, health: Health | None = None
    ) -> None:
        self.app, self.topics, self.settings = app, topics, settings
        self.health = health or Health()
        self.parts = parts = build_parts(settings, topics)
        self.marks = Watermarks(int(settings.event_delay_s * 1000))
        self.join_streams = {
            topics.impressions.name: "impressions",
            topics.actions.name: "actions",
        }
        self.rewards = app.topic(topics.rewards.name, partitions=topics.rewards.partitions)
        self.dlq = app.topic(topics.dlq.name, partitions=topics.dlq.partitions)
        self.snapshots = app.topic(topics.snapshots.name, partitions=topics.snapshots.partitions)
        self.q2e_changelog = app.topic(topics.q2e.name, partitions=topics.q2e.partitions)
        self.join_changelog = app.topic(
            topics.join_changelog.name, partitions=topics.join_changelog.partitions
        )
        self.catalog = app.topic(topics.catalog.name, partitions=topics.catalog.partitions)
        #: Join partitions this worker owns; each event is set once its state was restored.
        self.owned: dict[int, asyncio.Event] = {}
        self.restoring: set[asyncio.Task[None]] = set()
        self.outbox_lock = asyncio.Lock()
        #: Held while the join's writes are taken and handed to the producer, so a flush that
        #: takes it next knows every row written before is in the producer's buffer.
        self.changes_lock = asyncio.Lock()
        #: exactly_once: the join partitions' transactional producers (None: at_least_once).
        self.transactions = (
            PartitionTransactions(
                settings.broker,
                app.conf.id,
                aiokafka_kwargs(settings),
                max_request_size=settings.max_message_bytes,
            )
            if settings.processing_guarantee == "exactly_once"
            else None
        )
        self.join_ok_at = time.monotonic()
        #: Rewards handled and not acked until a learner checkpoint covers them.
        self.gate: CheckpointGate[Any] = CheckpointGate(settings.checkpoint_every)
        self.checkpoint_lock = asyncio.Lock()
        self.snapshots_read = asyncio.Event()
        self.assembler = SnapshotAssembler(
            settings.verification_keys(), max_model_bytes=settings.max_model_bytes
        )
        self.refusals = ThrottledLog(log, 60.0, logging.WARNING)
        self.lag_shown: set[tuple[str, int]] = set()
        parts.learners.before_learn = self.before_learn
        m.JOIN_STATE.set_function(parts.joiner.open_windows)
        self.health.check("join_restore", self.join_restore_problem)
        self.health.check("join", self.join_problem)
        self.checkpoint_ok_at = time.monotonic()
        self.health.check("learner", self.learner_problem)
        #: Digests of the rewards Q2E folded in lately: a resent copy is not counted twice.
        self.q2e_seen = Seen(parts.memory_store)
        #: Q2E rows committed and not yet acknowledged by their changelog.
        self.q2e_unreplicated = Unreplicated(parts.memory_store)
        self.q2e_lock = asyncio.Lock()
        self.q2e_sends: set[asyncio.Future[None]] = set()
        #: Whether no unordered (pre-2026-12-07) Q2E posting is left to move.
        self.postings_migrated = False
        m.Q2E_UNREPLICATED.set_function(lambda: len(self.q2e_unreplicated))

    # -- producing --------------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        rows: Iterable[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> list[Awaitable[Any]]:
        """Hand ``rows`` (key, value) to the producer, which batches them; returns the futures
        of their acks. Straight to the producer, not through Faust's per-message channel
        machinery (FutureMessage, callbacks, sensors): the same producer Faust flushes before
        it commits the input offsets that caused these rows."""
        producer = await self.app.maybe_start_producer()  # started already, except at boot
        return [
            await producer.send(topic, key, value, partition, None, headers) for key, value in rows
        ]

    async def commit_q2e(
        self, offsets: dict[int, int] | None = None, local: Batch | None = None
    ) -> None:
        """Commit the Q2E rows staged since the last commit (with ``offsets`` and ``local``
        rows, in one write), marked until the changelog acknowledges them, and hand them to
        the producer behind the rows a failed send gave back or a crash left marked
        (``state/replication.py``). The caller holds ``q2e_lock`` from before it staged: a
        commit must not carry another caller's rows without that caller's offsets. A refused
        send is counted and logged, not raised: its rows go out again with the next one."""
        store, outbox = self.parts.memory_store, self.q2e_unreplicated
        rows = outbox.outgoing(store.staged_rows())
        ticket, marks = outbox.mark(rows)
        store.commit(offsets, local={**(local or {}), **marks})
        if not rows:
            return
        keys = [key for key, _ in rows]
        try:
            acks = await self.produce(self.q2e_changelog.get_topic_name(), rows)
        except Exception as exc:  # not started yet at boot, or stopping
            outbox.failed(ticket, keys)
            m.LOOP_ERRORS.labels("q2e_replicate").inc()
            errors.report("Q2E rows not handed to the producer; they go out with the next", exc)
            return
        task = asyncio.ensure_future(self.q2e_acked(ticket, keys, acks))
        self.q2e_sends.add(task)
        task.add_done_callback(self.q2e_sends.discard)

    async def q2e_acked(self, ticket: int, keys: list[bytes], acks: list[Awaitable[Any]]) -> None:
        """Clear a Q2E batch's marks once every row is acknowledged, else send it again."""
        try:
            await asyncio.gather(*acks)
        except Exception as exc:
            self.q2e_unreplicated.failed(ticket, keys)
            m.LOOP_ERRORS.labels("q2e_replicate").inc()
            errors.report("Q2E rows not acknowledged by the changelog; sent again", exc)
        else:
            self.q2e_unreplicated.acked(ticket, keys)

    async def q2e_tick(self) -> None:
        """Timer: resend Q2E rows a failed send gave back, and write the marks cleared since
        the last commit, when no reward or catalog event comes to do it; move a chunk of an
        older worker's unordered postings to the ordered layout (replicated like any row)."""
        async with self.q2e_lock:
            if not self.postings_migrated:
                moved = self.parts.memory.migrate_postings(limit=10_000)
                self.postings_migrated = moved == 0
                if moved:
                    log.info("moved %d Q2E postings to the ordered layout", moved)
            await self.commit_q2e()

    # -- join state follows its partition ---------------------------------------------------

    def take(self, partition: int) -> asyncio.Event:
        """Own ``partition``: restore its state in the background; returns its event."""
        done = self.owned[partition] = asyncio.Event()
        task = asyncio.ensure_future(self.restore(partition, done))
        self.restoring.add(task)
        task.add_done_callback(self.restoring.discard)
        return done

    async def restore(self, partition: int, done: asyncio.Event) -> None:
        """Replay the changelog of ``partition`` into the local store, then let the join
        touch it. Retries until it succeeds or the partition is taken away."""
        joiner, settings = self.parts.joiner, self.settings
        started = time.perf_counter()
        applied = 0

        def apply(records: list[Any]) -> None:
            nonlocal applied
            rows = [(r.key, r.value) for r in records]
            applied += joiner.restore(partition, rows, records[-1].offset + 1)

        while self.owned.get(partition) is done:
            try:
                if self.transactions is not None:  # fence the previous owner first: its
                    await self.transactions.own(partition)  # open transaction is aborted
                end = await read_partition(
                    settings.broker,
                    self.topics.join_changelog.name,
                    partition,
                    joiner.changelog_position(partition),
                    apply,
                    settings.max_message_bytes + 1024 * 1024,
                    aiokafka_kwargs(settings),
                    read_committed=self.transactions is not None,
                )
                joiner.restore(partition, [], end)
                done.set()
                m.JOIN_RESTORES.inc()
                m.JOIN_RESTORE_ROWS.inc(applied)
                log.info(
                    "join partition %d restored: %d changelog rows in %.1f s (offset %d)",
                    partition,
                    applied,
                    time.perf_counter() - started,
                    end,
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                m.LOOP_ERRORS.labels("restore").inc()
                errors.report(f"restoring join partition {partition} failed; retrying", exc)
                await asyncio.sleep(2.0)

    async def on_assigned(self, sender: Any, assigned: Any = (), **kwargs: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.topics.impressions.name}
        for partition in set(self.owned) - mine:  # moved elsewhere: never emit for it again
            self.disown(partition)
            if self.transactions is not None:
                await self.transactions.release(partition)
        for partition in mine - set(self.owned):
            self.take(partition)

    async def on_shutdown(self, sender: Any, **kwargs: Any) -> None:
        """Stop the join partitions' transactional producers (exactly_once)."""
        if self.transactions is not None:
            await self.transactions.close()

    def disown(self, partition: int) -> None:
        self.owned.pop(partition, None)
        self.marks.forget([partition])

    async def ready(self, partition: int, tp: Any) -> None:
        """Wait until ``partition``'s join state is restored, if this worker is assigned it;
        if not, return at once: its events are left to the owner, which reads them from the
        last committed offset (Faust discards commits of revoked partitions). The caller
        checks ownership after its last await (``join_poll``).

        A poll taken before a rebalance may be joined after it: such an event must not make
        this worker take its partition back while another worker owns it (two owners: one's
        open windows are never closed by the other, which would not restore them)."""
        done = self.owned.get(partition)
        if done is None:
            if tp not in self.app.consumer.assignment():
                return
            done = self.take(partition)  # delivered before the assignment signal: own it
        await done.wait()

    def restored_partitions(self) -> list[int]:
        return sorted(p for p, done in self.owned.items() if done.is_set())

    def join_restore_problem(self) -> str | None:
        restoring = [p for p, done in sorted(self.owned.items()) if not done.is_set()]
        if restoring:
            return "restoring join state of partitions " + ", ".join(map(str, restoring))
        return None

    async def send_changes(self) -> None:
        """Hand the join's writes to the changelog (the producer batches them; Faust flushes
        the producer before it commits the input offsets that caused them)."""
        async with self.changes_lock:
            joiner = self.parts.joiner
            changes = joiner.take_changes()
            try:
                for partition in list(changes):
                    await self.produce(
                        self.join_changelog.get_topic_name(), changes[partition], partition
                    )
                    del changes[partition]
            except BaseException:
                # Not handed to the producer (not started yet at boot, or stopping): the rows
                # go first next time. A changelog missing them would restore stale state.
                joiner.return_changes(changes)
                raise

    # -- join -------------------------------------------------------------------------------

    @staticmethod
    def source(message: Any) -> Source:
        return Source(
            message.topic,
            message.partition,
            message.offset,
            None if message.timestamp is None else int(message.timestamp * 1000),
            message.key,
            message.value,
        )

    async def on_impressions(self, events: list[tuple[dict[str, Any], Any]]) -> None:
        """Join a poll of validated impressions: one store write, one changelog batch."""
        await self.join_poll("impressions", events)

    async def on_actions(self, events: list[tuple[dict[str, Any], Any]]) -> None:
        """Join a poll of validated actions: one store write, one changelog batch."""
        await self.join_poll("actions", events)

    async def join_poll(self, stream: str, events: list[tuple[dict[str, Any], Any]]) -> None:
        tps = {message.partition: message.tp for _, message in events}
        for partition in sorted(tps):
            await self.ready(partition, tps[partition])
        # Checked after the last await: a rebalance may have moved a partition meanwhile.
        mine = {p for p in tps if (done := self.owned.get(p)) is not None and done.is_set()}
        if len(mine) < len(tps):
            skipped = sum(1 for _, message in events if message.partition not in mine)
            m.child(m.JOIN_EVENTS, "not_owned").inc(skipped)
            log.info(
                "left %d %s of partitions %s to the worker that owns them now",
                skipped,
                stream,
                sorted(set(tps) - mine),
            )
            events = [(e, message) for e, message in events if message.partition in mine]
        joiner, marks = self.parts.joiner, self.marks
        handle = joiner.on_impression if stream == "impressions" else joiner.on_action
        verdicts: Counter[str] = Counter()
        with joiner.batch():  # no await inside: nothing else touches the join meanwhile
            for event, message in events:
                verdicts[handle(event, self.source(message)).verdict] += 1
                marks.observe(stream, message.partition, message.offset, event["timestamp_ms"])
        await self.send_changes()
        for verdict, n in verdicts.items():
            m.child(m.JOIN_EVENTS, verdict).inc(n)
        if verdicts["late"]:
            m.LATE_ACTIONS.inc(verdicts["late"])

    async def flush_outbox(self) -> None:
        """Send the outbox in chunks: every message of a chunk is handed to the producer
        (which batches them), then the acks are awaited and the chunk forgotten at once."""
        async with self.outbox_lock:
            for partition in self.restored_partitions():
                await self.flush_partition(partition)
            m.OUTBOX_PENDING.set(0)

    async def flush_partition(self, partition: int) -> None:
        joiner = self.parts.joiner
        while chunk := list(joiner.outbox(partition, limit=OUTBOX_CHUNK)):
            if self.owned.get(partition) is None:
                return  # taken away meanwhile: its new owner sends the rest
            if self.transactions is not None:
                if not await self.send_in_transaction(partition, chunk):
                    return
                continue
            futures = []
            for entry in chunk:
                topic = self.rewards if entry.topic == "rewards" else self.dlq
                headers = [(REASON_HEADER, entry.reason.encode())] if entry.topic == "dlq" else []
                futures += await self.produce(
                    topic.get_topic_name(), [(entry.key, entry.value)], headers=headers
                )
            await asyncio.gather(*futures)
            joiner.sent(partition, chunk)
            await self.send_changes()
            for entry in chunk:
                self.count_sent(entry)
            m.OUTBOX_PENDING.set(len(chunk) if len(chunk) == OUTBOX_CHUNK else 0)

    async def send_in_transaction(self, partition: int, chunk: list[Any]) -> bool:
        """exactly_once: send ``chunk`` and the changelog rows that mark it sent in one
        transaction of ``partition``; False if another worker owns the partition now.

        The rows that created the chunk's entries reached the changelog outside the
        transaction; they are acknowledged first (every write before this flush is in the
        producer's buffer once ``changes_lock`` was free), so a deletion can never precede
        its creation in the log."""
        assert self.transactions is not None
        async with self.changes_lock:
            pass
        await (await self.app.maybe_start_producer()).flush()
        changelog = self.join_changelog.get_topic_name()
        rows = [
            Row(
                (self.rewards if entry.topic == "rewards" else self.dlq).get_topic_name(),
                entry.key,
                entry.value,
                headers=[(REASON_HEADER, entry.reason.encode())] if entry.topic == "dlq" else None,
            )
            for entry in chunk
        ]
        rows += [Row(changelog, entry.seq_key, None, partition) for entry in chunk]
        try:
            await self.transactions.send(partition, rows)
        except Fenced as exc:
            log.warning("%s; this worker stops emitting for it", exc)
            m.LOOP_ERRORS.labels("fenced").inc()
            self.disown(partition)
            return False
        self.parts.joiner.sent(partition, chunk, log=False)
        for entry in chunk:
            self.count_sent(entry)
        m.OUTBOX_PENDING.set(len(chunk) if len(chunk) == OUTBOX_CHUNK else 0)
        return True

    def count_sent(self, entry: Any) -> None:
        if entry.kind == "reward":
            if entry.plan is None or entry.reward is None:  # an entry of an older worker
                reward = orjson.loads(entry.value)["ltrr"]
                plan, value = reward["plan_id"], reward["reward"]
            else:
                plan, value = entry.plan, entry.reward
            m.child(m.REWARDS, plan).inc()
            m.child(m.REWARD_SUM, plan).inc(value)
        elif entry.kind == "orphan_action":
            m.ORPHAN_ACTIONS.inc()
            m.DLQ_EVENTS.labels(self.topics.actions.name, "orphan_action").inc()
        elif entry.kind == "join_failed":
            m.DLQ_EVENTS.labels(self.topics.impressions.name, entry.reason).inc()

    async def advance_watermarks(self) -> dict[int, int]:
        """Ask the broker where the join's partitions end (only when that could move a
        watermark: ``Watermarks.needs_log_ends``), and return their watermarks.

        A partition read to its end is complete up to the moment the broker was *asked*, not
        the moment the answer was used: an event produced while the answer was on its way (the
        high-water marks, then the positions, each a round trip through the consumer's thread;
        over a second on a loaded machine, up to the 10 s timeout) is not below the mark the
        answer gave. Stamping the answer with the clock read after it would move the watermark
        on by that delay, and close windows before their actions were read."""
        consumer = self.app.consumer
        asked = now_ms()
        restored = self.restored_partitions()
        if self.marks.needs_log_ends(restored, asked):
            ends = await log_ends(
                consumer, 2 * LAG_INTERVAL_S, set(self.join_streams), positions=False
            )
            committed = getattr(consumer, "_committed_offset", {})  # Faust's, set on assignment
            for (topic, partition), (highwater, _) in ends.items():
                at = committed.get((topic, partition))  # a TP is a (topic, partition) tuple
                self.marks.log_end(self.join_streams[topic], partition, highwater, at, asked)
        watermarks = self.marks.current(self.restored_partitions())
        if watermarks:
            delay = (now_ms() - min(watermarks.values())) / 1000
            m.JOIN_WATERMARK_DELAY.set(max(0.0, delay))
        return watermarks

    async def join_tick(self) -> None:
        """Timer: close the windows the watermarks passed and send the outbox."""
        try:
            if self.app.rebalancing:  # the assignment is changing: nothing closes meanwhile
                return
            watermarks = await self.advance_watermarks()
            while True:
                effects = self.parts.joiner.expire(watermarks, now_ms())
                await self.send_changes()
                for effect in effects:
                    m.child(m.JOIN_EVENTS, effect.verdict).inc()
                await self.flush_outbox()
                if len(effects) < EXPIRE_BATCH:
                    break
            self.join_ok_at = time.monotonic()
        except NotReady as exc:
            # The producer is still starting (the first ticks of a boot) or already stopping:
            # nothing failed, the rows were given back and go out on a later tick. Should it
            # never start, the join stops completing ticks and /readyz says so (join_problem).
            log.debug("join tick waits for the producer: %s", exc)
        except Exception as exc:  # keep the worker alive; the outbox is retried next tick
            m.LOOP_ERRORS.labels("join").inc()
            errors.report("join tick failed; retrying on the next tick", exc)

    def join_problem(self) -> str | None:
        stuck = time.monotonic() - self.join_ok_at
        if stuck > STUCK_AFTER_S:
            return (
                f"the join has not completed a tick for {stuck:.0f} s "
                "(broker unreachable or a failing tick; see ltrr_loop_errors_total)"
            )
        return None

    def learner_problem(self) -> str | None:
        """Rewards wait to be learned for good while checkpoints (or the snapshots they
        publish) keep failing."""
        stuck = time.monotonic() - self.checkpoint_ok_at
        if self.gate.held and stuck > STUCK_AFTER_S:
            return (
                f"the learner has not completed a checkpoint for {stuck:.0f} s with "
                f"{self.gate.held} rewards waiting (a failing checkpoint or snapshot publish; "
                "see ltrr_loop_errors_total)"
            )
        return None

    # -- learn + snapshot -----------------------------------------------------------------

    async def checkpoint(self, force_snapshot: bool = False) -> None:
        """Store what was learned, ack the rewards it covers, publish snapshots due."""
        learners, publisher = self.parts.learners, self.parts.publisher
        async with self.checkpoint_lock:
            covered = self.gate.checkpoint(learners.checkpoint)
            m.CHECKPOINTS.inc()
            for event in covered:
                event.ack()
            for name in learners.models:
                m.LEARNER_LOSS.labels(name).set(learners.average_loss(name))
            for name in publisher.due(force=force_snapshot):
                await self.publish(name)
            self.checkpoint_ok_at = time.monotonic()

    async def publish(self, name: str) -> None:
        started = time.perf_counter()
        version, messages, size = self.parts.publisher.encode(name, now_ms())
        for key, value in messages:
            fut = await self.snapshots.send(key=key, value=value)
            await fut
        m.MODEL_VERSION.labels(name).set(version)
        m.SNAPSHOT_BYTES.labels(name).set(size)
        m.SNAPSHOT_PUBLISH.labels(name).observe(time.perf_counter() - started)
        log.info(
            "published snapshot %s v%d (%d bytes, %d messages)", name, version, size, len(messages)
        )

    # -- follow the snapshots topic: adopt rollbacks, resets and takeovers ----------------

    def on_snapshots(self, records: list[Any]) -> None:
        for record in records:
            result = self.assembler.feed(record.key, record.value)
            if isinstance(result, Loaded):
                verdict = self.parts.adopter.offer(result.header, result.model_bytes)
                m.SNAPSHOTS_FOLLOWED.labels(verdict).inc()
            elif isinstance(result, Rejected):
                verdict = "older" if result.reason == "stale_version" else "refused"
                m.SNAPSHOTS_FOLLOWED.labels(verdict).inc()
                if verdict == "refused":
                    self.refusals.report(
                        f"snapshot refused ({result.reason})", detail=result.detail
                    )

    def before_learn(self, name: str) -> None:
        offer = self.parts.adopter.adopt(name)
        if offer is not None:
            m.SNAPSHOTS_FOLLOWED.labels("adopted").inc()
            m.MODEL_VERSION.labels(name).set(offer.version)

    async def follow_snapshots(self) -> None:
        """Task: read the snapshots topic for as long as the worker runs."""
        settings = self.settings
        await follow(
            settings.broker,
            self.topics.snapshots.name,
            self.on_snapshots,
            self.snapshots_read,
            settings.max_message_bytes + 1024 * 1024,
            aiokafka_kwargs(settings),
            on_error=lambda: m.LOOP_ERRORS.labels("snapshots").inc(),
        )

    def check_log_reset(self, message: Any) -> None:
        """A rewards partition whose log ends below the learner's position was recreated
        (broker data lost, topic deleted): the learner starts over on the new log, learning
        what it has not seen (EventIds already learned are still skipped), instead of
        skipping every new reward as replayed."""
        learners = self.parts.learners
        position = learners.position(message.partition)
        if message.offset >= position:
            return
        highwater = self.app.consumer.highwater(message.tp)
        if highwater is None or highwater >= position:
            return  # a replay after a restart: offsets below the checkpoint are learned
        log.warning(
            "rewards partition %d ends at offset %d, below the learner's position %d: the "
            "topic was recreated; learning the new log from offset %d",
            message.partition,
            highwater,
            position,
            message.offset,
        )
        m.LEARNER_LOG_RESETS.inc()
        learners.reset_position(message.partition, message.offset)

    async def learn(self, stream: Any) -> None:
        """Agent: learn every reward, a poll at a time; ack only what a checkpoint covers."""
        try:
            await asyncio.wait_for(self.snapshots_read.wait(), SNAPSHOTS_CATCH_UP_S)
        except TimeoutError:
            log.warning(
                "snapshots topic not read to its end in %.0f s; learning anyway",
                SNAPSHOTS_CATCH_UP_S,
            )
        async for events in stream.noack().noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
            await self.learn_batch(events)

    async def learn_batch(self, events: Sequence[Any]) -> None:
        learners = self.parts.learners
        for event in events:
            message = event.message
            self.check_log_reset(message)
            verdict = learners.learn(message.value, message.partition, message.offset, message.key)
            m.child(m.LEARNER_EXAMPLES, verdict.model or "-", verdict.kind).inc()
            if verdict.kind == "invalid":
                await send_dead_letter(
                    self.dlq,
                    "rewards",
                    message,
                    Rejection(verdict.reason, verdict.detail, verdict.field),
                    max_message_bytes=self.settings.max_message_bytes,
                )
            self.gate.hold(event, verdict.kind == "learned")
        if self.gate.due:
            await self.checkpoint()

    async def checkpoint_tick(self) -> None:
        """Timer: checkpoint what was learned since the last one, and publish what is due."""
        try:
            if self.gate.held or self.parts.publisher.due():
                await self.checkpoint()
            else:  # nothing waits: the learner is as current as a checkpoint would make it
                self.checkpoint_ok_at = time.monotonic()
        except Exception as exc:  # keep the worker alive; unacked rewards stay unacked
            m.LOOP_ERRORS.labels("checkpoint").inc()
            errors.report("checkpoint failed; retrying on the next tick", exc)

    # -- consumer lag ----------------------------------------------------------------------

    async def lag_tick(self) -> None:
        """Timer: measure the lag of every assigned partition."""
        try:
            if self.app.rebalancing:  # the assignment is changing: measure on the next tick
                return
            lags = await consumer_lag(self.app.consumer, timeout_s=2 * LAG_INTERVAL_S)
            self.lag_shown = publish_lag(lags, self.lag_shown)
        except Exception as exc:  # keep the worker alive; stale values are dropped
            m.LOOP_ERRORS.labels("lag").inc()
            self.lag_shown = publish_lag({}, self.lag_shown)  # unknown is not "the last value"
            errors.report("consumer lag measurement failed; retrying on the next tick", exc)

    # -- remember (Q2E) -------------------------------------------------------------------

    async def remember(self, stream: Any) -> None:
        """Agent: fold rewards into the Q2E memory, a poll at a time."""
        async for events in stream.noack().noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
            await self.remember_batch(events)

    async def remember_batch(self, events: Sequence[Any]) -> None:
        """Fold ``events`` into the memory, commit the rows and the offsets they cover in
        one write, replicate the rows, then ack. Rewards below the stored offset were folded
        in before a restart and are skipped (unless the topic was recreated)."""
        async with self.q2e_lock:
            await self.remember_locked(events)
        for event in events:
            event.ack()

    async def remember_locked(self, events: Sequence[Any]) -> None:
        """``remember_batch`` holding ``q2e_lock``."""
        store, memory = self.parts.memory_store, self.parts.memory
        learners = self.parts.learners
        offsets: dict[int, int] = {}
        records: Counter[str] = Counter()
        for event in events:
            message = event.message
            position = offsets.get(message.partition, store.offset(message.partition))
            if position is not None and message.offset < position:
                highwater = self.app.consumer.highwater(message.tp)
                if highwater is None or highwater >= position:
                    continue  # already folded in before a restart
                log.warning(
                    "rewards partition %d was recreated; Q2E follows the new log",
                    message.partition,
                )
            try:  # only the fields the memory uses; the features are skipped
                feedback = decode_feedback(message.value)
                at, actions = _timestamp_ms(feedback.Timestamp), feedback.actions()
            except (msgspec.MsgspecError, ValueError, OverflowError):
                records["invalid"] += 1
                continue  # the learner dead-letters invalid rewards
            offsets[message.partition] = message.offset + 1
            if learners.problem(message.value, message.key) is not None:  # dead-lettered
                records["invalid"] += 1
                continue
            part = feedback.ltrr
            ident = _q2e_ident(feedback, message.value)
            if ident in self.q2e_seen:  # a copy resent by the join, or the impression re-closed
                records["duplicate"] += 1
                continue
            self.q2e_seen.add(ident)
            # A late reward repeats the impression's shown list for context; its impression
            # was counted when the window closed, so only its late action is new.
            memory.record(part.query, () if part.late else part.shown, actions, at)
            records["late" if part.late else "on_time"] += 1
        # With what they cover, in one write (the lock keeps every other writer out).
        await self.commit_q2e(offsets, local=self.q2e_seen.take_writes())
        for label, n in records.items():
            m.child(m.Q2E_RECORDS, label).inc(n)

    # -- catalog: cold-start Q2E predictions for new entities -------------------------------

    async def index_catalog(self, stream: Any) -> None:
        """Agent: index catalog entities for predicted Q2E scores."""
        settings = self.settings
        async for event in stream.events():
            message = event.message
            if message.value is None:  # a compaction tombstone: the entity was deleted
                m.CATALOG_EVENTS.labels("deleted").inc()
                continue
            result = decode(
                Contract.CATALOG_ENTITY,
                message.value,
                key=message.key,
                key_field="id",
                max_bytes=settings.max_event_bytes,
            )
            if isinstance(result, Rejection):
                m.CATALOG_EVENTS.labels("rejected").inc()
                await send_dead_letter(
                    self.dlq,
                    "catalog",
                    message,
                    result,
                    max_message_bytes=settings.max_message_bytes,
                )
                continue
            async with self.q2e_lock:
                self.parts.memory.index_entity(result)
                await self.commit_q2e()
            m.CATALOG_EVENTS.labels("indexed").inc()

    # -- Q2E view for retrieval workers ---------------------------------------------------

    async def q2e_view(self, web: Any, request: Any) -> Any:
        """``GET /q2e?query=TEXT&k=N``: the memory's top entities for a query."""
        query = request.query.get("query", "")
        try:
            k = int(request.query.get("k", "50"))
        except ValueError:
            k = -1
        if not query.strip() or not 1 <= k <= 1000:
            return web.json({"error": "give ?query=TEXT and optionally k=1..1000"}, status=400)
        scores = self.parts.memory.scores(query, now_ms(), k)
        return web.json(
            {
                "query": query,
                "normalized": normalize_query(query),
                "scores": [
                    {"entity_id": s.entity_id, "score": s.score, "source": s.source} for s in scores
                ],
            }
        )


def register_learning_loop(
    app: faust.App, topics: Topics, settings: Settings, health: Health | None = None
) -> LoopParts:
    """Declare every agent and timer of the learning loop on ``app``; report trouble that
    makes the worker not ready to ``health``."""
    loop = LearningLoop(app, topics, settings, health)
    app.on_partitions_assigned.connect(loop.on_assigned)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(loop.on_shutdown)  # type: ignore[arg-type]
    register_ingest(
        app, topics, settings, on_impressions=loop.on_impressions, on_actions=loop.on_actions
    )
    app.timer(interval=settings.join_tick_s, name="ltrr.join.tick")(loop.join_tick)
    app.task(loop.follow_snapshots)
    app.agent(loop.rewards, name="ltrr.learner")(loop.learn)
    app.timer(interval=settings.checkpoint_interval_s, name="ltrr.learner.checkpoint")(
        loop.checkpoint_tick
    )
    app.timer(interval=LAG_INTERVAL_S, name="ltrr.consumer.lag")(loop.lag_tick)
    app.agent(loop.rewards, name="ltrr.q2e")(loop.remember)
    app.timer(interval=Q2E_TICK_S, name="ltrr.q2e.tick")(loop.q2e_tick)
    app.agent(loop.catalog, name="ltrr.catalog")(loop.index_catalog)

    @app.page("/q2e")
    async def q2e_view(web: Any, request: Any) -> Any:
        return await loop.q2e_view(web, request)

    return loop.parts


def _q2e_ident(feedback: Feedback, raw: bytes) -> bytes:
    """What makes a reward count once in the memory. An impression closes on time once: a
    second on-time reward for it (a window closed again after a restart replayed the join's
    changelog, perhaps with an action fewer) is the same feedback, so the first one counts,
    as for the learner, which drops it by EventId. Late rewards carry one late action each,
    so a copy is recognised by its bytes."""
    if feedback.ltrr.late:
        return hashlib.blake2b(raw, digest_size=16).digest()
    return b"id/" + feedback.EventId.encode()


def _timestamp_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)

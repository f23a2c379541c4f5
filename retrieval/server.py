"""``ltrr serve``: assemble the retrieval worker from settings and run it."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer

from ltrr.retrieval import metrics as m
from ltrr.retrieval.access import Access
from ltrr.retrieval.api import build_app
from ltrr.retrieval.catalog import Catalog, load_jsonl
from ltrr.retrieval.impressions import ImpressionLogger
from ltrr.retrieval.listen import listen, make_runner, tls_context
from ltrr.retrieval.plans import PlanError, PlanSpec, default_plans, parse_plans
from ltrr.retrieval.policy import Policy
from ltrr.retrieval.replica import SnapshotLoader, catalog_handler, q2e_handler, run_consumer
from ltrr.retrieval.search import Searcher
from ltrr.retrieval.strategies.base import Strategy
from ltrr.retrieval.strategies.memory import MemoryStrategy
from ltrr.schemas.exceptions import LtrrError
from ltrr.state.q2e import Q2EMemory
from ltrr.state.store import MemoryStore
from ltrr.streams.exceptions import SettingsError
from ltrr.streams.security import aiokafka_kwargs, describe, kafka_python_kwargs
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics

log = logging.getLogger(__name__)


def build_strategy(
    name: str,
    catalog: Catalog,
    memory: Q2EMemory,
    settings: Settings,
    *,
    threads: int = 2,
    read_only: bool = False,
) -> Strategy:
    """A strategy by built-in name, or ``package.module:Factory(catalog)`` for your own.
    ``threads``: the encoder's intra-op threads; ``read_only``: never write the shared vector
    cache (every worker process but the first)."""
    if name == "lexical":
        from ltrr.retrieval.strategies.lexical import LexicalStrategy

        return LexicalStrategy(catalog)
    if name == "semantic":
        from ltrr.retrieval.strategies.semantic import SemanticStrategy

        return SemanticStrategy(
            catalog,
            cache_dir=Path(settings.vector_cache_dir) / "semantic",
            threads=threads,
            query_cache_size=settings.serve_query_cache_size,
            embed_max_wait_s=settings.serve_embed_max_wait_ms / 1000,
            read_only=read_only,
            encoder=settings.serve_semantic_encoder,
        )
    if name == "memory":
        return MemoryStrategy(memory)
    if name == "popular":
        from ltrr.retrieval.strategies.popular import PopularStrategy

        return PopularStrategy(catalog)
    if name == "fresh":
        from ltrr.retrieval.strategies.fresh import FreshStrategy

        return FreshStrategy(catalog)
    module_name, _, attr = name.partition(":")
    if not attr:
        raise LtrrError(
            f"unknown strategy {name!r}: use lexical, semantic, memory, popular, "
            f"fresh or package.module:Factory"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise LtrrError(f"cannot import strategy factory {name!r}: {exc}") from exc
    strategy: Strategy = factory(catalog)
    return strategy


def build_plans(settings: Settings, names: list[str]) -> list[PlanSpec]:
    try:
        if settings.plans:
            return parse_plans(settings.plans, names)
        return default_plans(
            names, max_size=settings.plan_max_size, total_budget=settings.plan_total_budget
        )
    except PlanError as exc:
        raise LtrrError(str(exc)) from exc


class RetrievalWorker:
    """Everything ``ltrr serve`` runs, built once from ``settings``; ``index`` of ``workers``
    processes (only the first writes the shared vector cache)."""

    def __init__(self, settings: Settings, *, index: int = 0, workers: int = 1) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.catalog = Catalog()
        if settings.catalog_path:
            entities, rejected = load_jsonl(Path(settings.catalog_path))
            for line, rejection in rejected[:20]:
                log.warning(
                    "catalog line %d refused: %s (%s)", line, rejection.reason, rejection.detail
                )
            self.catalog.apply(entities)
        self.q2e_store = MemoryStore()
        memory = Q2EMemory(self.q2e_store)
        names = [n.strip() for n in settings.strategies.split(",") if n.strip()]
        strategies = {}
        for name in names:
            strategy = build_strategy(
                name,
                self.catalog,
                memory,
                settings,
                threads=max(1, cpu_count() // workers),
                read_only=index > 0,
            )
            strategies[strategy.name] = strategy
        plans = build_plans(settings, list(strategies))
        ids = [p.id for p in plans]
        default = ids.index(settings.default_plan) if settings.default_plan in ids else None
        if settings.default_plan and default is None:
            raise LtrrError(f"default_plan {settings.default_plan!r} is not a plan: {ids}")
        self.policy = Policy(epsilon=settings.cold_epsilon, default_plan=default)
        self.searcher = Searcher(
            self.catalog,
            strategies,
            plans,
            self.policy,
            model_name=settings.model_name,
            q2e_boost=settings.q2e_boost,
            history=settings.history_features,
            offload_searches=settings.serve_offload_searches,
        )
        #: SASL/TLS arguments of every aiokafka client (one shared TLS context).
        self.kafka_kwargs = aiokafka_kwargs(settings)
        self.impressions = ImpressionLogger(
            settings.broker,
            self.topics.impressions.name,
            capacity=settings.impression_buffer,
            client_kwargs=self.kafka_kwargs,
            linger_ms=settings.impression_linger_ms,
        )
        self.loader = SnapshotLoader(
            self.policy,
            settings.verification_keys(),
            settings.model_name,
            probe=self.searcher.probe(),
            max_model_bytes=settings.max_model_bytes,
        )
        self.ready_events = {name: asyncio.Event() for name in ("catalog", "q2e", "snapshots")}
        #: Topics whose consumer failed and has not caught up again since.
        self.failing: set[str] = set()
        self._producer: AIOKafkaProducer | None = None
        #: Concurrent first actions must not each start a producer (the loser would leak).
        self._producer_lock = asyncio.Lock()
        m.CATALOG_SIZE.set_function(lambda: len(self.catalog))

    def readiness(self) -> dict[str, bool]:
        """Each replica caught up once, and every background consumer healthy (not failing
        since its last restart)."""
        parts = {name: event.is_set() for name, event in self.ready_events.items()}
        parts["consumers"] = not self.failing
        return parts

    async def send_action(self, key: bytes, value: bytes) -> None:
        if self._producer is None:
            async with self._producer_lock:
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.settings.broker, acks="all", **self.kafka_kwargs
                    )
                    try:
                        await producer.start()
                    except BaseException:
                        await producer.stop()
                        raise
                    self._producer = producer
        await self._producer.send_and_wait(self.topics.actions.name, value=value, key=key)

    async def start_background(self) -> list[asyncio.Task[Any]]:
        await self.impressions.start()
        big = self.settings.max_message_bytes + 1024 * 1024
        specs = [
            (self.topics.catalog.name, catalog_handler(self.catalog), "catalog"),
            (self.topics.q2e.name, q2e_handler(self.q2e_store), "q2e"),
            (self.topics.snapshots.name, self.loader.handle, "snapshots"),
        ]
        return [
            asyncio.create_task(
                run_consumer(
                    self.settings.broker,
                    topic,
                    handle,
                    self.ready_events[name],
                    big,
                    self.kafka_kwargs,
                    self.failing,
                ),
                name=name,
            )
            for topic, handle, name in specs
        ]

    def app(self) -> web.Application:
        return build_app(
            self.searcher,
            self.impressions,
            self.send_action,
            self.readiness,
            access=Access(self.settings.serve_tokens()),
            read_timeout_s=self.settings.serve_read_timeout_s,
            offload=self.settings.serve_offload,
        )

    async def close(self) -> None:
        for strategy in self.searcher.strategies.values():
            flush = getattr(strategy, "flush", None)
            if callable(flush):  # e.g. semantic: save item vectors embedded since the last save
                flush()
        await self.impressions.stop()
        if self._producer is not None:
            await self._producer.stop()


def cpu_count() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_count(settings: Settings) -> int:
    """``serve_workers``, 0 meaning one per available core."""
    return settings.serve_workers or cpu_count()


async def serve(settings: Settings, *, verbose: bool = False) -> None:
    """Run ``ltrr serve``: in this process with one worker, else ``worker_count`` processes
    sharing the port (SO_REUSEPORT). The first worker starts alone, so it is the one that
    refreshes the shared vector cache; the others then load it without writing it.
    ``verbose``: worker processes log what the client libraries say too."""
    from ltrr.streams.admin import create_topics

    problem = settings.serve_exposure_problem()
    if problem is not None:
        raise SettingsError(f"ltrr serve refuses to start: {problem}")
    # Local files fail here, before any wait for the broker.
    tls_context(settings)
    check_catalog_path(settings)
    log.info("broker %s over %s", settings.broker, describe(settings))
    create_topics(
        settings.broker,
        Topics.from_settings(settings).all(),
        replication_factor=settings.replication_factor,
        security=kafka_python_kwargs(settings),
    )
    workers = worker_count(settings)
    if workers == 1:
        await serve_worker(settings)
        return
    await _supervise(settings, workers, verbose)


def check_catalog_path(settings: Settings) -> None:
    """Refuse a ``catalog_path`` that is not a readable file."""
    path = Path(settings.catalog_path).expanduser()
    if settings.catalog_path and not (path.is_file() and os.access(path, os.R_OK)):
        raise SettingsError(
            f"catalog_path {settings.catalog_path!r} does not exist or is not readable; set "
            f"--catalog-path / LTRR_CATALOG_PATH to a JSONL file of catalog entities"
        )


async def _supervise(settings: Settings, workers: int, verbose: bool) -> None:
    context = multiprocessing.get_context("spawn")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: list[Any] = []
    try:
        for index in range(workers):
            started = context.Event()
            child = context.Process(
                target=_worker_main,
                args=(settings, index, workers, started, verbose),
                name=f"ltrr-serve-{index}",
            )
            child.start()
            children.append(child)
            # One at a time: the first refreshes the shared vector cache for the others.
            while not started.is_set() and not stop.is_set() and child.is_alive():
                await asyncio.sleep(0.1)
        log.info("ltrr serve: %d worker processes on port %d", workers, settings.serve_port)
        while not stop.is_set():
            dead = [c for c in children if not c.is_alive()]
            if dead:
                log.error("serve worker %s exited (%s); stopping", dead[0].name, dead[0].exitcode)
                break
            await asyncio.sleep(0.5)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: the worker drains its impressions and stops
        for child in children:
            await asyncio.to_thread(child.join, 30)
            if child.is_alive():
                child.kill()
    if not stop.is_set():
        raise LtrrError("a serve worker process exited unexpectedly; see its log above")


def freeze_heap() -> None:
    """Move everything built so far (catalog, indexes, the model: millions of objects) out of
    the garbage collector's reach. Without it every full collection walks that whole heap, and
    a search that happens to trigger one pays for it: under load it was the largest Python cost
    of a request. Objects made later are collected as usual."""
    gc.collect()
    gc.freeze()


def _worker_main(settings: Settings, index: int, workers: int, started: Any, verbose: bool) -> None:
    from ltrr.streams.logs import setup_logging

    setup_logging(settings.log_level, verbose=verbose, prefix=f"[worker {index}] ")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops workers with SIGTERM
    asyncio.run(serve_worker(settings, index=index, workers=workers, started=started))


async def serve_worker(
    settings: Settings, *, index: int = 0, workers: int = 1, started: Any = None
) -> None:
    """One worker process: build, listen (sharing the port when ``workers`` > 1), serve until
    SIGINT or SIGTERM. ``started`` (an Event) is set once it listens."""
    ssl_context = tls_context(settings)
    worker = RetrievalWorker(settings, index=index, workers=workers)
    tasks = await worker.start_background()
    freeze_heap()
    runner = make_runner(worker.app(), settings.serve_read_timeout_s)
    await runner.setup()
    server = await listen(
        runner,
        settings.serve_host,
        settings.serve_port,
        max_connections=settings.serve_max_connections,
        ssl_context=ssl_context,
        reuse_port=workers > 1,
    )
    if started is not None:
        started.set()
    open_scopes = [s for s, tokens in settings.serve_tokens().items() if not tokens]
    log.info(
        "ltrr serve: %s://%s:%d (%d entities, %d plans; %s)",
        "https" if ssl_context else "http",
        settings.serve_host,
        settings.serve_port,
        len(worker.catalog),
        len(worker.searcher.plans),
        f"open scopes: {', '.join(open_scopes)}" if open_scopes else "every scope needs a token",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    server.close()
    await runner.cleanup()
    await server.wait_closed()
    await worker.close()

"""A real retrieval HTTP API for tests: ``build_app`` over a real Searcher (the test catalog,
lexical/memory/popular/fresh strategies), listening on a loopback port through the same
runner and listener as ``ltrr serve``, on an event loop of its own thread, so both sync
clients (schemathesis, hypothesis) and async ones can call it. Actions are collected in
``sent`` instead of being produced to Kafka (tests/integration covers Kafka)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ltrr.retrieval.access import Access
from ltrr.retrieval.api import build_app
from ltrr.retrieval.catalog import Catalog, load_jsonl
from ltrr.retrieval.impressions import ImpressionLogger
from ltrr.retrieval.listen import listen, make_runner
from ltrr.retrieval.plans import default_plans
from ltrr.retrieval.policy import Policy
from ltrr.retrieval.search import Searcher
from ltrr.retrieval.strategies.fresh import FreshStrategy
from ltrr.retrieval.strategies.lexical import LexicalStrategy
from ltrr.retrieval.strategies.memory import MemoryStrategy
from ltrr.retrieval.strategies.popular import PopularStrategy
from ltrr.state.q2e import Q2EMemory
from ltrr.state.store import MemoryStore

CATALOG = Path(__file__).parent.parent / "data" / "catalog.jsonl"


def make_searcher() -> Searcher:
    catalog = Catalog()
    catalog.apply(load_jsonl(CATALOG)[0])
    strategies = {
        "lexical": LexicalStrategy(catalog),
        "memory": MemoryStrategy(Q2EMemory(MemoryStore())),
        "popular": PopularStrategy(catalog),
        "fresh": FreshStrategy(catalog),
    }
    return Searcher(catalog, strategies, default_plans(list(strategies)), Policy())


@dataclass
class LiveServer:
    url: str
    port: int
    #: (key, value) of every action the API would have produced.
    sent: list[tuple[bytes, bytes]] = field(default_factory=list)


@contextmanager
def live_server(
    searcher: Searcher,
    *,
    access: Access | None = None,
    read_timeout_s: float = 10.0,
    max_connections: int = 64,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[LiveServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="ltrr-test-http", daemon=True)
    thread.start()
    sent: list[tuple[bytes, bytes]] = []

    async def send_action(key: bytes, value: bytes) -> None:
        sent.append((key, value))

    async def start() -> tuple[asyncio.Server, object]:
        impressions = ImpressionLogger("127.0.0.1:1", "test.impressions", capacity=100)
        app = build_app(
            searcher,
            impressions,
            send_action,
            lambda: {"catalog": True},
            access=access,
            read_timeout_s=read_timeout_s,
        )
        runner = make_runner(app, read_timeout_s)
        await runner.setup()
        server = await listen(
            runner, "127.0.0.1", 0, max_connections=max_connections, ssl_context=ssl_context
        )
        return server, runner

    server, runner = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context else "http"
    try:
        yield LiveServer(f"{scheme}://127.0.0.1:{port}", port, sent)
    finally:

        async def stop() -> None:
            server.close()
            await runner.cleanup()  # type: ignore[attr-defined]

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

"""Where and how the HTTP API listens: optional TLS (mutual when a client CA is set), a limit
on open connections, and read timeouts.

Timeouts: a client has ``serve_read_timeout_s`` from connecting (or from its previous
response) to deliver a request's headers, else the connection is closed (aiohttp's keep-alive
timer, which also runs before the first request); the body then has as long again (408, in
``api.py``). Connections past ``serve_max_connections`` get a 503 and are closed at once."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ltrr.retrieval import metrics as m
from ltrr.streams.settings import Settings

__all__ = ["ConnectionLimit", "listen", "make_runner", "tls_context"]

log = logging.getLogger(__name__)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 or later), requiring client certificates signed by
    ``serve_tls_client_cafile`` when that is set; None without ``serve_tls_certfile``."""
    if not settings.serve_tls_certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.serve_tls_certfile, settings.serve_tls_keyfile or None)
    if settings.serve_tls_client_cafile:
        context.load_verify_locations(cafile=settings.serve_tls_client_cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _ClientFaults(logging.Filter):
    """aiohttp logs every request it cannot parse (a malformed request line or header, an
    encoding it cannot decode) as an ERROR with a traceback, so anyone could flood the log:
    those are the client's fault, and are kept only at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or record.levelno < logging.ERROR:
            return True
        if not log.isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.msg = f"client sent a request that cannot be parsed: {exc}"
        record.args = ()
        record.exc_info = None
        return True


#: The logger of aiohttp's HTTP protocol for the API (aiohttp's own ``aiohttp.server`` stays
#: untouched for anything else in the process).
_PROTOCOL_LOG = logging.getLogger("ltrr.retrieval.http")
_PROTOCOL_LOG.addFilter(_ClientFaults())


def make_runner(app: web.Application, read_timeout_s: float) -> web.AppRunner:
    """The app's runner: headers must arrive within ``read_timeout_s`` of connecting or of the
    previous response; a refused request's unread body is not waited for (the connection
    closes instead), so a client cannot hold the server with a body it never finishes.
    Requests aiohttp cannot parse are logged at debug level only (``_ClientFaults``)."""
    return web.AppRunner(
        app,
        access_log=None,
        keepalive_timeout=read_timeout_s,
        lingering_time=0,
        logger=_PROTOCOL_LOG,
    )


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n"
)
_BUSY_BODY = orjson.dumps(
    {
        "error": "too many open connections; retry shortly",
        "reason": "too_many_connections",
        "field": None,
    }
)


class _Counted(asyncio.Protocol):
    """One connection: handed to aiohttp's protocol when under the limit, else answered 503
    and closed. Counted from ``connection_made`` (after a TLS handshake) to
    ``connection_lost``, so handshakes that fail never hold a slot."""

    def __init__(self, limit: ConnectionLimit) -> None:
        self.limit = limit
        self.inner: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.limit.open >= self.limit.limit:
            m.CONNECTIONS_REFUSED.inc()
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_BUSY % len(_BUSY_BODY) + _BUSY_BODY)
            transport.close()
            return
        self.limit.acquired()
        self.inner = self.limit.server()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.inner is None:
            return None
        result: bool | None = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.limit.released()
            self.inner.connection_lost(exc)
            self.inner = None


class ConnectionLimit:
    """A protocol factory around the runner's low-level server (``runner.server``) that keeps
    at most ``limit`` connections open."""

    def __init__(self, server: Any, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.open = 0

    def __call__(self) -> asyncio.Protocol:
        return _Counted(self)

    def acquired(self) -> None:
        self.open += 1
        m.HTTP_CONNECTIONS.set(self.open)

    def released(self) -> None:
        self.open -= 1
        m.HTTP_CONNECTIONS.set(self.open)


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    max_connections: int,
    ssl_context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
) -> asyncio.Server:
    """Start accepting on ``host:port`` for a runner already set up. Stop with ``close()``
    and ``wait_closed()`` on the result, then ``runner.cleanup()``. ``reuse_port``: several
    processes accept on the same port (SO_REUSEPORT; the kernel spreads connections)."""
    if runner.server is None:
        raise RuntimeError("listen() needs a runner that is set up (await runner.setup())")
    factory = ConnectionLimit(runner.server, max_connections)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        factory, host, port, ssl=ssl_context, backlog=1024, reuse_port=reuse_port or None
    )

"""The HTTP API against a real server on a loopback port (tests/unit/http_server.py): inputs
that used to give a 500 get a 4xx ``{error, reason, field}``; integers are integers; POST
needs ``application/json``; a client that leaves is not an error; read timeouts and the
connection limit hold; bearer tokens per scope; mutual TLS."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ltrr.retrieval.access import Access
from ltrr.retrieval.listen import tls_context
from ltrr.retrieval.search import Searcher
from ltrr.streams.settings import Settings
from tests.certs import make_certs
from tests.unit.http_server import LiveServer, live_server, make_searcher

SEARCH_TOKENS = ("search-token-old-0123456789", "search-token-new-0123456789")
ACTIONS_TOKEN = "actions-token-0123456789abcdef"
OPS_TOKEN = "ops-token-0123456789abcdef"
ACTION = {"action_id": "a-1", "impression_id": "i-1", "entity_id": "e-1", "type": "click"}
NOW_MS = 1_760_000_000_000


@pytest.fixture(scope="module")
def searcher() -> Searcher:
    return make_searcher()


@pytest.fixture(scope="module")
def server(searcher: Searcher) -> Iterator[LiveServer]:
    """Open scopes (as on loopback without tokens)."""
    with live_server(searcher, read_timeout_s=1.0) as live:
        yield live


@pytest.fixture(scope="module")
def secured(searcher: Searcher) -> Iterator[LiveServer]:
    access = Access({"search": SEARCH_TOKENS, "actions": (ACTIONS_TOKEN,), "ops": (OPS_TOKEN,)})
    with live_server(searcher, access=access) as live:
        yield live


def call(
    live: LiveServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    raw: bytes | None = None,
) -> tuple[int, dict[str, Any], http.client.HTTPMessage]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    sent = {"Content-Type": "application/json"} if data is not None else {}
    sent.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    try:
        conn.request(method, path, data, sent)
        resp = conn.getresponse()
        text = resp.read()
        parsed = json.loads(text) if resp.headers.get_content_type() == "application/json" else {}
        return resp.status, parsed, resp.headers
    finally:
        conn.close()


def requests_counted(route: str, status: str) -> float:
    labels = {"route": route, "status": status}
    return REGISTRY.get_sample_value("ltrr_search_requests_total", labels) or 0.0


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


# -- inputs that gave a 500 -------------------------------------------------------------------


@pytest.mark.parametrize("k", [5.0, 1e1, 2**64])
def test_k_must_be_an_integer(server: LiveServer, k: Any) -> None:
    status, body, _ = call(server, "POST", "/search", {"query": "love", "k": k})
    assert (status, body["field"]) == (400, "k"), body
    assert set(body) == {"error", "reason", "field"}


@pytest.mark.parametrize("value", ["x", None, [1], 1.5, 24, -1, True, {"h": 1}])
def test_context_hour_is_checked(server: LiveServer, value: Any) -> None:
    status, body, _ = call(server, "POST", "/search", {"query": "love", "context": {"hour": value}})
    assert (status, body["field"]) == (400, "context.hour"), body


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"weekday": "x"}, "context.weekday"),
        ({"weekday": 7}, "context.weekday"),
        ({"weekday": 3.0}, "context.weekday"),
        ({"locale": 5}, "context.locale"),
        ({"device": "d" * 65}, "context.device"),
        ({"user": {"plays": "many"}}, "context.user.plays"),
        ({"user": {"plays": 1e300}}, "context.user.plays"),
        ({"slots": {"artist": {"name": "x"}}}, "context.slots.artist"),
        ({"type": 3}, "context.type"),
    ],
)
def test_every_context_field_the_features_read_is_typed(
    server: LiveServer, context: dict[str, Any], field: str
) -> None:
    status, body, _ = call(server, "POST", "/search", {"query": "love", "context": context})
    assert (status, body["field"]) == (400, field), body


def test_a_well_typed_context_is_served(server: LiveServer) -> None:
    context = {
        "hour": 23,
        "weekday": 0,
        "locale": "en-US",
        "device": "mobile",
        "type": ["track", "artist"],
        "slots": {"artist": "queen", "year": 1975, "live": False, "empty": None},
        "user": {"plays_30d": 12, "ratio": 0.5},
        "custom": {"anything": [1, 2]},
    }
    request = {"query": "queen", "k": 3, "context": context}
    status, body, _ = call(server, "POST", "/search", request)
    assert status == 200, body
    assert len(body["results"]) <= 3


@pytest.mark.parametrize("encoding", ["deflate", "gzip", "br", "x-unknown"])
def test_content_encoded_bodies_are_refused_cleanly(
    server: LiveServer, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp itself answers 400 (text) to an encoding it has no decoder for (br without
    the Brotli package) before the API sees the request; every other one gets our 415."""
    caplog.set_level(logging.INFO)
    plain = b'{"query": "love"}'
    for raw in (plain, zlib.compress(plain)):
        headers = {"Content-Encoding": encoding}
        status, body, _ = call(server, "POST", "/search", headers=headers, raw=raw)
        if status == 400 and encoding == "br":
            continue
        assert (status, body["reason"], body["field"]) == (
            415,
            "unsupported_encoding",
            "Content-Encoding",
        )
    no_errors_logged(caplog)


@pytest.mark.parametrize(
    ("timestamp", "raw"),
    [("5.0", None), ("1.76e12", None), (None, str(2**64)), (None, "1760000000000.0")],
)
def test_actions_timestamp_must_be_an_integer(
    server: LiveServer, timestamp: str | None, raw: str | None
) -> None:
    text = json.dumps({**ACTION, "timestamp_ms": 0}).replace(
        '"timestamp_ms": 0', f'"timestamp_ms": {timestamp or raw}'
    )
    before = len(server.sent)
    status, body, _ = call(server, "POST", "/actions", raw=text.encode())
    assert (status, body["field"]) == (400, "timestamp_ms"), body
    assert len(server.sent) == before


def test_a_float_in_a_batch_names_its_item_and_nothing_is_written(server: LiveServer) -> None:
    good = {**ACTION, "timestamp_ms": NOW_MS}
    batch = [good, {**good, "action_id": "a-2", "timestamp_ms": float(NOW_MS)}]
    before = len(server.sent)
    status, body, _ = call(server, "POST", "/actions", batch)
    assert (status, body["reason"], body["field"]) == (400, "wrong_type", "[1].timestamp_ms")
    status, body, _ = call(server, "POST", "/actions", {**good, "schema_version": 1.0})
    assert (status, body["field"]) == (400, "schema_version")
    assert len(server.sent) == before


def test_an_integer_action_is_written_with_integers(server: LiveServer) -> None:
    status, body, _ = call(server, "POST", "/actions", {**ACTION, "timestamp_ms": NOW_MS})
    assert (status, body["action_id"]) == (202, "a-1")
    written = json.loads(server.sent[-1][1])
    assert type(written["timestamp_ms"]) is int and type(written["schema_version"]) is int


def test_a_client_that_leaves_before_its_body_is_not_an_error(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    errors_before = requests_counted("/actions", "500")
    closed_before = requests_counted("/actions", "499")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /actions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while requests_counted("/actions", "499") == closed_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests_counted("/actions", "499") == closed_before + 1
    assert requests_counted("/actions", "500") == errors_before
    no_errors_logged(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and r.exc_info]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_post_needs_application_json(server: LiveServer, content_type: str) -> None:
    for path in ("/search", "/actions"):
        headers = {"Content-Type": content_type} if content_type else {}
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.putrequest("POST", path)
        for name, value in headers.items():
            conn.putheader(name, value)
        payload = b'{"query": "love"}'
        conn.putheader("Content-Length", str(len(payload)))
        conn.endheaders(payload)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert (resp.status, body["reason"], body["field"]) == (
            415,
            "unsupported_media_type",
            "Content-Type",
        )


def test_json_with_a_charset_parameter_is_accepted(server: LiveServer) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    status, _, _ = call(server, "POST", "/search", {"query": "love"}, headers)
    assert status == 200


# -- timeouts and the connection limit ----------------------------------------------------------


def test_headers_that_never_finish_are_cut_off(server: LiveServer) -> None:
    """read_timeout_s is 1 s here: a connection that sends half a request line is closed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /search HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 8


def test_a_body_that_never_finishes_gets_408(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /search HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50\r\n\r\n{"
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"read_timeout"' in answer


def test_connections_over_the_limit_get_503(searcher: Searcher) -> None:
    with live_server(searcher, max_connections=2) as live:
        held = [socket.create_connection(("127.0.0.1", live.port), timeout=5) for _ in range(2)]
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", live.port), timeout=5) as extra:
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"too_many_connections" in answer
        held.pop().close()
        time.sleep(0.2)
        status, _, _ = call(live, "GET", "/healthz")
        assert status == 200
        for sock in held:
            sock.close()


# -- access control ---------------------------------------------------------------------------


def test_missing_token_gets_401_with_a_bearer_challenge(secured: LiveServer) -> None:
    status, body, headers = call(secured, "POST", "/search", {"query": "love"})
    assert (status, body["reason"], body["field"]) == (401, "missing_token", "Authorization")
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    assert 'scope="search"' in headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token-0123456789abc",
        f"Bearer {ACTIONS_TOKEN}",  # a token of another scope
        f"Basic {SEARCH_TOKENS[0]}",
        f"Bearer {SEARCH_TOKENS[0]}x",
        f"Bearer {SEARCH_TOKENS[0][:-1]}",
        "Bearer",
        "Bearer \u00e9t\u00e9",
    ],
)
def test_wrong_tokens_get_401(secured: LiveServer, authorization: str) -> None:
    headers = {"Authorization": authorization}
    status, body, resp_headers = call(secured, "POST", "/search", {"query": "love"}, headers)
    assert status == 401 and body["reason"] in {"missing_token", "invalid_token"}
    assert "Bearer" in resp_headers["WWW-Authenticate"]


def test_every_rotated_token_is_accepted(secured: LiveServer) -> None:
    for token in SEARCH_TOKENS:
        headers = {"Authorization": f"Bearer {token}"}
        status, _, _ = call(secured, "POST", "/search", {"query": "love"}, headers)
        assert status == 200


def test_actions_and_metrics_have_their_own_scopes(secured: LiveServer) -> None:
    action = {**ACTION, "timestamp_ms": NOW_MS}
    auth = {"Authorization": f"Bearer {SEARCH_TOKENS[0]}"}
    assert call(secured, "POST", "/actions", action, auth)[0] == 401
    auth = {"Authorization": f"Bearer {ACTIONS_TOKEN}"}
    assert call(secured, "POST", "/actions", action, auth)[0] == 202
    assert call(secured, "GET", "/metrics")[0] == 401
    assert call(secured, "GET", "/metrics", headers=auth)[0] == 401
    assert (
        call(secured, "GET", "/metrics", headers={"Authorization": f"Bearer {OPS_TOKEN}"})[0] == 200
    )


def test_probes_and_the_contract_stay_open(secured: LiveServer) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert call(secured, "GET", path)[0] == 200, path


def test_the_token_check_compares_against_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the presented token meets every configured one."""
    import hmac

    compared: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    tokens = ("a" * 20, "b" * 20, "c" * 20)
    access = Access({"search": tokens})
    assert access.check("search", f"Bearer {'a' * 20}") == "ok"
    assert compared == [t.encode() for t in tokens]
    assert access.check("ops", None) == "ok"  # no tokens: open
    assert access.check("search", None) == "missing_token"


# -- mutual TLS -------------------------------------------------------------------------------


def https_status(port: int, context: ssl.SSLContext) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def test_mutual_tls_requires_a_client_certificate(searcher: Searcher, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    settings = Settings(
        serve_tls_certfile=str(certs.server_cert),
        serve_tls_keyfile=str(certs.server_key),
        serve_tls_client_cafile=str(certs.ca),
    )
    settings.validate()
    with live_server(searcher, ssl_context=tls_context(settings)) as live:
        client = ssl.create_default_context(cafile=str(certs.ca))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            https_status(live.port, client)
        client.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        assert https_status(live.port, client) == 200


def test_tls_without_a_client_ca_serves_any_client(searcher: Searcher, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    settings = Settings(
        serve_tls_certfile=str(certs.server_cert), serve_tls_keyfile=str(certs.server_key)
    )
    with live_server(searcher, ssl_context=tls_context(settings)) as live:
        assert https_status(live.port, ssl.create_default_context(cafile=str(certs.ca))) == 200

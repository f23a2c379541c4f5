"""Fuzzing the HTTP API of a real server (tests/unit/http_server.py): schemathesis over every
operation of the published ``/openapi.json`` (no server error, responses as documented), and
hypothesis over the JSON decoding of /search and /actions bodies, in-process and over HTTP."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from ltrr.retrieval.access import Access
from ltrr.retrieval.bodies import OPENAPI, Refusal, decode_actions, decode_search
from tests.unit.http_server import LiveServer, live_server, make_searcher

TOKENS = {
    "search": "fuzz-search-token-0123456789",
    "actions": "fuzz-actions-token-0123456789",
    "ops": "fuzz-ops-token-0123456789",
}
SCOPE_OF_PATH = {"/search": "search", "/actions": "actions", "/metrics": "ops"}
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    ignored_auth,
]
BOUNDED = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    access = Access({scope: (token,) for scope, token in TOKENS.items()})
    with live_server(make_searcher(), access=access) as server:
        yield server


#: The contract the server publishes at /openapi.json (``test_the_server_publishes_it``).
#: Loaded from the package rather than through a fixture: schemathesis' lazy fixture loader
#: does not run on this pytest version.
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_server_publishes_the_fuzzed_contract(live: LiveServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    try:
        conn.request("GET", "/openapi.json")
        assert json.loads(conn.getresponse().read()) == OPENAPI
    finally:
        conn.close()


@schema.parametrize()
@BOUNDED
def test_every_operation_keeps_its_contract(case: Any, live: LiveServer) -> None:
    scope = SCOPE_OF_PATH.get(case.path)
    headers = {"Authorization": f"Bearer {TOKENS[scope]}"} if scope else {}
    case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS)


# -- hypothesis over the body decoders ---------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
CONTEXT_KEYS = st.sampled_from(
    ["hour", "weekday", "locale", "device", "market", "surface", "type", "slots", "user", "x"]
)
SEARCH_LIKE = st.fixed_dictionaries(
    {"query": st.text(min_size=1, max_size=20)},
    optional={
        "k": JSON | st.integers(),
        "context": st.dictionaries(CONTEXT_KEYS, JSON, max_size=5),
        "explain": JSON,
        "explain_plans": st.lists(st.text(max_size=30), max_size=3),
        "user_id": JSON,
    },
)
ACTION_LIKE = st.fixed_dictionaries(
    {
        "action_id": st.text(min_size=1, max_size=10),
        "impression_id": st.text(min_size=1, max_size=10),
        "entity_id": st.text(min_size=1, max_size=10),
        "type": st.sampled_from(["click", "play", "Bad", ""]),
    },
    optional={"timestamp_ms": JSON, "value": JSON, "schema_version": JSON},
)


def dumps(value: Any) -> bytes:
    """JSON text of ``value`` (the standard library writes integers of any size)."""
    return json.dumps(value).encode()


BODIES = st.one_of(
    st.binary(max_size=200),
    JSON.map(dumps),
    SEARCH_LIKE.map(dumps),
    ACTION_LIKE.map(dumps),
    st.lists(ACTION_LIKE, max_size=3).map(dumps),
)


def _integers_are_integers(value: Any, schema_path: str) -> None:
    if schema_path in {"k", "context.hour", "context.weekday", "timestamp_ms", "schema_version"}:
        assert type(value) is int, (schema_path, value)


@given(BODIES)
@settings(max_examples=300, deadline=None)
def test_decoders_return_a_value_or_a_refusal(raw: bytes) -> None:
    search = decode_search(raw)
    if isinstance(search, Refusal):
        assert 400 <= search.status < 500 and search.reason
    else:
        for name in ("k",):
            if name in search:
                _integers_are_integers(search[name], name)
        for name in ("hour", "weekday"):
            if name in search.get("context", {}):
                _integers_are_integers(search["context"][name], f"context.{name}")
    actions = decode_actions(raw)
    if isinstance(actions, Refusal):
        assert 400 <= actions.status < 500 and actions.reason
    else:
        for action, encoded in actions[0]:
            assert orjson.loads(encoded) == action
            _integers_are_integers(action["timestamp_ms"], "timestamp_ms")
            _integers_are_integers(action["schema_version"], "schema_version")


@given(path=st.sampled_from(["/search", "/actions"]), raw=BODIES)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_http_bodies_never_give_a_server_error(live: LiveServer, path: str, raw: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
    try:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {TOKENS[SCOPE_OF_PATH[path]]}",
        }
        conn.request("POST", path, raw, headers)
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status in {200, 202, 400, 413}, (resp.status, body)
    if resp.status >= 400:
        assert set(body) == {"error", "reason", "field"}


def test_the_published_contract_is_the_enforced_one() -> None:
    """The server validates with the very schemas it publishes (one source)."""
    context = OPENAPI["components"]["schemas"]["SearchRequest"]["properties"]["context"]
    assert {"hour", "weekday", "locale", "device", "market", "surface", "slots", "user"} <= set(
        context["properties"]
    )
    assert isinstance(decode_search(b'{"query": "q", "context": {"hour": 24}}'), Refusal)

"""The retrieval worker's HTTP API (aiohttp): /search, /actions, /healthz, /readyz, /metrics,
/openapi.json. Bad requests get a 4xx ``{error, reason, field}`` naming the reason and the
field or header at fault, never a 500; protected routes need a bearer token of their scope
(``access.py``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import hdrs, web
from prometheus_client import REGISTRY, generate_latest

from ltrr.retrieval import metrics as m
from ltrr.retrieval.access import SCOPE_OF_PATH, Access
from ltrr.retrieval.bodies import OPENAPI, Refusal, decode_actions, decode_search
from ltrr.retrieval.impressions import ImpressionLogger
from ltrr.retrieval.plans import PlanError, PlanSpec, parse_plans
from ltrr.retrieval.search import Searcher

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The status counted (never sent) for a client that went away before its request was read.
CLIENT_CLOSED = "499"


class _ClientGone(Exception):
    """The client closed the connection before its request body arrived."""


def error(
    status: int,
    reason: str,
    detail: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.json_response(
        {"error": detail, "reason": reason, "field": field}, status=status, headers=headers
    )


def refused(refusal: Refusal) -> web.Response:
    return error(refusal.status, refusal.reason, refusal.detail, refusal.field)


def _admit(request: web.Request, access: Access) -> web.Response | None:
    """Refuse a request before its body is read: a missing or wrong bearer token (401), a
    POST that is not ``application/json`` (415: a web page cannot send that cross-site without
    a CORS preflight, which this API never grants) or that is content-encoded (415). Unknown
    routes and methods are left to the router (404, 405)."""
    if request.match_info.http_exception is not None:
        return None
    scope = SCOPE_OF_PATH.get(request.path)
    if scope is not None:
        verdict = access.check(scope, request.headers.get(hdrs.AUTHORIZATION))
        if verdict != "ok":
            challenge = f'Bearer realm="ltrr", scope="{scope}"'
            if verdict == "invalid_token":
                challenge += ', error="invalid_token"'
            detail = (
                f"{request.path} needs a bearer token of scope {scope}: send "
                f"'Authorization: Bearer <token>'"
                if verdict == "missing_token"
                else f"the bearer token is not one of scope {scope}"
            )
            return error(401, verdict, detail, "Authorization", {hdrs.WWW_AUTHENTICATE: challenge})
    if request.method != "POST":
        return None
    if request.content_type != "application/json":
        return error(
            415,
            "unsupported_media_type",
            f"send the body as Content-Type: application/json, not {request.content_type!r}",
            "Content-Type",
        )
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding != "identity":
        return error(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding!r} is not accepted; send the body uncompressed",
            "Content-Encoding",
        )
    return None


async def _read(request: web.Request, timeout_s: float) -> bytes | web.Response:
    """The request body within ``timeout_s`` (408 past it, 413 over ``MAX_BODY_BYTES``, 400
    for a body the HTTP layer could not decode); ``_ClientGone`` if the client left."""
    try:
        async with asyncio.timeout(timeout_s):
            return await request.read()
    except TimeoutError:
        return error(408, "read_timeout", f"the body did not arrive within {timeout_s:g} s")
    except web.RequestPayloadError as exc:
        return error(400, "bad_body", f"the body could not be read: {exc}")
    except ConnectionResetError as exc:  # aiohttp's ClientConnectionResetError included
        raise _ClientGone from exc


def _guard(access: Access, read_timeout_s: float) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Admit or refuse, count every request, turn oversized bodies into 413, a client
        that left into a debug line, and surprises into logged 500s."""
        route = request.path if request.path in ROUTES else "other"
        try:
            response = _admit(request, access) or await handler(request)
        except web.HTTPRequestEntityTooLarge:
            response = error(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
        except web.HTTPException as exc:
            response = error(exc.status, "http", exc.reason)
        except _ClientGone:
            log.debug("client closed the connection before sending %s's body", request.path)
            m.REQUESTS.labels(route, CLIENT_CLOSED).inc()
            return web.Response(status=int(CLIENT_CLOSED))  # nobody is left to read it
        except Exception:
            log.exception("unexpected error on %s", request.path)
            response = error(500, "internal", "unexpected server error; see the worker log")
        m.REQUESTS.labels(route, str(response.status)).inc()
        return response

    return guard


def build_app(
    searcher: Searcher,
    impressions: ImpressionLogger,
    send_action: Callable[[bytes, bytes], Awaitable[None]],
    ready: Callable[[], dict[str, bool]],
    *,
    access: Access | None = None,
    read_timeout_s: float = 30.0,
    offload: bool = True,
) -> web.Application:
    """The API over ``searcher``. ``access`` holds each scope's bearer tokens (None: every
    scope open); ``read_timeout_s`` bounds how long a request body may take to arrive;
    ``offload`` runs a search's strategies concurrently with their CPU work off the event
    loop (``Searcher.search_async``), else one after the other on it (``Searcher.search``)."""
    guard = _guard(access or Access({}), read_timeout_s)
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES)

    async def search(request: web.Request) -> web.Response:
        started = time.perf_counter()
        raw = await _read(request, read_timeout_s)
        if isinstance(raw, web.Response):
            return raw
        body = decode_search(raw)
        if isinstance(body, Refusal):
            return refused(body)
        extra: list[PlanSpec] = []
        if body.get("explain_plans"):
            try:
                extra = parse_plans(";".join(body["explain_plans"]), list(searcher.strategies))
            except PlanError as exc:
                return error(400, "invalid_plan", str(exc), "explain_plans")
        args = (body["query"], body.get("context") or {}, body.get("k", 10))
        options: dict[str, Any] = {
            "request_id": body.get("request_id"),
            "user_id": body.get("user_id"),
            "explain": bool(body.get("explain")),
            "explain_plans": extra,
        }
        if offload:
            result = await searcher.search_async(*args, **options)
        else:
            result = searcher.search(*args, **options)
        impressions.log(result.impression_id.encode(), orjson.dumps(result.impression))
        results = []
        for r in result.results:
            entity = searcher.catalog.get(r.entity_id)
            item: dict[str, Any] = {
                "entity_id": r.entity_id,
                "score": r.score,
                "strategies": list(r.strategies),
            }
            if entity is not None:
                item.update(title=entity.title, type=entity.type)
            results.append(item)
        m.SEARCH_LATENCY.observe(time.perf_counter() - started)
        response: dict[str, Any] = {
            "impression_id": result.impression_id,
            "results": results,
            "plan": {
                "id": result.plan.id,
                "budgets": dict(result.plan.budgets),
                "probability": result.probability,
            },
            "model_version": result.model_version,
        }
        if result.explain is not None:
            response["explain"] = result.explain
        return web.json_response(response, dumps=lambda obj: orjson.dumps(obj).decode())

    async def actions(request: web.Request) -> web.Response:
        """One UserAction, or a JSON array of up to ``MAX_BATCH`` (all-or-nothing: every item
        is validated before any is written)."""
        raw = await _read(request, read_timeout_s)
        if isinstance(raw, web.Response):
            return raw
        outcome = decode_actions(raw)
        if isinstance(outcome, Refusal):
            m.ACTIONS.labels("rejected").inc()
            return refused(outcome)
        decoded, batch = outcome
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    *(send_action(r["impression_id"].encode(), data) for r, data in decoded)
                ),
                10,
            )
        except Exception as exc:
            m.ACTIONS.labels("failed").inc(len(decoded))
            return error(503, "broker_unavailable", f"could not write the action: {exc}")
        m.ACTIONS.labels("accepted").inc(len(decoded))
        if batch:
            ids = [r["action_id"] for r, _ in decoded]
            return web.json_response({"accepted": True, "action_ids": ids}, status=202)
        return web.json_response(
            {"accepted": True, "action_id": decoded[0][0]["action_id"]}, status=202
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        parts = ready()
        return web.json_response(
            {"ready": all(parts.values()), **parts}, status=200 if all(parts.values()) else 503
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    app.router.add_post("/search", search)
    app.router.add_post("/actions", actions)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    return app


ROUTES = {"/search", "/actions", "/healthz", "/readyz", "/metrics", "/openapi.json"}

"""The retrieval worker's HTTP API (aiohttp): /search, /actions, /healthz, /readyz, /metrics,
/openapi.json. Bad requests get a 4xx naming the reason and field, never a 500."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import fastjsonschema
import orjson
from aiohttp import web
from prometheus_client import REGISTRY, generate_latest

from ltrr.retrieval import metrics as m
from ltrr.retrieval.impressions import ImpressionLogger
from ltrr.retrieval.plans import PlanError, PlanSpec, parse_plans
from ltrr.retrieval.search import Searcher
from ltrr.schemas.contracts import Contract
from ltrr.schemas.validation import Rejection, decode

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024
#: Most actions one POST /actions may carry.
MAX_BATCH = 100
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPENAPI: dict[str, Any] = json.loads(
    resources.files(__package__).joinpath("openapi.json").read_text("utf-8")
)
_validate_search = fastjsonschema.compile(
    {
        **OPENAPI["components"]["schemas"]["SearchRequest"],
        "$schema": "http://json-schema.org/draft-07/schema#",
    }
)


def error(status: int, reason: str, detail: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": detail, "reason": reason, "field": field}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request; turn oversized bodies into 413 and surprises into logged 500s."""
    route = request.path if request.path in ROUTES else "other"
    try:
        response = await handler(request)
    except web.HTTPRequestEntityTooLarge:
        response = error(413, "too_large", f"request body over {MAX_BODY_BYTES} bytes")
    except web.HTTPException as exc:
        response = error(exc.status, "http", exc.reason)
    except Exception:
        log.exception("unexpected error on %s", request.path)
        response = error(500, "internal", "unexpected server error; see the worker log")
    m.REQUESTS.labels(route, str(response.status)).inc()
    return response


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return error(400, "not_json", f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error(400, "not_object", "body must be a JSON object")
    return body


def build_app(
    searcher: Searcher,
    impressions: ImpressionLogger,
    send_action: Callable[[bytes, bytes], Awaitable[None]],
    ready: Callable[[], dict[str, bool]],
) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY_BYTES)

    async def search(request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        try:
            _validate_search(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            field = (exc.name or "data").removeprefix("data").lstrip(".") or None
            return error(
                400,
                f"invalid_{exc.rule or 'value'}",
                exc.message.replace("data.", "").replace("data ", "request "),
                field,
            )
        extra: list[PlanSpec] = []
        if body.get("explain_plans"):
            try:
                extra = parse_plans(";".join(body["explain_plans"]), list(searcher.strategies))
            except PlanError as exc:
                return error(400, "invalid_plan", str(exc), "explain_plans")
        result = searcher.search(
            body["query"],
            body.get("context") or {},
            body.get("k", 10),
            request_id=body.get("request_id"),
            user_id=body.get("user_id"),
            explain=bool(body.get("explain")),
            explain_plans=extra,
        )
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
        raw_body = await request.read()
        try:
            body = orjson.loads(raw_body)
        except orjson.JSONDecodeError as exc:
            return error(400, "not_json", f"body is not valid JSON: {exc}")
        batch = isinstance(body, list)
        items = body if batch else [body]
        if batch and not 1 <= len(items) <= MAX_BATCH:
            return error(400, "invalid_batch", f"a batch holds 1 to {MAX_BATCH} actions")
        decoded = []
        for index, item in enumerate(items):
            where = f"[{index}]" if batch else ""
            if not isinstance(item, dict):
                m.ACTIONS.labels("rejected").inc()
                return error(400, "not_object", f"action{where} must be a JSON object", where)
            item.setdefault("schema_version", 1)
            raw = orjson.dumps(item)
            result = decode(Contract.USER_ACTION, raw)
            if isinstance(result, Rejection):
                m.ACTIONS.labels("rejected").inc()
                field = f"{where}.{result.field}" if batch and result.field else result.field
                return error(400, result.reason, f"action{where}: {result.detail}", field)
            decoded.append((result, raw))
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    *(send_action(r["impression_id"].encode(), raw) for r, raw in decoded)
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

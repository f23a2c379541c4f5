"""Operational HTTP pages on the Faust web server: /metrics, /healthz, /readyz."""

from __future__ import annotations

from typing import Any

import faust
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from ltrr.streams.health import Health

#: Prometheus text exposition format (without the charset parameter aiohttp refuses here).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


def register_ops_pages(
    app: faust.App, registry: CollectorRegistry = REGISTRY, health: Health | None = None
) -> None:
    """Add /metrics (Prometheus), /healthz (process up) and /readyz (partitions assigned and
    every ``health`` check passing; the body names each problem)."""
    health = health or Health()

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), content_type=METRICS_CONTENT_TYPE)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        assigned = sorted(f"{tp.topic}[{tp.partition}]" for tp in app.consumer.assignment())
        problems = health.problems()
        if not assigned:
            problems["assignment"] = "no partitions assigned (yet)"
        if app.rebalancing:
            problems["rebalance"] = "the consumer group is rebalancing"
        ready = not problems
        return web.json(
            {"ready": ready, "assigned": assigned, "problems": problems},
            status=200 if ready else 503,
        )

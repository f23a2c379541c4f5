"""``ltrr worker``: the learning-loop worker process (all agents of this build)."""

from __future__ import annotations

import logging

import faust
from faust.worker import Worker

from ltrr.agents.loop import register_learning_loop
from ltrr.streams.admin import check_copartitioned, create_topics
from ltrr.streams.app import create_app
from ltrr.streams.health import Health
from ltrr.streams.logs import quiet_client_logs
from ltrr.streams.security import describe, kafka_python_kwargs
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from ltrr.streams.web import register_ops_pages


def build_worker_app(settings: Settings) -> faust.App:
    """The Faust app with every agent and ops page registered."""
    topics = Topics.from_settings(settings)
    app = create_app(settings)
    health = Health()
    register_learning_loop(app, topics, settings, health)
    register_ops_pages(app, health=health)
    return app


def run_worker(settings: Settings) -> None:
    """Create the declared topics (idempotent), then run the worker until SIGINT/SIGTERM."""
    topics = Topics.from_settings(settings)
    log = logging.getLogger(__name__)
    log.info("broker %s over %s", settings.broker, describe(settings))
    outcome = create_topics(
        settings.broker,
        topics.all(),
        replication_factor=settings.replication_factor,
        security=kafka_python_kwargs(settings),
    )
    log.info("topics: %s", outcome)
    check_copartitioned(outcome, [topics.impressions.name, topics.actions.name])
    app = build_worker_app(settings)
    quiet_client_logs()  # a broker outage: a few lines a minute, not thousands
    worker = Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()

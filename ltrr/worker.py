"""``ltrr worker``: the learning-loop worker process (all agents of this build)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import faust
from faust.worker import Worker

from ltrr.agents.loop import register_learning_loop
from ltrr.processes import free_port
from ltrr.streams.admin import check_copartitioned, create_topics
from ltrr.streams.app import create_app
from ltrr.streams.exceptions import SettingsError
from ltrr.streams.health import Health
from ltrr.streams.logs import logging_config
from ltrr.streams.security import aiokafka_kwargs, describe, kafka_python_kwargs
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from ltrr.streams.transactions import check_transactions
from ltrr.streams.web import register_ops_pages


def build_worker_app(settings: Settings) -> faust.App:
    """The Faust app with every agent and ops page registered."""
    topics = Topics.from_settings(settings)
    app = create_app(settings)
    health = Health()
    register_learning_loop(app, topics, settings, health)
    register_ops_pages(app, health=health)
    return app


def check_data_dir(settings: Settings) -> None:
    """Create ``data_dir`` if needed, or refuse one that cannot be written."""
    path = Path(settings.data_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"data_dir {settings.data_dir!r} cannot be created ({exc.strerror}); set "
            "--data-dir / LTRR_DATA_DIR to a writable directory"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(
            f"data_dir {settings.data_dir!r} is not writable; set --data-dir / LTRR_DATA_DIR "
            "to a writable directory"
        )


def run_worker(settings: Settings, *, verbose: bool = False) -> None:
    """Create the declared topics (idempotent), then run the worker until SIGINT/SIGTERM.
    ``verbose``: the client libraries' and Faust's info lines reach the console too."""
    topics = Topics.from_settings(settings)
    log = logging.getLogger(__name__)
    check_data_dir(settings)  # local files first: before any wait for the broker
    log.info("broker %s over %s", settings.broker, describe(settings))
    outcome = create_topics(
        settings.broker,
        topics.all(),
        replication_factor=settings.replication_factor,
        security=kafka_python_kwargs(settings),
    )
    log.info("topics: %s", outcome)
    check_copartitioned(outcome, [topics.impressions.name, topics.actions.name])
    if settings.processing_guarantee == "exactly_once":
        asyncio.run(check_transactions(settings.broker, settings.app_id, aiokafka_kwargs(settings)))
        log.info("exactly_once: the join sends its outbox in Kafka transactions")
    if settings.web_port == 0:  # any free port (Faust itself needs a number)
        settings = settings.with_overrides(web_port=free_port(settings.web_host))
    log.info(
        "worker HTTP on http://%s:%d (/metrics, /healthz, /readyz)",
        settings.web_host,
        settings.web_port,
    )
    app = build_worker_app(settings)
    # Faust sets up logging again: the same console (a broker outage costs a few lines a
    # minute, not thousands).
    worker = Worker(
        app,
        loglevel=settings.log_level.upper(),
        quiet=True,
        logging_config=logging_config(settings.log_level, verbose=verbose),
    )
    worker.execute_from_commandline()

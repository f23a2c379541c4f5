"""Helpers for integration tests: a worker on a test prefix, metrics, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from ltrr.processes import WorkerProcess
from ltrr.streams.scrape import scrape, total

#: Short windows and frequent checkpoints and snapshots, so a test sees the loop turn quickly.
FAST_LOOP_FLAGS = (
    "--reward-window-s",
    "3",
    "--join-tick-s",
    "0.2",
    "--checkpoint-interval-s",
    "0.5",
    "--snapshot-interval-s",
    "1",
    "--play-min-seconds",
    "10",
)


def worker(
    bootstrap: str, prefix: str, data_dir: Path, *extra: str, partitions: int = 2
) -> WorkerProcess:
    """A worker (not started) with its own topics, consumer group and state directory."""
    return WorkerProcess(
        "--broker",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--partitions",
        str(partitions),
        "--app-id",
        f"ltrr-test-{prefix.rstrip('.')}",
        "--data-dir",
        str(data_dir),
        # Quiet partitions' event time follows the clock 5 s behind (tests produce promptly).
        "--event-delay-s",
        "5",
        *extra,
        log_path=data_dir.parent / f"worker-{prefix.rstrip('.')}.log",
    )


def metric(w: WorkerProcess, name: str, **labels: str) -> float:
    return total(scrape(w.url), name, **labels)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")

"""Run ltrr processes for integration tests and read their Prometheus metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streams.brokers.ports import free_port


def metric(port: int, name: str, **labels: str) -> float:
    """Current value of one sample on a process's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def running_worker(
    bootstrap: str, prefix: str, data_dir: Path, *extra: str, partitions: int = 2
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``ltrr worker`` as a subprocess, ready (partitions assigned) when the block starts."""
    port = free_port()
    log = data_dir.parent / f"worker-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "ltrr.cli",
        "worker",
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
        "--web-port",
        str(port),
        *extra,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        deadline = time.monotonic() + 90
        while not _ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not become ready:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

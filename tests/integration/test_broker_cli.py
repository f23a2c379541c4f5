"""``ltrr broker`` prints a bootstrap address that serves Kafka clients, and stops on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

from ltrr.processes import port_open
from ltrr.streams.admin import list_topics


def test_ltrr_broker_prints_bootstrap_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltrr.cli", "broker", "--create-topics", "--topic-prefix", "cli."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        host, _, port = address.partition(":")
        assert host == "127.0.0.1" and port.isdigit()
        topics = list_topics(address)
        assert {"cli.impressions", "cli.actions", "cli.dlq", "cli.snapshots"} <= set(topics)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        assert "broker stopped" in proc.stderr.read()
        assert not port_open(host, int(port)), "the tansu process outlived ltrr broker"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""``ltrr worker`` as a newcomer runs it: any free port with --web-port 0, said in one line,
and the client libraries quiet unless --verbose."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ltrr.processes import Child
from ltrr.schemas.exceptions import LtrrError
from ltrr.streams.scrape import ready
from ltrr.testing.tansu import TansuBroker

KEY = "0123456789abcdef0123456789abcdef"


def test_worker_on_any_free_port_says_where_and_stays_quiet(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    env = {**os.environ, "LTRR_SNAPSHOT_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ltrr.cli", "worker", "--web-port", "0", "--partitions", "2"]
    cmd += ["--broker", bootstrap, "--topic-prefix", prefix, "--data-dir", str(tmp_path / "d")]
    child = Child(cmd, log_path=tmp_path / "worker.log", env=env).start()
    try:
        shown = re.compile(r"worker HTTP on (http://127\.0\.0\.1:\d+) ")

        def answers() -> bool:
            found = shown.search(child.log_tail(100_000))
            return found is not None and ready(found.group(1))

        child.wait_ready(answers, 120, lambda why: LtrrError(f"{why}: {child.log_tail()}"))
        log = child.log_tail(100_000)
        assert " kafka." not in log and " aiokafka" not in log and "[^Worker]" not in log, log
    finally:
        assert child.stop() == 0, child.log_tail()


def test_exactly_once_on_a_broker_without_transactions_says_what_to_do(
    prefix: str, tmp_path: Path
) -> None:
    """tansu has no Kafka transactions: the worker refuses exactly_once at start, in one
    line that says what to use instead, instead of running without the guarantee."""
    broker = TansuBroker()
    bootstrap = broker.start()
    try:
        env = {**os.environ, "LTRR_SNAPSHOT_KEY": KEY, "LTRR_PROCESSING_GUARANTEE": "exactly_once"}
        cmd = [sys.executable, "-m", "ltrr.cli", "worker", "--broker", bootstrap]
        cmd += ["--topic-prefix", prefix, "--data-dir", str(tmp_path / "d"), "--web-port", "0"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert "exactly_once needs a broker with Kafka transactions" in done.stderr, done.stderr
        assert "at_least_once" in done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    finally:
        broker.stop()

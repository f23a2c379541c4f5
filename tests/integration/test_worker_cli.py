"""``ltrr worker`` as a newcomer runs it: any free port with --web-port 0, said in one line,
and the client libraries quiet unless --verbose."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from ltrr.processes import Child
from ltrr.schemas.exceptions import LtrrError
from ltrr.streams.scrape import ready

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

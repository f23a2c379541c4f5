"""The child-process lifecycle that the broker launchers, ``ltrr worker`` and ``ltrr serve``
share (ltrr/processes.py), with real child processes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ltrr.processes import Child
from ltrr.schemas.exceptions import LtrrError

#: A child that says it is ready, then runs until SIGTERM, which it handles by exiting 0.
SERVER = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def test_ready_then_stopped_cleanly_by_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = Child([sys.executable, "-c", SERVER], log_path=log).start()
    child.wait_ready(lambda: "ready" in child.log_tail(), 60, LtrrError, interval_s=0.05)
    assert child.running and child.pid is not None
    assert child.stop(timeout_s=30) == 0
    assert not child.running
    assert child.stop() == 0  # idempotent


def test_a_child_that_exits_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    crash = "import sys; print('bad config', flush=True); sys.exit(3)"
    child = Child([sys.executable, "-c", crash], log_path=log).start()
    with pytest.raises(LtrrError, match=r"exited with 3 while starting: bad config"):
        child.wait_ready(
            lambda: False, 60, lambda why: LtrrError(f"{why}: {child.log_tail().strip()}")
        )
    assert not child.running
    assert child.returncode == 3


def test_kill_is_a_crash(tmp_path: Path) -> None:
    child = Child([sys.executable, "-c", SERVER], log_path=tmp_path / "child.log").start()
    child.wait_ready(lambda: "ready" in child.log_tail(), 60, LtrrError, interval_s=0.05)
    child.kill()
    assert not child.running
    assert child.stop() == -9

"""The README's main job runs end to end and accounts for every event it produced."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_ltrr_demo_accounts_for_every_event(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ltrr.cli",
            "demo",
            "--events",
            "300",
            "--rate",
            "1000",
            "--broken-share",
            "0.1",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every event accounted for" in result.stderr
    assert "dead-lettered" in result.stderr
    assert "rewards (1 per impression)" in result.stderr
    assert (tmp_path / "worker.log").exists()

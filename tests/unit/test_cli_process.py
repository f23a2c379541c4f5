"""The real ``ltrr`` command as a subprocess, without a broker: what a newcomer sees first."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: Nothing listens on port 1: every connection is refused at once.
NO_BROKER = "127.0.0.1:1"
WAITING = f"waiting for the broker at {NO_BROKER} (up to 30 s)"
CATALOG = Path(__file__).parents[1] / "data" / "catalog.jsonl"


#: The checkout under test, first on the path: the children run in other directories, where
#: ``python -m ltrr.cli`` would otherwise import whichever ltrr is installed.
REPO = Path(__file__).parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LTRR_")}
    path = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {
        **env,
        "LTRR_SNAPSHOT_KEY": "0123456789abcdef0123456789abcdef",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": path,
    }


@contextmanager
def ltrr(*argv: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """``ltrr argv...`` with stdout and stderr merged into one pipe; killed on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltrr.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
        cwd=cwd,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def lines_until(proc: subprocess.Popen[str], wanted: str) -> list[str]:
    """The lines the process writes up to and including the first containing ``wanted``
    (all of them, if it exits first)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if wanted in line:
            break
    return seen


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--catalog-path", str(CATALOG), "--serve-port", "0"],
        ["worker"],
        ["topics", "list"],
    ],
    ids=["serve", "worker", "topics"],
)
def test_without_a_broker_one_line_says_what_it_waits_for(argv: list[str], tmp_path: Path) -> None:
    with ltrr(*argv, "--broker", NO_BROKER, cwd=tmp_path) as proc:
        seen = lines_until(proc, WAITING)
    assert WAITING in seen[-1], seen
    assert len(seen) <= 3, seen  # no client-library retries before it
    assert not any(" kafka." in line or " aiokafka" in line for line in seen), seen


def test_verbose_shows_the_client_library(tmp_path: Path) -> None:
    with ltrr("topics", "list", "--broker", NO_BROKER, "--verbose", cwd=tmp_path) as proc:
        seen = lines_until(proc, "ECONNREFUSED")
    assert any(" kafka." in line for line in seen), seen


def test_the_final_error_names_the_cause_once(tmp_path: Path) -> None:
    """After the wait: one error line naming the refused connection, no retry lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "ltrr.cli", "topics", "list", "--broker", NO_BROKER],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert WAITING in lines[0], lines
    assert len(lines) == 2, lines
    assert "no Kafka broker answers at 127.0.0.1:1" in lines[1]
    assert "ECONNREFUSED" in lines[1]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["serve", "--catalog-path", "missing.jsonl"], "catalog_path 'missing.jsonl'"),
        (["serve", "--serve-tls-certfile", "missing.pem"], "serve_tls_certfile"),
        (["worker", "--data-dir", "file/state"], "data_dir 'file/state'"),
        (["eval", "--rewards", "missing.jsonl", "--snapshot-topic"], "missing.jsonl"),
        (["serve", "--config", "missing.toml"], "config file missing.toml"),
    ],
    ids=["catalog", "tls", "data-dir", "eval-rewards", "config"],
)
def test_local_files_fail_before_any_broker_wait(
    argv: list[str], named: str, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a directory")
    with ltrr(*argv, "--broker", NO_BROKER, cwd=tmp_path) as proc:
        assert proc.stdout is not None
        output = proc.stdout.read()  # to the end: it exits without waiting for the broker
        assert proc.wait() == 2, output
    assert named in output
    assert "waiting for the broker" not in output


def test_demo_refuses_vw_args_before_starting_anything(tmp_path: Path) -> None:
    argv = ["demo", "--vw-args=--cb_explore_adf -f model.vw", "--out", str(tmp_path / "out")]
    with ltrr(*argv, cwd=tmp_path) as proc:
        assert proc.stdout is not None
        output = proc.stdout.read()
        assert proc.wait() == 2, output
    assert "VW option '-f' is not allowed" in output
    assert not (tmp_path / "out").exists()

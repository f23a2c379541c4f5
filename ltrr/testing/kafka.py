"""Fetch and run a real Apache Kafka broker (single-node KRaft) from Maven jars.

Why this exists: the test harness and CI need a genuine Apache Kafka broker to
check that the Faust/kafka-python code paths behave against the reference
implementation, not only against a Kafka-protocol look-alike.  Downloading the
Kafka binary tarball needs a mirror URL and a checksum dance; resolving the
``org.apache.kafka:kafka_2.13`` jar and its runtime dependencies through Maven
works anywhere Maven Central (or a configured mirror in ``~/.m2/settings.xml``)
is reachable, and is cached in ``~/.m2`` as well as in our own cache dir.

Layout of the cache (``$LTRR_CACHE_DIR`` or ``~/.cache/ltrr``)::

    kafka-<version>/libs/*.jar     runtime classpath of the broker
    kafka-<version>/.fetched       marker written after a complete fetch

Usage::

    with ApacheKafka() as kafka:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)

    python -m ltrr.testing.kafka fetch [--version V]   # prefetch jars (CI)
    python -m ltrr.testing.kafka run                   # run until Ctrl-C

Only the standard library and kafka-python are used.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ltrr.processes import Child, free_port
from ltrr.streams.exceptions import BrokerError
from ltrr.testing.kafka_security import ListenerSecurity

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "ApacheKafka",
    "BrokerError",
    "default_cache_dir",
    "fetch_kafka",
    "main",
]

log = logging.getLogger(__name__)

DEFAULT_KAFKA_VERSION = "4.1.1"
"""Kafka release run by default: a 4.x patch release (KRaft only, Java 17 brokers)."""

KAFKA_GROUP = "org.apache.kafka"
KAFKA_ARTIFACT = "kafka_2.13"

# Kafka 4.0.x ships no log4j-core in its Maven runtime scope (4.1+ does); this
# version is used for the log4j2 binding only when the resolved jars carry none.
FALLBACK_LOG4J_VERSION = "2.24.3"

NODE_ID = 1
MARKER_NAME = ".fetched"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # room for 8 MB messages plus batch overhead
STOP_TIMEOUT_S = 20.0
MVN_TIMEOUT_S = 900.0
FORMAT_TIMEOUT_S = 120.0
LOG_TAIL_LINES = 60

JVM_FLAGS = (
    # Same GC settings as Kafka's own kafka-run-class.sh.
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


# --------------------------------------------------------------------------- fetching


def default_cache_dir() -> Path:
    """Return the cache root: ``$LTRR_CACHE_DIR`` or ``~/.cache/ltrr``.

    Each Kafka version lives below it in ``kafka-<version>/`` (see :func:`fetch_kafka`).
    """
    env = os.environ.get("LTRR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ltrr"


def _kafka_home(version: str, cache_dir: Path | None) -> Path:
    """Directory holding one version's jars and marker."""
    return (cache_dir if cache_dir is not None else default_cache_dir()) / f"kafka-{version}"


def _is_fetched(home: Path) -> bool:
    """True when a previous fetch completed (marker present and jars in place)."""
    libs = home / "libs"
    return (home / MARKER_NAME).is_file() and any(libs.glob(f"{KAFKA_ARTIFACT}-*.jar"))


def fetch_kafka(
    version: str = DEFAULT_KAFKA_VERSION,
    cache_dir: Path | None = None,
    *,
    offline_ok: bool = True,
) -> Path:
    """Resolve the broker's runtime classpath into ``<cache>/kafka-<version>/libs``.

    Runs ``mvn dependency:copy-dependencies`` on a generated pom for
    ``org.apache.kafka:kafka_2.13:<version>``, then adds the log4j2 binding for
    SLF4J (not part of Kafka's Maven runtime scope) so broker logs reach a file.
    A marker written after success makes later calls return at once.  With
    ``offline_ok`` a failed online resolve is retried with ``mvn --offline`` so a
    warm ``~/.m2`` is enough without network.  Concurrent callers are serialised
    with a file lock.  Returns the libs dir; raises :class:`BrokerError`.
    """
    home = _kafka_home(version, cache_dir)
    libs = home / "libs"
    if _is_fetched(home):
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _file_lock(home / ".lock"):
        if _is_fetched(home):  # another process finished while we waited
            return libs
        mvn = _find_mvn()
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
        try:
            _copy_dependencies(mvn, _kafka_pom(version), staging, offline_ok)
            _copy_dependencies(mvn, _logging_pom(staging), staging, offline_ok)
            staging.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared
            shutil.rmtree(libs, ignore_errors=True)
            staging.rename(libs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        (home / MARKER_NAME).write_text(f"{KAFKA_GROUP}:{KAFKA_ARTIFACT}:{version}\n")
    return libs


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (parallel test workers fetch once)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _find_mvn() -> str:
    """Locate Maven or explain how to get it."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "Maven (mvn) is not on PATH; install Maven 3.6+ (e.g. `apt-get install maven`) "
            "to fetch Apache Kafka, or prefetch the jars on a machine that has it."
        )
    return mvn


def _pom(dependencies: str) -> str:
    """A throwaway pom whose only purpose is to carry ``dependencies``."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ltrr.local</groupId>
  <artifactId>kafka-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _dependency(group: str, artifact: str, version: str, exclusions: Sequence[str] = ()) -> str:
    """One ``<dependency>`` element; ``exclusions`` are ``group:artifact`` strings."""
    excl = "".join(
        "<exclusion><groupId>{}</groupId><artifactId>{}</artifactId></exclusion>".format(
            *item.split(":")
        )
        for item in exclusions
    )
    excl_xml = f"<exclusions>{excl}</exclusions>" if excl else ""
    return (
        f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
        f"<version>{version}</version>{excl_xml}</dependency>"
    )


def _kafka_pom(version: str) -> str:
    """Pom for the broker itself."""
    return _pom(_dependency(KAFKA_GROUP, KAFKA_ARTIFACT, version))


def _jar_version(libs: Path, artifact: str) -> str | None:
    """Version of ``<artifact>-<version>.jar`` in ``libs``, if present."""
    pattern = re.compile(rf"^{re.escape(artifact)}-(\d[\w.\-]*)\.jar$")
    for jar in libs.glob(f"{artifact}-*.jar"):
        match = pattern.match(jar.name)
        if match:
            return match.group(1)
    return None


def _logging_pom(libs: Path) -> str:
    """Pom for the log4j2 backend matching what the broker jars already use.

    Kafka logs through SLF4J but its Maven runtime scope carries no SLF4J
    binding, so without one every broker log line is silently dropped.  The
    binding must match the SLF4J major version (1.x: ``log4j-slf4j-impl``,
    2.x: ``log4j-slf4j2-impl``) and the log4j-core version Kafka brings.
    """
    log4j = _jar_version(libs, "log4j-core") or FALLBACK_LOG4J_VERSION
    slf4j = _jar_version(libs, "slf4j-api") or "1"
    binding = "log4j-slf4j-impl" if slf4j.startswith("1.") or slf4j == "1" else "log4j-slf4j2-impl"
    group = "org.apache.logging.log4j"
    return _pom(
        "\n".join(
            [
                _dependency(group, "log4j-api", log4j),
                _dependency(group, "log4j-core", log4j),
                _dependency(group, binding, log4j, exclusions=["org.slf4j:slf4j-api"]),
            ]
        )
    )


def _copy_dependencies(mvn: str, pom: str, output_dir: Path, offline_ok: bool) -> None:
    """Run ``mvn dependency:copy-dependencies`` for ``pom`` into ``output_dir``."""
    with tempfile.TemporaryDirectory(prefix="ltrr-mvn-") as project:
        pom_path = Path(project) / "pom.xml"
        pom_path.write_text(pom)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom_path),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={output_dir}",
        ]
        result = _run_mvn(cmd, project)
        if result.returncode != 0 and offline_ok:
            offline = _run_mvn([*cmd[:1], "--offline", *cmd[1:]], project)
            if offline.returncode == 0:
                return
        if result.returncode != 0:
            raise BrokerError(
                "Maven could not resolve Apache Kafka jars; check network access to Maven "
                "Central (or the mirror/proxy in ~/.m2/settings.xml) and that the version "
                f"exists.\ncommand: {' '.join(cmd)}\n{_tail(result.stdout + result.stderr)}"
            )


def _run_mvn(cmd: list[str], cwd: str) -> subprocess.CompletedProcess[str]:
    """Run one Maven command, turning a hang into a :class:`BrokerError`."""
    try:
        return subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=MVN_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(
            f"Maven did not finish within {MVN_TIMEOUT_S:.0f} s; check network access "
            f"to Maven Central.\ncommand: {' '.join(cmd)}"
        ) from exc


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of ``text``, without terminal colour codes."""
    return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


# --------------------------------------------------------------------------- configuration


def _cluster_id() -> str:
    """A random Kafka cluster id (URL-safe base64 of a UUID, as ``Uuid.randomUuid``).

    Kafka re-draws ids starting with ``-`` because they look like CLI flags.
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):
            return value


def _server_properties(
    port: int, controller_port: int, data_dir: Path, security: ListenerSecurity | None = None
) -> str:
    """``server.properties`` for a single node acting as broker and KRaft controller.

    The client listener is named after its protocol (PLAINTEXT unless ``security`` says
    otherwise); the controller listener is always PLAINTEXT on loopback.
    """
    security = security or ListenerSecurity()
    client = security.protocol
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller_port}",
        "listeners": f"{client}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"{client}://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client,
        "listener.security.protocol.map": f"{client}:{client},CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # ltrr creates its topics with the right partition counts; a client must never
        # create one by asking for its metadata (it would get 1 partition).
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        "message.max.bytes": str(MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(MAX_MESSAGE_BYTES),
        "socket.request.max.bytes": str(4 * MAX_MESSAGE_BYTES),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.cleaner.backoff.ms": "1000",
        **security.server_properties(),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _log4j2_properties(log_file: Path) -> str:
    """log4j2 config sending broker logs to ``log_file``: INFO, noisy loggers at WARN."""
    quiet = [
        "kafka.request.logger",
        "kafka.network.RequestChannel$",
        "kafka.authorizer.logger",
        "org.apache.kafka.common.metrics",
        "org.apache.kafka.common.config",
        "org.apache.kafka.clients",
    ]
    lines = [
        "status = warn",
        "name = ltrr-kafka",
        "appender.file.type = File",
        "appender.file.name = FILE",
        f"appender.file.fileName = {log_file}",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.file.ref = FILE",
    ]
    for index, name in enumerate(quiet):
        lines += [f"logger.q{index}.name = {name}", f"logger.q{index}.level = WARN"]
    return "\n".join(lines) + "\n"


def _find_java() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, or explain what to install."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "Java is not installed; Apache Kafka 4.x brokers need a Java 17+ runtime "
            "(e.g. `apt-get install openjdk-17-jre-headless`) or JAVA_HOME set."
        )
    return java


# --------------------------------------------------------------------------- broker


def _kept_ports(config: Path) -> tuple[int | None, int | None]:
    """(client port, controller port) of a kept workdir's previous run, so a restarted
    broker listens where its clients and its own KRaft quorum expect it."""
    if not config.is_file():
        return None, None
    client = controller = None
    for line in config.read_text().splitlines():
        if line.startswith("listeners="):
            for listener in line.split("=", 1)[1].split(","):
                name, _, address = listener.partition("://")
                port = int(address.rsplit(":", 1)[1])
                if name == "CONTROLLER":
                    controller = port
                else:
                    client = port
    return client, controller


class ApacheKafka:
    """One single-node KRaft Apache Kafka broker in a child process.

    ``start()`` fetches the jars (cached), writes the config into ``workdir``
    (a temp dir removed on ``stop()`` unless given), formats storage, launches
    the JVM in its own process group and waits until the broker serves
    metadata.  Use as a context manager to guarantee ``stop()``.
    """

    def __init__(
        self,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        port: int | None = None,
        workdir: Path | None = None,
        cache_dir: Path | None = None,
        heap: str = "512m",
        startup_timeout: float = 90.0,
        security: ListenerSecurity | None = None,
    ) -> None:
        self.version = version
        #: How the client listener is secured (default: PLAINTEXT); see kafka_security.py.
        self.security = security or ListenerSecurity()
        self.port = port
        self.controller_port: int | None = None
        self.cache_dir = cache_dir
        self.heap = heap
        self.startup_timeout = startup_timeout
        self._given_workdir = Path(workdir) if workdir is not None else None
        self.workdir: Path | None = self._given_workdir
        self._owns_workdir = False
        self._child: Child | None = None
        self._bootstrap: str | None = None

    # -- public API ----------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` of the running broker; only valid after :meth:`start`."""
        if self._bootstrap is None:
            raise BrokerError("ApacheKafka.bootstrap is only available after start()")
        return self._bootstrap

    @property
    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments that log in as the broker's own (first) SASL user."""
        return self.security.client_config()

    @property
    def pid(self) -> int | None:
        """PID (and process-group id) of the broker JVM, while one was started."""
        return self._child.pid if self._child is not None else None

    @property
    def running(self) -> bool:
        """True while the broker JVM started by :meth:`start` is alive."""
        return self._child is not None and self._child.running

    @property
    def log_file(self) -> Path | None:
        """Path of the broker's log4j2 log file (``<workdir>/logs/server.log``)."""
        return self.workdir / "logs" / "server.log" if self.workdir is not None else None

    def start(self) -> str:
        """Fetch, configure, format and launch the broker; return the bootstrap address."""
        if self.running:
            return self.bootstrap
        libs = fetch_kafka(self.version, self.cache_dir)
        java = _find_java()
        workdir = self._prepare_workdir()
        kept = _kept_ports(workdir / "server.properties")
        port = self.port or kept[0] or free_port()
        self.controller_port = kept[1] or free_port()
        while self.controller_port == port:
            self.controller_port = free_port()
        config = self._write_config(workdir, port, self.controller_port)
        try:
            self._format_storage(java, libs, config)
            self._launch(java, libs, config)
            self._bootstrap = f"127.0.0.1:{port}"
            atexit.register(self.stop)
            self._wait_ready(self._bootstrap)
        except BaseException:
            self.stop()
            raise
        return self._bootstrap

    def stop(self) -> None:
        """SIGTERM the broker's process group, SIGKILL after 20 s; drop a temp workdir.

        Safe to call repeatedly and before :meth:`start`.
        """
        atexit.unregister(self.stop)
        child, self._child = self._child, None
        if child is not None:
            child.stop(STOP_TIMEOUT_S)
        self._bootstrap = None
        if self._owns_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._owns_workdir = False

    def __enter__(self) -> ApacheKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self._bootstrap or "stopped"
        return f"ApacheKafka(version={self.version!r}, {state})"

    # -- steps of start() ----------------------------------------------------

    def _prepare_workdir(self) -> Path:
        """Use the given workdir or create a temp one that stop() will delete."""
        if self._given_workdir is not None:
            self.workdir = self._given_workdir
            self._owns_workdir = False
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="ltrr-kafka-"))
            self._owns_workdir = True
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        return self.workdir

    def _write_config(self, workdir: Path, port: int, controller_port: int) -> Path:
        """Write server.properties and log4j2.properties into ``workdir``."""
        assert self.log_file is not None
        (workdir / "log4j2.properties").write_text(_log4j2_properties(self.log_file))
        config = workdir / "server.properties"
        config.write_text(
            _server_properties(port, controller_port, workdir / "data", self.security)
        )
        return config

    def _java_cmd(self, java: str, libs: Path, heap: str, *args: str) -> list[str]:
        """``java`` command line with our logging setup and the Maven classpath."""
        assert self.workdir is not None
        return [
            java,
            f"-Xmx{heap}",
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def _format_storage(self, java: str, libs: Path, config: Path) -> None:
        """Format the KRaft log dir with a random cluster id.

        A reused workdir that is already formatted keeps its data and cluster id.
        """
        assert self.workdir is not None
        if (self.workdir / "data" / "meta.properties").is_file():
            return
        cmd = self._java_cmd(
            java,
            libs,
            "256m",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _cluster_id(),
            "--config",
            str(config),
            *self.security.format_args(),
        )
        try:
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=FORMAT_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"Kafka storage format timed out: {' '.join(cmd)}") from exc
        if result.returncode != 0:
            raise BrokerError(
                f"Kafka storage format failed (exit {result.returncode}): {' '.join(cmd)}\n"
                f"{_tail(result.stdout + result.stderr)}"
            )

    def _launch(self, java: str, libs: Path, config: Path) -> None:
        """Start ``kafka.Kafka`` in a new session so stop() can signal the whole group."""
        assert self.workdir is not None
        cmd = self._java_cmd(java, libs, self.heap, "kafka.Kafka", str(config))
        log_path = self.workdir / "logs" / "stdout.log"
        self._child = Child(cmd, log_path=log_path, cwd=self.workdir).start()

    def _wait_ready(self, bootstrap: str) -> None:
        """Poll until the broker lists itself (unfenced) in cluster metadata."""
        assert self._child is not None
        last_error = ["no answer yet"]

        def ready() -> bool:
            answered, last_error[0] = _probe(bootstrap, self.client_config)
            return answered

        self._child.wait_ready(
            ready,
            self.startup_timeout,
            lambda why: BrokerError(
                f"Kafka on {bootstrap} {why} ({last_error[0]}); last log lines:\n{self._log_tail()}"
            ),
        )

    def _log_tail(self) -> str:
        """Last lines of the JVM's stdout/stderr and of the log4j2 file, for errors."""
        if self.workdir is None:
            return "(no workdir)"
        parts = []
        for path in (self.workdir / "logs" / "stdout.log", self.log_file):
            if path is not None and path.is_file():
                text = path.read_text(errors="replace")
                errors = _error_lines(text)
                if errors:
                    parts.append(f"--- first errors in {path}\n{errors}")
                parts.append(f"--- tail of {path}\n{_tail(text)}")
        return "\n".join(parts) or "(no log output)"


def _error_lines(text: str, limit: int = 10) -> str:
    """The first ERROR/FATAL log lines (the cause often scrolls out of the tail)."""
    hits = [line for line in text.splitlines() if "] ERROR " in line or "] FATAL " in line]
    return "\n".join(hits[:limit])


def _port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _probe(bootstrap: str, client_config: dict[str, Any]) -> tuple[bool, str]:
    """One readiness check: does DescribeCluster list our node as an unfenced broker?"""
    host, _, port = bootstrap.rpartition(":")
    if not _port_open(host, int(port)):
        return False, "port not open"
    from kafka.admin import KafkaAdminClient  # heavy import, needed only here

    admin = None
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="ltrr-kafka-probe",
            request_timeout_ms=5000,
            bootstrap_timeout_ms=5000,
            **client_config,
        )
        cluster = admin.describe_cluster()
    except Exception as exc:  # the broker is still coming up: any error means "not yet"
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()
    for broker in cluster.get("brokers", []):
        node = broker.get("broker_id", broker.get("node_id"))
        if node == NODE_ID and not broker.get("is_fenced", False):
            return True, "ready"
    return False, f"broker {NODE_ID} not yet registered/unfenced"


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    """Argument parser for ``python -m ltrr.testing.kafka``."""
    parser = argparse.ArgumentParser(
        prog="python -m ltrr.testing.kafka",
        description="Fetch or run a single-node Apache Kafka (KRaft) from Maven jars.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download the broker jars into the cache")
    run = sub.add_parser("run", help="start a broker, print its bootstrap, run until Ctrl-C")
    for command in (fetch, run):
        command.add_argument("--version", default=DEFAULT_KAFKA_VERSION, help="Kafka version")
        command.add_argument("--cache-dir", type=Path, default=None, help="cache root")
    run.add_argument("--port", type=int, default=None, help="broker port (default: free port)")
    run.add_argument("--workdir", type=Path, default=None, help="keep data/logs here")
    run.add_argument("--heap", default="512m", help="JVM -Xmx (default 512m)")
    run.add_argument("--startup-timeout", type=float, default=90.0, help="seconds")
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C so the broker is stopped cleanly."""
    raise KeyboardInterrupt


def _run_forever(kafka: ApacheKafka) -> int:
    """Block until Ctrl-C/SIGTERM (exit 0) or until the broker dies (exit 1)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while kafka.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    print(f"Kafka exited unexpectedly; see {kafka.log_file}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: ``fetch`` prefetches jars, ``run`` serves a broker until Ctrl-C."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            started = time.monotonic()
            libs = fetch_kafka(args.version, args.cache_dir)
            print(f"{libs} ({time.monotonic() - started:.1f} s)")
            return 0
        kafka = ApacheKafka(
            version=args.version,
            port=args.port,
            workdir=args.workdir,
            cache_dir=args.cache_dir,
            heap=args.heap,
            startup_timeout=args.startup_timeout,
        )
        try:
            print(kafka.start(), flush=True)
            print(f"logs: {kafka.log_file} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            return _run_forever(kafka)
        finally:
            kafka.stop()
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

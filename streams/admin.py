"""Create and inspect ltrr's topics on any Kafka-protocol broker (kafka-python admin client)."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ltrr.streams.exceptions import BrokerError
from ltrr.streams.logs import hold_client_logs
from ltrr.streams.topics import TopicSpec

log = logging.getLogger(__name__)

#: How long commands wait for the brokers to answer at start, seconds.
BOOTSTRAP_TIMEOUT_S = 30.0


def admin_client(
    bootstrap: str,
    *,
    timeout_s: float = 15.0,
    bootstrap_timeout_s: float = BOOTSTRAP_TIMEOUT_S,
    security: Mapping[str, Any] | None = None,
) -> KafkaAdminClient:
    """An admin client, or a ``BrokerError`` that says which address did not answer and why.

    ``security`` is ``streams.security.kafka_python_kwargs(settings)`` (empty for PLAINTEXT).
    While the brokers do not answer, the client library's retries stay off the console; one
    line says at once what the command waits for and how long.
    """
    security = security or {}
    refused = _refused_login(bootstrap, security, timeout_s)
    if refused:
        raise BrokerError(refused)
    waiting = f"waiting for the broker at {bootstrap} (up to {bootstrap_timeout_s:g} s)"
    with _client_errors(lambda: log.info(waiting)) as errors:
        try:
            return KafkaAdminClient(
                bootstrap_servers=bootstrap.split(","),
                client_id="ltrr-admin",
                request_timeout_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(bootstrap_timeout_s * 1000),
                **security,
            )
        except KafkaError as exc:
            raise BrokerError(_no_answer(bootstrap, security, errors)) from exc


def _refused_login(bootstrap: str, security: Mapping[str, Any], timeout_s: float) -> str | None:
    """With SASL or TLS, why one login to the first bootstrap server fails for good, if it does.

    kafka-python retries a refused login until its 30 s bootstrap timeout and reports only a
    timeout; one aiokafka connection gets the broker's reason in a fraction of a second. An
    unreachable broker is not a refusal: it is left to the admin client's retries.
    """
    if security.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
        return None
    from aiokafka import errors
    from aiokafka.conn import create_conn

    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")

    async def login() -> None:
        conn = await create_conn(
            host, int(port), request_timeout_ms=int(timeout_s * 1000), **security
        )
        conn.close()

    user, mechanism = security.get("sasl_plain_username"), security.get("sasl_mechanism")
    try:
        # In its own thread and event loop: callers may run inside one (ltrr serve).
        pool = ThreadPoolExecutor(1, thread_name_prefix="ltrr-login")
        try:
            pool.submit(asyncio.run, login()).result(timeout=timeout_s + 5)
        finally:
            pool.shutdown(wait=False)
    except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError) as exc:
        return (
            f"the Kafka broker at {bootstrap} refused the SASL login of user {user!r} with "
            f"{mechanism} ({exc}); check LTRR_SASL_USERNAME, LTRR_SASL_PASSWORD and "
            f"LTRR_SASL_MECHANISM"
        )
    except errors.UnsupportedSaslMechanismError as exc:
        return (
            f"the Kafka broker at {bootstrap} does not enable SASL mechanism {mechanism} "
            f"({exc}); set LTRR_SASL_MECHANISM to one its listener enables"
        )
    except ssl.SSLCertVerificationError as exc:
        return (
            f"the TLS certificate of the Kafka broker at {bootstrap} failed verification "
            f"({exc.verify_message}); set LTRR_SSL_CAFILE to the CA that signed it (and "
            f"LTRR_SSL_CHECK_HOSTNAME=false only if the certificate does not name the host "
            f"you connect to)"
        )
    except Exception:  # unreachable, timed out, not TLS...: the admin client says more
        return None
    return None


def _no_answer(bootstrap: str, security: Mapping[str, Any], errors: list[str]) -> str:
    protocol = security.get("security_protocol", "PLAINTEXT")
    message = f"no Kafka broker answers at {bootstrap} over {protocol}"
    refused = next((m for m in map(_AUTH_FAILED.search, errors) if m), None)
    if refused:
        return (
            f"{message}: the broker refused the SASL login of user "
            f"{security.get('sasl_plain_username')!r} with {security.get('sasl_mechanism')} "
            f"({refused.group(0)}); check LTRR_SASL_USERNAME, LTRR_SASL_PASSWORD and "
            f"LTRR_SASL_MECHANISM"
        )
    tls = next((e for e in errors if _TLS_FAILED.search(e)), None)
    if tls:
        return (
            f"{message}: TLS failed ({tls}); check LTRR_SSL_CAFILE (the CA that signed the "
            f"broker's certificate), LTRR_SSL_CHECK_HOSTNAME, and that the listener speaks TLS"
        )
    # The connection's own failure (refused, unresolvable) says more than the final timeout.
    failures = [e for e in errors if "failed:" in e]
    cause = next((e for e in failures if "Bootstrap failed" not in e), None) or next(
        iter(failures[::-1]), None
    )
    return (
        f"{message}{f' ({cause})' if cause else ''}; start one (`ltrr broker`) or set "
        f"LTRR_BROKER / --broker to a reachable bootstrap address, and LTRR_SECURITY_PROTOCOL "
        f"to what its listener expects (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
    )


_AUTH_FAILED = re.compile(r"Authentication failed[^()\[\]]*")
_TLS_FAILED = re.compile(r"SSLError|SSLCertVerification|CERTIFICATE|[Hh]andshake|WRONG_VERSION")


@contextmanager
def _client_errors(on_first: Callable[[], None]) -> Iterator[list[str]]:
    """Collect kafka-python's connection warnings and errors (it only logs why a bootstrap
    failed, a refused login or a TLS handshake error, before timing out), holding them off
    the console; ``on_first`` runs at the first one."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not seen:
                on_first()
            text = record.getMessage()
            if text not in seen:
                seen.append(text)

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("kafka")
    logger.addHandler(handler)
    try:
        with hold_client_logs():
            yield seen
    finally:
        logger.removeHandler(handler)


def create_topics(
    bootstrap: str,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
    security: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Create each topic that does not exist yet; returns name -> ``created`` | ``exists``
    (or ``exists with N partitions, expected M``).

    ``check_copartitioned`` refuses an outcome where topics that must share a partition
    count (impressions and actions) do not have the configured one.
    """
    specs = list(specs)
    client = admin_client(bootstrap, security=security)
    try:
        existing = set(client.list_topics())
        outcome: dict[str, str] = {}
        counts = _partition_counts(client, [s.name for s in specs if s.name in existing])
        for spec in specs:
            if spec.name in existing:
                found = counts.get(spec.name)
                outcome[spec.name] = (
                    "exists"
                    if found in (None, spec.partitions)
                    else f"exists with {found} partitions, expected {spec.partitions}"
                )
                continue
            topic = NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs=spec.configs(),
            )
            try:
                client.create_topics([topic], timeout_ms=30_000)
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:
                outcome[spec.name] = "exists"
            except KafkaError as exc:
                raise BrokerError(f"could not create topic {spec.name}: {exc}") from exc
        _wait_visible(client, [n for n, state in outcome.items() if state == "created"])
        return outcome
    finally:
        client.close()


def _wait_visible(client: Any, names: list[str], timeout_s: float = 30.0) -> None:
    """Wait until the broker's metadata lists every topic in ``names``: a CreateTopics answer
    comes from the controller, and the metadata a client reads next may lag behind it for a
    moment (Apache Kafka in KRaft mode), so "created" means "listed" for whoever runs next."""
    deadline = time.monotonic() + timeout_s
    missing = set(names)
    while missing and time.monotonic() < deadline:
        with suppress(KafkaError):
            missing -= set(client.list_topics())
        if missing:
            time.sleep(0.2)
    if missing:
        log.warning(
            "topics created but not listed by the broker after %.0f s: %s",
            timeout_s,
            ", ".join(sorted(missing)),
        )


def _partition_counts(client: Any, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    try:
        described = client.describe_topics(names)
    except KafkaError:
        return {}
    return {d.get("name") or d["topic"]: len(d.get("partitions") or []) for d in described}


def check_copartitioned(outcome: Mapping[str, str], names: Iterable[str]) -> None:
    """Refuse to run on co-partitioned topics whose partition counts differ."""
    wrong = {n: outcome[n] for n in names if outcome.get(n, "").startswith("exists with")}
    if wrong:
        details = "; ".join(f"{n}: {state}" for n, state in wrong.items())
        raise BrokerError(
            f"topics exist with other partition counts than configured ({details}). "
            "Impressions and actions must have the same count for the join: recreate them "
            "(ltrr topics create) or set --partitions to what they have. A topic created by a "
            "client's metadata request (auto-creation) has 1 partition."
        )


def list_topics(bootstrap: str, *, security: Mapping[str, Any] | None = None) -> list[str]:
    client = admin_client(bootstrap, security=security)
    try:
        return sorted(client.list_topics())
    finally:
        client.close()

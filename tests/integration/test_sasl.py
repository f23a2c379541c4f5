"""ltrr against a secured Apache Kafka: its own single-node KRaft broker (not the session
broker, which may be tansu) whose only client listener is SASL, then SASL over TLS.

Checked through the real entry points: ``ltrr topics create`` configured by LTRR_* variables,
kafka-python and aiokafka clients built by ``ltrr.streams.security``, an ``ltrr worker`` (Faust)
that consumes and dead-letters over SASL/SCRAM, and a worker with a wrong password that exits
with an error naming the refused login instead of hanging. Needs Java 17 and the Kafka jars
(fetched on first use, like the harness test).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, KafkaProducer

from ltrr import cli
from ltrr.processes import ServeProcess
from ltrr.streams import security
from ltrr.streams.admin import list_topics
from ltrr.streams.settings import Settings
from ltrr.testing.kafka import ApacheKafka
from ltrr.testing.kafka_security import BrokerTls, ListenerSecurity
from tests.certs import KEYSTORE_PASSWORD, make_certs
from tests.events import action, impression
from tests.integration.processes import metric, wait_until, worker

USERS = {"admin": "admin-secret", "ltrr": "ltrr-secret"}
CATALOG = Path(__file__).parent.parent / "data" / "catalog.jsonl"


def env_for(bootstrap: str, protocol: str, **more: str) -> dict[str, str]:
    """LTRR_* variables of a client logging in as user ``ltrr``."""
    return {
        "LTRR_BROKER": bootstrap,
        "LTRR_SECURITY_PROTOCOL": protocol,
        "LTRR_SASL_USERNAME": "ltrr",
        "LTRR_SASL_PASSWORD": USERS["ltrr"],
        **{f"LTRR_{k.upper()}": v for k, v in more.items()},
    }


@pytest.fixture(scope="module")
def sasl_kafka() -> Iterator[str]:
    """A broker whose client listener is SASL_PLAINTEXT with PLAIN and SCRAM-SHA-256."""
    security_ = ListenerSecurity(users=USERS, mechanisms=("PLAIN", "SCRAM-SHA-256"))
    with ApacheKafka(security=security_) as kafka:
        yield kafka.bootstrap


def run_ltrr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``ltrr ARGS`` in a child process with these LTRR_* variables; never hangs the suite."""
    return subprocess.run(
        [sys.executable, "-m", "ltrr.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_topics_create_and_both_client_libraries_over_sasl(
    sasl_kafka: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bootstrap = sasl_kafka
    for name, value in env_for(bootstrap, "SASL_PLAINTEXT", topic_prefix=prefix).items():
        monkeypatch.setenv(name, value)
    assert cli.main(["topics", "create", "--sasl-mechanism", "SCRAM-SHA-256"]) == 0
    assert f"{prefix}impressions\tcreated" in capsys.readouterr().out

    plain = Settings.load(os.environ)
    scram = plain.with_overrides(sasl_mechanism="SCRAM-SHA-256")
    topic = prefix + "catalog"
    assert topic in list_topics(bootstrap, security=security.kafka_python_kwargs(scram))

    producer = KafkaProducer(bootstrap_servers=bootstrap, **security.kafka_python_kwargs(scram))
    producer.send(topic, key=b"k1", value=b"from kafka-python").get(timeout=30)
    producer.close()

    async def aiokafka_round_trip() -> list[bytes]:
        kwargs = security.aiokafka_kwargs(plain)
        aio_producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **kwargs)
        await aio_producer.start()
        try:
            await aio_producer.send_and_wait(topic, key=b"k1", value=b"from aiokafka")
        finally:
            await aio_producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            **kwargs,
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            async with asyncio.timeout(30):
                while len(got) < 2:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        got += [r.value for r in records]
            return got
        finally:
            await consumer.stop()

    assert sorted(asyncio.run(aiokafka_round_trip())) == [b"from aiokafka", b"from kafka-python"]

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        **security.kafka_python_kwargs(scram),
    )
    try:
        values = sorted(r.value for _, r in zip(range(2), consumer, strict=False))
    finally:
        consumer.close()
    assert values == [b"from aiokafka", b"from kafka-python"]


def test_worker_consumes_and_dead_letters_over_sasl_scram(
    sasl_kafka: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap = sasl_kafka
    env = env_for(bootstrap, "SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings.load(os.environ)
    with worker(bootstrap, prefix, tmp_path / "state") as w:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, **security.kafka_python_kwargs(settings)
        )
        producer.send(prefix + "impressions", key=b"imp-1", value=orjson.dumps(impression()))
        producer.send(prefix + "impressions", key=b"imp-2", value=b"{not json")
        producer.flush(timeout=30)
        producer.close()
        wait_until(
            lambda: (
                metric(w, "ltrr_events_consumed_total", topic="impressions", outcome="accepted")
                == 1
                and metric(w, "ltrr_dlq_events_total") == 1
            ),
            45,
            "the worker to accept one impression and dead-letter one",
        )


def test_wrong_password_fails_with_a_clear_error(sasl_kafka: str, tmp_path: Path) -> None:
    wrong = {**env_for(sasl_kafka, "SASL_PLAINTEXT"), "LTRR_SASL_PASSWORD": "not-the-password"}
    done = run_ltrr("worker", "--data-dir", str(tmp_path), "--web-port", "0", env=wrong)
    assert done.returncode == 2, done.stderr
    assert (
        f"ltrr worker: error: the Kafka broker at {sasl_kafka} refused the SASL login of user "
        f"'ltrr' with PLAIN" in done.stderr
    ), done.stderr
    assert "Invalid username or password" in done.stderr
    assert "not-the-password" not in done.stdout + done.stderr
    done = run_ltrr("topics", "list", "--sasl-mechanism", "SCRAM-SHA-512", env=wrong)
    assert done.returncode == 2
    assert "does not enable SASL mechanism SCRAM-SHA-512" in done.stderr, done.stderr


@contextmanager
def serving(tmp_path: Path) -> Iterator[str]:
    """``ltrr serve`` (lexical and popular strategies) configured by the LTRR_* environment,
    once /readyz says its catalog, Q2E and snapshot consumers caught up."""
    serve = ServeProcess(
        *("--catalog-path", str(CATALOG), "--strategies", "lexical,popular"),
        log_path=tmp_path / "serve.log",
        ready_timeout_s=60,
    )
    with serve:
        yield serve.url


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, Any] = orjson.loads(resp.read())
        return answer


def test_sasl_over_tls(tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SASL_SSL: topics, aiokafka, kafka-python, a worker and ltrr serve verify the broker's
    certificate against our CA (host name included); a client trusting another CA is refused."""
    certs = make_certs(tmp_path / "certs")
    tls = BrokerTls(keystore=certs.server_p12, keystore_password=KEYSTORE_PASSWORD, cafile=certs.ca)
    with ApacheKafka(security=ListenerSecurity(users=USERS, tls=tls)) as kafka:
        env = env_for(kafka.bootstrap, "SASL_SSL", ssl_cafile=str(certs.ca), topic_prefix=prefix)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert cli.main(["topics", "create", "--partitions", "2"]) == 0
        settings = Settings.load(os.environ)

        async def round_trip() -> bytes | None:
            kwargs = security.aiokafka_kwargs(settings)
            producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, **kwargs)
            await producer.start()
            try:
                await producer.send_and_wait(prefix + "catalog", key=b"k", value=b"over tls")
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer(
                prefix + "catalog",
                bootstrap_servers=kafka.bootstrap,
                group_id=f"g-{uuid.uuid4().hex[:8]}",
                auto_offset_reset="earliest",
                **kwargs,
            )
            await consumer.start()
            try:
                record = await asyncio.wait_for(consumer.getone(), 30)
                return record.value
            finally:
                await consumer.stop()

        assert asyncio.run(round_trip()) == b"over tls"
        topics = list_topics(kafka.bootstrap, security=security.kafka_python_kwargs(settings))
        assert prefix + "catalog" in topics

        # Faust over SASL_SSL, fed by kafka-python and by ltrr serve's aiokafka producers.
        with worker(kafka.bootstrap, prefix, tmp_path / "state") as w, serving(tmp_path) as url:
            producer = KafkaProducer(
                bootstrap_servers=kafka.bootstrap, **security.kafka_python_kwargs(settings)
            )
            producer.send(prefix + "impressions", key=b"imp-1", value=orjson.dumps(impression()))
            producer.close(timeout=30)
            found = post(f"{url}/search", {"query": "love", "k": 3})
            clicked = action(
                "act-1", found["impression_id"], entity_id=found["results"][0]["entity_id"]
            )
            post(f"{url}/actions", clicked)

            def accepted(topic: str) -> float:
                return metric(w, "ltrr_events_consumed_total", topic=topic, outcome="accepted")

            wait_until(
                lambda: accepted("impressions") == 2 and accepted("actions") == 1,
                45,
                "the worker to accept both impressions and the action",
            )

        done = run_ltrr("topics", "list", env={**env, "LTRR_SSL_CAFILE": str(certs.other_ca)})
        assert done.returncode == 2
        assert f"the TLS certificate of the Kafka broker at {kafka.bootstrap} failed" in (
            done.stderr
        )

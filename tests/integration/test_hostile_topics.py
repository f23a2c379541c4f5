"""Anyone who can write to the snapshots or Q2E topic, without the snapshot key, cannot stop a
retrieval worker from loading valid models or answering searches, now or after a restart."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.errors import InvalidRecordError

from ltrr.agents.learning import DEFAULT_VW_ARGS, Learners
from ltrr.processes import ServeProcess
from ltrr.schemas.snapshot import SAFETY_MARGIN_BYTES, encode_snapshot
from ltrr.state.store import MemoryStore
from ltrr.streams.scrape import scrape, total
from tests.integration.loop_helpers import wait_for
from tests.unit.test_learning import reward_lines

CATALOG = Path(__file__).parent.parent / "data" / "catalog.jsonl"
KEY = b"hostile-test-key"
MIB = 1024 * 1024


def model_bytes() -> bytes:
    learners = Learners(MemoryStore(), DEFAULT_VW_ARGS)
    for i, line in enumerate(reward_lines(300)):
        learners.learn(line, 0, i)
    return learners.model_bytes("default")


def snapshot(version: int, model: bytes, *, chunked: bool) -> list[tuple[bytes, bytes | None]]:
    """A valid signed snapshot; ``chunked`` splits it into 1 kB chunks."""
    return encode_snapshot(
        model="default",
        version=version,
        vw_args=list(DEFAULT_VW_ARGS),
        model_bytes=model,
        examples_learned=300,
        offsets=[],
        created_ms=int(time.time() * 1000),
        key_id="k1",
        key=KEY,
        max_message_bytes=SAFETY_MARGIN_BYTES + 1024 if chunked else 4 * MIB,
    )


def search(url: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/search",
        data=json.dumps({"query": "love story", "k": 5}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def readyz(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def start_serve(bootstrap: str, prefix: str, tmp_path: Path) -> Any:
    started: list[ServeProcess] = []

    def start() -> str:
        serve = ServeProcess(
            "--broker",
            bootstrap,
            "--topic-prefix",
            prefix,
            "--partitions",
            "2",
            "--catalog-path",
            str(CATALOG),
            "--strategies",
            "lexical,memory,popular,fresh",
            "--vector-cache-dir",
            str(tmp_path / "cache"),
            log_path=tmp_path / f"serve-{len(started)}.log",
            ready_timeout_s=60,
            env={"LTRR_SNAPSHOT_KEY": KEY.decode()},
        )
        started.append(serve.start())
        return serve.url

    yield start
    for serve in started:
        serve.stop()


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    """Produce in order. Apache Kafka refuses keyless records on compacted topics itself (and
    its client then fails for good), so each keyless record gets a producer of its own and
    may be refused; tansu takes them."""

    def producer() -> KafkaProducer:
        return KafkaProducer(
            bootstrap_servers=bootstrap, max_request_size=4 * MIB, allow_auto_create_topics=False
        )

    keyed = producer()
    for key, value in messages:
        if key is not None:
            keyed.send(topic, key=key, value=value).get(timeout=30)
            continue
        keyed.flush()
        single = producer()
        with contextlib.suppress(InvalidRecordError):
            single.send(topic, key=None, value=value).get(timeout=30)
        single.close()
    keyed.close()


def test_unsigned_junk_on_the_snapshots_topic_blocks_nothing(
    start_serve: Callable[[], str], bootstrap: str, prefix: str
) -> None:
    url = start_serve()
    topic = prefix + "snapshots"
    junk: list[tuple[bytes | None, bytes | None]] = [
        (b"default/" + b"9" * 5000 + b"/0", os.urandom(5000)),  # crashed the consumer
        (None, b"keyless"),
    ]
    # Unsigned 1 MiB chunks at distinct future versions (they used to be buffered, then every
    # valid chunked snapshot was refused as buffer_full / incomplete).
    junk += [(f"default/{v}/0".encode(), os.urandom(MIB)) for v in range(2, 42)]
    produce(bootstrap, topic, junk)
    model = model_bytes()
    produce(bootstrap, topic, list(snapshot(1, model, chunked=True)))
    body = wait_for(
        lambda: search(url)[1], lambda b: b.get("model_version") == 1, 60, "v1 to be served"
    )
    samples = scrape(url)
    assert total(samples, "ltrr_snapshots_rejected_total", reason="malformed") >= 41
    assert total(samples, "ltrr_snapshots_rejected_total", reason="buffer_full") == 0
    assert total(samples, "ltrr_retrieval_consumer_errors_total") == 0
    assert readyz(url)[0] == 200

    # A restarted worker replays the same topic and becomes ready with the newest model.
    produce(bootstrap, topic, list(snapshot(2, model, chunked=True)))
    second = start_serve()
    assert readyz(second)[0] == 200
    wait_for(
        lambda: search(second)[1], lambda b: b.get("model_version") == 2, 60, "v2 after restart"
    )
    assert body["results"] is not None


def test_a_keyless_q2e_record_does_not_break_search(
    start_serve: Callable[[], str], bootstrap: str, prefix: str
) -> None:
    url = start_serve()
    produce(
        bootstrap,
        prefix + "q2e",
        [(None, b"{}"), (b"q2e/love story\x00t1", b"not json"), (b"nonsense", b"1")],
    )
    wait_for(
        lambda: total(scrape(url), "ltrr_q2e_replica_rejected_total"),
        lambda n: n >= 2,
        30,
        "the junk Q2E records to be skipped",
    )
    for _ in range(20):  # every plan, memory included, comes up under uniform exploration
        status, body = search(url)
        assert status == 200, body
    status, ready = readyz(url)
    assert status == 200 and ready["consumers"] is True

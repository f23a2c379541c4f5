"""The retrieval worker on a real broker: search and act reach Kafka as valid contracts; a
signed snapshot is hot-loaded and changes the pmf; a corrupt or unsigned one is refused while
searches keep succeeding; bad requests get 4xx."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from ltrr.agents.learning import DEFAULT_VW_ARGS, learn_lines
from ltrr.processes import ServeProcess
from ltrr.schemas.contracts import Contract
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.exceptions import LtrrError
from ltrr.schemas.records import SearchImpression
from ltrr.schemas.snapshot import encode_snapshot
from ltrr.schemas.validation import check
from ltrr.state.store import MemoryStore
from ltrr.streams.scrape import scrape, total
from tests.integration.loop_helpers import read_topic, wait_for

CATALOG = Path(__file__).parent.parent / "data" / "catalog.jsonl"
KEY = b"serve-test-key"
ROTATED = b"serve-test-key-2"  # a second accepted key, as during a key rotation


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def server(bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[str]:
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
        log_path=tmp_path / "serve.log",
        ready_timeout_s=60,
        env={
            "LTRR_SNAPSHOT_KEY": KEY.decode(),
            "LTRR_SNAPSHOT_KEYS_ACCEPTED": f"k2={ROTATED.decode()}",
        },
    )
    with serve:
        yield serve.url


def publish(
    bootstrap: str, topic: str, version: int, model: bytes, key: bytes, key_id: str = "k1"
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    for k, v in encode_snapshot(
        model="default",
        version=version,
        vw_args=list(DEFAULT_VW_ARGS),
        model_bytes=model,
        examples_learned=100,
        offsets=[],
        created_ms=int(time.time() * 1000),
        key_id=key_id,
        key=key,
        max_message_bytes=4 * 1024 * 1024,
    ):
        producer.send(topic, key=k, value=v).get(timeout=30)
    producer.close()


def test_search_act_hot_load_and_refuse(server: str, bootstrap: str, prefix: str) -> None:
    # The untrained policy explores uniformly, so it may pick a plan whose strategies have
    # nothing for this query yet (memory is empty, the test catalog has no fresh entities):
    # an empty result is then correct. Search until a plan with lexical or popular is chosen.
    for _ in range(40):
        status, body = post(
            f"{server}/search", {"query": "love story", "k": 5, "context": {"device": "mobile"}}
        )
        assert status == 200 and body["model_version"] == 0
        if body["results"]:
            break
        assert set(body["plan"]["budgets"]) <= {"memory", "fresh"}, body["plan"]
    assert 1 <= len(body["results"]) <= 5
    impression_id = body["impression_id"]
    entity = body["results"][0]["entity_id"]
    status, accepted = post(
        f"{server}/actions",
        {
            "action_id": "a-1",
            "impression_id": impression_id,
            "entity_id": entity,
            "type": "click",
            "timestamp_ms": int(time.time() * 1000),
        },
    )
    assert (status, accepted["accepted"]) == (202, True)

    [first] = wait_for(
        lambda: [
            r
            for r in read_topic(bootstrap, prefix + "impressions")
            if r.key == impression_id.encode()
        ],
        lambda found: len(found) == 1,
        30,
        "the impression in Kafka",
    )
    logged = orjson.loads(first.value)
    check(Contract.SEARCH_IMPRESSION, logged)
    assert [r["entity_id"] for r in logged["results"]] == [r["entity_id"] for r in body["results"]]
    uniform = logged["pmf"]
    assert max(uniform) == pytest.approx(min(uniform))
    actions = read_topic(bootstrap, prefix + "actions")
    assert len(actions) == 1
    check(Contract.USER_ACTION, orjson.loads(actions[0].value))

    # Train a model that rewards the lexical-only plan and penalizes every other plan (so no
    # plan ties with it), and publish it signed.
    lines = []
    for chosen, plan in enumerate(logged["plans"]):
        decision = SearchImpression.from_dict({**logged, "chosen": chosen})
        reward = 1.0 if plan["id"] == "lexical" else -1.0
        lines += [orjson.dumps(reward_event(decision, reward))] * 10
    model = learn_lines(lines, MemoryStore(), DEFAULT_VW_ARGS).model_bytes("default")
    publish(bootstrap, prefix + "snapshots", 1, model, KEY)
    body = wait_for(
        lambda: post(f"{server}/search", {"query": "love story"})[1],
        lambda b: b["model_version"] == 1,
        30,
        "the snapshot to be hot-loaded",
    )
    key = body["impression_id"].encode()
    [record] = wait_for(
        lambda: [r for r in read_topic(bootstrap, prefix + "impressions") if r.key == key],
        lambda found: len(found) == 1,
        30,
        "the impression of the hot-loaded model",
    )
    latest = orjson.loads(record.value)
    assert latest["model"]["version"] == 1
    # No longer uniform: the plan the model was taught to prefer takes the most mass (how
    # much depends on the exploration: SquareCB by default, whose spread shrinks as it learns).
    pmf = latest["pmf"]
    favourite = max(range(len(pmf)), key=pmf.__getitem__)
    assert latest["plans"][favourite]["id"] == "lexical", (latest["plans"], pmf)
    assert pmf[favourite] > 2 * max(uniform) and sorted(pmf)[-2] < pmf[favourite]

    # An unsigned (wrong key) and a corrupt snapshot are refused; serving goes on with v1.
    publish(bootstrap, prefix + "snapshots", 2, model, b"not-the-key")
    publish(bootstrap, prefix + "snapshots", 3, b"garbage" * 100, KEY)

    def refusals() -> dict[str, float]:
        samples = scrape(server)
        return {
            reason: total(samples, "ltrr_snapshots_rejected_total", reason=reason)
            for reason in ("bad_signature", "unloadable")
        }

    got = wait_for(
        refusals,
        lambda r: r["bad_signature"] >= 1 and r["unloadable"] >= 1,
        30,
        "both bad snapshots to be refused",
    )
    assert got == {"bad_signature": 1, "unloadable": 1}
    status, body = post(f"{server}/search", {"query": "queen"})
    assert status == 200 and body["model_version"] == 1

    # Key rotation: a snapshot signed with the second accepted key (k2) is loaded.
    publish(bootstrap, prefix + "snapshots", 4, model, ROTATED, key_id="k2")
    wait_for(
        lambda: post(f"{server}/search", {"query": "queen"})[1],
        lambda b: b["model_version"] == 4,
        30,
        "the snapshot signed with the rotated key to be hot-loaded",
    )


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"query": ""}, 400, "invalid_minLength"),
        ({"query": "   "}, 400, "invalid_pattern"),
        ({"query": "x" * 600}, 400, "invalid_maxLength"),
        ({"query": "x", "k": 0}, 400, "invalid_minimum"),
        ({"query": "x", "k": 1000}, 400, "invalid_maximum"),
        ({"query": "x", "colour": 1}, 400, "invalid_additionalProperties"),
        (b"{nope", 400, "not_json"),
        ([1, 2], 400, "not_object"),
        (b"x" * 70_000, 413, "too_large"),
    ],
)
def test_bad_search_requests_get_4xx(server: str, body: Any, status: int, reason: str) -> None:
    got_status, got = post(f"{server}/search", body)
    assert (got_status, got["reason"]) == (status, reason)


def test_bad_actions_get_4xx(server: str) -> None:
    status, body = post(f"{server}/actions", {"action_id": "a", "impression_id": "i"})
    assert (status, body["reason"], body["field"]) == (400, "missing_field", "entity_id")


#: Bearer tokens of the protected server: two accepted at once for search (a rotation).
SEARCH_TOKENS = ("integration-search-old-0123456789", "integration-search-new-0123456789")
ACTIONS_TOKEN = "integration-actions-0123456789"
OPS_TOKEN = "integration-ops-0123456789"


def request(
    url: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_tokens_protect_search_actions_and_metrics(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
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
        "lexical,popular",
        "--vector-cache-dir",
        str(tmp_path / "cache"),
        log_path=tmp_path / "serve.log",
        ready_timeout_s=60,
        env={
            "LTRR_SNAPSHOT_KEY": KEY.decode(),
            "LTRR_SERVE_TOKENS_SEARCH": ",".join(SEARCH_TOKENS),
            "LTRR_SERVE_TOKENS_ACTIONS": ACTIONS_TOKEN,
            "LTRR_SERVE_TOKENS_OPS": OPS_TOKEN,
        },
    )
    with serve:
        url = serve.url
        status, headers, body = request(f"{url}/search", {"query": "queen"})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(body)["reason"] == "missing_token"
        status, _, body = request(f"{url}/search", {"query": "queen"}, "not-a-token-0123456789")
        assert (status, json.loads(body)["reason"]) == (401, "invalid_token")
        impression = ""
        for token in SEARCH_TOKENS:  # either token of the rotation is accepted
            status, _, body = request(f"{url}/search", {"query": "queen"}, token)
            assert status == 200
            impression = json.loads(body)["impression_id"]
        action = {
            "action_id": "a-token",
            "impression_id": impression,
            "entity_id": "artist:queen",
            "type": "click",
            "timestamp_ms": int(time.time() * 1000),
        }
        assert request(f"{url}/actions", action, SEARCH_TOKENS[0])[0] == 401
        assert request(f"{url}/actions", action, ACTIONS_TOKEN)[0] == 202
        assert request(f"{url}/metrics")[0] == 401
        status, _, metrics = request(f"{url}/metrics", token=OPS_TOKEN)
        assert status == 200 and b'ltrr_search_requests_total{route="/search",status="401"}' in (
            metrics
        )
        assert request(f"{url}/healthz")[0] == 200
    log = (tmp_path / "serve.log").read_text("utf-8")
    for token in (*SEARCH_TOKENS, ACTIONS_TOKEN, OPS_TOKEN):
        assert token not in log


def test_serve_refuses_to_start_open_on_a_reachable_address(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    serve = ServeProcess(
        "--broker",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--serve-host",
        "0.0.0.0",
        log_path=tmp_path / "serve.log",
        ready_timeout_s=30,
        env={"LTRR_SNAPSHOT_KEY": KEY.decode(), "LTRR_SERVE_TOKENS_SEARCH": SEARCH_TOKENS[0]},
    )
    with pytest.raises(LtrrError, match="LTRR_SERVE_TOKENS_ACTIONS"):
        serve.start()

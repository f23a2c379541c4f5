"""Q2E memory through a real broker: catalog entities give cold-start predictions at once,
engagement joined from impressions and actions replaces them, and the worker serves both at
/q2e for retrieval workers. A malformed catalog entity is dead-lettered."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from tests.events import action, impression
from tests.integration.loop_helpers import read_topic, wait_for
from tests.integration.processes import metric, wait_until, worker


def q2e(url: str, query: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/q2e?query={query.replace(' ', '+')}&k=5") as resp:
        return json.loads(resp.read())["scores"]


def test_catalog_cold_start_then_observed_engagement(
    bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    entities = [
        {
            "schema_version": 1,
            "id": "artist-ts",
            "type": "artist",
            "title": "Taylor Swift",
            "genres": ["pop"],
            "popularity": 0.9,
        },
        {
            "schema_version": 1,
            "id": "track-love",
            "type": "track",
            "title": "Love Story",
            "artist": "Taylor Swift",
            "genres": ["pop"],
            "popularity": 0.4,
        },
    ]
    with worker(
        bootstrap, prefix, tmp_path / "state", "--reward-window-s", "1", "--join-tick-s", "0.2"
    ) as w:
        for entity in entities:
            producer.send(prefix + "catalog", key=entity["id"].encode(), value=orjson.dumps(entity))
        producer.send(prefix + "catalog", key=b"bad", value=b'{"schema_version": 1, "id": "bad"}')
        producer.flush()
        cold = wait_for(
            lambda: q2e(w.url, "Taylor"), lambda s: len(s) == 2, 30, "cold-start predictions"
        )
        assert {s["source"] for s in cold} == {"predicted"}
        assert cold[0]["entity_id"] == "artist-ts"  # more popular, same token match

        imp = impression(
            "q-1",
            query="tayler love",
            results=[
                {"entity_id": "track-love", "rank": 0, "score": 1.0, "strategies": ["lexical"]}
            ],
        )
        producer.send(prefix + "impressions", key=b"q-1", value=orjson.dumps(imp))
        producer.flush()
        act = action("q-1-a", "q-1", entity_id="track-love", type="like")
        producer.send(prefix + "actions", key=b"q-1", value=orjson.dumps(act))
        producer.flush()
        observed = wait_for(
            lambda: q2e(w.url, "  TAYLER   Love "),
            lambda s: bool(s) and s[0]["source"] == "observed",
            30,
            "observed engagement for the misspelled query",
        )
        assert observed[0]["entity_id"] == "track-love"
        assert observed[0]["score"] > 0

        # The join resends a reward whose "sent" mark a crash lost: an identical copy on the
        # rewards topic. Q2E folds it in once; the score does not move.
        (reward,) = read_topic(bootstrap, prefix + "rewards")
        producer.send(prefix + "rewards", key=reward.key, value=reward.value)
        producer.flush()
        wait_until(
            lambda: metric(w, "ltrr_q2e_records_total", kind="duplicate") == 1,
            30,
            "the copy to be recognised",
        )
        assert metric(w, "ltrr_q2e_records_total", kind="on_time") == 1
        # (decayed by the seconds in between; a second fold-in would add a whole like)
        after = q2e(w.url, "tayler love")[0]["score"]
        assert after == pytest.approx(observed[0]["score"], rel=1e-3)
        letters = [orjson.loads(r.value) for r in read_topic(bootstrap, prefix + "dlq")]
        assert [(x["reason"], x["field"]) for x in letters] == [("missing_field", "type")]
    producer.close()

"""``ltrr eval`` reads the rewards topic and the newest signed snapshot from a real broker, and
gives the same report as the same rewards and model read from files."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from ltrr.agents.learning import DEFAULT_VW_ARGS, learn_lines
from ltrr.cli import main
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression
from ltrr.schemas.snapshot import encode_snapshot
from ltrr.state.store import MemoryStore
from ltrr.streams.admin import create_topics
from ltrr.streams.settings import Settings
from ltrr.streams.topics import Topics
from tests.events import impression

KEY = "eval-test-key"


def _lines(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["exact", "mood"])
        chosen = rng.randrange(5)
        imp = impression(f"imp-{seed}-{i}", chosen=chosen, context={"c": {"kind": kind}})
        good = (kind == "exact") == (chosen == 0)
        out.append(orjson.dumps(reward_event(SearchImpression.from_dict(imp), float(good))))
    return out


def _snapshot(model: bytes, version: int) -> list[tuple[bytes, bytes | None]]:
    return encode_snapshot(
        model="default",
        version=version,
        vw_args=list(DEFAULT_VW_ARGS),
        model_bytes=model,
        examples_learned=100 * version,
        offsets=[],
        created_ms=int(time.time() * 1000),
        key_id="k1",
        key=KEY.encode(),
        max_message_bytes=8 * 1024 * 1024,
    )


def test_eval_from_topic_with_latest_snapshot(
    bootstrap: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = Topics.from_settings(Settings(broker=bootstrap, topic_prefix=prefix))
    create_topics(bootstrap, [topics.rewards, topics.snapshots])
    old = learn_lines(_lines(20, seed=1), MemoryStore(), DEFAULT_VW_ARGS).model_bytes("default")
    new = learn_lines(_lines(300, seed=2), MemoryStore(), DEFAULT_VW_ARGS).model_bytes("default")
    rewards = _lines(120, seed=3)
    late = {**orjson.loads(_lines(1, seed=4)[0]), "_skipLearn": True}
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    for line in [*rewards, rewards[5], orjson.dumps(late), b"not json"]:
        producer.send(topics.rewards.name, key=b"default", value=line)
    # Valid lines under another key or none: the learner refuses them (bad_key), so does eval.
    for key, line in [(b"other", _lines(1, seed=5)[0]), (None, _lines(1, seed=6)[0])]:
        producer.send(topics.rewards.name, key=key, value=line)
    for key, value in [*_snapshot(old, 1), *_snapshot(new, 2)]:
        producer.send(topics.snapshots.name, key=key, value=value)
    producer.flush(timeout=30)
    producer.close()

    monkeypatch.setenv("LTRR_SNAPSHOT_KEY", KEY)
    common = ["--broker", bootstrap, "--topic-prefix", prefix, "--json", "--seed", "3"]
    assert main(["eval", "--from-topic", "--snapshot-topic", *common]) == 0
    from_topic = json.loads(capsys.readouterr().out)
    assert from_topic["n"] == 120
    assert from_topic["skipped"] == {
        "bad_key": 2,
        "duplicate": 1,
        "malformed": 1,
        "skip_learn": 1,
    }
    assert from_topic["malformed"][0]["where"].endswith(" offset 122")  # the 123rd record
    assert from_topic["candidate"].startswith("snapshot default v2 (200 examples")

    # The same rewards and model from files give the same numbers.
    data = tmp_path / "rewards.json"
    data.write_bytes(b"\n".join(rewards) + b"\n")
    model = tmp_path / "model.vw"
    model.write_bytes(new)
    assert main(["eval", "--rewards", str(data), "--model-file", str(model), *common]) == 0
    from_files = json.loads(capsys.readouterr().out)
    for name in ("ips", "snips", "dr"):
        assert from_files["estimates"][name] == pytest.approx(from_topic["estimates"][name])

    # A wrong key: every snapshot is refused, and the command says why.
    monkeypatch.setenv("LTRR_SNAPSHOT_KEY", "wrong")
    assert main(["eval", "--from-topic", "--snapshot-topic", *common]) == 2
    assert "2 bad_signature" in capsys.readouterr().err

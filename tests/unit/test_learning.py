"""The learner equals plain offline Vowpal Wabbit on the same lines, skips late rewards and
duplicates, and resumes from its checkpoint without learning anything twice."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import orjson
import pytest
import vowpal_wabbit_next as vw

from ltrr.agents.learning import (
    DEFAULT_VW_ARGS,
    Guard,
    LearnerError,
    Learners,
    learn_lines,
    workspace,
)
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression
from ltrr.state.store import MemoryStore, RocksStore
from tests.events import impression


def reward_lines(n: int, seed: int = 3, late_every: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        chosen = rng.randrange(5)
        ctx = {"c": {"kind": rng.choice(["exact", "mood", "typo"]), "qlen": rng.randint(1, 5)}}
        imp = SearchImpression.from_dict(impression(f"imp-{seed}-{i}", chosen=chosen, context=ctx))
        good = (ctx["c"]["kind"] == "exact") == (chosen == 0)
        late = bool(late_every) and i % late_every == late_every - 1
        lines.append(orjson.dumps(reward_event(imp, 1.0 if good else 0.0, late=late)))
    return lines


def plain_vw(lines: list[bytes]) -> vw.Workspace:
    """What anyone would write with vowpal-wabbit-next: parse and learn, line by line."""
    ws = vw.Workspace([*DEFAULT_VW_ARGS, "--quiet"])
    parser = vw.DSJsonFormatParser(ws)
    for line in lines:
        ws.learn_one(parser.parse_json(line.decode()))
    return ws


def test_learner_equals_plain_vowpal_wabbit() -> None:
    lines = reward_lines(300)
    learners = learn_lines(lines, MemoryStore(), DEFAULT_VW_ARGS)
    assert learners.examples("default") == 300
    # Byte-identical model files, not merely close weights.
    assert learners.model_bytes("default") == bytes(plain_vw(lines).serialize())
    assert workspace(DEFAULT_VW_ARGS, learners.model_bytes("default")).weights().any()


def test_learner_equals_the_vw_command_line(tmp_path: Path) -> None:
    lines = reward_lines(200, late_every=7)
    data = tmp_path / "rewards.json"
    data.write_bytes(b"\n".join(lines) + b"\n")
    model = tmp_path / "cli.vw"
    vw.run_cli_driver(["--dsjson", *DEFAULT_VW_ARGS, "--quiet", "-d", str(data), "-f", str(model)])
    learners = learn_lines(lines, MemoryStore(), DEFAULT_VW_ARGS)
    cli = workspace(DEFAULT_VW_ARGS, model.read_bytes())
    ours = workspace(DEFAULT_VW_ARGS, learners.model_bytes("default"))
    assert np.allclose(ours.weights(), cli.weights(), rtol=0, atol=1e-6)


def test_late_and_duplicate_rewards_are_not_learned() -> None:
    lines = reward_lines(50, late_every=5)
    learners = Learners(MemoryStore())
    verdicts = [learners.learn(line).kind for line in [*lines, lines[0], lines[3]]]
    assert verdicts.count("late") == 10
    assert verdicts.count("learned") == 40
    assert verdicts[-2:] == ["duplicate", "duplicate"]
    expected = plain_vw([line for line in lines if b'"_skipLearn"' not in line])
    assert learners.model_bytes("default") == bytes(expected.serialize())


def test_invalid_rewards_are_refused_not_learned() -> None:
    learners = Learners(MemoryStore())
    assert learners.learn(b"not json").kind == "invalid"
    assert learners.learn(b"[1]").kind == "invalid"
    broken = orjson.loads(reward_lines(1)[0])
    broken["_label_probability"] = 0
    verdict = learners.learn(orjson.dumps(broken))
    assert verdict.kind == "invalid" and "_label_probability" in verdict.detail
    assert learners.models == {}


def _poisoned(**changes: object) -> bytes:
    event = orjson.loads(reward_lines(1, seed=11)[0])
    for path, value in changes.items():
        target = event
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return orjson.dumps(event)


POISONED = [
    (b"\x00\xff random bytes", "not_json", None),
    (b'"a string"', "not_object", None),
    (_poisoned(ltrr=None), "wrong_type", "ltrr"),
    (_poisoned(_label_probability=1e-30), "invalid_value", "_label_probability"),
    (_poisoned(_label_probability=1.5), "invalid_value", "_label_probability"),
    (_poisoned(_label_cost=1e308), "invalid_value", "_label_cost"),
    (_poisoned(_labelIndex=99), "invalid_value", "_labelIndex"),
    (_poisoned(ltrr__model="intruder"), "unknown_model", "ltrr.model"),
    (_poisoned(ltrr__model=""), "invalid_value", "ltrr.model"),
    (_poisoned(_labelIndex=True), "wrong_type", "_labelIndex"),
    (_poisoned(_label_cost="-1"), "wrong_type", "_label_cost"),
    (_poisoned(EventId=7), "wrong_type", "EventId"),
    (_poisoned(a=None), "wrong_type", "a"),
    (_poisoned(c___multi=None), "invalid_value", "_labelIndex"),
    (_poisoned(c=[]), "wrong_type", "c"),
    (_poisoned(ltrr__model="m" * 129), "invalid_value", "ltrr.model"),
]


@pytest.mark.parametrize(("line", "reason", "field"), POISONED)
def test_poisoned_reward_lines_are_refused_with_their_true_reason(
    line: bytes, reason: str, field: str | None
) -> None:
    learners = Learners(MemoryStore(), guard=Guard(models=frozenset({"default"})))
    verdict = learners.learn(line, 0, 0)
    assert (verdict.kind, verdict.reason, verdict.field) == ("invalid", reason, field)
    assert learners.models == {}
    assert learners.position(0) == 1  # refused, but covered: not retried forever


@pytest.mark.parametrize(("line", "reason", "field"), POISONED)
def test_poisoned_lines_are_refused_for_a_model_already_learned(
    line: bytes, reason: str, field: str | None
) -> None:
    """The quick acceptance path for known models lets none of them through."""
    learners = Learners(MemoryStore(), guard=Guard(models=frozenset({"default"})))
    assert learners.learn(reward_lines(1, seed=12)[0], 0, 0).kind == "learned"
    verdict = learners.learn(line, 0, 1)
    assert (verdict.kind, verdict.reason, verdict.field) == ("invalid", reason, field)
    assert learners.examples("default") == 1


def test_a_reward_under_another_kafka_key_is_refused_not_learned() -> None:
    """Rewards are keyed by model, so one worker learns each model; a line under another key
    (or none) lands where a second worker may learn it, forking the model: refused, and still
    covered (not retried forever)."""
    learners = Learners(MemoryStore(), guard=Guard(models=frozenset({"default"})))
    line = reward_lines(1, seed=14)[0]
    for offset, key in enumerate([None, b"", b"other", b"default "]):
        verdict = learners.learn(line, 0, offset, key)
        assert (verdict.kind, verdict.reason, verdict.field) == ("invalid", "bad_key", "ltrr.model")
        assert "keyed by model" in verdict.detail
        assert learners.problem(line, key) == "bad_key"
    assert learners.models == {} and learners.position(0) == 4
    assert learners.problem(line, b"default") is None
    assert learners.learn(line, 0, 4, b"default").kind == "learned"
    # A line read from a file (ltrr learn-offline) has no Kafka key to check.
    assert learners.learn(reward_lines(1, seed=15)[0]).kind == "learned"
    assert learners.examples("default") == 2


def test_distinct_models_are_bounded_without_an_allow_list() -> None:
    learners = Learners(MemoryStore(), guard=Guard(max_models=3))
    verdicts = [learners.learn(_poisoned(ltrr__model=f"m{i}")).reason for i in range(10)]
    assert verdicts == [""] * 3 + ["unknown_model"] * 7
    assert sorted(learners.models) == ["m0", "m1", "m2"]
    assert learners.learn(_poisoned(ltrr__model="m1", EventId="again")).kind == "learned"


def test_a_recreated_log_is_learned_from_its_new_start() -> None:
    learners = Learners(MemoryStore())
    lines = reward_lines(6, seed=5)
    for offset, line in enumerate(lines[:4]):
        assert learners.learn(line, 0, offset).kind == "learned"
    assert learners.learn(lines[4], 0, 0).kind == "replayed"  # before anyone notices
    learners.reset_position(0, 0)
    assert learners.learn(lines[4], 0, 0).kind == "learned"
    assert learners.learn(lines[5], 0, 1).kind == "learned"
    assert learners.position(0) == 2


def test_resume_from_checkpoint_skips_covered_offsets(tmp_path: Path) -> None:
    lines = reward_lines(120)
    first = Learners(RocksStore(tmp_path / "learner"))
    for offset, line in enumerate(lines[:80]):
        first.learn(line, partition=0, offset=offset)
        if offset == 59:
            first.checkpoint()
    # Crash: the 20 examples after the checkpoint were never persisted.
    first.store.close()
    again = Learners(RocksStore(tmp_path / "learner"))
    assert again.position(0) == 60
    verdicts = [again.learn(line, 0, offset).kind for offset, line in enumerate(lines)]
    assert verdicts[:60] == ["replayed"] * 60
    assert verdicts[60:] == ["learned"] * 60
    assert again.model_bytes("default") == bytes(plain_vw(lines).serialize())
    # A resent reward (same EventId, new offset) is still a duplicate after the restart.
    assert again.learn(lines[10], 0, 500).kind == "duplicate"


def test_dedup_window_is_bounded(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "learner")
    learners = Learners(store, dedup_window=10)
    for line in reward_lines(25):
        learners.learn(line)
    learners.checkpoint()
    assert len(learners.models["default"].seen) == 10
    assert sum(1 for _ in store.scan(b"seen/")) == 10


def test_bad_vw_arguments_say_so() -> None:
    with pytest.raises(LearnerError, match="refused"):
        Learners(MemoryStore(), ["--cb_explore_adf", "--no_such_flag"])


def test_learned_policy_prefers_the_rewarded_plan() -> None:
    learners = learn_lines(reward_lines(600), MemoryStore(), DEFAULT_VW_ARGS)
    assert learners.average_loss("default") < 0
    ws = workspace(DEFAULT_VW_ARGS, learners.model_bytes("default"))
    probe = orjson.loads(reward_lines(1, seed=99)[0])
    probe["c"]["c"] = {"kind": "exact", "qlen": 2}
    pmf = dict(ws.predict_one(vw.DSJsonFormatParser(ws).parse_json(orjson.dumps(probe).decode())))
    assert max(pmf, key=pmf.get) == 0

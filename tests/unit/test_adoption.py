"""Adopting snapshots published elsewhere: a takeover continues the model and its versions,
a rollback replaces the weights without moving offsets back, a learner's own snapshots and
older ones are ignored, an unloadable model changes nothing."""

from __future__ import annotations

import hashlib

from ltrr.agents.adoption import Adopter
from ltrr.agents.learning import DEFAULT_VW_ARGS, Learners, workspace
from ltrr.agents.snapshots import SnapshotPolicy, SnapshotPublisher
from ltrr.schemas.snapshot import Loaded, encode_snapshot
from ltrr.schemas.snapshot import SnapshotAssembler as Assembler
from ltrr.state.store import MemoryStore
from tests.unit.test_learning import reward_lines

TOPIC = "ltrr.rewards"
POLICY = SnapshotPolicy(key=b"ltrr-test-key")
KEYS = {POLICY.key_id: POLICY.key}


def learner() -> tuple[Learners, SnapshotPublisher, Adopter]:
    learners = Learners(MemoryStore(), DEFAULT_VW_ARGS)
    publisher = SnapshotPublisher(learners, POLICY, TOPIC)
    return learners, publisher, Adopter(learners, publisher)


def learn(learners: Learners, lines: list[bytes], first_offset: int) -> None:
    for i, line in enumerate(lines):
        assert learners.learn(line, 0, first_offset + i).kind == "learned"


def published(publisher: SnapshotPublisher, model: str = "default") -> Loaded:
    """What a follower of the topic gets from the publisher's next snapshot."""
    _, messages, _ = publisher.encode(model, 1_700_000_000_000)
    return assemble(messages)


def assemble(messages: list[tuple[bytes, bytes | None]]) -> Loaded:
    assembler = Assembler(KEYS)
    results = [assembler.feed(k, v) for k, v in messages]
    [loaded] = [r for r in results if isinstance(r, Loaded)]
    return loaded


def operator_snapshot(version: int, model_bytes: bytes, examples: int = 0) -> Loaded:
    """A snapshot as ``ltrr model publish`` writes it: no offsets claimed."""
    return assemble(
        encode_snapshot(
            model="default",
            version=version,
            vw_args=list(DEFAULT_VW_ARGS),
            model_bytes=model_bytes,
            examples_learned=examples,
            offsets=[],
            created_ms=1_700_000_000_000,
            key_id=POLICY.key_id,
            key=POLICY.key,
            max_message_bytes=POLICY.max_message_bytes,
        )
    )


def test_takeover_continues_the_model_and_its_versions() -> None:
    lines = reward_lines(300)
    old_owner, old_publisher, _ = learner()
    learn(old_owner, lines[:200], 0)
    old_owner.checkpoint()
    snapshot = published(old_publisher)
    assert snapshot.header["version"] == 1

    new_owner, new_publisher, adopter = learner()
    assert adopter.offer(snapshot.header, snapshot.model_bytes) == "pending"
    # The group re-delivers from an older committed offset: covered rewards are skipped.
    assert new_owner.learn(lines[150], 0, 150).kind == "replayed"
    assert new_owner.position(0) == 200 and new_owner.examples("default") == 200
    learn(new_owner, lines[200:], 200)
    learn(old_owner, lines[200:], 200)
    # The same model as if the old owner had gone on, and the next version is newer.
    assert new_owner.model_bytes("default") == old_owner.model_bytes("default")
    assert published(new_publisher).header["version"] == 2


def test_own_and_older_snapshots_are_not_adopted() -> None:
    learners, publisher, adopter = learner()
    learn(learners, reward_lines(50), 0)
    first = published(publisher)
    learn(learners, reward_lines(50, seed=4), 50)
    second = published(publisher)
    assert adopter.offer(first.header, first.model_bytes) == "older"
    assert adopter.offer(second.header, second.model_bytes) == "own"
    assert adopter.pending == {}


def test_rollback_replaces_the_weights_and_keeps_the_offsets() -> None:
    learners, publisher, adopter = learner()
    learn(learners, reward_lines(100), 0)
    good = learners.model_bytes("default")
    published(publisher)
    learn(learners, reward_lines(100, seed=5), 100)
    published(publisher)
    assert learners.model_bytes("default") != good

    rollback = operator_snapshot(3, good, examples=100)
    assert adopter.offer(rollback.header, rollback.model_bytes) == "pending"
    offer = adopter.adopt("default")
    assert offer is not None and offer.version == 3
    assert learners.model_bytes("default") == good
    assert learners.position(0) == 200  # rewards already consumed are not relearned
    assert publisher.state("default")["version"] == 3
    assert published(publisher).header["version"] == 4
    # Survives a restart: the store holds the adopted model and counter.
    again = Learners(learners.store, DEFAULT_VW_ARGS)
    assert again.model_bytes("default") == learners.model_bytes("default")


def test_reset_to_an_untrained_model_on_the_same_version_as_the_learner() -> None:
    learners, publisher, adopter = learner()
    learn(learners, reward_lines(60), 0)
    mine = published(publisher)  # v1
    fresh = bytes(workspace(DEFAULT_VW_ARGS).serialize())
    # The operator published v1 too (a race): different bytes, so it is not ours.
    reset = operator_snapshot(mine.header["version"], fresh)
    assert adopter.offer(reset.header, reset.model_bytes) == "pending"
    assert adopter.adopt("default") is not None
    assert learners.examples("default") == 0
    assert publisher.state("default")["sha256"] == hashlib.sha256(fresh).hexdigest()
    assert adopter.offer(reset.header, reset.model_bytes) == "own"  # seen again on restart
    assert published(publisher).header["version"] == 2


def test_an_unloadable_model_changes_nothing() -> None:
    learners, publisher, adopter = learner()
    learn(learners, reward_lines(40), 0)
    published(publisher)
    before = learners.model_bytes("default")
    broken = operator_snapshot(5, b"not a vowpal wabbit model" * 10)
    assert adopter.offer(broken.header, broken.model_bytes) == "pending"
    assert adopter.adopt("default") is None
    assert learners.model_bytes("default") == before
    assert publisher.state("default")["version"] == 1
    # Learning goes on with the learner's own model.
    assert learners.learn(reward_lines(1, seed=9)[0], 0, 40).kind == "learned"

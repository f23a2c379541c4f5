"""The retrieval worker's snapshot loader: a verified snapshot is deserialized off the event
loop (searches keep being answered by the current model meanwhile) and swapped in on it; an
older version or an unloadable model changes nothing and is counted."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from ltrr.agents.learning import DEFAULT_VW_ARGS, Learners
from ltrr.agents.snapshots import SnapshotPolicy
from ltrr.retrieval import metrics as m
from ltrr.retrieval import replica
from ltrr.retrieval.policy import Policy
from ltrr.retrieval.replica import SnapshotLoader
from ltrr.schemas.snapshot import encode_snapshot
from ltrr.state.store import MemoryStore
from tests.unit.test_learning import reward_lines

POLICY = SnapshotPolicy(key=b"ltrr-test-key")


def records(
    version: int, model_bytes: bytes, vw_args: list[str] | None = None, epoch: int = 0
) -> list[Any]:
    messages = encode_snapshot(
        model="default",
        version=version,
        epoch=epoch,
        vw_args=list(DEFAULT_VW_ARGS) if vw_args is None else vw_args,
        model_bytes=model_bytes,
        examples_learned=0,
        offsets=[],
        created_ms=1_700_000_000_000 + version,
        key_id=POLICY.key_id,
        key=POLICY.key,
        max_message_bytes=POLICY.max_message_bytes,
    )
    return [SimpleNamespace(key=k, value=v) for k, v in messages]


def rejected(reason: str) -> float:
    return m.SNAPSHOTS_REJECTED.labels(reason)._value.get()


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    learners = Learners(MemoryStore(), DEFAULT_VW_ARGS)
    for i, line in enumerate(reward_lines(300)):
        learners.learn(line, 0, i)
    return learners.model_bytes("default")


async def test_loads_off_the_event_loop_then_swaps(
    model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    load_threads: list[int] = []
    real_load = replica.load_model

    def spy(*args: Any) -> Any:
        load_threads.append(threading.get_ident())
        return real_load(*args)

    monkeypatch.setattr(replica, "load_model", spy)
    policy = Policy()
    loader = SnapshotLoader(policy, {POLICY.key_id: POLICY.key}, "default")
    await loader.handle(records(3, model_bytes))
    assert policy.model is not None and policy.model.version == 3
    assert load_threads and all(t != loop_thread for t in load_threads)

    stale_before = rejected("stale_version")
    await loader.handle(records(2, model_bytes))
    assert policy.model.version == 3 and rejected("stale_version") == stale_before + 1


async def test_an_unloadable_model_keeps_the_current_one(model_bytes: bytes) -> None:
    policy = Policy()
    loader = SnapshotLoader(policy, {POLICY.key_id: POLICY.key}, "default")
    await loader.handle(records(5, model_bytes))
    before = rejected("unloadable")
    await loader.handle(records(6, b"not a vw model" * 50))
    assert policy.model is not None and policy.model.version == 5
    assert rejected("unloadable") == before + 1


async def test_searches_are_answered_while_a_model_loads(model_bytes: bytes) -> None:
    """The loop is free during deserialization: a concurrent task runs to completion."""
    loader = SnapshotLoader(Policy(), {POLICY.key_id: POLICY.key}, "default")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await loader.handle(records(7, model_bytes))
    task.cancel()
    assert ticks > 0


PROBE = (
    {"c": {"tokens": 2.0}, "s": {"lexical_count": 0.0}},
    [{"p": {"lexical": 1.0}}, {"p": {"semantic": 1.0}}, {"p": {"memory": 1.0}}],
)


def loader_with_probe() -> tuple[Policy, SnapshotLoader]:
    policy = Policy()
    return policy, SnapshotLoader(policy, {POLICY.key_id: POLICY.key}, "default", probe=PROBE)


async def test_a_version_that_fails_to_load_is_not_consumed(model_bytes: bytes) -> None:
    """An unloadable v100 used to consume its version, so a valid v50 was refused as stale."""
    policy, loader = loader_with_probe()
    await loader.handle(records(100, b"not a vw model" * 50))
    assert policy.model is None
    await loader.handle(records(50, model_bytes))
    assert policy.model is not None and policy.model.version == 50


async def test_vw_args_that_write_files_are_refused_and_nothing_is_written(
    model_bytes: bytes, tmp_path: Any
) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    policy, loader = loader_with_probe()
    before = rejected("unloadable")
    for args in (["-p", str(victim)], ["--readable_model", str(victim)], ["-f", str(victim)]):
        await loader.handle(records(1, model_bytes, [*DEFAULT_VW_ARGS, *args]))
    assert policy.model is None and rejected("unloadable") == before + 3
    assert victim.read_text() == "keep me"


async def test_a_regression_model_is_refused(model_bytes: bytes) -> None:
    """A VW regression model (vw_args=[]) used to load, then every /search was a 500."""
    import vowpal_wabbit_next as vw

    regression = vw.Workspace(["--quiet"]).serialize()
    policy, loader = loader_with_probe()
    await loader.handle(records(1, regression, []))
    await loader.handle(records(2, regression, ["--cb_explore_adf"]))
    assert policy.model is None
    await loader.handle(records(3, model_bytes))
    assert policy.model is not None and policy.model.version == 3


async def test_a_truncated_model_is_refused(model_bytes: bytes) -> None:
    """VW loads the first half of a model with fewer weights; serialized again it is shorter."""
    policy, loader = loader_with_probe()
    await loader.handle(records(1, model_bytes[: len(model_bytes) // 2]))
    await loader.handle(records(2, model_bytes[: len(model_bytes) - 100]))
    assert policy.model is None
    await loader.handle(records(3, model_bytes))
    assert policy.model is not None and policy.model.version == 3


async def test_the_loaded_model_scores_the_probe(model_bytes: bytes) -> None:
    policy, loader = loader_with_probe()
    await loader.handle(records(1, model_bytes))
    assert policy.model is not None
    pmf, version = policy.pmf(*PROBE)
    assert version == 1 and len(pmf) == 3 and abs(sum(pmf) - 1) < 1e-6


async def test_an_operator_epoch_supersedes_a_version_nothing_could_follow(
    model_bytes: bytes,
) -> None:
    policy, loader = loader_with_probe()
    await loader.handle(records(2**53 - 1, model_bytes))
    await loader.handle(records(5, model_bytes))
    assert policy.model is not None and policy.model.version == 2**53 - 1
    await loader.handle(records(1, model_bytes, epoch=1))
    assert policy.model.version == 1 and loader.serving == (1, 1)

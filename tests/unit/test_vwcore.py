"""The direct core path learns exactly what vowpal-wabbit-next's public wrappers learn."""

from __future__ import annotations

import vowpal_wabbit_next as vw

from ltrr.agents.learning import DEFAULT_VW_ARGS, workspace
from ltrr.agents.vwcore import DSJsonLearner
from tests.unit.test_learning import plain_vw, reward_lines


def learn(lines: list[bytes], fast: bool) -> tuple[vw.Workspace, list[list[tuple[int, float]]]]:
    ws = workspace(DEFAULT_VW_ARGS)
    learner = DSJsonLearner(ws)
    learner._fast = fast and learner._fast
    pmfs = [list(learner.predict_then_learn(learner.parse(line.decode()))) for line in lines]
    return ws, pmfs


def test_core_path_is_byte_identical_to_the_public_path() -> None:
    lines = reward_lines(200)
    fast, fast_pmfs = learn(lines, fast=True)
    public, public_pmfs = learn(lines, fast=False)
    assert DSJsonLearner(fast)._fast  # the pinned vowpal-wabbit-next has the core calls
    assert bytes(fast.serialize()) == bytes(public.serialize())
    assert bytes(fast.serialize()) == bytes(plain_vw(lines).serialize())
    assert [sorted(p) for p in fast_pmfs] == [sorted(p) for p in public_pmfs]

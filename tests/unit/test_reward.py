from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ltrr.agents.reward import RewardConfig, RewardConfigError, compute_reward
from ltrr.schemas.records import UserAction


def act(kind: str, ts: int = 0, value: float | None = None) -> UserAction:
    return UserAction(f"a-{kind}-{ts}", "imp", "e", kind, ts, value)


def test_no_action_gives_the_default() -> None:
    outcome = compute_reward([], RewardConfig(default_reward=-0.1))
    assert (outcome.reward, outcome.default) == (-0.1, True)


def test_max_takes_the_best_action() -> None:
    outcome = compute_reward([act("click"), act("play", value=200), act("skip")], RewardConfig())
    assert (outcome.reward, outcome.default) == (1.0, False)


def test_short_play_is_worth_nothing_unless_threshold_disabled() -> None:
    short = [act("play", value=5)]
    assert compute_reward(short, RewardConfig()).reward == 0.0
    assert compute_reward(short, RewardConfig(play_min_seconds=None)).reward == 1.0


def test_sum_is_clipped() -> None:
    cfg = RewardConfig(aggregation="sum", clip_max=1.2)
    assert compute_reward([act("click"), act("click", 1)], cfg).reward == 1.0
    assert compute_reward([act("click"), act("like", 1)], cfg).reward == 1.2
    assert compute_reward([act("skip")] * 10, cfg).reward == -1.0


def test_earliest_uses_the_first_action_by_time() -> None:
    cfg = RewardConfig(aggregation="earliest")
    assert compute_reward([act("like", 50), act("skip", 10)], cfg).reward == -0.2


def test_unknown_action_type_is_worth_zero() -> None:
    assert compute_reward([act("download")], RewardConfig()).reward == 0.0


def test_weights_parse_and_errors() -> None:
    weights = RewardConfig.parse_weights("click=0.25, download=2")
    assert weights["click"] == 0.25 and weights["download"] == 2.0 and weights["play"] == 1.0
    with pytest.raises(RewardConfigError, match="TYPE=NUMBER"):
        RewardConfig.parse_weights("click")
    with pytest.raises(RewardConfigError, match="aggregation"):
        RewardConfig(aggregation="mean")  # type: ignore[arg-type]


kinds = st.sampled_from(["click", "play", "like", "skip", "purchase", "other"])


@given(st.lists(st.tuples(kinds, st.integers(0, 100), st.floats(0, 500)), max_size=8))
def test_rewards_stay_within_the_weights(items: list[tuple[str, int, float]]) -> None:
    actions = [act(k, ts, v) for k, ts, v in items]
    for aggregation in ("max", "sum", "earliest"):
        cfg = RewardConfig(aggregation=aggregation)  # type: ignore[arg-type]
        outcome = compute_reward(actions, cfg)
        assert -1.0 <= outcome.reward <= 1.0
        assert outcome.default == (not actions)
        # The order actions arrive in never changes max or sum.
        if aggregation != "earliest":
            assert compute_reward(actions[::-1], cfg).reward == pytest.approx(outcome.reward)

"""The reward function: what a set of user actions on one impression is worth (pure).

Each action type has a weight; ``play`` counts only when it lasted at least
``play_min_seconds`` (its ``value``); the weights of an impression's actions are aggregated by
``max`` (the best thing the user did), ``sum`` (clipped to ``[clip_min, clip_max]``) or
``earliest`` (the first action decides). With no action at all the ``default_reward`` applies.
Vowpal Wabbit learns cost = -reward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ltrr.schemas.exceptions import LtrrError
from ltrr.schemas.records import UserAction

Aggregation = Literal["max", "sum", "earliest"]

DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "click": 0.5,
        "play": 1.0,
        "like": 1.0,
        "add_to_favorites": 1.0,
        "add_to_playlist": 1.0,
        "share": 1.0,
        "purchase": 1.0,
        "skip": -0.2,
    }
)


class RewardConfigError(LtrrError):
    """The reward configuration is malformed; the message names the setting."""


@dataclass(frozen=True, slots=True)
class RewardConfig:
    """How actions become a reward. Action types without a weight are worth 0."""

    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    aggregation: Aggregation = "max"
    default_reward: float = 0.0
    play_min_seconds: float | None = 30.0
    clip_min: float = -1.0
    clip_max: float = 1.0

    def __post_init__(self) -> None:
        if self.aggregation not in ("max", "sum", "earliest"):
            raise RewardConfigError(
                f"reward aggregation must be max, sum or earliest, got {self.aggregation!r}"
            )
        if self.clip_min > self.clip_max:
            raise RewardConfigError("reward clip_min must not exceed clip_max")

    def reward_range(self) -> tuple[float, float]:
        """The lowest and highest reward this configuration can produce."""
        values = [*self.weights.values(), 0.0, self.default_reward]  # unweighted types: 0
        if self.aggregation == "sum":
            values += [self.clip_min, self.clip_max]
        return min(values), max(values)

    @staticmethod
    def parse_weights(spec: str) -> Mapping[str, float]:
        """``"click=0.5,play=1"`` -> weights; the defaults are kept for types not named."""
        weights = dict(DEFAULT_WEIGHTS)
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError(part)
                weights[name.strip()] = float(value)
            except ValueError as exc:
                raise RewardConfigError(
                    f"reward weight {part!r} is not TYPE=NUMBER (e.g. click=0.5,play=1)"
                ) from exc
        return MappingProxyType(weights)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A computed reward: its value, and whether the default was used for lack of actions."""

    reward: float
    default: bool


def action_weight(action: UserAction, config: RewardConfig) -> float:
    """One action's worth; a play shorter than the threshold is worth nothing."""
    if (
        action.type == "play"
        and config.play_min_seconds is not None
        and (action.value or 0.0) < config.play_min_seconds
    ):
        return 0.0
    return float(config.weights.get(action.type, 0.0))


def compute_reward(actions: Sequence[UserAction], config: RewardConfig) -> Outcome:
    """Aggregate the (deduplicated) actions of one impression into its reward."""
    if not actions:
        return Outcome(config.default_reward, default=True)
    if config.aggregation == "earliest":
        first = min(enumerate(actions), key=lambda ia: (ia[1].timestamp_ms, ia[0]))[1]
        return Outcome(action_weight(first, config), default=False)
    weights = [action_weight(a, config) for a in actions]
    if config.aggregation == "max":
        return Outcome(max(weights), default=False)
    return Outcome(min(config.clip_max, max(config.clip_min, sum(weights))), default=False)

"""A position-biased click model: what a simulated user does with a ranked list (pure).

Position-based model (PBM). The user examines rank ``r`` (0-based) with probability

    examine(r) = 1 / (r + 1) ** eta

and clicks an examined result with probability ``attract_relevant * grade`` when it is
relevant (grade in (0, 1]) and ``attract_noise`` otherwise. After a click on a relevant result
the user plays it for long (``play`` of ``long_play_s`` seconds, above the reward's play
threshold) with probability ``long_play``, and then adds it to favourites with probability
``favorite``; otherwise plays it briefly and skips. A click on an irrelevant result is a brief
play and a skip with probability ``noise_skip``. Ranks are independent.

``expected_reward`` is the exact expectation of ltrr's reward function (agents/reward.py) over
this model, for each aggregation (max, clipped sum, earliest). The simulator scores every
policy and baseline by it, so comparisons carry no click noise; the learned policy's shown
results also get sampled actions (``sample``) that go to ``/actions`` and drive learning.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ltrr.agents.reward import RewardConfig, action_weight
from ltrr.schemas.records import UserAction

#: One rank's possible outcomes: (probability, action types with values).
Outcome = tuple[float, tuple[tuple[str, float | None], ...]]


@dataclass(frozen=True, slots=True)
class ClickModel:
    eta: float = 1.0
    attract_relevant: float = 0.9
    attract_noise: float = 0.03
    long_play: float = 0.8
    favorite: float = 0.1
    noise_skip: float = 0.9
    long_play_s: float = 120.0
    short_play_s: float = 8.0

    def examine(self, rank: int) -> float:
        return 1.0 / (rank + 1) ** self.eta

    def outcomes(self, rank: int, grade: float) -> list[Outcome]:
        """The possible action sets at ``rank`` for a result of ``grade`` (0 = irrelevant),
        with their probabilities (the no-action case is left implicit)."""
        short = (("click", None), ("play", self.short_play_s), ("skip", None))
        if grade > 0:
            click = self.examine(rank) * self.attract_relevant * min(grade, 1.0)
            long = (("click", None), ("play", self.long_play_s))
            return [
                (click * self.long_play * (1 - self.favorite), long),
                (click * self.long_play * self.favorite, (*long, ("add_to_favorites", None))),
                (click * (1 - self.long_play), short),
            ]
        click = self.examine(rank) * self.attract_noise
        return [(click * self.noise_skip, short), (click * (1 - self.noise_skip), short[:1])]

    def expected_reward(
        self, ranked: Sequence[str], relevant: Mapping[str, float], config: RewardConfig
    ) -> float:
        """E[reward] of showing ``ranked`` to a user who wants ``relevant``: exact, by dynamic
        programming over ranks on the distribution of the aggregate so far (``None`` until
        the first action), for every aggregation of ``config``."""
        dist: dict[float | None, float] = {None: 1.0}
        for rank, entity_id in enumerate(ranked):
            outs = [
                (p, [action_weight(UserAction("a", "i", "e", t, 0, v), config) for t, v in acts])
                for p, acts in self.outcomes(rank, relevant.get(entity_id, 0.0))
            ]
            quiet = 1.0 - sum(p for p, _ in outs)
            step: dict[float | None, float] = {}
            for state, prob in dist.items():
                step[state] = step.get(state, 0.0) + prob * quiet
                for p, weights in outs:
                    nxt = round(_combine(state, weights, config.aggregation), 9)
                    step[nxt] = step.get(nxt, 0.0) + prob * p
            dist = step
        expected = 0.0
        for state, prob in dist.items():
            if state is None:
                expected += prob * config.default_reward
            elif config.aggregation == "sum":
                expected += prob * min(config.clip_max, max(config.clip_min, state))
            else:
                expected += prob * state
        return expected

    def sample(
        self, ranked: Sequence[str], relevant: Mapping[str, float], rng: random.Random
    ) -> list[tuple[str, str, float | None]]:
        """One user's actions on ``ranked``: (entity id, action type, value), in rank order."""
        out: list[tuple[str, str, float | None]] = []
        for rank, entity_id in enumerate(ranked):
            draw = rng.random()
            for prob, actions in self.outcomes(rank, relevant.get(entity_id, 0.0)):
                if draw < prob:
                    out.extend((entity_id, kind, value) for kind, value in actions)
                    break
                draw -= prob
        return out


def _combine(state: float | None, weights: Sequence[float], aggregation: str) -> float:
    """The aggregate after one more rank's actions (in the order they happen)."""
    if aggregation == "max":
        return max(weights) if state is None else max(state, *weights)
    if aggregation == "sum":
        return (state or 0.0) + sum(weights)
    return weights[0] if state is None else state  # earliest: the first action decides

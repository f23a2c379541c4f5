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
this model for the ``max`` aggregation (independent ranks: the distribution of a maximum is a
product of CDFs), and a seeded Monte-Carlo mean for the others. The simulator scores every
policy and baseline by it, so comparisons carry no click noise; the learned policy's shown
results also get sampled actions (``sample``) that go to ``/actions`` and drive learning.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agents.reward import RewardConfig, action_weight, compute_reward
from schemas.records import UserAction

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
        """E[reward] of showing ``ranked`` to a user who wants ``relevant``."""
        per_rank = [self.outcomes(r, relevant.get(e, 0.0)) for r, e in enumerate(ranked)]
        if config.aggregation != "max":
            return self._monte_carlo(ranked, relevant, config)
        weighted = [[(p, _best(acts, config)) for p, acts in outs] for outs in per_rank]
        nothing = 1.0
        for outs in weighted:
            nothing *= 1.0 - sum(p for p, _ in outs)
        levels = sorted({w for outs in weighted for _, w in outs})
        expected, below = nothing * config.default_reward, 0.0
        for level in levels:
            cdf = 1.0
            for outs in weighted:
                cdf *= 1.0 - sum(p for p, w in outs if w > level)
            at_most = cdf - nothing  # some action, and the best is <= level
            expected += level * (at_most - below)
            below = at_most
        return expected

    def _monte_carlo(
        self, ranked: Sequence[str], relevant: Mapping[str, float], config: RewardConfig
    ) -> float:
        rng = random.Random(zlib.crc32("\0".join([*ranked, "|", *sorted(relevant)]).encode()))
        draws = 400
        total = 0.0
        for _ in range(draws):
            actions = [
                UserAction("a", "i", e, t, 0, v) for e, t, v in self.sample(ranked, relevant, rng)
            ]
            total += compute_reward(actions, config).reward
        return total / draws

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


def _best(actions: Sequence[tuple[str, float | None]], config: RewardConfig) -> float:
    return max(action_weight(UserAction("a", "i", "e", t, 0, v), config) for t, v in actions)

"""The learning loop in one process, for cheap experiments: ``LocalBackend`` answers the
simulator's searches with a ``LocalStack`` (the same strategies, plans, policy and ranking as
``ltrr serve``), turns each impression and its actions into the Reward v1 line the worker would
join (``schemas/dsjson.py``), learns it with the worker's ``Learners`` (real Vowpal Wabbit),
records the engagement in Q2E memory as the worker's memory agent does, and swaps in a new model
every ``snapshot_every`` examples as a snapshot would. No broker, no HTTP, no reward window.

What it leaves out is timing: in the real loop a reward is learned after its window closes and
a snapshot reaches the retrieval worker a second or so later, so the real policy lags this one
by some tens of queries. Use it to compare settings (exploration, plans, features) quickly;
confirm with ``ltrr simulate``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ltrr.agents.learning import DEFAULT_VW_ARGS, Learners
from ltrr.agents.reward import RewardConfig, compute_reward
from ltrr.retrieval.policy import Policy, load_model
from ltrr.schemas.dsjson import reward_event
from ltrr.schemas.records import SearchImpression, UserAction
from ltrr.sim.local import LocalStack
from ltrr.sim.world import Query
from ltrr.state.store import MemoryStore


class LocalBackend:
    """A ``sim.runner.Backend`` that runs the whole loop in this process."""

    def __init__(
        self,
        entities: Iterable[Mapping[str, Any]],
        *,
        strategies: str = "lexical,semantic,memory,popular,fresh",
        plan_max_size: int = 2,
        plans: str = "",
        cache_dir: Path | None = None,
        vw_args: Sequence[str] = DEFAULT_VW_ARGS,
        snapshot_every: int = 200,
        reward: RewardConfig | None = None,
        policy: Policy | None = None,
        stack: LocalStack | None = None,
        history: bool = False,
        skip_void_plans: bool = True,
    ) -> None:
        self.stack = stack or LocalStack(
            entities,
            strategies=strategies,
            cache_dir=cache_dir,
            policy=policy,
            plan_max_size=plan_max_size,
            plans=plans,
            history=history,
            skip_void_plans=skip_void_plans,
        )
        self.vw_args = tuple(vw_args)
        self.learners = Learners(MemoryStore(), self.vw_args)
        self.snapshot_every = snapshot_every
        self.reward = reward or RewardConfig()
        self.version = 0
        self.pending: dict[str, SearchImpression] = {}
        self.learned = 0

    def search(
        self, query: Query, k: int, explain_plans: Sequence[str], seed: int
    ) -> dict[str, Any]:
        now = time.time_ns() // 1_000_000
        result = self.stack.search(
            query.text,
            query.context,
            k,
            seed=seed,
            now_ms=now,
            explain_plans=self.stack.extra_plans(list(explain_plans)),
        )
        impression = SearchImpression.from_dict(result.impression)
        self.pending[result.impression_id] = impression
        return {
            "impression_id": result.impression_id,
            "results": [{"entity_id": r.entity_id} for r in result.results],
            "plan": {
                "id": result.plan.id,
                "budgets": dict(result.plan.budgets),
                "probability": result.probability,
            },
            "model_version": result.model_version,
            "explain": result.explain,
        }

    def act(self, actions: Sequence[dict[str, Any]]) -> None:
        """The simulator reports a search's actions (maybe none) right after it: close that
        impression's window at once — reward, learn, remember — as the worker would."""
        for impression_id, impression in list(self.pending.items()):
            mine = [UserAction.from_dict(a) for a in actions if a["impression_id"] == impression_id]
            outcome = compute_reward(mine, self.reward)
            event = reward_event(impression, outcome.reward, mine)
            verdict = self.learners.learn(orjson.dumps(event))
            if verdict.kind != "learned":
                raise RuntimeError(f"the in-process learner refused a reward: {verdict}")
            self.learned += 1
            self.stack.remember(
                impression.query,
                [r.entity_id for r in impression.results],
                [(a.entity_id, a.type) for a in mine],
                impression.timestamp_ms,
            )
            if self.learned % self.snapshot_every == 0:
                self._publish(impression.model_name, impression.timestamp_ms)
        self.pending.clear()

    def _publish(self, name: str, now_ms: int) -> None:
        self.version += 1
        model = load_model(
            self.version,
            self.vw_args,
            self.learners.model_bytes(name),
            now_ms,
            probe=self.stack.searcher.probe(),
        )
        self.stack.policy.swap(model)

    def release(self, entity: Mapping[str, Any]) -> None:
        self.stack.add(entity)

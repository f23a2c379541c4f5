"""Drive simulated users through a retrieval worker and score every policy on the same queries.

For each query the simulator calls ``/search`` with ``explain`` (one retrieval, so the learned
decision and every baseline see the same candidates), samples what the user does with the
results the learned policy showed and reports those actions to ``/actions`` (the real path:
actions -> Kafka -> join -> reward -> learner -> snapshot -> hot-load), and scores the learned
policy and the baselines by expected reward (``sim/scoreboard.py``). New entities are
released every ``release_every`` queries through the catalog topic.
"""

from __future__ import annotations

import http.client
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from ltrr.agents.reward import RewardConfig, compute_reward
from ltrr.schemas.exceptions import LtrrError
from ltrr.schemas.records import UserAction
from ltrr.sim.clicks import ClickModel
from ltrr.sim.scoreboard import Scoreboard, Step, recall_at_budget
from ltrr.sim.world import Query


class World(Protocol):
    name: str

    def catalog(self) -> list[dict[str, Any]]: ...

    def query(self, now_ms: int) -> Query: ...

    def release(self, now_ms: int) -> dict[str, Any] | None: ...


class Backend(Protocol):
    def search(
        self, query: Query, k: int, explain_plans: Sequence[str], seed: int
    ) -> dict[str, Any]: ...

    def act(self, actions: Sequence[dict[str, Any]]) -> None: ...

    def release(self, entity: Mapping[str, Any]) -> None: ...


class SimulationError(LtrrError):
    """The retrieval worker refused or failed a request the simulator needs."""


class HttpBackend:
    """``ltrr serve`` over HTTP (one keep-alive connection); releases go to the catalog topic."""

    def __init__(self, url: str, publish: Callable[[Mapping[str, Any]], None] | None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SimulationError(f"--url must be http://HOST:PORT of ltrr serve, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.publish = publish

    def _post(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        payload = orjson.dumps(body)
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, payload, {"Content-Type": "application/json"})
                response = self.conn.getresponse()
                return response.status, orjson.loads(response.read() or b"{}")
            except (http.client.HTTPException, OSError) as exc:
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt == 2:
                    raise SimulationError(f"POST {path} to {self.host}:{self.port}: {exc}") from exc
        raise AssertionError("unreachable")

    def search(
        self, query: Query, k: int, explain_plans: Sequence[str], seed: int
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query.text, "k": k, "explain": True}
        if explain_plans:
            body["explain_plans"] = list(explain_plans)
        if query.context:
            body["context"] = dict(query.context)
        if query.user_id:
            body["user_id"] = query.user_id
        status, response = self._post("/search", body)
        if status != 200:
            raise SimulationError(f"/search answered {status}: {response}")
        return response

    def act(self, actions: Sequence[dict[str, Any]]) -> None:
        if not actions:
            return
        status, response = self._post("/actions", list(actions))
        if status != 202:
            raise SimulationError(f"/actions answered {status}: {response}")

    def release(self, entity: Mapping[str, Any]) -> None:
        if self.publish is not None:
            self.publish(entity)


@dataclass(frozen=True, slots=True)
class SimConfig:
    queries: int = 3000
    k: int = 10
    #: Queries per second (0: as fast as the worker answers).
    rate: float = 0.0
    #: Release a new entity every N queries (0: never).
    release_every: int = 25
    seed: int = 7


class Simulation:
    def __init__(
        self,
        world: World,
        backend: Backend,
        *,
        strategies: Sequence[str],
        total_budget: int,
        config: SimConfig | None = None,
        clicks: ClickModel | None = None,
        reward: RewardConfig | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.world = world
        self.backend = backend
        self.config = config or SimConfig()
        self.clicks = clicks or ClickModel()
        self.reward = reward or RewardConfig()
        self.clock_ms = clock_ms
        self.rng = random.Random(self.config.seed)
        share = max(1, total_budget // max(1, len(strategies)))
        self.union_spec = "+".join(f"{s}:{share}" for s in strategies) if strategies else ""
        self.strategies = list(strategies)
        self.board: Scoreboard | None = None
        self.stopped_early = False

    def _board(self, explain: Mapping[str, Any]) -> Scoreboard:
        configured = list(explain["plan_ids"])
        extra = [p for p in explain["plans"] if p not in configured]
        singles = {s: s for s in self.strategies if s in configured}
        # The union baseline: the extra plan asked for, or the same plan among the configured.
        full = "+".join(self.strategies)
        union = extra[0] if extra else (full if full in configured else None)
        return Scoreboard(configured + extra, singles, union, len(configured))

    def step(self, index: int) -> Step:
        now = self.clock_ms()
        query = self.world.query(now)
        response = self.backend.search(
            query, self.config.k, [self.union_spec] if self.union_spec else [], index
        )
        explain = response["explain"]
        if self.board is None:
            self.board = self._board(explain)
        board = self.board
        shown = [r["entity_id"] for r in response["results"]]
        plans = [
            self.clicks.expected_reward(explain["plans"][p], query.relevant, self.reward)
            for p in board.plan_ids
        ]
        recalls = [
            recall_at_budget(explain["budgets"][p], explain["strategies"], query.relevant)
            for p in board.plan_ids
        ]
        sampled = self.clicks.sample(shown, query.relevant, self.rng)
        actions = [
            UserAction(uuid.uuid4().hex, response["impression_id"], entity, kind, now + i, value)
            for i, (entity, kind, value) in enumerate(sampled)
        ]
        self.backend.act([a.to_dict() for a in actions])
        plan = response["plan"]
        step = Step(
            kind=query.kind,
            plan=plan["id"],
            model_version=int(response.get("model_version", 0)),
            learned=self.clicks.expected_reward(shown, query.relevant, self.reward),
            realized=compute_reward(actions, self.reward).reward,
            learned_recall=recall_at_budget(plan["budgets"], explain["strategies"], query.relevant),
            plans=plans,
            recalls=recalls,
        )
        board.add(step)
        return step

    def run(self, progress: Callable[[Simulation], None] | None = None) -> Scoreboard | None:
        """Run ``config.queries`` queries; Ctrl-C stops early and keeps what was measured."""
        started = time.monotonic()
        last = 0.0
        try:
            for index in range(self.config.queries):
                every = self.config.release_every
                if every and index and index % every == 0:
                    entity = self.world.release(self.clock_ms())
                    if entity is not None:
                        self.backend.release(entity)
                self.step(index)
                if self.config.rate > 0:
                    pause = started + (index + 1) / self.config.rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                if progress is not None and time.monotonic() - last > 0.5:
                    last = time.monotonic()
                    progress(self)
        except KeyboardInterrupt:
            self.stopped_early = True
        if progress is not None:
            progress(self)
        return self.board

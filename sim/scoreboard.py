"""What a simulation measured, per query and in summary (pure).

Every query is scored for the learned policy and for each static baseline on the same query,
by the click model's expected reward of what each would have shown (``sim/clicks.py``), so the
comparison carries no click noise:

- ``learned``: what ``/search`` showed (the bandit's logged decision, exploration included);
- one baseline per single-strategy plan (``lexical``, ``semantic``, ...);
- ``union``: every strategy at once, sharing the same total candidate budget;
- ``uniform``: a plan drawn uniformly at random (its exact expectation: the mean over plans);
- ``oracle``: for each query kind, the one plan that did best on that kind over the whole
  run (best fixed plan per kind in hindsight; needs the whole run, so it is computed here);
- ``oracle_per_query``: for each query, the best configured plan for that very query in
  hindsight (from the same retrieval): the ceiling of what choosing a plan per query can reach.
  Where the query kind says little (a BEIR world has only ``short``/``long``), the per-kind
  oracle is about the best fixed plan, and only this one shows the headroom.

The *best static baseline* is the best of ``union`` and every single strategy; *gap closed*
is ``(learned - best static) / (oracle_per_query - best static)``: 0 when learning gains
nothing over the best thing one could configure without it, 1 when it picks the best plan for
every query (computed over the whole run and over its last quarter, each with the best static
baseline of that stretch).

Recall@budget is the share of a query's relevant entities in the candidate set a policy
retrieved (the union of its strategies' budgeted candidates), before ranking cuts it to k.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LEARNED, UNION, UNIFORM, ORACLE = "learned", "union", "uniform", "oracle"
QUERY_ORACLE = "oracle_per_query"
#: Policies that are not static baselines (they need hindsight, or they learn).
NOT_STATIC = (LEARNED, ORACLE, QUERY_ORACLE)


@dataclass(frozen=True, slots=True)
class Step:
    """One simulated query."""

    kind: str
    plan: str  # the learned policy's chosen plan
    model_version: int
    learned: float  # expected reward of what was shown
    realized: float  # reward of the sampled actions
    learned_recall: float
    plans: Sequence[float]  # expected reward per plan id (Scoreboard.plan_ids order)
    recalls: Sequence[float]  # recall@budget per plan id


@dataclass
class Scoreboard:
    plan_ids: list[str]  # configured plans, then extra ones (the union)
    singles: dict[str, str]  # baseline name -> plan id
    union_id: str | None
    configured: int  # how many of plan_ids are the policy's own plans
    steps: list[Step] = field(default_factory=list)

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def __len__(self) -> int:
        return len(self.steps)

    # ---- per-query series ------------------------------------------------------------------
    def oracle_plans(self, steps: Sequence[Step] | None = None) -> dict[str, str]:
        """Best configured plan per kind in hindsight over ``steps`` (default: all)."""
        steps = self.steps if steps is None else steps
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * self.configured)
        for s in steps:
            row = sums[s.kind]
            for i in range(self.configured):
                row[i] += s.plans[i]
        return {
            kind: self.plan_ids[max(range(self.configured), key=lambda i: (row[i], -i))]
            for kind, row in sums.items()
        }

    def series(self) -> dict[str, list[float]]:
        """Expected reward per query, per policy."""
        index = {p: i for i, p in enumerate(self.plan_ids)}
        oracle = {k: index[p] for k, p in self.oracle_plans().items()}
        out: dict[str, list[float]] = {LEARNED: [s.learned for s in self.steps]}
        for name, plan_id in self.singles.items():
            out[name] = [s.plans[index[plan_id]] for s in self.steps]
        if self.union_id is not None:
            out[UNION] = [s.plans[index[self.union_id]] for s in self.steps]
        out[UNIFORM] = [sum(s.plans[: self.configured]) / self.configured for s in self.steps]
        out[ORACLE] = [s.plans[oracle[s.kind]] for s in self.steps]
        out[QUERY_ORACLE] = [max(s.plans[: self.configured]) for s in self.steps]
        return out

    def _best_plan(self, step: Step) -> int:
        """Index of the configured plan with the highest expected reward on ``step`` (the
        first one on ties)."""
        rewards = step.plans[: self.configured]
        return max(range(self.configured), key=lambda i: (rewards[i], -i))

    def static_baselines(self) -> list[str]:
        """The names of the baselines that the best static baseline is chosen from: every
        single strategy and the union."""
        return [*self.singles, *([UNION] if self.union_id is not None else [])]

    def gap_closed(
        self, series: Mapping[str, Sequence[float]], start: int = 0, stop: int | None = None
    ) -> tuple[str | None, float | None]:
        """The best static baseline over ``steps[start:stop]`` and the share of the gap
        between it and the per-query oracle that the learned policy closed there (``None``
        when there is no gap to close)."""
        best, closed, _ = self.gap(series, start, stop)
        return best, closed

    def gap(
        self, series: Mapping[str, Sequence[float]], start: int = 0, stop: int | None = None
    ) -> tuple[str | None, float | None, float | None]:
        """``gap_closed`` and the gap itself: the per-query oracle's mean reward above the
        best static baseline over ``steps[start:stop]``, its denominator. Read a gap closed
        against it: a ratio over a gap of 0.0001 swings by tens on a few queries."""
        stop = len(self.steps) if stop is None else stop
        if stop <= start:
            return None, None, None
        means = {k: sum(v[start:stop]) / (stop - start) for k, v in series.items()}
        static = [k for k in self.static_baselines() if k in means]
        if not static:
            return None, None, None
        best = max(static, key=lambda k: means[k])
        room = means[QUERY_ORACLE] - means[best]
        if room <= 1e-9:
            return best, None, room
        return best, (means[LEARNED] - means[best]) / room, room

    def recall_series(self) -> dict[str, list[float]]:
        index = {p: i for i, p in enumerate(self.plan_ids)}
        oracle = {k: index[p] for k, p in self.oracle_plans().items()}
        out: dict[str, list[float]] = {LEARNED: [s.learned_recall for s in self.steps]}
        for name, plan_id in self.singles.items():
            out[name] = [s.recalls[index[plan_id]] for s in self.steps]
        if self.union_id is not None:
            out[UNION] = [s.recalls[index[self.union_id]] for s in self.steps]
        out[UNIFORM] = [sum(s.recalls[: self.configured]) / self.configured for s in self.steps]
        out[ORACLE] = [s.recalls[oracle[s.kind]] for s in self.steps]
        out[QUERY_ORACLE] = [s.recalls[self._best_plan(s)] for s in self.steps]
        return out

    # ---- summary ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Cumulative reward, regret, last-quarter ratios, recall and plan mix (JSON-able)."""
        n = len(self.steps)
        if n == 0:
            return {"queries": 0}
        series = self.series()
        recalls = self.recall_series()
        quarter = max(1, n // 4)
        cumulative = {name: sum(values) for name, values in series.items()}
        last = {name: sum(values[-quarter:]) / quarter for name, values in series.items()}
        static = [name for name in series if name not in NOT_STATIC]
        best_static, gap_all, room_all = self.gap(series)
        best_last, gap_last, room_last = self.gap(series, n - quarter)
        kinds = sorted({s.kind for s in self.steps})
        half = self.steps[n // 2 :]
        mix: dict[str, dict[str, float]] = {}
        for kind in kinds:
            chosen = Counter(s.plan for s in half if s.kind == kind)
            total = sum(chosen.values()) or 1
            mix[kind] = {p: round(c / total, 4) for p, c in chosen.most_common()}
        per_kind = {}
        for kind in kinds:
            idx = [i for i, s in enumerate(self.steps) if s.kind == kind]
            per_kind[kind] = {
                "queries": len(idx),
                **{name: round(sum(v[i] for i in idx) / len(idx), 4) for name, v in series.items()},
            }
        return {
            "queries": n,
            "mean_reward": {k: round(v / n, 4) for k, v in cumulative.items()},
            "cumulative_reward": {k: round(v, 3) for k, v in cumulative.items()},
            "regret_vs": {
                k: round(v - cumulative[LEARNED], 3) for k, v in cumulative.items() if k != LEARNED
            },
            "best_static_baseline": best_static,
            "best_static_baseline_last_quarter": best_last,
            "gap_closed": _round(gap_all),
            "last_quarter_gap_closed": _round(gap_last),
            "gap_headroom": _round(room_all),
            "last_quarter_gap_headroom": _round(room_last),
            "beats_every_static_baseline": all(
                cumulative[LEARNED] > cumulative[name] for name in static
            ),
            "last_quarter_mean_reward": {k: round(v, 4) for k, v in last.items()},
            "last_quarter_learned_over_oracle": round(last[LEARNED] / last[ORACLE], 4)
            if last[ORACLE] > 0
            else None,
            "realized_mean_reward": round(sum(s.realized for s in self.steps) / n, 4),
            "recall_at_budget": {k: round(sum(v) / n, 4) for k, v in recalls.items()},
            "oracle_plan_by_kind": self.oracle_plans(),
            "learned_plan_mix_by_kind_second_half": mix,
            "per_kind_mean_reward": per_kind,
            "final_model_version": self.steps[-1].model_version,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def recall_at_budget(
    budgets: Mapping[str, int], strategies: Mapping[str, Sequence[str]], relevant: Mapping[str, Any]
) -> float:
    """Share of ``relevant`` in the union of each strategy's first ``budget`` candidates."""
    if not relevant:
        return 1.0
    found = {e for name, b in budgets.items() for e in strategies.get(name, ())[:b]}
    return sum(1 for e in relevant if e in found) / len(relevant)
